#include "backend.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <atomic>
#include <cstring>
#include <limits>
#include <mutex>
#include <unordered_map>

namespace fastcnn {

const char* const kOpStems[10] = {"conv2d",     "conv2d_backward",     "conv1x1",  "conv1x1_backward",
                                  "max_pool2d", "max_pool2d_backward", "add_relu", "add_relu_backward",
                                  "conv2d_into", "conv1x1_into"};

namespace {

// Read on every call, written rarely (imports, tests): a mutex for writers, copies for readers
// would be overkill; entries are only ever appended, never removed or reordered.
std::mutex g_mu;
std::vector<BackendInfo>& table() {
  static std::vector<BackendInfo> t = [] {
    std::vector<BackendInfo> v;
    v.push_back({"auto", "", false, "", ""});
    v.push_back({"cpu", "cpu", true, "", "it runs CPU tensors only; move them to the CPU or choose another backend"});
    v.push_back({"cuda", "cuda", true, "it runs CUDA tensors only",
#ifdef FASTCNN_WITH_CUDA
                 ""
#else
                 "fastcnn was built without CUDA (rebuild with a CUDA build of torch and nvcc; see the README)"
#endif
    });
    // Auto takes Triton on CUDA tensors only where the CUDA kernels are not built (table order).
    v.push_back({"triton", "triton", true, "", ""});
    v.push_back({"cuda-sim", "cudasim", false,
                 "fastcnn._C_cudasim is not built (make cuda-sim)",
                 "it emulates the CUDA kernels on CPU tensors only"});
    return v;
  }();
  return t;
}

std::atomic<int> g_backend{0};
bool g_poison = false;  // read without a lock: a test switch, set between calls

c10::DispatchKey key_of(const std::string& device_type) {
  return device_type == "cuda" ? c10::DispatchKey::CUDA : c10::DispatchKey::CPU;
}

bool has_kernel(const std::string& tag, const char* stem, c10::DispatchKey key) {
  const std::string name = "fastcnn::_" + tag + "_" + stem;
  auto h = c10::Dispatcher::singleton().findSchema({name, ""});
  return h.has_value() && h->hasKernelForDispatchKey(key);
}

}  // namespace

std::vector<BackendInfo> backends() {
  std::lock_guard<std::mutex> lock(g_mu);
  return table();
}

int add_backend(const std::string& name, const std::string& tag, bool in_auto) {
  std::lock_guard<std::mutex> lock(g_mu);
  auto& t = table();
  for (size_t i = 0; i < t.size(); ++i) {
    TORCH_CHECK_VALUE(t[i].name != name, "backend '", name, "' exists already");
  }
  t.push_back({name, tag, in_auto, "", ""});
  return static_cast<int>(t.size()) - 1;
}

void set_backend_reason(const std::string& name, const std::string& device_type, const std::string& reason) {
  std::lock_guard<std::mutex> lock(g_mu);
  for (auto& b : table()) {
    if (b.name == name) {
      (device_type == "cuda" ? b.why_not_cuda : b.why_not_cpu) = reason;
      return;
    }
  }
  TORCH_CHECK_VALUE(false, "unknown backend '", name, "'");
}

int backend_index(const std::string& name) {
  std::lock_guard<std::mutex> lock(g_mu);
  const auto& t = table();
  for (size_t i = 0; i < t.size(); ++i)
    if (t[i].name == name) return static_cast<int>(i);
  return -1;
}

int current_backend() { return g_backend.load(std::memory_order_relaxed); }

void set_current_backend(int index) {
  TORCH_CHECK_VALUE(index >= 0 && index < static_cast<int>(backends().size()), "no backend with index ", index);
  g_backend.store(index, std::memory_order_relaxed);
}

bool backend_runs(int index, const std::string& device_type) {
  std::string tag;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    tag = table().at(index).tag;
  }
  if (tag.empty()) return false;
  for (const char* stem : kOpStems)
    if (!has_kernel(tag, stem, key_of(device_type))) return false;
  return true;
}

int resolve_backend(const char* stem, const c10::Device& device) {
  TORCH_CHECK_VALUE(device.is_cpu() || device.is_cuda(), "fastcnn ", stem, ": runs CPU and CUDA tensors, got ",
                    device, " tensors");
  const std::string dt = device.is_cuda() ? "cuda" : "cpu";
  const c10::DispatchKey key = key_of(dt);
  const int cur = current_backend();
  std::lock_guard<std::mutex> lock(g_mu);
  const auto& t = table();
  if (cur == 0) {
    for (size_t i = 1; i < t.size(); ++i)
      if (t[i].in_auto && has_kernel(t[i].tag, stem, key)) return static_cast<int>(i);
    TORCH_CHECK_VALUE(false, "fastcnn backend 'auto' has no backend that runs ", stem, " on ", device,
                      " tensors (available: ", dt == "cuda" ? "build with CUDA or install triton" : "none", ")");
  }
  const BackendInfo& b = t.at(cur);
  if (!has_kernel(b.tag, stem, key)) {
    const std::string& why = dt == "cuda" ? b.why_not_cuda : b.why_not_cpu;
    TORCH_CHECK_VALUE(false, "fastcnn backend '", b.name, "' cannot run ", stem, " on ", device, " tensors: ",
                      why.empty() ? std::string("it has no kernel for ") + dt + " tensors here" : why);
  }
  return cur;
}

const c10::OperatorHandle& implementation(int index, const char* stem) {
  std::string name;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    name = "fastcnn::_" + table().at(index).tag + "_" + stem;
  }
  static std::mutex mu;
  static std::unordered_map<std::string, c10::OperatorHandle> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(name);
  if (it == cache.end()) it = cache.emplace(name, c10::Dispatcher::singleton().findSchemaOrThrow(name.c_str(), "")).first;
  return it->second;
}

bool poison_outputs() { return g_poison; }
void set_poison_outputs(bool on) { g_poison = on; }

namespace {
thread_local std::vector<TraceRecord>* t_trace = nullptr;
}

bool trace_enabled() { return t_trace != nullptr; }

void trace_open(const char* stem, int backend, const c10::Device& device) {
  if (t_trace == nullptr) return;
  TraceRecord r;
  r.op = stem;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    r.backend = table().at(backend).name;
  }
  r.device = device.str();
  t_trace->push_back(std::move(r));
}

void trace_note(const std::string& key, const std::string& value) {
  if (t_trace == nullptr || t_trace->empty()) return;
  t_trace->back().notes.emplace_back(key, value);
}

void trace_begin() {
  delete t_trace;
  t_trace = new std::vector<TraceRecord>();
}

std::vector<TraceRecord> trace_end() {
  std::vector<TraceRecord> out;
  if (t_trace != nullptr) out = std::move(*t_trace);
  delete t_trace;
  t_trace = nullptr;
  return out;
}

const Services* services() {
  static const Services s{&g_poison, &trace_enabled,
                          [](const char* k, const char* v) { trace_note(std::string(k), std::string(v)); }};
  return &s;
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
