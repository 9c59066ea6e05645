#include "backend.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <mutex>
#include <unordered_map>

namespace fastcnn {

namespace {
std::atomic<int> g_backend{static_cast<int>(Backend::Auto)};
std::atomic<bool> g_poison{false};
}  // namespace

bool poison_outputs() { return g_poison.load(std::memory_order_relaxed); }
void set_poison_outputs(bool on) { g_poison.store(on, std::memory_order_relaxed); }

void poison(const at::Tensor& t) {
  if (!poison_outputs() || t.numel() == 0) return;
  if (at::isFloatingType(t.scalar_type()))
    t.fill_(std::numeric_limits<double>::quiet_NaN());
  else
    t.fill_(-1);
}

at::Tensor new_output(at::IntArrayRef sizes, const at::TensorOptions& opts) {
  at::Tensor t = at::empty(sizes, opts);
  poison(t);
  return t;
}

Backend current_backend() { return static_cast<Backend>(g_backend.load(std::memory_order_relaxed)); }

void set_current_backend(Backend b) { g_backend.store(static_cast<int>(b), std::memory_order_relaxed); }

const char* backend_name(Backend b) {
  switch (b) {
    case Backend::Auto: return "auto";
    case Backend::CPU: return "cpu";
    case Backend::CUDA: return "cuda";
    case Backend::Triton: return "triton";
  }
  return "?";
}

const c10::OperatorHandle& triton_op(const char* op) {
  static std::mutex mu;
  static std::unordered_map<std::string, c10::OperatorHandle> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(op);
  if (it == cache.end()) {
    std::string name = std::string("fastcnn::_triton_") + op;
    it = cache.emplace(op, c10::Dispatcher::singleton().findSchemaOrThrow(name.c_str(), "")).first;
  }
  return it->second;
}

bool use_triton(const char* op, const c10::Device& device, bool native_is_cuda) {
  const Backend b = current_backend();
  switch (b) {
    case Backend::Auto:
      // CPU tensors: the C++ kernels. CUDA tensors: the CUDA C++ kernels; the Triton twin is
      // chosen per shape by the Python-side table once both backends are benchmarked.
      return false;
    case Backend::CPU:
      TORCH_CHECK_VALUE(device.is_cpu(), "fastcnn backend 'cpu' cannot run ", op, " on ", device,
                        " tensors; move them to the CPU or choose backend 'auto', 'cuda' or 'triton'");
      return false;
    case Backend::CUDA:
      TORCH_CHECK_VALUE(device.is_cuda() && native_is_cuda, "fastcnn backend 'cuda' cannot run ", op,
                        " on ", device, " tensors; it needs CUDA tensors and fastcnn built with CUDA");
      return false;
    case Backend::Triton: {
      const auto key = device.is_cuda() ? c10::DispatchKey::CUDA : c10::DispatchKey::CPU;
      bool ok = false;
      if (auto h = c10::Dispatcher::singleton().findSchema({std::string("fastcnn::_triton_") + op, ""})) {
        ok = h->hasKernelForDispatchKey(key);
      }
      TORCH_CHECK_VALUE(ok, "fastcnn backend 'triton' cannot run ", op, " on ", device, " tensors: ",
                        device.is_cuda()
                            ? "Triton is not installed (pip install triton)"
                            : "Triton runs CPU tensors only in its interpreter; set TRITON_INTERPRET=1 "
                              "before importing fastcnn (and install triton)");
      return true;
    }
  }
  return false;
}

}  // namespace fastcnn
