// The one TORCH_LIBRARY of fastcnn: every op schema, and the small Python module fastcnn._C.
//
// Each public op has a backward op (_<op>_backward) and a Triton twin (_triton_<op>, same schema)
// whose kernels Python registers from fastcnn.kernels; see backend.h for how calls are routed.
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
#define FASTCNN_ADD_RELU_ARGS "(Tensor input, Tensor other) -> Tensor"
#define FASTCNN_ADD_RELU_BACKWARD_ARGS "(Tensor grad_output, Tensor output) -> Tensor"

}  // namespace

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

  // Triton twins: kernels registered from Python (fastcnn/_ops.py) when Triton is importable.
  m.def("_triton_conv2d" FASTCNN_CONV2D_ARGS);
  m.def("_triton_conv2d_backward" FASTCNN_CONV2D_BACKWARD_ARGS);
  m.def("_triton_conv1x1" FASTCNN_CONV1X1_ARGS);
  m.def("_triton_conv1x1_backward" FASTCNN_CONV1X1_BACKWARD_ARGS);
  m.def("_triton_max_pool2d" FASTCNN_MAX_POOL2D_ARGS);
  m.def("_triton_max_pool2d_backward" FASTCNN_MAX_POOL2D_BACKWARD_ARGS);
  m.def("_triton_add_relu" FASTCNN_ADD_RELU_ARGS);
  m.def("_triton_add_relu_backward" FASTCNN_ADD_RELU_BACKWARD_ARGS);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "fastcnn C++ extension: ops live in torch.ops.fastcnn; this module holds build facts and "
            "the backend switch";
  m.def("_set_backend", [](int b) { fastcnn::set_current_backend(static_cast<fastcnn::Backend>(b)); });
  m.def("_get_backend", []() { return static_cast<int>(fastcnn::current_backend()); });
  m.def("_set_poison", [](bool on) { fastcnn::set_poison_outputs(on); },
        "Fill every op output with NaN (-1 for indices) before the kernel writes it (for tests)");
  m.def("_poison_enabled", []() { return fastcnn::poison_outputs(); });
#ifdef FASTCNN_WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
}
