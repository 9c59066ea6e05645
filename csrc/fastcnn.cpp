// The one TORCH_LIBRARY of fastcnn: every op schema, and the small Python module fastcnn._C.
//
// Each public op has a backward op (_<op>_backward); each backend implements both as
// implementation ops _<tag>_<stem> with the same schema; see backend.h for how calls are routed.
#include <torch/extension.h>
#include <torch/library.h>

#include "backend.h"

namespace {

#define FASTCNN_CONV2D_ARGS                                                                       \
  "(Tensor input, Tensor weight, Tensor? bias=None, Tensor? residual=None, int[2] stride=1, "     \
  "int[2] padding=0, int[2] dilation=1, int groups=1, str activation=\"none\") -> Tensor"
#define FASTCNN_CONV2D_BACKWARD_ARGS                                                              \
  "(Tensor grad_output, Tensor input, Tensor weight, Tensor? output, int[2] stride, int[2] padding, " \
  "int[2] dilation, int groups, str activation, bool[4] output_mask) -> (Tensor, Tensor, Tensor, Tensor)"
#define FASTCNN_CONV1X1_ARGS                                                                      \
  "(Tensor input, Tensor weight, Tensor? bias=None, Tensor? residual=None, int[2] stride=1, "     \
  "str activation=\"relu\") -> Tensor"
#define FASTCNN_CONV1X1_BACKWARD_ARGS                                                             \
  "(Tensor grad_output, Tensor input, Tensor weight, Tensor? output, int[2] stride, str activation, " \
  "bool[4] output_mask) -> (Tensor, Tensor, Tensor, Tensor)"
#define FASTCNN_MAX_POOL2D_ARGS                                                                   \
  "(Tensor input, int[2] kernel_size, int[2] stride, int[2] padding=0, int[2] dilation=1, "       \
  "bool ceil_mode=False, bool with_indices=False) -> (Tensor, Tensor)"
#define FASTCNN_MAX_POOL2D_BACKWARD_ARGS                                                          \
  "(Tensor grad_output, Tensor input, Tensor indices, int[2] kernel_size, int[2] stride, "        \
  "int[2] padding, int[2] dilation, bool ceil_mode) -> Tensor"
#define FASTCNN_CONV2D_INTO_ARGS                                                                  \
  "(Tensor input, Tensor weight, Tensor? bias, Tensor? residual, int[2] stride, int[2] padding, "     \
  "int[2] dilation, int groups, str activation, Tensor(a!) out) -> ()"
#define FASTCNN_CONV1X1_INTO_ARGS                                                                 \
  "(Tensor input, Tensor weight, Tensor? bias, int[2] stride, str[] activations, int[] pool, "        \
  "Tensor(a!)[] out) -> ()"
#define FASTCNN_CONV1X1_INTO_BACKWARD_ARGS                                                        \
  "(Tensor[] grad_outputs, Tensor input, Tensor weight, Tensor[] outputs, int[2] stride, "            \
  "str[] activations, int[] pool, bool[3] output_mask) -> (Tensor, Tensor, Tensor)"
#define FASTCNN_ADD_RELU_ARGS "(Tensor input, Tensor other) -> Tensor"
#define FASTCNN_ADD_RELU_BACKWARD_ARGS "(Tensor grad_output, Tensor output) -> Tensor"

}  // namespace

// Every (backend tag, op) implementation op: fastcnn::_<tag>_<stem>, the public op's schema.
#define FASTCNN_DEF_IMPLS(m, tag)                                                  \
  m.def(FASTCNN_IMPL_OP(tag, "conv2d") FASTCNN_CONV2D_ARGS);                       \
  m.def(FASTCNN_IMPL_OP(tag, "conv2d_backward") FASTCNN_CONV2D_BACKWARD_ARGS);     \
  m.def(FASTCNN_IMPL_OP(tag, "conv1x1") FASTCNN_CONV1X1_ARGS);                     \
  m.def(FASTCNN_IMPL_OP(tag, "conv1x1_backward") FASTCNN_CONV1X1_BACKWARD_ARGS);   \
  m.def(FASTCNN_IMPL_OP(tag, "max_pool2d") FASTCNN_MAX_POOL2D_ARGS);               \
  m.def(FASTCNN_IMPL_OP(tag, "max_pool2d_backward") FASTCNN_MAX_POOL2D_BACKWARD_ARGS); \
  m.def(FASTCNN_IMPL_OP(tag, "add_relu") FASTCNN_ADD_RELU_ARGS);                   \
  m.def(FASTCNN_IMPL_OP(tag, "add_relu_backward") FASTCNN_ADD_RELU_BACKWARD_ARGS); \
  m.def(FASTCNN_IMPL_OP(tag, "conv2d_into") FASTCNN_CONV2D_INTO_ARGS);             \
  m.def(FASTCNN_IMPL_OP(tag, "conv1x1_into") FASTCNN_CONV1X1_INTO_ARGS)

TORCH_LIBRARY(fastcnn, m) {
  // act(conv2d(input, weight) + bias + residual), act in {none, relu}.
  m.def("conv2d" FASTCNN_CONV2D_ARGS);
  // Gradients w.r.t. (input, weight, bias, pre-activation sum = residual); outputs not asked for
  // in output_mask are empty tensors. `output` (the forward result) is needed for ReLU only.
  m.def("_conv2d_backward" FASTCNN_CONV2D_BACKWARD_ARGS);
  // The bottleneck 1x1 convolution as a GEMM over (N*H*W, C), with the same epilogue.
  m.def("conv1x1" FASTCNN_CONV1X1_ARGS);
  m.def("_conv1x1_backward" FASTCNN_CONV1X1_BACKWARD_ARGS);
  // Returns (output, indices); indices (int64, flat h*W+w as PyTorch) only when with_indices,
  // else an empty tensor.
  m.def("max_pool2d" FASTCNN_MAX_POOL2D_ARGS);
  // With empty `indices` the argmax is recomputed from `input`.
  m.def("_max_pool2d_backward" FASTCNN_MAX_POOL2D_BACKWARD_ARGS);
  // relu(input + other), broadcasting as torch.add.
  m.def("add_relu" FASTCNN_ADD_RELU_ARGS);
  // grad_output where output > 0 (the gradient of both addends before any broadcast reduction).
  m.def("_add_relu_backward" FASTCNN_ADD_RELU_BACKWARD_ARGS);
  // The network fusions' ops (GoogLeNet blocks without torch.cat, sibling 1x1 convs as one GEMM, the
  // max-pool inside its 1x1 projection). They write into `out`, which may be a channel slice of a
  // larger dense tensor (block.narrow(1, offset, K)), so a block's branches fill one output. Mutable,
  // not functional: a functional op cannot return views of one storage; autograd is the Python
  // layer's (fastcnn/_fused.py), which owns the buffers they write.
  // conv2d_into: conv2d's result written into out.
  m.def("conv2d_into" FASTCNN_CONV2D_INTO_ARGS);
  // conv1x1_into: one 1x1 conv over weight [sum K_s, C, 1, 1]; output channels [off_s, off_s + K_s)
  // get activations[s] and go to out[s] (K_s = out[s].size(1)). pool = [] or [kh, kw, sh, sw, ph,
  // pw, ceil_mode]: a max-pool of the input taken as the GEMM operand is loaded (stride must be 1).
  m.def("conv1x1_into" FASTCNN_CONV1X1_INTO_ARGS);
  // Gradients (input, weight, bias) of conv1x1_into: the segments' masked gradients as one dense
  // operand, then one dgrad and one wgrad (_conv1x1_backward) and, with pool, _max_pool2d_backward.
  // A composite of routed ops (ops.cpp), so every backend has it.
  m.def("_conv1x1_into_backward" FASTCNN_CONV1X1_INTO_BACKWARD_ARGS);

  // The implementation ops of the built-in backends (backend.h); a backend added at run time
  // defines its own (fastcnn._backend.add_backend).
  FASTCNN_DEF_IMPLS(m, "cpu");
  FASTCNN_DEF_IMPLS(m, "cuda");
  FASTCNN_DEF_IMPLS(m, "triton");
  FASTCNN_DEF_IMPLS(m, "cudasim");
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "fastcnn C++ extension: ops live in torch.ops.fastcnn; this module holds build facts, the "
            "backend table and the test poison switch";
  m.def("_backend_names", []() {
    std::vector<std::string> out;
    for (const auto& b : fastcnn::backends()) out.push_back(b.name);
    return out;
  }, "Backend names in table order (index 0 is 'auto')");
  m.def("_backend_info", [](const std::string& name) {
    const int i = fastcnn::backend_index(name);
    TORCH_CHECK_VALUE(i >= 0, "unknown backend '", name, "'");
    const auto b = fastcnn::backends().at(i);
    return py::dict(py::arg("name") = b.name, py::arg("tag") = b.tag, py::arg("auto") = b.in_auto,
                    py::arg("why_not_cpu") = b.why_not_cpu, py::arg("why_not_cuda") = b.why_not_cuda,
                    py::arg("runs_cpu") = fastcnn::backend_runs(i, "cpu"),
                    py::arg("runs_cuda") = fastcnn::backend_runs(i, "cuda"));
  });
  m.def("_add_backend", &fastcnn::add_backend, py::arg("name"), py::arg("tag"), py::arg("auto") = false);
  m.def("_set_backend_reason", &fastcnn::set_backend_reason);
  m.def("_set_backend", [](const std::string& name) {
    const int i = fastcnn::backend_index(name);
    TORCH_CHECK_VALUE(i >= 0, "unknown backend '", name, "'");
    fastcnn::set_current_backend(i);
  });
  m.def("_get_backend", []() { return fastcnn::backends().at(fastcnn::current_backend()).name; });
  m.def("_resolve", [](const std::string& stem, const std::string& device) {
    return fastcnn::backends().at(fastcnn::resolve_backend(stem.c_str(), c10::Device(device))).name;
  }, "The backend that would run op `stem` on `device` now (auto resolved); ValueError if none");
  m.def("_set_poison", [](bool on) { fastcnn::set_poison_outputs(on); },
        "Fill every op output with NaN (-1 for indices) before the kernel writes it (for tests)");
  m.def("_poison_enabled", []() { return fastcnn::poison_outputs(); });
  m.def("_services_address", []() { return reinterpret_cast<uintptr_t>(fastcnn::services()); },
        "Address of fastcnn::Services (backend.h), bound by the other fastcnn extension modules at import");
  m.def("_trace_begin", &fastcnn::trace_begin, "Open a 'what ran' trace on this thread");
  m.def("_trace_end", []() {
    py::list out;
    for (const auto& r : fastcnn::trace_end()) {
      py::list notes;
      for (const auto& n : r.notes) notes.append(py::make_tuple(n.first, n.second));
      out.append(py::dict(py::arg("op") = r.op, py::arg("backend") = r.backend, py::arg("device") = r.device,
                          py::arg("notes") = notes));
    }
    return out;
  }, "Close this thread's trace: one dict per routed call (op, backend, device, notes)");
  m.attr("op_stems") = [] {
    std::vector<std::string> v(std::begin(fastcnn::kOpStems), std::end(fastcnn::kOpStems));
    return v;
  }();
#ifdef FASTCNN_WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
}
