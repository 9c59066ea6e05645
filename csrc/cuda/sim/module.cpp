// fastcnn._C_cudasim: the CUDA kernels and their torch-aware launchers built by the host compiler
// against cuda-sim's runtime (simt.h), running on CPU tensors; the launchers register the
// fastcnn::_cudasim_<stem> implementation ops (FASTCNN_CUDA_LIBRARY_IMPL, backend.h). This file
// holds what only the sim module has: _C's services bound at import, the emulator's controls and
// the entry points of the purpose-written test kernels (selftest.cu), as torch ops in the namespace
// fastcnn_cudasim (no pybind11: the module compiles against ATen and Python.h only).
#include <Python.h>
#include <ATen/ATen.h>
#include <torch/library.h>

#include <atomic>
#include <limits>
#include <map>
#include <sstream>
#include <string>

#include "backend.h"
#include "cuda/sim/selftest.h"
#include "cuda/sim/simt_control.h"

namespace fastcnn {

// What the launchers use of _C (backend.h: output allocation with test poisoning, the "what ran"
// trace) comes through the fastcnn::Services table _C hands out (_C._services_address()), bound
// when fastcnn loads the sim module: one poison switch and one trace for every backend. Unbound
// (the module imported on its own): no poisoning, no trace.
namespace {
std::atomic<const Services*> g_services{nullptr};
}  // namespace

bool poison_outputs() {
  const Services* s = g_services.load(std::memory_order_acquire);
  return s != nullptr && *s->poison;
}

bool trace_enabled() {
  const Services* s = g_services.load(std::memory_order_acquire);
  return s != nullptr && s->trace_enabled();
}

void trace_note(const std::string& key, const std::string& value) {
  const Services* s = g_services.load(std::memory_order_acquire);
  if (s != nullptr) s->trace_note(key.c_str(), value.c_str());
}

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

}  // namespace fastcnn

namespace {

using fastcnn::cuda::selftest::run_check;

void need(const at::Tensor& t, at::ScalarType st, int64_t numel, const char* what) {
  TORCH_CHECK_VALUE(t.device().is_cpu() && t.is_contiguous() && t.scalar_type() == st && t.numel() == numel,
                    "cuda-sim selftest: ", what, " must be a contiguous CPU ", st, " tensor of ", numel,
                    " elements, got ", t.scalar_type(), " ", t.sizes());
}

at::Tensor selftest_mma(int64_t kind, const at::Tensor& A, const at::Tensor& B, const at::Tensor& C) {
  const int64_t K = kind == 2 ? 8 : 16;
  const at::ScalarType st = kind == 0 ? at::kHalf : kind == 1 ? at::kBFloat16 : at::kFloat;
  need(A, st, 16 * K, "A");
  need(B, st, K * 8, "B");
  need(C, at::kFloat, 128, "C");
  at::Tensor D = at::full({16, 8}, std::numeric_limits<float>::quiet_NaN(), C.options());
  fastcnn::cuda::selftest::run_mma(int(kind), A.data_ptr(), B.data_ptr(), C.data_ptr<float>(), D.data_ptr<float>());
  return D;
}

at::Tensor selftest_ldmatrix(const at::Tensor& mats, const at::Tensor& slot_of, bool trans) {
  need(mats, at::kShort, 256, "mats");
  need(slot_of, at::kInt, 32, "slot_of");
  at::Tensor out = at::zeros({32, 4}, mats.options().dtype(at::kInt));
  fastcnn::cuda::selftest::run_ldmatrix(reinterpret_cast<const uint16_t*>(mats.data_ptr<int16_t>()),
                                        slot_of.data_ptr<int>(), trans,
                                        reinterpret_cast<uint32_t*>(out.data_ptr<int>()));
  return out;
}

at::Tensor selftest_shfl(int64_t mode, int64_t width, const at::Tensor& operand, const at::Tensor& vals) {
  need(operand, at::kInt, 32, "operand");
  need(vals, at::kLong, 32, "vals");
  at::Tensor out = at::zeros({32}, vals.options());
  fastcnn::cuda::selftest::run_shfl(int(mode), int(width), operand.data_ptr<int>(),
                                    reinterpret_cast<const long long*>(vals.data_ptr<int64_t>()),
                                    reinterpret_cast<long long*>(out.data_ptr<int64_t>()));
  return out;
}

std::tuple<at::Tensor, at::Tensor> selftest_cp_async(const at::Tensor& src, const at::Tensor& valid, bool early_read) {
  need(src, at::kByte, 512, "src");
  need(valid, at::kByte, 32, "valid");
  at::Tensor out = at::zeros({32, 16}, src.options());
  at::Tensor early = at::zeros({32, 16}, src.options());
  fastcnn::cuda::selftest::run_cp_async(src.data_ptr<uint8_t>(), valid.data_ptr<uint8_t>(), early_read,
                                        out.data_ptr<uint8_t>(), early.data_ptr<uint8_t>());
  return {out, early};
}

at::Tensor selftest_tf32(const at::Tensor& x) {
  need(x, at::kFloat, x.numel(), "x");
  at::Tensor out = at::empty_like(x);
  fastcnn::cuda::selftest::run_tf32(reinterpret_cast<const uint32_t*>(x.data_ptr<float>()),
                                    reinterpret_cast<uint32_t*>(out.data_ptr<float>()), int(x.numel()));
  return out;
}

// Runs check kernel `name`; returns its int32 output buffer (1024 elements).
at::Tensor selftest_check(const std::string& name, int64_t arg, const std::optional<at::Tensor>& src) {
  at::Tensor buf = at::zeros({1024}, at::TensorOptions().dtype(at::kInt));
  const void* s = nullptr;
  if (src.has_value()) {
    TORCH_CHECK_VALUE(src->device().is_cpu() && src->is_contiguous(), "cuda-sim selftest: src must be a contiguous CPU tensor");
    s = src->data_ptr();
  }
  run_check(name, int(arg), buf.data_ptr(), s);
  return buf;
}

std::map<std::string, int64_t> parse_map(const std::string& spec) {
  std::map<std::string, int64_t> out;
  std::stringstream ss(spec);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.empty()) continue;
    const size_t eq = item.find('=');
    TORCH_CHECK_VALUE(eq != std::string::npos, "cuda-sim: expected kind=value items, got '", item, "'");
    out[item.substr(0, eq)] = std::stoll(item.substr(eq + 1));
  }
  return out;
}

std::string join_map(const std::map<std::string, int>& m) {
  std::string s;
  for (const auto& kv : m) s += (s.empty() ? "" : ",") + kv.first + "=" + std::to_string(kv.second);
  return s;
}

}  // namespace

TORCH_LIBRARY(fastcnn_cudasim, m) {
  // _C's fastcnn::Services at this address (_C._services_address()); 0 unbinds.
  m.def("bind_services(int address) -> ()", [](int64_t addr) {
    fastcnn::g_services.store(reinterpret_cast<const fastcnn::Services*>(addr), std::memory_order_release);
  });
  m.def("poison_enabled() -> bool", []() { return fastcnn::poison_outputs(); });
  // Scheduling order of warps and lanes: fwd, rev or rand:<seed>.
  m.def("set_order(str order) -> ()", [](const std::string& o) { fastcnn::simt::set_order(o); });
  m.def("get_order() -> str", []() { return fastcnn::simt::get_order(); });
  m.def("set_threads(int n) -> ()", [](int64_t n) { fastcnn::simt::set_threads(int(n)); });
  // Forced dispatch choices (FASTCNN_PICK kinds), "kind=value,..."; "" clears.
  m.def("set_force(str spec) -> ()", [](const std::string& spec) {
    std::map<std::string, int> f;
    for (const auto& kv : parse_map(spec)) f[kv.first] = int(kv.second);
    fastcnn::simt::set_force(f);
  });
  m.def("get_force() -> str", []() { return join_map(fastcnn::simt::get_force()); });
  // __launch_bounds__ of the nvcc build's kernels, "mangled=max_threads,...".
  m.def("set_launch_bounds(str spec) -> ()", [](const std::string& spec) {
    std::map<std::string, int> b;
    for (const auto& kv : parse_map(spec)) b[kv.first] = int(kv.second);
    fastcnn::simt::set_launch_bounds(b);
  });
  m.def("launched(bool reset=False) -> str[]", [](bool reset) {
    const auto v = fastcnn::simt::launched(reset);
    return std::vector<std::string>(v.begin(), v.end());
  });
  m.def("selftest_mma(int kind, Tensor A, Tensor B, Tensor C) -> Tensor", &selftest_mma);
  m.def("selftest_ldmatrix(Tensor mats, Tensor slot_of, bool trans) -> Tensor", &selftest_ldmatrix);
  m.def("selftest_shfl(int mode, int width, Tensor operand, Tensor vals) -> Tensor", &selftest_shfl);
  m.def("selftest_cp_async(Tensor src, Tensor valid, bool early_read) -> (Tensor, Tensor)", &selftest_cp_async);
  m.def("selftest_tf32(Tensor x) -> Tensor", &selftest_tf32);
  m.def("selftest_check(str name, int arg=0, Tensor? src=None) -> Tensor", &selftest_check);
}

// The Python module itself is empty: importing it loads the library, whose static initialisers
// register the ops above (and the _cudasim_* implementation ops of the launchers).
#define FASTCNN_CAT2(a, b) a##b
#define FASTCNN_CAT(a, b) FASTCNN_CAT2(a, b)
#define FASTCNN_STR2(a) #a
#define FASTCNN_STR(a) FASTCNN_STR2(a)
extern "C" __attribute__((visibility("default"))) PyObject* FASTCNN_CAT(PyInit_, TORCH_EXTENSION_NAME)() {
  static PyModuleDef def = {PyModuleDef_HEAD_INIT, FASTCNN_STR(TORCH_EXTENSION_NAME),
                            "cuda-sim: fastcnn's CUDA kernels emulated on the CPU; ops in torch.ops.fastcnn_cudasim",
                            -1, nullptr, nullptr, nullptr, nullptr, nullptr};
  return PyModule_Create(&def);
}
