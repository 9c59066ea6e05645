// Torch-aware drivers of the CUDA convolution kernels (see conv_engine.h): the CUDA twin of the CPU
// conv engine (csrc/cpu/conv_engine.cpp).
//
// Operand layouts. The kernels take any element strides; their 16-byte (cp.async) path needs
// channels-contiguous activations with a per-group channel count that fills whole 16-byte chunks
// (C/G % 8 for fp16/bf16, % 4 fp32, % 2 fp64). Such operands are made channels-last dense (a
// no-op for channels_last models; one copy for NCHW inputs, cheap next to a compute-bound conv).
// Others (C_in = 1 or 3, odd groups) stay as they are and take the scalar path, which reads any
// strides and is coalesced along W for NCHW. Outputs are written directly in the op's format by
// the epilogue (NCHW included), so no output copy is ever made.
//
// Weights are packed per call into the GEMM layouts (small: at most a few MB):
//   fprop  [K][R][S][cpad]        cpad = C/G rounded up to a 16-byte chunk, zero padded;
//   dgrad  [G][C/G][R][S][kpad]   kpad = K/G rounded up likewise.
#include "cuda/conv_engine.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/TensorIterator.h>

#include "backend.h"
#include "cuda/conv1x1_kernel.cuh"
#include "cuda/conv2d_kernel.cuh"
#include "cuda/aten_utils.h"
#include "cuda/sm90_dispatch.h"

namespace fastcnn {
namespace cuda {
namespace {

bool is_1x1(const ConvGeom& g) { return g.R == 1 && g.S == 1 && g.ph == 0 && g.pw == 0; }

int64_t chunk_elems(const at::Tensor& t) { return 16 / static_cast<int64_t>(t.element_size()); }

// The 16-byte path wants channels-last dense activations; see the file comment.
at::Tensor act_operand(const at::Tensor& t, int64_t channels_per_group) {
  if (channels_per_group % chunk_elems(t) == 0) return t.contiguous(at::MemoryFormat::ChannelsLast);
  return t;
}

// The kernels index rows, taps x channels and images with 32-bit integers (the batch is cut into
// chunks below 2^31 rows); these sizes must fit.
void check_index_range(const char* op, const ConvGeom& g, int64_t cpad, int64_t kpad) {
  const int64_t lim = (int64_t(1) << 31) - 4096;
  TORCH_CHECK(g.H * g.W < lim && g.P * g.Q < lim && g.R * g.S * cpad < lim && g.R * g.S * kpad < lim &&
                  g.C < lim && g.K < lim,
              op, ": tensor sizes beyond the CUDA kernels' 32-bit index range (H*W=", g.H * g.W, ", P*Q=", g.P * g.Q,
              ", R*S*C/G=", g.R * g.S * g.Cg(), ")");
}

// TF32 only where PyTorch allows it for convolutions (torch.backends.cudnn.allow_tf32, default
// on) AND for fp32 matmuls (torch.backends.cuda.matmul.allow_tf32 / float32_matmul_precision,
// default off): with PyTorch's defaults fp32 stays exact (FFMA), which is what the test suite's
// fp32 tolerance (2e-5) assumes; the benchmark's "tf32" mode turns both flags on.
bool tf32_allowed(const at::Tensor& t) {
  if (t.scalar_type() != at::kFloat) return false;
  auto& ctx = at::globalContext();
  return ctx.allowTF32CuDNN() && ctx.allowTF32CuBLAS();
}

const void* ptr_or_null(const at::Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; }

}  // namespace

at::Tensor conv_forward_cuda(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                             const std::optional<at::Tensor>& residual, const ConvGeom& g, Activation act) {
  check_cuda("conv2d", input, "input");
  DeviceGuard guard(input.device());
  const at::MemoryFormat fmt = conv_memory_format(input, weight);
  at::Tensor out = new_output({g.N, g.K, g.P, g.Q}, input.options().memory_format(fmt));
  if (out.numel() == 0) return out;
  if (sm90_conv_forward(input, weight, bias, residual, g, act, tf32_allowed(input), out)) return out;  // sm90 path

  const int64_t Cg = g.Cg();
  const int64_t cpad = conv_pad_channels(Cg, input.element_size());
  check_index_range("conv2d", g, cpad, 0);
  const at::Tensor x = act_operand(input, Cg);
  at::Tensor wp = at::zeros({g.K, g.R, g.S, cpad}, weight.options());
  wp.narrow(3, 0, Cg).copy_(weight.permute({0, 2, 3, 1}));
  const at::Tensor b = bias.has_value() ? bias->contiguous() : at::Tensor();
  const at::Tensor r = residual.has_value() ? residual->contiguous(fmt) : at::Tensor();

  ConvFpropParams p{};
  p.s = g;
  p.x = x.data_ptr();
  p.xs = strides4(x);
  p.w = wp.data_ptr();
  p.cpad = cpad;
  p.bias = ptr_or_null(b);
  p.res = ptr_or_null(r);
  p.rs = r.defined() ? strides4(r) : Strides4{0, 0, 0, 0};
  p.y = out.data_ptr();
  p.ys = strides4(out);
  p.relu = act == Activation::ReLU;
  p.tf32 = tf32_allowed(input);
  p.num_sms = num_sms();
  const cudaStream_t stream = current_stream();
  const bool one = is_1x1(g);
  FASTCNN_CUDA_DISPATCH(input.scalar_type(), "fastcnn_conv_forward_cuda", [&] {
    if (one)
      launch_conv1x1_fprop<T>(p, stream);
    else
      launch_conv2d_fprop<T>(p, stream);
  });
  FASTCNN_KERNEL_LAUNCH_CHECK();
  return out;
}

namespace {

// grad_output and, with ReLU, the forward output whose mask the gradient loads apply: both in
// one layout with equal strides (the kernels index the mask with grad_output's offsets). Shared by
// the dgrad, wgrad and bias-grad passes.
struct GradOperands {
  at::Tensor gy, om;
  Strides4 gys, oms;
  const void* mask;  // om's data, or null without an activation
};

GradOperands grad_operands(const at::Tensor& grad_output, const std::optional<at::Tensor>& output,
                           const ConvGeom& g, at::MemoryFormat fmt, bool relu) {
  GradOperands go{};
  if (relu) {
    const at::MemoryFormat gfmt = g.Kg() % chunk_elems(grad_output) == 0 ? at::MemoryFormat::ChannelsLast : fmt;
    go.gy = grad_output.contiguous(gfmt);
    go.om = output->contiguous(gfmt);
  } else {
    go.gy = act_operand(grad_output, g.Kg());
  }
  go.gys = strides4(go.gy);
  go.mask = relu ? go.om.data_ptr() : nullptr;
  go.oms = relu ? strides4(go.om) : go.gys;
  return go;
}

// grad_input: the fprop kernel on the masked gradient and the transposed, flipped weight, one
// launch per stride phase.
at::Tensor conv_dgrad(const GradOperands& go, const at::Tensor& input, const at::Tensor& weight, const ConvGeom& g,
                      at::MemoryFormat fmt, Sm90Backward& hopper) {
  at::Tensor gx = new_output(input.sizes(), input.options().memory_format(fmt));
  if (gx.numel() == 0 || hopper.dgrad(gx)) return gx;
  const int64_t Cg = g.Cg(), Kg = g.Kg();
  const int64_t kpad = conv_pad_channels(Kg, input.element_size());
  at::Tensor wt = at::zeros({g.G, Cg, g.R, g.S, kpad}, weight.options());
  wt.narrow(4, 0, Kg).copy_(weight.reshape({g.G, Kg, Cg, g.R, g.S}).permute({0, 2, 3, 4, 1}));
  ConvDgradParams p{};
  p.s = g;
  p.gy = go.gy.data_ptr();
  p.gys = go.gys;
  p.out = go.mask;
  p.outs = go.oms;
  p.w = wt.data_ptr();
  p.kpad = kpad;
  p.dx = gx.data_ptr();
  p.dxs = strides4(gx);
  p.tf32 = tf32_allowed(input);
  p.num_sms = num_sms();
  const cudaStream_t stream = current_stream();
  const bool one = is_1x1(g);
  FASTCNN_CUDA_DISPATCH(input.scalar_type(), "fastcnn_conv_dgrad_cuda", [&] {
    if (one)
      launch_conv1x1_dgrad<T>(p, stream);
    else
      launch_conv2d_dgrad<T>(p, stream);
  });
  FASTCNN_KERNEL_LAUNCH_CHECK();
  return gx;
}

// grad_weight: split-K over pixels into a workspace, reduced in a fixed order.
at::Tensor conv_wgrad(const GradOperands& go, const at::Tensor& input, const at::Tensor& weight, const ConvGeom& g,
                      Sm90Backward& hopper) {
  at::Tensor gw = new_output(weight.sizes(), weight.options().memory_format(weight.suggest_memory_format()));
  if (g.N * g.P * g.Q == 0) return gw.zero_();
  if (hopper.wgrad(gw)) return gw;
  const at::Tensor x = act_operand(input, g.Cg());
  ConvWgradParams p{};
  p.s = g;
  p.gy = go.gy.data_ptr();
  p.gys = go.gys;
  p.out = go.mask;
  p.outs = go.oms;
  p.x = x.data_ptr();
  p.xs = strides4(x);
  p.dw = gw.data_ptr();
  p.dws = strides4(gw);
  p.num_sms = num_sms();
  const cudaStream_t stream = current_stream();
  const bool one = is_1x1(g);
  FASTCNN_CUDA_DISPATCH(input.scalar_type(), "fastcnn_conv_wgrad_cuda", [&] {
    const int64_t bytes = one ? conv1x1_wgrad_workspace_bytes<T>(p) : conv2d_wgrad_workspace_bytes<T>(p);
    const at::Tensor ws = at::empty({std::max<int64_t>(bytes, 16)}, input.options().dtype(at::kByte));
    p.ws = ws.data_ptr();
    if (one)
      launch_conv1x1_wgrad<T>(p, stream);
    else
      launch_conv2d_wgrad<T>(p, stream);
  });
  FASTCNN_KERNEL_LAUNCH_CHECK();
  return gw;
}

// grad_bias: the masked gradient summed over pixels (split, then the splits in index order).
at::Tensor conv_bias_grad(const GradOperands& go, const at::Tensor& input, const ConvGeom& g) {
  at::Tensor gb = new_output({g.K}, input.options());
  if (g.N * g.P * g.Q == 0) return gb.zero_();
  ConvBiasGradParams p{};
  p.N = g.N;
  p.K = g.K;
  p.P = g.P;
  p.Q = g.Q;
  p.gy = go.gy.data_ptr();
  p.gys = go.gys;
  p.out = go.mask;
  p.outs = go.oms;
  p.db = gb.data_ptr();
  p.num_sms = num_sms();
  const cudaStream_t stream = current_stream();
  FASTCNN_CUDA_DISPATCH(input.scalar_type(), "fastcnn_conv_bias_grad_cuda", [&] {
    const int64_t bytes = conv_bias_grad_workspace_bytes<T>(p);
    const at::Tensor ws = at::empty({std::max<int64_t>(bytes, 16)}, input.options().dtype(at::kByte));
    p.ws = ws.data_ptr();
    launch_conv_bias_grad<T>(p, stream);
  });
  FASTCNN_KERNEL_LAUNCH_CHECK();
  return gb;
}

// The pre-activation gradient (also the residual's): relu_mask(grad_output, output), or a copy of
// grad_output without an activation. A new tensor: it must not alias grad_output.
at::Tensor conv_preact_grad(const at::Tensor& grad_output, const std::optional<at::Tensor>& output,
                            at::MemoryFormat fmt, bool relu) {
  at::Tensor ga = new_output(grad_output.sizes(), grad_output.options().memory_format(fmt));
  if (ga.numel() == 0) return ga;
  if (!relu) return ga.copy_(grad_output);
  const cudaStream_t stream = current_stream();
  at::TensorIterator iter =
      at::TensorIteratorConfig().add_output(ga).add_const_input(grad_output).add_const_input(*output).build();
  EwParams ep;
  if (ew_params(iter, ep)) {
    FASTCNN_CUDA_DISPATCH(grad_output.scalar_type(), "fastcnn_conv_relu_grad_cuda",
                          [&] { launch_add_relu_backward<T>(ep, stream); });
  } else {
    const at::Tensor gc = grad_output.contiguous(), oc = output->contiguous();
    at::Tensor tmp = at::empty_like(gc);
    EwParams fp{};
    fp.numel = gc.numel();
    fp.flat = true;
    fp.out = tmp.data_ptr();
    fp.a = gc.data_ptr();
    fp.b = oc.data_ptr();
    fp.num_sms = num_sms();
    FASTCNN_CUDA_DISPATCH(grad_output.scalar_type(), "fastcnn_conv_relu_grad_cuda",
                          [&] { launch_add_relu_backward<T>(fp, stream); });
    ga.copy_(tmp);
  }
  FASTCNN_KERNEL_LAUNCH_CHECK();
  return ga;
}

}  // namespace

// The router has validated the call (checks.h: check_conv2d, check_conv_backward): grad_output
// and output match the forward's geometry, dtype and device.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> conv_backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
    const std::optional<at::Tensor>& output, const ConvGeom& g, Activation act, std::array<bool, 4> mask) {
  check_cuda("conv2d_backward", input, "input");
  DeviceGuard guard(input.device());
  const bool relu = act == Activation::ReLU;
  TORCH_INTERNAL_ASSERT(!relu || (output.has_value() && output->defined()), "conv backward: relu without output");
  const at::MemoryFormat fmt = conv_memory_format(input, weight);
  check_index_range("conv2d_backward", g, conv_pad_channels(g.Cg(), input.element_size()),
                    conv_pad_channels(g.Kg(), input.element_size()));
  const auto empty = [&] { return at::empty({0}, input.options()); };
  GradOperands go{};
  if (mask[0] || mask[1] || mask[2]) go = grad_operands(grad_output, output, g, fmt, relu);
  Sm90Backward hopper(grad_output, input, weight, output, g, act, tf32_allowed(input));  // cuda/sm90_dispatch.h
  // Braced initialisation evaluates left to right: the passes run in this order.
  return {mask[0] ? conv_dgrad(go, input, weight, g, fmt, hopper) : empty(),
          mask[1] ? conv_wgrad(go, input, weight, g, hopper) : empty(),
          mask[2] ? conv_bias_grad(go, input, g) : empty(),
          mask[3] ? conv_preact_grad(grad_output, output, fmt, relu) : empty()};
}

}  // namespace cuda
}  // namespace fastcnn
