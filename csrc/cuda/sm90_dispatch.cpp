// The Hopper path's hooks in the CUDA conv launchers (see sm90_dispatch.h): the facts of a call ->
// fastcnn::sm90::choose -> the kernels of fastcnn._C_sm90 through the table it registered.
#include "cuda/sm90_dispatch.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "checks.h"
#include "cuda/sm90_table.h"
#include "sm90_path.h"

#ifndef FASTCNN_SIMT
#include "cuda/channel_pad.h"
#include "cuda/aten_utils.h"
#endif

namespace fastcnn {
namespace cuda {
namespace {

using fastcnn::sm90::Choice;
using fastcnn::sm90::Mode;
using fastcnn::sm90::Pass;
using fastcnn::sm90::Path;

// Whether the hooks need to decide at all: off never takes the path, and auto does not while
// kAutoValidated is false (the default path then costs one atomic load per call, no rule).
bool consider() {
  const Mode m = fastcnn::sm90::current_mode();
  return m == Mode::Force || (m == Mode::Auto && fastcnn::sm90::kAutoValidated);
}

// A rejected call: a ValueError under FASTCNN_SM90=force, else the existing kernels.
bool reject(const char* pass, const std::string& reason) {
  TORCH_CHECK_VALUE(fastcnn::sm90::current_mode() != Mode::Force, "conv ", pass,
                    ": FASTCNN_SM90=force, but the sm90 path rejects this call: ", reason);
  return false;
}

#ifdef FASTCNN_SIMT
// The CPU simulation of the CUDA kernels has no TMA or wgmma: every call takes the existing kernels.
const char kSimReason[] = "the cuda-sim build has no sm90 path (TMA and wgmma are not simulated)";
}  // namespace

bool sm90_conv_forward(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                       const std::optional<at::Tensor>&, const ConvGeom&, Activation, bool, at::Tensor&) {
  return !consider() ? false : reject("fprop", kSimReason);
}

Sm90Backward::Sm90Backward(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
                           const std::optional<at::Tensor>& output, const ConvGeom& g, Activation act, bool tf32)
    : grad_output_(grad_output), input_(input), weight_(weight), output_(output), g_(g), act_(act), tf32_(tf32) {}

bool Sm90Backward::dgrad(at::Tensor&) {
  return !consider() ? false : reject("dgrad", kSimReason);
}

bool Sm90Backward::wgrad(at::Tensor&) {
  return !consider() ? false : reject("wgrad", kSimReason);
}

const at::Tensor& Sm90Backward::grad() { return grad_output_; }

#else  // !FASTCNN_SIMT

fastcnn::sm90::DType dtype_of(at::ScalarType t) {
  switch (t) {
    case at::kHalf: return fastcnn::sm90::DType::Float16;
    case at::kBFloat16: return fastcnn::sm90::DType::BFloat16;
    case at::kFloat: return fastcnn::sm90::DType::Float32;
    default: return fastcnn::sm90::DType::Float64;
  }
}

int32_t table_dtype(at::ScalarType t) {
  return t == at::kBFloat16 ? FASTCNN_SM90_BF16 : t == at::kHalf ? FASTCNN_SM90_FP16 : FASTCNN_SM90_TF32;
}

int64_t align_of(const at::Tensor& t) { return static_cast<int64_t>(reinterpret_cast<uintptr_t>(t.data_ptr()) % 16); }

fastcnn::sm90::TensorFacts facts(const at::Tensor& t) {
  fastcnn::sm90::TensorFacts f;
  f.present = true;
  for (int i = 0; i < 4; ++i) f.stride[i] = t.stride(i);
  f.align = align_of(t);
  return f;
}

// Compute capability of the current device, cached per device (cudaDeviceGetAttribute: no sync).
std::pair<int, int> capability() {
  static std::array<std::atomic<int>, 64> cache{};  // major * 100 + minor + 1, 0 = unknown
  int dev = 0;
  C10_CUDA_CHECK(cudaGetDevice(&dev));
  if (dev < 0 || dev >= 64) dev = 0;
  int v = cache[dev].load(std::memory_order_relaxed);
  if (v == 0) {
    int major = 0, minor = 0;
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev));
    v = major * 100 + minor + 1;
    cache[dev].store(v, std::memory_order_relaxed);
  }
  return {(v - 1) / 100, (v - 1) % 100};
}

fastcnn::sm90::Query base_query(const at::Tensor& input, const at::Tensor& weight, const ConvGeom& g, bool tf32) {
  fastcnn::sm90::Query q;
  q.g = g;
  q.dtype = dtype_of(input.scalar_type());
  q.input = facts(input);
  q.out_channels_last = conv_memory_format(input, weight) == at::MemoryFormat::ChannelsLast;
  q.tf32 = tf32;
  q.available = fastcnn::sm90::table() != nullptr;
  q.pad_channels = true;
  q.mode = fastcnn::sm90::current_mode();
  if (q.mode != Mode::Off && q.available) std::tie(q.cc_major, q.cc_minor) = capability();
  return q;
}

// (n, h, w) element strides of an NHWC operand whose channel stride is 1 (the rule checked it);
// a size-1 dim gets its dense value, so the TMA descriptor sees a valid stride.
void nhwc_strides(const at::Tensor& t, int64_t out[3]) {
  const int64_t sw = t.size(3) != 1 ? t.stride(3) : t.size(1);
  const int64_t sh = t.size(2) != 1 ? t.stride(2) : t.size(3) * sw;
  const int64_t sn = t.size(0) != 1 ? t.stride(0) : t.size(2) * sh;
  out[0] = sn;
  out[1] = sh;
  out[2] = sw;
}

// The weight [K, C, R, S] as dense, 16-byte aligned KRSC with c_pad >= C input channels.
at::Tensor weight_krsc(const at::Tensor& w, int64_t c_pad) {
  at::Tensor wk = w.permute({0, 2, 3, 1});
  if (c_pad != w.size(1)) {
    at::Tensor p = at::zeros({w.size(0), w.size(2), w.size(3), c_pad}, w.options());
    p.narrow(3, 0, w.size(1)).copy_(wk);
    return p;
  }
  if (!wk.is_contiguous() || align_of(wk) != 0) wk = wk.clone(at::MemoryFormat::Contiguous);
  return wk;
}

// A dense channels_last 16-byte aligned copy of t unless it is one already.
at::Tensor tma_ready(const at::Tensor& t) {
  at::Tensor c = t.contiguous(at::MemoryFormat::ChannelsLast);
  if (align_of(c) != 0) c = c.clone(at::MemoryFormat::ChannelsLast);
  return c;
}

fastcnn_sm90_conv conv_shape(const ConvGeom& g, int64_t c, at::ScalarType t) {
  fastcnn_sm90_conv s{};
  s.N = g.N; s.H = g.H; s.W = g.W; s.C = c;
  s.K = g.K; s.R = g.R; s.S = g.S; s.P = g.P; s.Q = g.Q;
  s.pad_h = s.pad_h_end = g.ph; s.pad_w = s.pad_w_end = g.pw;
  s.stride_h = g.sh; s.stride_w = g.sw; s.dil_h = g.dh; s.dil_w = g.dw;
  s.dtype = table_dtype(t);
  return s;
}

at::Tensor workspace(size_t bytes, const at::Tensor& like) {
  return at::empty({static_cast<int64_t>(bytes > 0 ? bytes : 16)}, like.options().dtype(at::kByte));
}

void check_run(int32_t status, const char* pass) {
  TORCH_CHECK(status == FASTCNN_SM90_OK, "conv ", pass, ": the sm90 kernel failed (", fastcnn_sm90_status_name(status),
              "): ", cudaGetErrorString(cudaGetLastError()));
}

const char kKernelRejects[] = "the kernel's can_implement rejects the problem";

}  // namespace

bool sm90_conv_forward(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                       const std::optional<at::Tensor>& residual, const ConvGeom& g, Activation act, bool tf32,
                       at::Tensor& out) {
  if (!consider()) return false;
  fastcnn::sm90::Query q = base_query(input, weight, g, tf32);
  if (residual.has_value()) q.residual = facts(*residual);
  if (bias.has_value()) {
    q.has_bias = true;
    q.bias_stride = bias->stride(0);
    q.bias_align = align_of(*bias);
  }
  const Choice c = fastcnn::sm90::choose(q, Pass::Fprop);
  if (c.path == Path::Fallback) return reject("fprop", c.reason);
  const fastcnn_sm90_table* t = fastcnn::sm90::table();
  const at::Tensor x = c.c_pad != g.C ? pad_channels(input, c.c_pad) : input;
  const at::Tensor w = weight_krsc(weight, c.c_pad);
  const void* b = bias.has_value() ? bias->data_ptr() : nullptr;
  const bool relu = act == Activation::ReLU;
  const cudaStream_t stream = current_stream();
  int64_t xs[3], ys[3], rs[3] = {0, 0, 0};
  nhwc_strides(x, xs);
  nhwc_strides(out, ys);
  if (residual.has_value()) nhwc_strides(*residual, rs);

  if (c.path == Path::Gemm) {
    fastcnn_sm90_gemm_args a{};
    a.M = g.N * g.H * g.W;
    a.N = g.K;
    a.K = c.c_pad;
    a.dtype = table_dtype(input.scalar_type());
    a.x = x.data_ptr();
    a.x_ld = xs[2];
    a.w = w.data_ptr();
    a.bias = b;
    a.res = residual.has_value() ? residual->data_ptr() : nullptr;
    a.res_ld = rs[2];
    a.y = out.data_ptr();
    a.y_ld = ys[2];
    a.relu = relu;
    a.num_sms = static_cast<int32_t>(num_sms());
    if (t->gemm_can_implement(&a) != FASTCNN_SM90_OK) return reject("fprop", kKernelRejects);
    size_t bytes = 0;
    check_run(t->gemm_workspace_bytes(&a, &bytes), "fprop");
    const at::Tensor ws = workspace(bytes, input);
    check_run(t->gemm_run(&a, ws.data_ptr(), bytes, stream), "fprop");
    return true;
  }

  fastcnn_sm90_fprop_args a{};
  a.shape = conv_shape(g, c.c_pad, input.scalar_type());
  a.x = x.data_ptr();
  for (int i = 0; i < 3; ++i) {
    a.x_stride[i] = xs[i];
    a.res_stride[i] = rs[i];
    a.y_stride[i] = ys[i];
  }
  a.w = w.data_ptr();
  a.bias = b;
  a.res = residual.has_value() ? residual->data_ptr() : nullptr;
  a.y = out.data_ptr();
  a.relu = relu;
  if (t->fprop_can_implement(&a) != FASTCNN_SM90_OK) return reject("fprop", kKernelRejects);
  size_t bytes = 0;
  check_run(t->fprop_workspace_bytes(&a, &bytes), "fprop");
  const at::Tensor ws = workspace(bytes, input);
  check_run(t->fprop_run(&a, ws.data_ptr(), bytes, stream), "fprop");
  return true;
}

Sm90Backward::Sm90Backward(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
                           const std::optional<at::Tensor>& output, const ConvGeom& g, Activation act, bool tf32)
    : grad_output_(grad_output), input_(input), weight_(weight), output_(output), g_(g), act_(act), tf32_(tf32) {}

const at::Tensor& Sm90Backward::grad() {
  if (grad_.defined()) return grad_;
  if (act_ != Activation::ReLU) {
    grad_ = tma_ready(grad_output_);
    return grad_;
  }
  // relu_mask(grad_output, output) once, dense channels_last (the existing kernels fuse the mask
  // into their loads; TMA loads cannot, and dgrad and wgrad then read the same masked tensor).
  const at::Tensor gy = grad_output_.contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor om = output_->contiguous(at::MemoryFormat::ChannelsLast);
  grad_ = at::empty(gy.sizes(), gy.options().memory_format(at::MemoryFormat::ChannelsLast));
  EwParams p{};
  p.numel = gy.numel();
  p.flat = true;
  p.out = grad_.data_ptr();
  p.a = gy.data_ptr();
  p.b = om.data_ptr();
  p.num_sms = num_sms();
  const cudaStream_t stream = current_stream();
  FASTCNN_CUDA_DISPATCH(gy.scalar_type(), "fastcnn_sm90_relu_mask", [&] { launch_add_relu_backward<T>(p, stream); });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return grad_;
}

bool Sm90Backward::dgrad(at::Tensor& grad_input) {
  if (!consider()) return false;
  const Choice c = fastcnn::sm90::choose(base_query(input_, weight_, g_, tf32_), Pass::Dgrad);
  if (c.path == Path::Fallback) return reject("dgrad", c.reason);
  const fastcnn_sm90_table* t = fastcnn::sm90::table();
  const at::Tensor& dy = grad();
  // dx straight into grad_input, or with padded channels into a scratch tensor, then sliced.
  at::Tensor dx = c.c_pad == g_.C ? grad_input
                                  : at::empty({g_.N, c.c_pad, g_.H, g_.W},
                                              grad_input.options().memory_format(at::MemoryFormat::ChannelsLast));
  int64_t dys[3], dxs[3];
  nhwc_strides(dy, dys);
  nhwc_strides(dx, dxs);
  if (g_.sh == 1 && g_.sw == 1) {
    const at::Tensor w = weight_krsc(weight_, c.c_pad);
    fastcnn_sm90_dgrad_args a{};
    a.shape = conv_shape(g_, c.c_pad, input_.scalar_type());
    a.dy = dy.data_ptr();
    a.w = w.data_ptr();
    a.dx = dx.data_ptr();
    for (int i = 0; i < 3; ++i) {
      a.dy_stride[i] = dys[i];
      a.dx_stride[i] = dxs[i];
    }
    if (t->dgrad_can_implement(&a) != FASTCNN_SM90_OK) return reject("dgrad", kKernelRejects);
    size_t bytes = 0;
    check_run(t->dgrad_workspace_bytes(&a, &bytes), "dgrad");
    const at::Tensor ws = workspace(bytes, input_);
    check_run(t->dgrad_run(&a, ws.data_ptr(), bytes, current_stream()), "dgrad");
  } else {
    // Stride > 1: each stride phase (a, b) of dx is a unit-stride conv of dy with the flipped,
    // strided slice of the weight, transposed to [C][taps_h][taps_w][K], on the fprop kernel
    // (fastcnn::sm90::dgrad_phases; tests/test_sm90.py rebuilds dgrad from the same phases).
    // Every phase is checked before the first launch, so a rejection leaves nothing half done.
    const auto ph_h = fastcnn::sm90::dgrad_phases(g_.H, g_.P, g_.R, g_.sh, g_.ph, g_.dh);
    const auto ph_w = fastcnn::sm90::dgrad_phases(g_.W, g_.Q, g_.S, g_.sw, g_.pw, g_.dw);
    const int64_t es = dy.element_size();
    std::vector<fastcnn_sm90_fprop_args> runs;
    std::vector<at::Tensor> filters;
    std::vector<std::pair<int64_t, int64_t>> zeros;
    for (const auto& h : ph_h)
      for (const auto& w : ph_w) {
        if (h.out == 0 || w.out == 0) continue;
        if (h.taps == 0 || w.taps == 0) {
          zeros.emplace_back(h.first, w.first);
          continue;
        }
        at::Tensor f = weight_.slice(2, h.r0, h.r0 + (h.taps - 1) * h.step + 1, h.step)
                           .slice(3, w.r0, w.r0 + (w.taps - 1) * w.step + 1, w.step)
                           .flip({2, 3})
                           .permute({1, 2, 3, 0});  // [C][taps_h][taps_w][K]
        if (c.c_pad != g_.C) {
          at::Tensor p = at::zeros({c.c_pad, h.taps, w.taps, g_.K}, f.options());
          p.narrow(0, 0, g_.C).copy_(f);
          f = p;
        } else {
          f = f.contiguous();
        }
        fastcnn_sm90_fprop_args a{};
        fastcnn_sm90_conv& s = a.shape;
        s.N = g_.N; s.H = h.in_len; s.W = w.in_len; s.C = g_.K;
        s.K = c.c_pad; s.R = h.taps; s.S = w.taps; s.P = h.out; s.Q = w.out;
        s.pad_h = h.pad_lo; s.pad_h_end = h.pad_hi; s.pad_w = w.pad_lo; s.pad_w_end = w.pad_hi;
        s.stride_h = s.stride_w = 1;
        s.dil_h = h.dil; s.dil_w = w.dil;
        s.dtype = table_dtype(input_.scalar_type());
        a.x = static_cast<const char*>(dy.data_ptr()) + (h.in_start * dys[1] + w.in_start * dys[2]) * es;
        a.w = f.data_ptr();
        a.y = static_cast<char*>(dx.data_ptr()) + (h.first * dxs[1] + w.first * dxs[2]) * es;
        for (int i = 0; i < 3; ++i) a.x_stride[i] = dys[i];
        a.y_stride[0] = dxs[0];
        a.y_stride[1] = g_.sh * dxs[1];
        a.y_stride[2] = g_.sw * dxs[2];
        if (t->fprop_can_implement(&a) != FASTCNN_SM90_OK)
          return reject("dgrad", std::string(kKernelRejects) + " (stride phase " + std::to_string(h.first) + ", " +
                                     std::to_string(w.first) + " on the fprop kernel)");
        runs.push_back(a);
        filters.push_back(std::move(f));
      }
    const cudaStream_t stream = current_stream();
    for (const auto& a : runs) {
      size_t bytes = 0;
      check_run(t->fprop_workspace_bytes(&a, &bytes), "dgrad");
      const at::Tensor ws = workspace(bytes, input_);
      check_run(t->fprop_run(&a, ws.data_ptr(), bytes, stream), "dgrad");
    }
    for (const auto& z : zeros) dx.slice(2, z.first, g_.H, g_.sh).slice(3, z.second, g_.W, g_.sw).zero_();
  }
  if (c.c_pad != g_.C) grad_input.copy_(dx.narrow(1, 0, g_.C));
  return true;
}

bool Sm90Backward::wgrad(at::Tensor& grad_weight) {
  if (!consider()) return false;
  const Choice c = fastcnn::sm90::choose(base_query(input_, weight_, g_, tf32_), Pass::Wgrad);
  if (c.path == Path::Fallback) return reject("wgrad", c.reason);
  const fastcnn_sm90_table* t = fastcnn::sm90::table();
  const at::Tensor& dy = grad();
  const at::Tensor x = c.c_pad != g_.C ? pad_channels(input_, c.c_pad) : input_;
  at::Tensor dw = c.c_pad == g_.C ? grad_weight : at::empty({g_.K, c.c_pad, g_.R, g_.S}, grad_weight.options());
  fastcnn_sm90_wgrad_args a{};
  a.shape = conv_shape(g_, c.c_pad, input_.scalar_type());
  a.dy = dy.data_ptr();
  a.x = x.data_ptr();
  a.dw = dw.data_ptr();
  for (int i = 0; i < 4; ++i) a.dw_stride[i] = dw.stride(i);
  a.num_sms = static_cast<int32_t>(num_sms());
  if (t->wgrad_can_implement(&a) != FASTCNN_SM90_OK) return reject("wgrad", kKernelRejects);
  size_t bytes = 0;
  check_run(t->wgrad_workspace_bytes(&a, &bytes), "wgrad");
  const at::Tensor ws = workspace(bytes, input_);
  check_run(t->wgrad_run(&a, ws.data_ptr(), bytes, current_stream()), "wgrad");
  if (c.c_pad != g_.C) grad_weight.copy_(dw.narrow(1, 0, g_.C));
  return true;
}

#endif  // FASTCNN_SIMT

}  // namespace cuda
}  // namespace fastcnn
