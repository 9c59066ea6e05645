// fastcnn::_cpu_conv2d_into and _cpu_conv1x1_into: the network fusions' in-place ops on the CPU.
//
// conv1x1_into is its own small engine: per chunk of output pixels the GEMM operand is the input
// itself (1x1 stride 1), the strided rows (stride 2) or the max-pooled rows (pool fused into the
// projection: the window max is taken while the chunk's panel is built, so the pooled tensor never
// exists beyond one L2-sized panel); one GEMM over all segments' channels (the input is read once)
// into a chunk tile, and the epilogue writes each segment (bias, activation) to its destination
// with the destination's strides (a channel slice of a block output, or a buffer of its own).
//
// conv2d_into: where the engine runs the case in the op's layout (float64; float32 without oneDNN)
// its GEMM and epilogue write the slice directly. Otherwise (float32 through oneDNN, which writes
// only its own dense buffers; float16/bfloat16; a geometry the engine runs in the other layout) the
// convolution is computed as conv2d computes it and its last pass, the activation, writes the
// slice: with ReLU that is the pass the plain op makes anyway, so the branch costs what it did and
// the torch.cat after it is gone.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <memory>

#include "backend.h"
#include "checks.h"
#include "cpu/conv_engine.h"

namespace fastcnn::cpu {
namespace {

using at::MemoryFormat;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// One destination of the epilogue: channels [off, off + k) of the GEMM's columns.
template <typename O>
struct Segment {
  O* out;
  int64_t sn, sk, sp, sq;  // out's strides
  int64_t off, k;
  bool relu;
};

template <typename T>
inline T max_keep_nan(T m, T v) { return (v > m || v != v) ? v : m; }  // PyTorch's max-pool rule

// The operand of output pixel rows [m0, m0 + rows), NHWC: panel[i, c] = max over the window (the
// 1x1 stride-s gather is the window 1x1 with stride s).
template <typename T>
void panel_nhwc(const T* x, const ConvGeom& in, const PoolGeom& pg, int64_t m0, int64_t rows, T* panel) {
  const int64_t C = in.C, PQ = pg.P * pg.Q;
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t m = m0 + i, n = m / PQ, pq = m % PQ, p = pq / pg.Q, q = pq % pg.Q;
    T* d = panel + i * C;
    std::fill(d, d + C, -std::numeric_limits<T>::infinity());
    for (int64_t a = 0; a < pg.kh; ++a) {
      const int64_t ih = p * pg.sh - pg.ph + a;
      if (ih < 0 || ih >= in.H) continue;
      for (int64_t b = 0; b < pg.kw; ++b) {
        const int64_t iw = q * pg.sw - pg.pw + b;
        if (iw < 0 || iw >= in.W) continue;
        const T* s = x + ((n * in.H + ih) * in.W + iw) * C;
        for (int64_t c = 0; c < C; ++c) d[c] = max_keep_nan(d[c], s[c]);
      }
    }
  }
}

// NCHW: panel[c, j] for pixels [p0, p0 + cnt) of image n.
template <typename T>
void panel_nchw(const T* x, const ConvGeom& in, const PoolGeom& pg, int64_t n, int64_t p0, int64_t cnt, T* panel) {
  const int64_t HW = in.H * in.W;
  for (int64_t c = 0; c < in.C; ++c) {
    const T* src = x + (n * in.C + c) * HW;
    T* d = panel + c * cnt;
    for (int64_t j = 0; j < cnt; ++j) {
      const int64_t pq = p0 + j, p = pq / pg.Q, q = pq % pg.Q;
      T m = -std::numeric_limits<T>::infinity();
      for (int64_t a = 0; a < pg.kh; ++a) {
        const int64_t ih = p * pg.sh - pg.ph + a;
        if (ih < 0 || ih >= in.H) continue;
        for (int64_t b = 0; b < pg.kw; ++b) {
          const int64_t iw = q * pg.sw - pg.pw + b;
          if (iw >= 0 && iw < in.W) m = max_keep_nan(m, src[ih * in.W + iw]);
        }
      }
      d[j] = m;
    }
  }
}

template <typename T, typename O>
inline O finish_value(T v, const T* bias, int64_t c, bool relu) {
  if (bias) v += bias[c];
  if (relu) v = v < T(0) ? T(0) : v;  // NaN stays NaN, as torch.relu
  return static_cast<O>(v);
}

// x dense in fmt (compute type T), w [Ktot, C] contiguous, bias [Ktot] or null. `direct`: the
// input is the operand (1x1 stride 1, no pool); else the panel is built from pg's windows.
template <typename T, typename O>
void conv1x1_into_engine(const T* x, const T* w, const T* bias, const ConvGeom& in, const PoolGeom& pg, bool direct,
                         int64_t Ktot, const std::vector<Segment<O>>& segs, MemoryFormat fmt) {
  const int64_t C = in.C, PQ = pg.P * pg.Q, M = in.N * PQ;
  if (fmt == MemoryFormat::ChannelsLast) {
    const int64_t mc = panel_rows(M, (direct ? 0 : C) + Ktot, sizeof(T));
    at::parallel_for(0, ceil_div(M, mc), 1, [&](int64_t cb, int64_t ce) {
      std::unique_ptr<T[]> panel(direct ? nullptr : new T[mc * C]);
      std::unique_ptr<T[]> tile(new T[mc * Ktot]);
      for (int64_t ci = cb; ci < ce; ++ci) {
        const int64_t m0 = ci * mc, rows = std::min(mc, M - m0);
        const T* A = x + m0 * C;
        if (!direct) {
          panel_nhwc(x, in, pg, m0, rows, panel.get());
          A = panel.get();
        }
        worker_gemm<T>(false, true, rows, Ktot, C, A, C, w, C, false, tile.get(), Ktot);
        for (const auto& s : segs) {
          for (int64_t i = 0; i < rows; ++i) {
            const int64_t m = m0 + i, n = m / PQ, pq = m % PQ;
            O* d = s.out + n * s.sn + (pq / pg.Q) * s.sp + (pq % pg.Q) * s.sq;
            const T* t = tile.get() + i * Ktot + s.off;
            for (int64_t k = 0; k < s.k; ++k) d[k * s.sk] = finish_value<T, O>(t[k], bias, s.off + k, s.relu);
          }
        }
      }
    });
    return;
  }
  // NCHW: per image, C[Ktot, pixels] = W[Ktot, C] * X[C, pixels].
  const int64_t mc = panel_rows(PQ, (direct ? 0 : C) + Ktot, sizeof(T));
  const int64_t per_img = ceil_div(PQ, mc), HW = in.H * in.W;
  at::parallel_for(0, in.N * per_img, 1, [&](int64_t cb, int64_t ce) {
    std::unique_ptr<T[]> panel(direct ? nullptr : new T[mc * C]);
    std::unique_ptr<T[]> tile(new T[mc * Ktot]);
    for (int64_t ci = cb; ci < ce; ++ci) {
      const int64_t n = ci / per_img, p0 = (ci % per_img) * mc, cnt = std::min(mc, PQ - p0);
      const T* B = x + n * C * HW + p0;
      int64_t ldb = HW;
      if (!direct) {
        panel_nchw(x, in, pg, n, p0, cnt, panel.get());
        B = panel.get();
        ldb = cnt;
      }
      worker_gemm<T>(false, false, Ktot, cnt, C, w, C, B, ldb, false, tile.get(), cnt);
      for (const auto& s : segs) {
        for (int64_t k = 0; k < s.k; ++k) {
          O* d = s.out + n * s.sn + k * s.sk;
          const T* t = tile.get() + (s.off + k) * cnt;
          for (int64_t j = 0; j < cnt; ++j) {
            const int64_t pq = p0 + j;
            d[(pq / pg.Q) * s.sp + (pq % pg.Q) * s.sq] = finish_value<T, O>(t[j], bias, s.off + k, s.relu);
          }
        }
      }
    }
  });
}

bool is_reduced(at::ScalarType t) { return t == at::kHalf || t == at::kBFloat16; }

void conv1x1_into(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                  at::IntArrayRef stride, const std::vector<std::string>& activations, at::IntArrayRef pool,
                  at::TensorList out) {
  const Conv1x1IntoGeom r = check_conv1x1_into("conv1x1_into", input, weight, bias, stride, activations, pool, out,
                                               "out");
  const ConvGeom& g = r.g;
  if (g.N == 0 || g.P == 0 || g.Q == 0) return;
  const MemoryFormat fmt = conv_memory_format(input, weight);
  const auto dtype = input.scalar_type();
  const auto cdt = is_reduced(dtype) ? at::kFloat : dtype;
  // The geometry of the input as stored, and the windows that build the GEMM operand from it.
  ConvGeom in = g;
  in.H = input.size(2);
  in.W = input.size(3);
  PoolGeom pg = r.pool;
  if (!r.has_pool) {
    pg = PoolGeom{g.N, g.C, in.H, in.W, 1, 1, g.sh, g.sw, 0, 0, 1, 1, g.P, g.Q};
  }
  const bool direct = !r.has_pool && g.sh == 1 && g.sw == 1;
  if (trace_enabled()) {
    trace_note("kernel", r.has_pool ? "max-pool panels + one GEMM, segments to their outputs"
                         : direct   ? "one GEMM on the input, segments to their outputs"
                                    : "strided panels + one GEMM, segments to their outputs");
    trace_note("layout", fmt == MemoryFormat::ChannelsLast ? "NHWC" : "NCHW");
    trace_note("segments", std::to_string(out.size()));
  }
  const at::Tensor x = input.to(cdt).contiguous(fmt);
  const at::Tensor w = weight.to(cdt).reshape({g.K, g.C}).contiguous();
  at::Tensor b;
  if (bias) b = bias->to(cdt).contiguous();
  AT_DISPATCH_FLOATING_TYPES(cdt, "fastcnn_conv1x1_into_cpu", [&] {
    using T = scalar_t;
    auto run = [&](auto o_tag) {
      using O = decltype(o_tag);
      std::vector<Segment<O>> segs;
      int64_t off = 0;
      for (size_t s = 0; s < out.size(); ++s) {
        const auto st = out[s].strides();
        segs.push_back({static_cast<O*>(out[s].data_ptr()), st[0], st[1], st[2], st[3], off, r.seg_k[s],
                        r.act[s] == Activation::ReLU});
        off += r.seg_k[s];
      }
      conv1x1_into_engine<T, O>(x.data_ptr<T>(), w.data_ptr<T>(), b.defined() ? b.data_ptr<T>() : nullptr, in, pg,
                                direct, g.K, segs, fmt);
    };
    if (dtype == at::kHalf) run(at::Half{});
    else if (dtype == at::kBFloat16) run(at::BFloat16{});
    else run(T{});
  });
}

void conv2d_into(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                 const std::optional<at::Tensor>& residual, at::IntArrayRef stride, at::IntArrayRef padding,
                 at::IntArrayRef dilation, int64_t groups, c10::string_view activation, const at::Tensor& out) {
  const Activation act = parse_activation("conv2d_into", activation);
  const ConvGeom g =
      check_conv2d_into("conv2d_into", input, weight, bias, residual, stride, padding, dilation, groups, out);
  if (out.numel() == 0) return;
  at::Tensor dst = out;
  if (conv_forward_into(input, weight, bias, residual, g, act, dst)) return;
  // oneDNN (float32), a reduced dtype or an engine layout other than the op's: computed as conv2d
  // computes it, then the activation pass writes the slice.
  const at::Tensor y = conv_forward_op(input, weight, bias, residual, g, Activation::None);
  if (act == Activation::ReLU) at::threshold_out(const_cast<at::Tensor&>(out), y, 0, 0);  // NaN kept
  else const_cast<at::Tensor&>(out).copy_(y);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastcnn, CPU, m) {
  m.impl(FASTCNN_IMPL_OP("cpu", "conv2d_into"), &conv2d_into);
  m.impl(FASTCNN_IMPL_OP("cpu", "conv1x1_into"), &conv1x1_into);
}

}  // namespace fastcnn::cpu
