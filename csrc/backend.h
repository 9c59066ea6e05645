// The backend table and the router: which implementation runs a call.
//
// Every public op (fastcnn::conv2d, fastcnn::_conv2d_backward, ...) has one kernel per dispatch key
// (CPU, CUDA): the router in ops.cpp. It validates the arguments once (checks.h), then calls the
// *implementation op* of the backend in force, fastcnn::_<tag>_<stem>, which has the public op's
// schema. Each backend registers its implementation ops like any torch kernel:
//   cpu      _cpu_<stem>      CPU key        csrc/cpu/*.cpp
//   cuda     _cuda_<stem>     CUDA key       csrc/cuda/*.cpp (nvcc build)
//   triton   _triton_<stem>   CUDA (+ CPU under TRITON_INTERPRET=1), from Python (kernels/)
//   cuda-sim _cudasim_<stem>  CPU key        csrc/cuda/*.cpp built by the host compiler (FASTCNN_SIMT)
// The table below says, per backend, its tag and whether `auto` may pick it; whether it can run a
// device is read from the dispatcher (does _<tag>_<stem> have a kernel for that key?), so a
// backend that is not built or not importable is simply not runnable. Routing below the dispatcher
// keeps one op name in traced graphs: torch.compile sees fastcnn::conv2d whatever the backend.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <string>
#include <vector>

namespace fastcnn {

// Implementation op names: FASTCNN_IMPL_OP("cpu", "conv2d") -> "_cpu_conv2d".
#define FASTCNN_IMPL_OP(tag, stem) "_" tag "_" stem

// The CUDA launchers (csrc/cuda/*.cpp) build twice: as the `cuda` backend (nvcc build, CUDA key)
// and as the `cuda-sim` backend (host compiler, -DFASTCNN_SIMT, CPU key). They register with
//   FASTCNN_CUDA_LIBRARY_IMPL(m) { m.impl(FASTCNN_CUDA_OP("conv2d"), &conv2d); }
#ifdef FASTCNN_SIMT
#define FASTCNN_CUDA_TAG "cudasim"
#define FASTCNN_CUDA_LIBRARY_IMPL(m) TORCH_LIBRARY_IMPL(fastcnn, CPU, m)
#else
#define FASTCNN_CUDA_TAG "cuda"
#define FASTCNN_CUDA_LIBRARY_IMPL(m) TORCH_LIBRARY_IMPL(fastcnn, CUDA, m)
#endif
#define FASTCNN_CUDA_OP(stem) FASTCNN_IMPL_OP(FASTCNN_CUDA_TAG, stem)

// A typed handle of a fastcnn op for the C++ wrappers that call a public op again (autocast.cpp,
// autograd.cpp); looked up once per call site (static).
template <typename Sig>
c10::TypedOperatorHandle<Sig> typed_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Sig>();
}

// Every op stem; implementation ops exist for each (tag, stem).
extern const char* const kOpStems[10];

struct BackendInfo {
  std::string name;  // what users select: "cpu", "cuda", "triton", "cuda-sim", ...
  std::string tag;   // implementation ops are fastcnn::_<tag>_<stem>
  bool in_auto;      // `auto` may choose it (in table order, per device)
  // Why it cannot run a device type (set by whoever knows: the build, the Triton loader), or "".
  std::string why_not_cpu, why_not_cuda;
};

// The table (index 0 is "auto", which is no backend of its own).
std::vector<BackendInfo> backends();
int add_backend(const std::string& name, const std::string& tag, bool in_auto);
void set_backend_reason(const std::string& name, const std::string& device_type, const std::string& reason);
int backend_index(const std::string& name);  // -1 when unknown
int current_backend();
void set_current_backend(int index);

// True when every implementation op of the backend has a kernel for the device type ("cpu"/"cuda").
bool backend_runs(int index, const std::string& device_type);

// The backend that runs `stem` on `device` under the backend in force (auto resolved). Throws a
// ValueError naming the backend, the op and the device when it cannot.
int resolve_backend(const char* stem, const c10::Device& device);

// The implementation op of `stem` for backend `index` (cached handle).
const c10::OperatorHandle& implementation(int index, const char* stem);

// "What ran" (fastcnn.explain): while a trace is open on this thread, the router opens one record
// per routed call (op, backend, device) and the kernels add notes to the newest record (path,
// tile, config, why). Off by default: one thread-local pointer test per call.
struct TraceRecord {
  std::string op, backend, device;
  std::vector<std::pair<std::string, std::string>> notes;
};
bool trace_enabled();
void trace_begin();                    // open a trace on this thread (drops an unclosed one)
std::vector<TraceRecord> trace_end();  // close it and return its records
void trace_open(const char* stem, int backend, const c10::Device& device);
void trace_note(const std::string& key, const std::string& value);

// Forward one validated call to the implementation chosen for it; Sig is the op's kernel signature.
template <typename Sig, typename... Args>
decltype(auto) route(const char* stem, const c10::Device& device, Args&&... args) {
  const int b = resolve_backend(stem, device);
  if (trace_enabled()) trace_open(stem, b, device);
  return implementation(b, stem).typed<Sig>().call(std::forward<Args>(args)...);
}

// Output allocation. With poisoning on (tests: fastcnn._ops.set_poison(True)) every output is
// filled with NaN (integers: -1) before the kernel runs, so an element a kernel forgets to write
// fails the comparison instead of passing by luck.
bool poison_outputs();
void set_poison_outputs(bool on);
at::Tensor new_output(at::IntArrayRef sizes, const at::TensorOptions& opts);
void poison(const at::Tensor& t);

// What the other fastcnn extension modules (the cuda-sim build of the CUDA launchers, the sm90
// module) use of _C, as one table of pointers they bind at import (_C._services_address()), so
// that there is one poison switch and one trace whichever module a kernel lives in.
struct Services {
  const bool* poison;
  bool (*trace_enabled)();
  void (*trace_note)(const char* key, const char* value);
};
const Services* services();

}  // namespace fastcnn
