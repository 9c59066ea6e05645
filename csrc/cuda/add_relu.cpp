// fastcnn::_cuda_add_relu (and _cudasim_add_relu): relu(input + other) in one pass (broadcasting and output layout as
// torch.add, through at::TensorIterator), and its backward. Kernels in add_relu_kernel.cu.
#include <ATen/ATen.h>
#include <ATen/TensorIterator.h>
#include <torch/library.h>

#include "backend.h"
#include "checks.h"
#include "cuda/add_relu_kernel.cuh"
#include "cuda/aten_utils.h"

namespace fastcnn {
namespace cuda {
namespace {

// Runs the kernel over iter's operands (output 0, inputs 1 and 2). An iterator with more
// dimensions than the kernel takes (rare broadcast patterns) is computed on dense copies.
template <typename Launch>
void run(at::TensorIterator& iter, const at::Tensor& a, const at::Tensor& b, Launch launch) {
  const cudaStream_t stream = current_stream();
  EwParams p;
  if (ew_params(iter, p)) {
    launch(p, stream);
  } else {
    const at::Tensor out = iter.output(0);
    const at::Tensor ac = a.expand(out.sizes()).contiguous(), bc = b.expand(out.sizes()).contiguous();
    at::Tensor tmp = at::empty(out.sizes(), out.options());
    EwParams fp{};
    fp.numel = tmp.numel();
    fp.flat = true;
    fp.out = tmp.data_ptr();
    fp.a = ac.data_ptr();
    fp.b = bc.data_ptr();
    fp.num_sms = num_sms();
    launch(fp, stream);
    FASTCNN_KERNEL_LAUNCH_CHECK();
    out.copy_(tmp);
  }
  FASTCNN_KERNEL_LAUNCH_CHECK();
}

at::Tensor add_relu(const at::Tensor& input, const at::Tensor& other) {
  check_cuda("add_relu", input, "input");
  DeviceGuard guard(input.device());
  at::Tensor out;
  auto iter = at::TensorIterator::borrowing_binary_op(out, input, other);
  poison(iter.output(0));
  if (iter.numel() > 0) {
    FASTCNN_CUDA_DISPATCH(input.scalar_type(), "fastcnn_add_relu_cuda", [&] {
      run(iter, input, other, [](const EwParams& p, cudaStream_t s) { launch_add_relu_forward<T>(p, s); });
    });
  }
  return iter.output();
}

at::Tensor add_relu_backward(const at::Tensor& grad_output, const at::Tensor& output) {
  check_cuda("add_relu_backward", output, "output");
  DeviceGuard guard(output.device());
  at::Tensor gi;
  auto iter = at::TensorIterator::borrowing_binary_op(gi, grad_output, output);
  poison(iter.output(0));
  if (iter.numel() > 0) {
    FASTCNN_CUDA_DISPATCH(output.scalar_type(), "fastcnn_add_relu_backward_cuda", [&] {
      run(iter, grad_output, output,
          [](const EwParams& p, cudaStream_t s) { launch_add_relu_backward<T>(p, s); });
    });
  }
  return iter.output();
}

}  // namespace

FASTCNN_CUDA_LIBRARY_IMPL(m) {
  m.impl(FASTCNN_CUDA_OP("add_relu"), &add_relu);
  m.impl(FASTCNN_CUDA_OP("add_relu_backward"), &add_relu_backward);
}

}  // namespace cuda
}  // namespace fastcnn
