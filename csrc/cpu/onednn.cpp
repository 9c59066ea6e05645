#include "cpu/onednn.h"

#include "backend.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <torch/version.h>
#include <ATen/Parallel.h>
#include <c10/core/MemoryFormat.h>

#include <vector>

namespace fastcnn::cpu {
namespace {

using at::MemoryFormat;

// torch.backends.mkldnn(.conv).fp32_precision = "bf16" / "tf32" lets oneDNN compute float32 convs
// in reduced precision; fastcnn's float32 stays float32 (every backend's contract), so it then
// keeps its own engine. The knob's C++ API is the enum one from torch 2.13 (checked here); older
// torches are not guarded.
bool fp32_reduced_by_user() {
#if defined(TORCH_VERSION_MAJOR) && (TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 13))
  auto& ctx = at::globalContext();
  auto p = ctx.float32Precision(at::Float32Backend::MKLDNN, at::Float32Op::CONV);
  if (p == at::Float32Precision::NONE) p = ctx.float32Precision(at::Float32Backend::MKLDNN, at::Float32Op::ALL);
  return p == at::Float32Precision::TF32 || p == at::Float32Precision::BF16;
#else
  return false;
#endif
}

// A torch built without oneDNN (at::hasMKLDNN() false) keeps the own engine for every conv.
bool onednn_enabled() {
  return at::hasMKLDNN() && at::globalContext().userEnabledMkldnn() && !fp32_reduced_by_user();
}

// t with exactly the strides at::empty(t.sizes(), fmt) gives (what the fake kernels declare):
// oneDNN's results are dense in fmt, but where a size is 1 their strides may differ.
at::Tensor dense_in(const at::Tensor& t, MemoryFormat fmt) {
  const auto sizes = t.sizes();
  std::vector<int64_t> want(sizes.size());
  if (fmt == MemoryFormat::ChannelsLast && sizes.size() == 4) {
    want = c10::get_channels_last_strides_2d(sizes);
  } else {
    int64_t s = 1;
    for (int64_t i = static_cast<int64_t>(sizes.size()) - 1; i >= 0; --i) {
      want[i] = s;
      s *= std::max<int64_t>(sizes[i], 1);
    }
  }
  if (t.strides() == at::IntArrayRef(want)) return t;
  return new_output(sizes, t.options().memory_format(fmt)).copy_(t);
}

// In place, NaN kept (v < 0 is false for NaN): a compare and a blend per vector.
void relu_range(float* __restrict o, int64_t n) {
  for (int64_t i = 0; i < n; ++i) o[i] = o[i] < 0.f ? 0.f : o[i];
}

void add_relu_range(float* __restrict o, const float* __restrict r, int64_t n, bool relu) {
  if (relu)
    for (int64_t i = 0; i < n; ++i) {
      const float v = o[i] + r[i];
      o[i] = v < 0.f ? 0.f : v;
    }
  else
    for (int64_t i = 0; i < n; ++i) o[i] += r[i];
}

}  // namespace

bool prefer_onednn(const ConvGeom& g, ConvPass pass) {
  (void)g;
  (void)pass;
  return onednn_enabled();
}

at::Tensor onednn_forward(const at::Tensor& x, const at::Tensor& w, const std::optional<at::Tensor>& bias,
                          const std::optional<at::Tensor>& residual, const ConvGeom& g, Activation act,
                          MemoryFormat fmt) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  // at::convolution, the op F.conv2d runs (oneDNN's convolution for float32 through
  // mkldnn_convolution), then one pass for the residual add and the ReLU. Not
  // mkldnn::_convolution_pointwise with bias/add post-ops (Inductor's op): it re-creates its
  // primitive and reorders the weight on every call, ~80-120 us each (1x8x4x4: 91 us against
  // at::convolution's 10 us), and with the add fused it measured no faster on ResNet-50's
  // bottleneck shapes (0.76-1.77 ms against 0.62-1.62 ms; bench: ResNet-50 runs 53 convs a step).
  // The ReLU is never oneDNN's: its eltwise ReLU maps NaN to 0, where fastcnn (and torch.relu) keep NaN.
  const at::Tensor wf = w.contiguous(fmt);  // oneDNN picks channels_last when input or weight is
  at::Tensor out = at::convolution(x, wf, bias, {g.sh, g.sw}, {g.ph, g.pw}, {g.dh, g.dw}, /*transposed=*/false,
                                   {0, 0}, g.G);
  out = dense_in(out, fmt);
  const bool add = residual.has_value(), relu = act == Activation::ReLU;
  if (add || relu) {
    float* o = out.data_ptr<float>();
    const at::Tensor res = add ? dense_in(*residual, fmt) : at::Tensor();  // out's strides
    const float* r = add ? res.data_ptr<float>() : nullptr;
    at::parallel_for(0, out.numel(), 32768, [&](int64_t lo, int64_t hi) {
      if (add) add_relu_range(o + lo, r + lo, hi - lo, relu);
      else relu_range(o + lo, hi - lo);
    });
  }
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> onednn_backward(const at::Tensor& gy, const at::Tensor& x,
                                                               const at::Tensor& w, const ConvGeom& g,
                                                               MemoryFormat fmt, std::array<bool, 3> mask) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  const std::vector<int64_t> bias_sizes{g.K};
  // PyTorch's own convolution backward: oneDNN for float32 (its choice of backend, as for F.conv2d).
  auto [gx, gw, gb] = at::convolution_backward(
      gy, x, w.contiguous(fmt), mask[2] ? at::OptionalIntArrayRef(bias_sizes) : at::OptionalIntArrayRef(),
      {g.sh, g.sw}, {g.ph, g.pw}, {g.dh, g.dw}, /*transposed=*/false, {0, 0}, g.G, mask);
  if (mask[0]) gx = dense_in(gx, fmt);
  if (mask[1]) gw = dense_in(gw, w.suggest_memory_format());
  if (mask[2]) gb = dense_in(gb, MemoryFormat::Contiguous);
  return {gx, gw, gb};
}

}  // namespace fastcnn::cpu
