// The CUTLASS SM90 kernels of fastcnn._C_sm90 and their C entry points (sm90_table.h), as templates:
// each translation unit (fprop_bf16.cu, ...) instantiates exactly one kernel configuration, so a TU
// costs ~60 CPU-s and 2-3.5 GB of compiler memory and the set builds in parallel.
//
// Kernels (CUTLASS 4.2, pip nvidia-cutlass==4.2.0.0; see ../../../../shared/design/hopper.md):
//   fprop, dgrad : KernelImplicitTmaWarpSpecializedSm90 (the only conv schedule 4.2 has: not
//                  persistent), TMA im2col loads, wgmma, TMA-store epilogue;
//   wgrad        : the same schedule, N mode nested, NoSmemWarpSpecialized epilogue into fp32;
//   1x1 GEMM     : KernelTmaWarpSpecializedCooperative (persistent, two consumer warpgroups).
// Cluster 1x1x1 everywhere: a plain <<<>>> launch (graph capturable); 2x1 multicast clusters are a
// tuning step for when a GPU can measure them.
//
// The fused epilogue, one EVT for every flag combination (run-time choices, no TU per flag):
//   D = max(beta * C + (acc + bias[k]), lower)
//   bias : Sm90RowBroadcast, a null pointer reads null_default = 0 (no load);
//   C    : the residual; beta = 1 with a residual, 0 without, and beta == 0 skips the C load at run
//          time (the homogeneous_multiply_add specialisation of Sm90TreeVisitor); C then points at
//          D, so the (unused) TMA descriptor is valid;
//   lower: 0 for ReLU, -inf for none, through a NaN-propagating maximum (max.NaN.f32), so
//          relu(NaN) = NaN as in torch. It costs one FMNMX per output element in the epilogue
//          (see the SASS counts in bench/results/sm90_sass.csv), against a main loop of
//          C*R*S/64 k-tiles of wgmma per tile: nothing that a second TU per flag would buy back.
//
// Host side: building the CUTLASS Params encodes the TMA descriptors (host-only driver calls, no
// GPU work); they embed the data pointers, so Params are cached per (device, problem, pointers) in a
// small table: training loops reuse the caching allocator's blocks, so calls after the first hit.
// No host synchronisation anywhere; launches go to the caller's stream.
#pragma once

#include <cuda_runtime.h>

#include <array>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <mutex>

#include "cutlass/cutlass.h"
#include "cutlass/kernel_hardware_info.hpp"
#include "cute/tensor.hpp"
#include "cutlass/conv/convolution.h"
#include "cutlass/conv/convnd_problem_shape.hpp"
#include "cutlass/conv/dispatch_policy.hpp"
#include "cutlass/conv/collective/collective_builder.hpp"
#include "cutlass/conv/kernel/conv_universal.hpp"
#include "cutlass/device_kernel.h"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/epilogue/fusion/operations.hpp"
#include "cutlass/epilogue/fusion/sm90_callbacks_tma_warpspecialized.hpp"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/gemm/kernel/gemm_universal.hpp"
#include "cutlass/util/packed_stride.hpp"

#include "cuda/sm90/sm90_common.cuh"

#if !defined(NDEBUG)
// Device asserts put calls into the wgmma pipeline: ptxas serialises every wgmma (warning C7510).
#error "csrc/cuda/sm90 must be compiled with -DNDEBUG"
#endif

namespace fastcnn {
namespace sm90 {

using namespace cute;

// ---------------------------------------------------------------------------------------------
// Element types

template <int kDtype>
struct DtypeOf;
template <>
struct DtypeOf<FASTCNN_SM90_BF16> {
  using type = cutlass::bfloat16_t;
};
template <>
struct DtypeOf<FASTCNN_SM90_FP16> {
  using type = cutlass::half_t;
};
template <>
struct DtypeOf<FASTCNN_SM90_TF32> {
  using type = float;  // fp32 storage; the builders map float operands to tf32 wgmma
};

// ---------------------------------------------------------------------------------------------
// The fused epilogue (see the file comment). Element = storage type of bias, C and D.

template <class TileShape, class Element>
using FusedEVT = cutlass::epilogue::fusion::Sm90EVT<
    cutlass::epilogue::fusion::Sm90Compute<cutlass::maximum_with_nan_propagation, Element, float,
                                           cutlass::FloatRoundStyle::round_to_nearest>,  // max(., lower)
    cutlass::epilogue::fusion::Sm90EVT<
        cutlass::epilogue::fusion::Sm90Compute<cutlass::homogeneous_multiply_add, float, float,
                                               cutlass::FloatRoundStyle::round_to_nearest>,  // beta*C + Z
        cutlass::epilogue::fusion::Sm90ScalarBroadcast<float>,                          // beta
        cutlass::epilogue::fusion::Sm90SrcFetch<Element>,                               // C = residual
        cutlass::epilogue::fusion::Sm90EVT<
            cutlass::epilogue::fusion::Sm90Compute<cutlass::plus, float, float,
                                                   cutlass::FloatRoundStyle::round_to_nearest>,  // acc + bias
            cutlass::epilogue::fusion::Sm90AccFetch,
            cutlass::epilogue::fusion::Sm90RowBroadcast<0, TileShape, Element, float, Stride<_0, _1, int64_t>,
                                                        128 / cutlass::sizeof_bits<Element>::value>>>,
    cutlass::epilogue::fusion::Sm90ScalarBroadcast<float>>;  // lower

template <class EVT, class Element>
typename EVT::Arguments fused_evt_args(const void* bias, bool residual, bool relu) {
  const float beta = residual ? 1.f : 0.f;
  const float lower = relu ? 0.f : -INFINITY;
  return typename EVT::Arguments{
      {                                                                    // beta * C + Z
       {{beta}},                                                           //   beta
       {},                                                                 //   C
       {{}, {static_cast<const Element*>(bias), Element(0), {}}, {}},      //   acc + bias
       {}},
      {{lower}},  // lower
      {}};
}

// ---------------------------------------------------------------------------------------------
// Configurations (one per TU)

using Cluster1 = Shape<_1, _1, _1>;

template <class Element, class TileShape>
struct FpropConfig {
  static constexpr int kAlign = 128 / cutlass::sizeof_bits<Element>::value;
  using EVT = FusedEVT<TileShape, Element>;
  using Epilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, Cluster1,
      cutlass::epilogue::collective::EpilogueTileAuto, float, float, Element, cutlass::layout::TensorNHWC, kAlign,
      Element, cutlass::layout::TensorNHWC, kAlign, cutlass::epilogue::TmaWarpSpecialized, EVT>::CollectiveOp;
  using Mainloop = typename cutlass::conv::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, cutlass::conv::Operator::kFprop, Element,
      cutlass::layout::TensorNHWC, kAlign, Element, cutlass::layout::TensorNHWC, kAlign, float, TileShape, Cluster1,
      cutlass::conv::collective::StageCountAutoCarveout<static_cast<int>(sizeof(typename Epilogue::SharedStorage))>,
      cutlass::conv::KernelImplicitTmaWarpSpecializedSm90>::CollectiveOp;
  using Problem = cutlass::conv::ConvProblemShape<cutlass::conv::Operator::kFprop, 2>;
  using Kernel = cutlass::conv::kernel::ConvUniversal<Problem, Mainloop, Epilogue>;
};

template <class Element, class TileShape>
struct DgradConfig {
  static constexpr int kAlign = 128 / cutlass::sizeof_bits<Element>::value;
  // No source (void C) and no fusion: D = acc.
  using Epilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, Cluster1,
      cutlass::epilogue::collective::EpilogueTileAuto, float, float, void, cutlass::layout::TensorNHWC, kAlign,
      Element, cutlass::layout::TensorNHWC, kAlign, cutlass::epilogue::TmaWarpSpecialized>::CollectiveOp;
  using Mainloop = typename cutlass::conv::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, cutlass::conv::Operator::kDgrad, Element,
      cutlass::layout::TensorNHWC, kAlign, Element, cutlass::layout::TensorNHWC, kAlign, float, TileShape, Cluster1,
      cutlass::conv::collective::StageCountAutoCarveout<static_cast<int>(sizeof(typename Epilogue::SharedStorage))>,
      cutlass::conv::KernelImplicitTmaWarpSpecializedSm90>::CollectiveOp;
  using Problem = cutlass::conv::ConvProblemShape<cutlass::conv::Operator::kDgrad, 2>;
  using Kernel = cutlass::conv::kernel::ConvUniversal<Problem, Mainloop, Epilogue>;
};

// wgrad: M = K (output channels), N = (C, S, R) nested (the im2col box runs over channels for one
// filter offset, so the N tile spans C), K = the pixels. fp32 D into the workspace.
template <class Element, class TileShape>
struct WgradConfig {
  static constexpr int kAlign = 128 / cutlass::sizeof_bits<Element>::value;
  using Epilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, Cluster1,
      cutlass::epilogue::collective::EpilogueTileAuto, float, float, float, cutlass::layout::TensorKCSR, 4, float,
      cutlass::layout::TensorKCSR, 4, cutlass::epilogue::NoSmemWarpSpecialized>::CollectiveOp;
  using Mainloop = typename cutlass::conv::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, cutlass::conv::Operator::kWgrad, Element,
      cutlass::layout::TensorNHWC, kAlign, Element, cutlass::layout::TensorNHWC, kAlign, float, TileShape, Cluster1,
      cutlass::conv::collective::StageCountAutoCarveout<static_cast<int>(sizeof(typename Epilogue::SharedStorage))>,
      cutlass::conv::KernelImplicitTmaWarpSpecializedSm90>::CollectiveOp;
  using Problem = cutlass::conv::ConvProblemShape<cutlass::conv::Operator::kWgrad, 2>;
  using Kernel = cutlass::conv::kernel::ConvUniversal<Problem, Mainloop, Epilogue>;
};

// 1x1 conv as a GEMM: A = x [M][K] row-major, B = w [N][K] (K-major), C/D [M][N] row-major.
template <class Element, class TileShape>
struct GemmConfig {
  static constexpr int kAlign = 128 / cutlass::sizeof_bits<Element>::value;
  using EVT = FusedEVT<TileShape, Element>;
  using Epilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, Cluster1,
      cutlass::epilogue::collective::EpilogueTileAuto, float, float, Element, cutlass::layout::RowMajor, kAlign,
      Element, cutlass::layout::RowMajor, kAlign, cutlass::epilogue::TmaWarpSpecializedCooperative,
      EVT>::CollectiveOp;
  using Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, Element, cutlass::layout::RowMajor, kAlign, Element,
      cutlass::layout::ColumnMajor, kAlign, float, TileShape, Cluster1,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(sizeof(typename Epilogue::SharedStorage))>,
      cutlass::gemm::KernelTmaWarpSpecializedCooperative>::CollectiveOp;
  using Kernel = cutlass::gemm::kernel::GemmUniversal<Shape<int, int, int, int>, Mainloop, Epilogue,
                                                      cutlass::gemm::PersistentScheduler>;
};

// ---------------------------------------------------------------------------------------------
// fprop

template <class Cfg>
struct Fprop {
  using Kernel = typename Cfg::Kernel;
  using Element = typename Kernel::ElementA;
  using Params = typename Kernel::Params;
  static constexpr int64_t kElem = sizeof(Element);

  static bool args_ok(const fastcnn_sm90_fprop_args& a) {
    const auto& s = a.shape;
    if (!shape_ok(s) || s.C % Cfg::kAlign != 0 || s.K % Cfg::kAlign != 0) return false;
    if (!tma_nhwc_ok(a.x, a.x_stride, kElem) || !tma_nhwc_ok(a.y, a.y_stride, kElem)) return false;
    if (!a.w || !aligned16(a.w) || (a.bias && !aligned16(a.bias))) return false;
    if (a.res && !tma_nhwc_ok(a.res, a.res_stride, kElem)) return false;
    return true;
  }

  static typename Kernel::Arguments arguments(const fastcnn_sm90_fprop_args& a) {
    const int64_t* c_st = a.res ? a.res_stride : a.y_stride;
    const void* c_ptr = a.res ? a.res : a.y;  // beta = 0 without a residual: never read
    typename Kernel::EpilogueArguments epi{
        fused_evt_args<typename Cfg::EVT, Element>(a.bias, a.res != nullptr, a.relu != 0),
        static_cast<const Element*>(c_ptr), nhwc_epilogue_stride<typename Kernel::StrideC>(c_st),
        static_cast<Element*>(a.y), nhwc_epilogue_stride<typename Kernel::StrideD>(a.y_stride)};
    typename Kernel::MainloopArguments main{static_cast<const Element*>(a.x), static_cast<const Element*>(a.w)};
    return typename Kernel::Arguments{make_problem<cutlass::conv::Operator::kFprop>(a.shape, a.x_stride, a.y_stride),
                                      main, epi};
  }

  static int32_t can_implement(const fastcnn_sm90_fprop_args* a) {
    if (!a || !args_ok(*a)) return FASTCNN_SM90_NOT_IMPLEMENTED;
    return Kernel::can_implement(arguments(*a)) ? FASTCNN_SM90_OK : FASTCNN_SM90_NOT_IMPLEMENTED;
  }

  static int32_t workspace_bytes(const fastcnn_sm90_fprop_args* a, size_t* bytes) {
    if (!a || !bytes) return FASTCNN_SM90_BAD_ARGS;
    *bytes = 0;  // the non-persistent conv kernel needs none
    return FASTCNN_SM90_OK;
  }

  static int32_t run(const fastcnn_sm90_fprop_args* a, void*, size_t, cudaStream_t stream) {
    if (!a || !args_ok(*a)) return FASTCNN_SM90_BAD_ARGS;
    static ParamsCache<Params, 40> cache;
    typename ParamsCache<Params, 40>::Key key{};
    KeyWriter<40> kw{key};
    kw.put(current_device());
    kw.put(a->shape);
    for (const void* p : {a->x, a->w, a->bias, a->res, static_cast<const void*>(a->y)}) kw.put(p);
    for (int j = 0; j < 3; ++j) {
      kw.put(a->x_stride[j]);
      kw.put(a->res ? a->res_stride[j] : 0);
      kw.put(a->y_stride[j]);
    }
    kw.put(a->relu);
    if (!kw.ok()) return FASTCNN_SM90_BAD_ARGS;
    Params params;
    if (!cache.get(key, params, [&](Params& p) {
          const auto args = arguments(*a);
          if (!Kernel::can_implement(args)) return false;
          p = Kernel::to_underlying_arguments(args, nullptr);
          return true;
        }))
      return FASTCNN_SM90_NOT_IMPLEMENTED;
    const int smem = Kernel::SharedStorageSize;
    static std::atomic<uint64_t> smem_set{0};
    if (!ensure_smem(cutlass::device_kernel<Kernel>, smem, smem_set)) return FASTCNN_SM90_CUDA_ERROR;
    cutlass::device_kernel<Kernel><<<Kernel::get_grid_shape(params), Kernel::get_block_shape(), smem, stream>>>(params);
    return launch_status();
  }
};

// ---------------------------------------------------------------------------------------------
// dgrad (unit traversal stride: CUTLASS 4.2's SM90 dgrad kernel ignores the stride phases)

template <class Cfg>
struct Dgrad {
  using Kernel = typename Cfg::Kernel;
  using Element = typename Kernel::ElementA;
  using Params = typename Kernel::Params;
  static constexpr int64_t kElem = sizeof(Element);

  static bool args_ok(const fastcnn_sm90_dgrad_args& a) {
    const auto& s = a.shape;
    if (!shape_ok(s) || s.C % Cfg::kAlign != 0 || s.K % Cfg::kAlign != 0) return false;
    if (s.stride_h != 1 || s.stride_w != 1) return false;
    if (!tma_nhwc_ok(a.dy, a.dy_stride, kElem) || !tma_nhwc_ok(a.dx, a.dx_stride, kElem)) return false;
    return a.w && aligned16(a.w);
  }

  static typename Kernel::Arguments arguments(const fastcnn_sm90_dgrad_args& a) {
    typename Kernel::EpilogueArguments epi{{}, nullptr, typename Kernel::StrideC{}, static_cast<Element*>(a.dx),
                                           nhwc_epilogue_stride<typename Kernel::StrideD>(a.dx_stride)};
    epi.thread.alpha = 1.f;
    epi.thread.beta = 0.f;
    typename Kernel::MainloopArguments main{static_cast<const Element*>(a.dy), static_cast<const Element*>(a.w)};
    return typename Kernel::Arguments{
        make_problem<cutlass::conv::Operator::kDgrad>(a.shape, a.dx_stride, a.dy_stride), main, epi};
  }

  static int32_t can_implement(const fastcnn_sm90_dgrad_args* a) {
    if (!a || !args_ok(*a)) return FASTCNN_SM90_NOT_IMPLEMENTED;
    return Kernel::can_implement(arguments(*a)) ? FASTCNN_SM90_OK : FASTCNN_SM90_NOT_IMPLEMENTED;
  }

  static int32_t workspace_bytes(const fastcnn_sm90_dgrad_args* a, size_t* bytes) {
    if (!a || !bytes) return FASTCNN_SM90_BAD_ARGS;
    *bytes = 0;
    return FASTCNN_SM90_OK;
  }

  static int32_t run(const fastcnn_sm90_dgrad_args* a, void*, size_t, cudaStream_t stream) {
    if (!a || !args_ok(*a)) return FASTCNN_SM90_BAD_ARGS;
    static ParamsCache<Params, 32> cache;
    typename ParamsCache<Params, 32>::Key key{};
    KeyWriter<32> kw{key};
    kw.put(current_device());
    kw.put(a->shape);
    kw.put(a->dy);
    kw.put(a->w);
    kw.put(a->dx);
    for (int j = 0; j < 3; ++j) {
      kw.put(a->dy_stride[j]);
      kw.put(a->dx_stride[j]);
    }
    if (!kw.ok()) return FASTCNN_SM90_BAD_ARGS;
    Params params;
    if (!cache.get(key, params, [&](Params& p) {
          const auto args = arguments(*a);
          if (!Kernel::can_implement(args)) return false;
          p = Kernel::to_underlying_arguments(args, nullptr);
          return true;
        }))
      return FASTCNN_SM90_NOT_IMPLEMENTED;
    const int smem = Kernel::SharedStorageSize;
    static std::atomic<uint64_t> smem_set{0};
    if (!ensure_smem(cutlass::device_kernel<Kernel>, smem, smem_set)) return FASTCNN_SM90_CUDA_ERROR;
    cutlass::device_kernel<Kernel><<<Kernel::get_grid_shape(params), Kernel::get_block_shape(), smem, stream>>>(params);
    return launch_status();
  }
};

// ---------------------------------------------------------------------------------------------
// wgrad, split over the batch (CUTLASS 4.2 has no split-K for SM90 conv; K = C = 64 3x3 is 5 CTAs
// on 132 SMs without it). Chunk i is an ordinary CUTLASS wgrad of its images into its own fp32
// slice of the workspace; all chunks run in ONE launch: blockIdx.z picks the chunk's Params (the
// kernel itself reads only blockIdx.x/y for conv problems). Then a fixed-order reduction.

template <class Kernel, int kMaxSplits>
struct SplitParams {
  typename Kernel::Params p[kMaxSplits];
};

template <class Kernel, int kMaxSplits>
__global__ void __launch_bounds__(Kernel::MaxThreadsPerBlock, Kernel::MinBlocksPerMultiprocessor)
    wgrad_split_kernel(CUTLASS_GRID_CONSTANT SplitParams<Kernel, kMaxSplits> const sp) {
  extern __shared__ char smem[];
  Kernel op;
  op(sp.p[blockIdx.z], smem);
}

// dw[k, c, r, s] = sum_i ws[i][k][r][s][c], i = 0, 1, ... in order (deterministic).
template <class Out>
__global__ void __launch_bounds__(256) wgrad_reduce_kernel(const float* __restrict__ ws, int splits, int64_t slice,
                                                           int64_t K, int64_t R, int64_t S, int64_t C, Out* dw,
                                                           int64_t sk, int64_t sc, int64_t sr, int64_t ss) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < slice; e += int64_t(gridDim.x) * blockDim.x) {
    float acc = 0.f;
    for (int i = 0; i < splits; ++i) acc += ws[i * slice + e];
    const int64_t c = e % C, s = (e / C) % S, r = (e / (C * S)) % R, k = e / (C * S * R);
    dw[k * sk + c * sc + r * sr + s * ss] = static_cast<Out>(acc);
  }
}

template <class Cfg>
struct Wgrad {
  using Kernel = typename Cfg::Kernel;
  using Element = typename Kernel::ElementA;
  using Params = typename Kernel::Params;
  static constexpr int64_t kElem = sizeof(Element);
  // Large kernel parameters (CUDA >= 12.1, sm_70+): up to 32764 bytes.
  static constexpr int kMaxSplits = (32000 / int(sizeof(Params))) < 32 ? (32000 / int(sizeof(Params))) : 32;
  static_assert(kMaxSplits >= 4, "wgrad Params too large for a useful split");
  using Split = SplitParams<Kernel, kMaxSplits>;
  // At least this many reduction pixels per chunk: a chunk shorter than ~16 k-tiles of 64 spends
  // more on its prologue/epilogue than on wgmma.
  static constexpr int64_t kMinPixelsPerSplit = 1024;

  static int64_t tiles(const fastcnn_sm90_conv& s) {
    constexpr int64_t tm = size<0>(typename Cfg::Kernel::TileShape{});
    constexpr int64_t tn = size<1>(typename Cfg::Kernel::TileShape{});
    return ((s.K + tm - 1) / tm) * ((s.C + tn - 1) / tn) * s.R * s.S;
  }

  // Images per chunk and chunk count: about one wave of CTAs, bounded by the batch, the Params
  // array and the minimum depth. A function of the shape and the SM count only: deterministic.
  static void plan(const fastcnn_sm90_wgrad_args& a, int64_t& per, int64_t& splits) {
    const auto& s = a.shape;
    const int64_t t = tiles(s);
    int64_t want = (int64_t(a.num_sms > 0 ? a.num_sms : 132) + t - 1) / t;
    want = std::min<int64_t>(want, std::max<int64_t>(1, s.N * s.P * s.Q / kMinPixelsPerSplit));
    want = std::max<int64_t>(1, std::min<int64_t>({want, s.N, int64_t(kMaxSplits)}));
    per = (s.N + want - 1) / want;
    splits = (s.N + per - 1) / per;
  }

  static int64_t slice_elems(const fastcnn_sm90_conv& s) { return s.K * s.R * s.S * s.C; }

  static bool args_ok(const fastcnn_sm90_wgrad_args& a) {
    const auto& s = a.shape;
    if (!shape_ok(s) || s.C % Cfg::kAlign != 0 || s.K % Cfg::kAlign != 0) return false;
    if (!a.dy || !a.x || !a.dw || !aligned16(a.dy) || !aligned16(a.x)) return false;
    if (s.N * s.H * s.W * s.C * kElem >= kTmaMaxStrideBytes || s.N * s.P * s.Q * s.K * kElem >= kTmaMaxStrideBytes)
      return false;
    return true;
  }

  static typename Kernel::Arguments arguments(const fastcnn_sm90_conv& s_all, int64_t n0, int64_t n, const void* dy,
                                              const void* x, float* ws) {
    fastcnn_sm90_conv s = s_all;
    s.N = n;
    const int64_t x_st[3] = {s.H * s.W * s.C, s.W * s.C, s.C};
    const int64_t dy_st[3] = {s.P * s.Q * s.K, s.Q * s.K, s.K};
    auto problem = make_problem<cutlass::conv::Operator::kWgrad>(s, x_st, dy_st);
    const auto* dyp = static_cast<const Element*>(dy) + n0 * dy_st[0];
    const auto* xp = static_cast<const Element*>(x) + n0 * x_st[0];
    auto dD = cutlass::make_cute_packed_stride(typename Kernel::StrideD{}, problem.shape_C, problem.stride_C,
                                               cutlass::conv::Operator::kWgrad);
    auto dC = cutlass::make_cute_packed_stride(typename Kernel::StrideC{}, problem.shape_C, problem.stride_C,
                                               cutlass::conv::Operator::kWgrad);
    typename Kernel::EpilogueArguments epi{{}, ws, dC, ws, dD};  // beta = 0: C is never read
    epi.thread.alpha = 1.f;
    epi.thread.beta = 0.f;
    return typename Kernel::Arguments{problem, typename Kernel::MainloopArguments{dyp, xp}, epi};
  }

  static int32_t can_implement(const fastcnn_sm90_wgrad_args* a) {
    if (!a || !args_ok(*a)) return FASTCNN_SM90_NOT_IMPLEMENTED;
    int64_t per, splits;
    plan(*a, per, splits);
    // The two chunk sizes that occur (all `per`, the last possibly shorter).
    float* dummy = reinterpret_cast<float*>(uintptr_t(256));
    const int64_t last = a->shape.N - per * (splits - 1);
    if (!Kernel::can_implement(arguments(a->shape, 0, per, a->dy, a->x, dummy))) return FASTCNN_SM90_NOT_IMPLEMENTED;
    if (!Kernel::can_implement(arguments(a->shape, 0, last, a->dy, a->x, dummy))) return FASTCNN_SM90_NOT_IMPLEMENTED;
    return FASTCNN_SM90_OK;
  }

  static int32_t workspace_bytes(const fastcnn_sm90_wgrad_args* a, size_t* bytes) {
    if (!a || !bytes) return FASTCNN_SM90_BAD_ARGS;
    int64_t per, splits;
    plan(*a, per, splits);
    *bytes = size_t(splits * slice_elems(a->shape)) * sizeof(float);
    return FASTCNN_SM90_OK;
  }

  static int32_t run(const fastcnn_sm90_wgrad_args* a, void* workspace, size_t workspace_bytes_, cudaStream_t stream) {
    if (!a || !args_ok(*a)) return FASTCNN_SM90_BAD_ARGS;
    int64_t per, splits;
    plan(*a, per, splits);
    const int64_t slice = slice_elems(a->shape);
    if (!workspace || !aligned16(workspace) || workspace_bytes_ < size_t(splits * slice) * sizeof(float))
      return FASTCNN_SM90_WORKSPACE;
    float* ws = static_cast<float*>(workspace);

    static ParamsCache<Split, 28, 8> cache;
    typename ParamsCache<Split, 28, 8>::Key key{};
    KeyWriter<28> kw{key};
    kw.put(current_device());
    kw.put(a->shape);
    kw.put(a->dy);
    kw.put(a->x);
    kw.put(workspace);
    kw.put(a->num_sms);
    if (!kw.ok()) return FASTCNN_SM90_BAD_ARGS;
    Split sp;
    if (!cache.get(key, sp, [&](Split& out) {
          for (int64_t j = 0; j < splits; ++j) {
            const int64_t n = std::min(per, a->shape.N - j * per);
            const auto args = arguments(a->shape, j * per, n, a->dy, a->x, ws + j * slice);
            if (!Kernel::can_implement(args)) return false;
            out.p[j] = Kernel::to_underlying_arguments(args, nullptr);
          }
          return true;
        }))
      return FASTCNN_SM90_NOT_IMPLEMENTED;

    const int smem = Kernel::SharedStorageSize;
    auto* fn = wgrad_split_kernel<Kernel, kMaxSplits>;
    static std::atomic<uint64_t> smem_set{0};
    if (!ensure_smem(fn, smem, smem_set)) return FASTCNN_SM90_CUDA_ERROR;
    dim3 grid = Kernel::get_grid_shape(sp.p[0]);  // (M tiles, N tiles, 1): the same for every chunk
    grid.z = static_cast<unsigned>(splits);
    fn<<<grid, Kernel::get_block_shape(), smem, stream>>>(sp);
    if (launch_status() != FASTCNN_SM90_OK) return FASTCNN_SM90_CUDA_ERROR;

    const auto& s = a->shape;
    const int threads = 256;
    const int64_t sms = a->num_sms > 0 ? a->num_sms : 132;
    const int64_t blocks = std::min<int64_t>((slice + threads - 1) / threads, 8 * sms);
    wgrad_reduce_kernel<Element><<<static_cast<unsigned>(blocks), threads, 0, stream>>>(
        ws, int(splits), slice, s.K, s.R, s.S, s.C, static_cast<Element*>(a->dw), a->dw_stride[0], a->dw_stride[1],
        a->dw_stride[2], a->dw_stride[3]);
    return launch_status();
  }
};

// ---------------------------------------------------------------------------------------------
// 1x1 conv as a persistent GEMM

template <class Cfg>
struct Gemm {
  using Kernel = typename Cfg::Kernel;
  using Element = typename Kernel::ElementA;
  using Params = typename Kernel::Params;
  static constexpr int64_t kElem = sizeof(Element);

  static bool args_ok(const fastcnn_sm90_gemm_args& a) {
    if (a.M <= 0 || a.N <= 0 || a.K <= 0 || a.M > kInt32Max || a.N > kInt32Max || a.K > kInt32Max) return false;
    if (a.N % Cfg::kAlign != 0 || a.K % Cfg::kAlign != 0) return false;
    auto ld_ok = [](int64_t ld, int64_t minimum) {
      return ld >= minimum && (ld * kElem) % 16 == 0 && ld * kElem < kTmaMaxStrideBytes;
    };
    if (!a.x || !a.w || !a.y || !aligned16(a.x) || !aligned16(a.w) || !aligned16(a.y)) return false;
    if (!ld_ok(a.x_ld, a.K) || !ld_ok(a.y_ld, a.N)) return false;
    if (a.bias && !aligned16(a.bias)) return false;
    if (a.res && (!aligned16(a.res) || !ld_ok(a.res_ld, a.N))) return false;
    return true;
  }

  static typename Kernel::Arguments arguments(const fastcnn_sm90_gemm_args& a) {
    using StrideA = typename Kernel::StrideA;
    using StrideB = typename Kernel::StrideB;
    using StrideC = typename Kernel::StrideC;
    using StrideD = typename Kernel::StrideD;
    StrideA dA{};
    get<0>(dA) = a.x_ld;
    StrideB dB{};
    get<0>(dB) = a.K;
    StrideC dC{};
    get<0>(dC) = a.res ? a.res_ld : a.y_ld;
    StrideD dD{};
    get<0>(dD) = a.y_ld;
    const void* c_ptr = a.res ? a.res : a.y;
    typename Kernel::EpilogueArguments epi{
        fused_evt_args<typename Cfg::EVT, Element>(a.bias, a.res != nullptr, a.relu != 0),
        static_cast<const Element*>(c_ptr), dC, static_cast<Element*>(a.y), dD};
    typename Kernel::MainloopArguments main{static_cast<const Element*>(a.x), dA, static_cast<const Element*>(a.w), dB};
    cutlass::KernelHardwareInfo hw{};
    hw.device_id = current_device();
    hw.sm_count = a.num_sms > 0 ? a.num_sms : 132;
    return typename Kernel::Arguments{cutlass::gemm::GemmUniversalMode::kGemm,
                                      {int(a.M), int(a.N), int(a.K), 1},
                                      main,
                                      epi,
                                      hw};
  }

  static int32_t can_implement(const fastcnn_sm90_gemm_args* a) {
    if (!a || !args_ok(*a)) return FASTCNN_SM90_NOT_IMPLEMENTED;
    return Kernel::can_implement(arguments(*a)) ? FASTCNN_SM90_OK : FASTCNN_SM90_NOT_IMPLEMENTED;
  }

  static int32_t workspace_bytes(const fastcnn_sm90_gemm_args* a, size_t* bytes) {
    if (!a || !bytes) return FASTCNN_SM90_BAD_ARGS;
    *bytes = args_ok(*a) ? Kernel::get_workspace_size(arguments(*a)) : 0;
    return FASTCNN_SM90_OK;
  }

  static int32_t run(const fastcnn_sm90_gemm_args* a, void* workspace, size_t workspace_bytes_, cudaStream_t stream) {
    if (!a || !args_ok(*a)) return FASTCNN_SM90_BAD_ARGS;
    const auto args = arguments(*a);
    const size_t need = Kernel::get_workspace_size(args);
    if (need > 0 && (!workspace || workspace_bytes_ < need)) return FASTCNN_SM90_WORKSPACE;
    static ParamsCache<Params, 20> cache;
    typename ParamsCache<Params, 20>::Key key{};
    KeyWriter<20> kw{key};
    for (int64_t x : {int64_t(current_device()), a->M, a->N, a->K, int64_t(a->dtype), a->x_ld,
                      a->res ? a->res_ld : 0, a->y_ld, int64_t(a->relu), int64_t(a->num_sms)})
      kw.put(x);
    for (const void* p : {a->x, a->w, a->bias, a->res, static_cast<const void*>(a->y),
                          static_cast<const void*>(need ? workspace : nullptr)})
      kw.put(p);
    if (!kw.ok()) return FASTCNN_SM90_BAD_ARGS;
    Params params;
    if (!cache.get(key, params, [&](Params& p) {
          if (!Kernel::can_implement(args)) return false;
          p = Kernel::to_underlying_arguments(args, need ? workspace : nullptr);
          return true;
        }))
      return FASTCNN_SM90_NOT_IMPLEMENTED;
    // Zero-size for the data-parallel persistent schedule; initialised anyway should CUTLASS need it.
    if (need > 0 && Kernel::initialize_workspace(args, workspace, stream, nullptr) != cutlass::Status::kSuccess)
      return FASTCNN_SM90_CUDA_ERROR;
    const int smem = Kernel::SharedStorageSize;
    static std::atomic<uint64_t> smem_set{0};
    if (!ensure_smem(cutlass::device_kernel<Kernel>, smem, smem_set)) return FASTCNN_SM90_CUDA_ERROR;
    cutlass::device_kernel<Kernel><<<Kernel::get_grid_shape(params), Kernel::get_block_shape(), smem, stream>>>(params);
    return launch_status();
  }
};

}  // namespace sm90
}  // namespace fastcnn

