// fastcnn::_cuda_max_pool2d (and _cudasim_max_pool2d), forward and backward (kernels in
// max_pool2d_kernel.cu). Arguments arrive validated (ops.cpp).
// Operands are made dense in input.suggest_memory_format() (NCHW or channels_last), as the CPU
// kernel does; outputs and indices are allocated in that format.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "backend.h"
#include "checks.h"
#include "cuda/aten_utils.h"
#include "cuda/max_pool2d_kernel.cuh"

namespace fastcnn {
namespace cuda {
namespace {

// The forward also takes the integer types (checks.h; the kernel file instantiates them), the
// backward only FASTCNN_CUDA_DISPATCH's floating types.
#define FASTCNN_POOL_DISPATCH(DTYPE, NAME, ...)                                     \
  AT_DISPATCH_ALL_TYPES_AND2(at::kHalf, at::kBFloat16, DTYPE, NAME, [&] {          \
    using T = typename ::fastcnn::cuda::CudaType<scalar_t>::type;                  \
    __VA_ARGS__();                                                                 \
  })

template <typename P>
void fill_geometry(P& p, const PoolGeom& g, bool channels_last) {
  p.g = g;
  p.channels_last = channels_last;
  p.num_sms = num_sms();
}

// out (and idx when defined) = max_pool2d(x); x dense in `fmt`, out/idx allocated in `fmt`.
void run_forward(const at::Tensor& x, const PoolGeom& g, at::MemoryFormat fmt, at::Tensor& out, at::Tensor* idx) {
  MaxPool2dParams p{};
  fill_geometry(p, g, fmt == at::MemoryFormat::ChannelsLast);
  p.x = x.data_ptr();
  p.y = out.data_ptr();
  p.idx = idx ? idx->data_ptr<int64_t>() : nullptr;
  const cudaStream_t stream = current_stream();
  FASTCNN_POOL_DISPATCH(x.scalar_type(), "fastcnn_max_pool2d_cuda", [&] { launch_max_pool2d_forward<T>(p, stream); });
  FASTCNN_KERNEL_LAUNCH_CHECK();
}

std::tuple<at::Tensor, at::Tensor> max_pool2d(const at::Tensor& input, at::IntArrayRef kernel_size,
                                              at::IntArrayRef stride, at::IntArrayRef padding,
                                              at::IntArrayRef dilation, bool ceil_mode, bool with_indices) {
  const PoolGeom g = check_max_pool2d("max_pool2d", input, kernel_size, stride, padding, dilation, ceil_mode);
  check_cuda("max_pool2d", input, "input");
  DeviceGuard guard(input.device());
  const auto fmt = input.suggest_memory_format();
  const at::Tensor x = input.contiguous(fmt);
  at::Tensor out = new_output({g.N, g.C, g.P, g.Q}, x.options().memory_format(fmt));
  at::Tensor idx = with_indices ? new_output({g.N, g.C, g.P, g.Q}, x.options().dtype(at::kLong).memory_format(fmt))
                                : at::empty({0}, x.options().dtype(at::kLong));
  if (out.numel() > 0) run_forward(x, g, fmt, out, with_indices ? &idx : nullptr);
  return {out, idx};
}

at::Tensor max_pool2d_backward(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& indices,
                               at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                               at::IntArrayRef dilation, bool ceil_mode) {
  const PoolGeom g = check_max_pool2d_backward("max_pool2d_backward", grad_output, input, indices, kernel_size,
                                               stride, padding, dilation, ceil_mode);
  const bool have_idx = indices.numel() > 0;
  check_cuda("max_pool2d_backward", input, "input");
  DeviceGuard guard(input.device());
  const auto fmt = input.suggest_memory_format();
  at::Tensor gi = new_output(input.sizes(), input.options().memory_format(fmt));
  if (gi.numel() == 0) return gi;
  const at::Tensor go = grad_output.contiguous(fmt);
  at::Tensor idx;
  if (have_idx) {
    idx = indices.contiguous(fmt);
  } else {
    // No indices saved: recompute each window's argmax with the forward kernel (same tie/NaN
    // rules), then gather.
    const at::Tensor x = input.contiguous(fmt);
    at::Tensor tmp = at::empty({g.N, g.C, g.P, g.Q}, x.options().memory_format(fmt));
    idx = at::empty({g.N, g.C, g.P, g.Q}, x.options().dtype(at::kLong).memory_format(fmt));
    run_forward(x, g, fmt, tmp, &idx);
  }
  MaxPool2dBackwardParams p{};
  fill_geometry(p, g, fmt == at::MemoryFormat::ChannelsLast);
  p.gy = go.data_ptr();
  p.idx = idx.data_ptr<int64_t>();
  p.gx = gi.data_ptr();
  const cudaStream_t stream = current_stream();
  FASTCNN_CUDA_DISPATCH(input.scalar_type(), "fastcnn_max_pool2d_backward_cuda",
                        [&] { launch_max_pool2d_backward<T>(p, stream); });
  FASTCNN_KERNEL_LAUNCH_CHECK();
  return gi;
}

}  // namespace

FASTCNN_CUDA_LIBRARY_IMPL(m) {
  m.impl(FASTCNN_CUDA_OP("max_pool2d"), &max_pool2d);
  m.impl(FASTCNN_CUDA_OP("max_pool2d_backward"), &max_pool2d_backward);
}

}  // namespace cuda
}  // namespace fastcnn
