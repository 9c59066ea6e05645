// fastcnn::_cpu_max_pool2d, forward and backward, NCHW and channels_last (arguments arrive validated).
//
// Semantics follow PyTorch exactly: a window's first maximum wins ties; NaN propagates (the value
// is NaN and the index the last NaN seen, as ATen's `val > max || isnan(val)`); indices are flat
// h*W + w positions in the input plane. Integer inputs (forward only: they have no gradient) start
// each window from the type's lowest value where floats start from -inf, as ATen. NCHW runs one
// plane per task; channels_last runs one output pixel per step with the channel loop innermost
// (contiguous, vectorisable).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "backend.h"
#include "checks.h"

namespace fastcnn::cpu {
namespace {

struct Window {
  int64_t h0, h1, w0, w1;  // first valid tap and exclusive end, per axis
};

inline Window window(const PoolGeom& g, int64_t p, int64_t q) {
  Window w;
  w.h0 = p * g.sh - g.ph;
  w.w0 = q * g.sw - g.pw;
  w.h1 = std::min(w.h0 + (g.kh - 1) * g.dh + 1, g.H);
  w.w1 = std::min(w.w0 + (g.kw - 1) * g.dw + 1, g.W);
  while (w.h0 < 0) w.h0 += g.dh;
  while (w.w0 < 0) w.w0 += g.dw;
  return w;
}

// A window's starting maximum: -inf, or the lowest value of an integer type.
template <typename T>
constexpr T lowest() {
  return std::numeric_limits<T>::has_infinity ? -std::numeric_limits<T>::infinity() : std::numeric_limits<T>::lowest();
}

// v replaces the running max m: larger, or NaN. Written without branches (v != v is isnan) so the
// channels_last loops vectorise; a branchy version ran 13x slower on random data.
template <typename T>
inline bool takes(T v, T m) {
  if constexpr (std::is_floating_point_v<T>)
    return (v > m) | (v != v);
  else
    return v > m;
}

// Argmax of one window of a plane with element stride `cs` (1 for NCHW, C for NHWC).
template <typename T>
inline int64_t argmax(const T* plane, int64_t cs, const PoolGeom& g, int64_t p, int64_t q) {
  const Window w = window(g, p, q);
  int64_t mi = w.h0 * g.W + w.w0;
  T m = lowest<T>();
  for (int64_t ih = w.h0; ih < w.h1; ih += g.dh)
    for (int64_t iw = w.w0; iw < w.w1; iw += g.dw) {
      const T v = plane[(ih * g.W + iw) * cs];
      if (takes(v, m)) {
        m = v;
        mi = ih * g.W + iw;
      }
    }
  return mi;
}

// One tap of an output row: columns [q0, q1) read r[q * SW] (SW the column stride when known at
// compile time, else sw). int32 positions keep value and index one width, so the selects vectorise.
template <typename T, int SW>
inline void tap_row(const T* __restrict r, T* __restrict m, int32_t* __restrict mi, int64_t q0, int64_t q1,
                    int64_t sw, int32_t base) {
  const int64_t step = SW > 0 ? SW : sw;
  for (int64_t q = q0; q < q1; ++q) {
    const T v = r[q * step];
    const bool t = takes(v, m[q]);
    m[q] = t ? v : m[q];
    mi[q] = t ? base + static_cast<int32_t>(q * step) : mi[q];
  }
}

// NCHW: one output row at a time, tap by tap, each tap a loop over the row's output columns. Taps
// are visited in the window's row-then-column order, as a per-window loop would, so ties and NaN
// resolve identically. (Per-window loops ran GoogLeNet's 3x3 pools at ~1.0x PyTorch's time.)
// Planes of 2^31 elements or more take the per-window path (64-bit positions).
template <typename T>
void forward_nchw(const T* x, const PoolGeom& g, T* out, int64_t* idx) {
  const int64_t HW = g.H * g.W, PQ = g.P * g.Q;
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, PQ * g.kh * g.kw));
  if (HW >= (int64_t(1) << 31)) {
    at::parallel_for(0, g.N * g.C, grain, [&](int64_t b, int64_t e) {
      for (int64_t plane = b; plane < e; ++plane)
        for (int64_t p = 0; p < g.P; ++p)
          for (int64_t q = 0; q < g.Q; ++q) {
            const int64_t i = argmax(x + plane * HW, 1, g, p, q);
            const Window w = window(g, p, q);
            out[plane * PQ + p * g.Q + q] =
                w.h0 < w.h1 && w.w0 < w.w1 ? x[plane * HW + i] : lowest<T>();
            if (idx) idx[plane * PQ + p * g.Q + q] = i;
          }
    });
    return;
  }
  // per tap column s: the output columns whose tap lies inside the row, [qlo, qhi)
  std::vector<int64_t> qlo(g.kw), qhi(g.kw);
  for (int64_t s = 0; s < g.kw; ++s) {
    const int64_t off = s * g.dw - g.pw;
    qlo[s] = off >= 0 ? 0 : (-off + g.sw - 1) / g.sw;
    qhi[s] = off <= g.W - 1 ? (g.W - 1 - off) / g.sw + 1 : 0;
    qlo[s] = std::min(qlo[s], g.Q);
    qhi[s] = std::clamp(qhi[s], qlo[s], g.Q);
  }
  at::parallel_for(0, g.N * g.C, grain, [&](int64_t b, int64_t e) {
    std::vector<int32_t> mi(g.Q);
    for (int64_t plane = b; plane < e; ++plane) {
      const T* xp = x + plane * HW;
      for (int64_t p = 0; p < g.P; ++p) {
        T* m = out + plane * PQ + p * g.Q;
        const Window w = window(g, p, 0);
        for (int64_t q = 0; q < g.Q; ++q) {
          m[q] = lowest<T>();
          mi[q] = static_cast<int32_t>(w.h0 * g.W + window(g, p, q).w0);
        }
        for (int64_t ih = w.h0; ih < w.h1; ih += g.dh)
          for (int64_t s = 0; s < g.kw; ++s) {
            const int64_t off = s * g.dw - g.pw;
            const T* r = xp + ih * g.W + off;
            const auto base = static_cast<int32_t>(ih * g.W + off);
            if (g.sw == 1)
              tap_row<T, 1>(r, m, mi.data(), qlo[s], qhi[s], 1, base);
            else if (g.sw == 2)
              tap_row<T, 2>(r, m, mi.data(), qlo[s], qhi[s], 2, base);
            else
              tap_row<T, 0>(r, m, mi.data(), qlo[s], qhi[s], g.sw, base);
          }
        if (idx) std::copy(mi.begin(), mi.end(), idx + plane * PQ + p * g.Q);
      }
    }
  });
}

// One window tap over all channels: the running max (and argmax) rows update where the tap is
// larger or NaN. Written as restrict-qualified selects with a 32-bit index so that value and index
// have one width and g++ vectorises the loop; with a branch, int64 indices or possible aliasing it
// stayed scalar and the channels_last forward ran 13x slower.
template <typename T>
void tap_max(const T* __restrict x, T* __restrict m, int64_t C) {
  for (int64_t c = 0; c < C; ++c) m[c] = takes(x[c], m[c]) ? x[c] : m[c];
}

template <typename T>
void tap_argmax(const T* __restrict x, T* __restrict m, int32_t* __restrict mi, int32_t at, int64_t C) {
  for (int64_t c = 0; c < C; ++c) {
    const T v = x[c];
    const bool t = takes(v, m[c]);
    m[c] = t ? v : m[c];
    mi[c] = t ? at : mi[c];
  }
}

template <typename T>
void forward_nhwc(const T* x, const PoolGeom& g, T* out, int64_t* idx) {
  const int64_t C = g.C, PQ = g.P * g.Q;
  const bool narrow = g.H * g.W < (int64_t(1) << 31);  // int32 positions; else the scalar path below
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, C * g.kh * g.kw));
  at::parallel_for(0, g.N * PQ, grain, [&](int64_t b, int64_t e) {
    std::vector<int32_t> mi(idx ? C : 0);
    for (int64_t m = b; m < e; ++m) {
      const int64_t n = m / PQ, p = (m % PQ) / g.Q, q = m % g.Q;
      const Window w = window(g, p, q);
      T* o = out + m * C;
      std::fill(o, o + C, lowest<T>());
      const int64_t first = w.h0 * g.W + w.w0;
      if (idx && !narrow) {
        for (int64_t c = 0; c < C; ++c) idx[m * C + c] = argmax(x + n * g.H * g.W * C + c, C, g, p, q);
        for (int64_t ih = w.h0; ih < w.h1; ih += g.dh)
          for (int64_t iw = w.w0; iw < w.w1; iw += g.dw) tap_max(x + ((n * g.H + ih) * g.W + iw) * C, o, C);
        continue;
      }
      if (idx) std::fill(mi.begin(), mi.end(), static_cast<int32_t>(first));
      for (int64_t ih = w.h0; ih < w.h1; ih += g.dh)
        for (int64_t iw = w.w0; iw < w.w1; iw += g.dw) {
          const T* xr = x + ((n * g.H + ih) * g.W + iw) * C;
          if (idx)
            tap_argmax(xr, o, mi.data(), static_cast<int32_t>(ih * g.W + iw), C);
          else
            tap_max(xr, o, C);
        }
      if (idx) std::copy(mi.begin(), mi.end(), idx + m * C);
    }
  });
}

// Windows that hold no input element (possible only with dilation: every tap in the padding or
// past the end). Their output is -inf with PyTorch's index, which lies outside the window, so
// their gradient must go nowhere. Returns an empty vector when there are none (the usual case).
std::vector<uint8_t> empty_windows(const PoolGeom& g) {
  std::vector<uint8_t> e(g.P * g.Q, 0);
  bool any = false;
  for (int64_t p = 0; p < g.P; ++p)
    for (int64_t q = 0; q < g.Q; ++q) {
      const Window w = window(g, p, q);
      e[p * g.Q + q] = w.h0 >= w.h1 || w.w0 >= w.w1;
      any |= e[p * g.Q + q] != 0;
    }
  if (!any) e.clear();
  return e;
}

// gi is zeroed. idx may be null: then the argmax is recomputed from x.
template <typename T>
void backward_nchw(const T* go, const int64_t* idx, const T* x, const PoolGeom& g, T* gi) {
  const int64_t HW = g.H * g.W, PQ = g.P * g.Q;
  const std::vector<uint8_t> empty = empty_windows(g);
  const uint8_t* skip = empty.empty() ? nullptr : empty.data();
  at::parallel_for(0, g.N * g.C, std::max<int64_t>(1, 32768 / std::max<int64_t>(1, PQ)), [&](int64_t b, int64_t e) {
    for (int64_t plane = b; plane < e; ++plane) {
      const T* gp = go + plane * PQ;
      T* dp = gi + plane * HW;
      if (idx && !skip) {  // the usual case, kept free of per-element tests but the bound
        const int64_t* __restrict ip = idx + plane * PQ;
        for (int64_t pq = 0; pq < PQ; ++pq) {
          const int64_t i = ip[pq];
          if (static_cast<uint64_t>(i) < static_cast<uint64_t>(HW)) dp[i] += gp[pq];
        }
        continue;
      }
      for (int64_t pq = 0; pq < PQ; ++pq) {
        if (skip && skip[pq]) continue;
        const int64_t i = idx ? idx[plane * PQ + pq] : argmax(x + plane * HW, 1, g, pq / g.Q, pq % g.Q);
        if (i >= 0 && i < HW) dp[i] += gp[pq];
      }
    }
  });
}

// Channels-last: tasks are (image, block of channels), so no two tasks write the same element.
// Channels are split only as far as the thread count needs: whole rows keep the reads of
// grad_output and indices sequential.
template <typename T>
void backward_nhwc(const T* go, const int64_t* idx, const T* x, const PoolGeom& g, T* gi) {
  const int64_t C = g.C, HW = g.H * g.W, PQ = g.P * g.Q;
  const int64_t nt = at::get_num_threads();
  const int64_t nblk = std::min<int64_t>(C, std::max<int64_t>(1, (nt + g.N - 1) / std::max<int64_t>(g.N, 1)));
  const int64_t CB = (C + nblk - 1) / nblk;
  const std::vector<uint8_t> empty = empty_windows(g);
  const uint8_t* skip = empty.empty() ? nullptr : empty.data();
  at::parallel_for(0, g.N * nblk, 1, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const int64_t n = t / nblk, c0 = (t % nblk) * CB, c1 = std::min(C, c0 + CB);
      T* dimg = gi + n * HW * C;
      for (int64_t pq = 0; pq < PQ; ++pq) {
        if (skip && skip[pq]) continue;
        const int64_t off = (n * PQ + pq) * C;
        for (int64_t c = c0; c < c1; ++c) {
          const int64_t i = idx ? idx[off + c] : argmax(x + n * HW * C + c, C, g, pq / g.Q, pq % g.Q);
          if (i >= 0 && i < HW) dimg[i * C + c] += go[off + c];
        }
      }
    }
  });
}

bool is_reduced(at::ScalarType t) { return t == at::kHalf || t == at::kBFloat16; }

std::tuple<at::Tensor, at::Tensor> max_pool2d(const at::Tensor& input, at::IntArrayRef kernel_size,
                                              at::IntArrayRef stride, at::IntArrayRef padding,
                                              at::IntArrayRef dilation, bool ceil_mode, bool with_indices) {
  const PoolGeom g = check_max_pool2d("max_pool2d", input, kernel_size, stride, padding, dilation, ceil_mode);
  const auto fmt = input.suggest_memory_format();
  const auto dtype = input.scalar_type();
  const auto cdt = is_reduced(dtype) ? at::kFloat : dtype;  // float16/bfloat16 compared in float32
  const at::Tensor x = input.to(cdt).contiguous(fmt);
  at::Tensor out = new_output({g.N, g.C, g.P, g.Q}, x.options().memory_format(fmt));
  at::Tensor idx = with_indices ? new_output({g.N, g.C, g.P, g.Q}, x.options().dtype(at::kLong).memory_format(fmt))
                                : at::empty({0}, x.options().dtype(at::kLong));
  if (out.numel() > 0) {
    AT_DISPATCH_ALL_TYPES(cdt, "fastcnn_max_pool2d_cpu", [&] {  // floating and the integers (checks.h)
      int64_t* ip = with_indices ? idx.data_ptr<int64_t>() : nullptr;
      if (fmt == at::MemoryFormat::ChannelsLast)
        forward_nhwc<scalar_t>(x.data_ptr<scalar_t>(), g, out.data_ptr<scalar_t>(), ip);
      else
        forward_nchw<scalar_t>(x.data_ptr<scalar_t>(), g, out.data_ptr<scalar_t>(), ip);
    });
  }
  return {cdt == dtype ? out : out.to(dtype), idx};
}

at::Tensor max_pool2d_backward(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& indices,
                               at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                               at::IntArrayRef dilation, bool ceil_mode) {
  const PoolGeom g = check_max_pool2d_backward("max_pool2d_backward", grad_output, input, indices, kernel_size,
                                               stride, padding, dilation, ceil_mode);
  const bool have_idx = indices.numel() > 0;
  const auto fmt = input.suggest_memory_format();
  const auto dtype = input.scalar_type();
  const auto cdt = is_reduced(dtype) ? at::kFloat : dtype;
  const at::Tensor go = grad_output.to(cdt).contiguous(fmt);
  const at::Tensor idx = have_idx ? indices.contiguous(fmt) : indices;
  const at::Tensor x = have_idx ? input : input.to(cdt).contiguous(fmt);
  // at::zeros drops TensorOptions' memory format: allocate, then zero.
  at::Tensor gi = at::empty({g.N, g.C, g.H, g.W}, go.options().memory_format(fmt)).zero_();
  if (go.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES(cdt, "fastcnn_max_pool2d_backward_cpu", [&] {
      const int64_t* ip = have_idx ? idx.data_ptr<int64_t>() : nullptr;
      const scalar_t* xp = have_idx ? nullptr : x.data_ptr<scalar_t>();
      if (fmt == at::MemoryFormat::ChannelsLast)
        backward_nhwc<scalar_t>(go.data_ptr<scalar_t>(), ip, xp, g, gi.data_ptr<scalar_t>());
      else
        backward_nchw<scalar_t>(go.data_ptr<scalar_t>(), ip, xp, g, gi.data_ptr<scalar_t>());
    });
  }
  return cdt == dtype ? gi : gi.to(dtype);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastcnn, CPU, m) {
  m.impl(FASTCNN_IMPL_OP("cpu", "max_pool2d"), &max_pool2d);
  m.impl(FASTCNN_IMPL_OP("cpu", "max_pool2d_backward"), &max_pool2d_backward);
}

}  // namespace fastcnn::cpu
