// cuda-sim: the SIMT emulation that runs fastcnn's CUDA kernels, from their own source, on the CPU.
//
// Compiled only under FASTCNN_SIMT (the host-compiler build fastcnn._C_cudasim, see
// ../shared/design/cuda-sim.md and simt.cpp). The kernel files are compiled as C++ with this header
// in front of them (common.cuh includes it): CUDA's qualifiers are empty, threadIdx & co. read the
// current CUDA thread, and the few constructs the host compiler cannot parse go through macros that
// expand to the original tokens under nvcc (FASTCNN_LAUNCH, FASTCNN_DYNAMIC_SMEM, FASTCNN_SHARED,
// common.cuh). Every CUDA thread is a fiber; barriers, warp collectives and cp.async are calls
// into the runtime (simt.cpp), which checks what the GPU leaves undefined and reports it as an
// exception naming the kernel, the CTA and the thread.
#pragma once

#ifndef FASTCNN_SIMT
#error "simt.h is cuda-sim's runtime; it is compiled only with -DFASTCNN_SIMT"
#endif

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>  // the float overloads of fma & co. in the global namespace (libstdc++)

#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>

// Host-mode CUDA headers define __global__, __device__, __shared__ as nothing and leave these two.
#undef __forceinline__
#define __forceinline__ inline
#define __launch_bounds__(...)

namespace fastcnn {
namespace simt {

// A source location (the call site of a collective, a barrier or a launch), for the reports.
struct Site {
  const char* file;
  int line;
};
#define FASTCNN_SIMT_HERE \
  ::fastcnn::simt::Site { __builtin_FILE(), __builtin_LINE() }
// The call site of a wrapper: __builtin_FILE/LINE evaluate at the caller only as plain default
// arguments (inside a braced initialiser they name the declaration).
#define FASTCNN_SIMT_SITE_ARGS const char *site_file_ = __builtin_FILE(), int site_line_ = __builtin_LINE()
#define FASTCNN_SIMT_SITE \
  ::fastcnn::simt::Site { site_file_, site_line_ }

// What a CUDA thread sees of itself; the scheduler points t_lane at the running fiber's.
struct LaneView {
  uint3 tid, bid;
  dim3 bdim, gdim;
};
extern thread_local LaneView* t_lane __attribute__((tls_model("initial-exec")));

// ---- barriers, warp collectives, cp.async, shared memory (simt.cpp) ----------------------------
void syncthreads(Site site);
// shfl.sync with PTX's operands: mode 0 up, 1 down, 2 bfly, 3 idx; b the lane operand, c the
// clamp/segment operand ((32 - width) << 8, | 0x1f except for up).
uint64_t shfl(int mode, uint32_t mask, uint64_t value, int bytes, int b, int c, Site site);
void ldmatrix_x4(uint32_t addr, bool trans, uint32_t (&r)[4], Site site);
// mma.sync.aligned row.col f32 accumulate: kind 0 m16n8k16 f16, 1 m16n8k16 bf16, 2 m16n8k8 tf32.
void mma(int kind, float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2], Site site);
void cp_async16(uint32_t dst, const void* src, int src_bytes, Site site);
void cp_async_commit(Site site);
void cp_async_wait(int n, Site site);
uint32_t shared_addr(const void* p, Site site);  // __cvta_generic_to_shared
unsigned char* dynamic_smem();
void* static_smem(Site site, size_t bytes, size_t align);

// ---- launches -----------------------------------------------------------------------------------
struct LaunchDesc {
  const void* fn;                              // the kernel (its address names it)
  void (*invoke)(const void* fn, void* args);  // calls fn with the packed arguments
  void* args;
  dim3 grid, block;
  size_t smem;
  const char* expr;  // the kernel expression as written at the launch
  Site site;
};
// Runs every CTA of the launch (checks first); throws std::runtime_error on any finding.
void run_launch(const LaunchDesc& d);

template <typename... P>
class Launch {
 public:
  using Fn = void (*)(P...);
  Launch(dim3 grid, dim3 block, size_t smem, cudaStream_t, Fn fn, const char* expr, Site site)
      : grid_(grid), block_(block), smem_(smem), fn_(fn), expr_(expr), site_(site) {}

  template <typename... A>
  void operator()(A&&... args) const {
    static_assert(sizeof...(A) == sizeof...(P), "kernel launched with the wrong number of arguments");
    std::tuple<std::decay_t<P>...> packed(std::forward<A>(args)...);
    LaunchDesc d{reinterpret_cast<const void*>(fn_), &invoke, &packed, grid_, block_, smem_, expr_, site_};
    run_launch(d);
  }

 private:
  static void invoke(const void* fn, void* args) {
    std::apply(reinterpret_cast<Fn>(const_cast<void*>(fn)), *static_cast<std::tuple<std::decay_t<P>...>*>(args));
  }
  dim3 grid_, block_;
  size_t smem_;
  Fn fn_;
  const char* expr_;
  Site site_;
};

template <typename... P>
Launch<P...> make_launch(dim3 grid, dim3 block, size_t smem, cudaStream_t stream, void (*fn)(P...), const char* expr,
                         Site site) {
  return Launch<P...>(grid, block, smem, stream, fn, expr, site);
}

// ---- test hooks -------------------------------------------------------------------------------
// A dispatch choice the host launch code makes among n (tile config, loader path, index width, ...;
// n = 0: any positive value): `natural` unless a test forced `kind` (FASTCNN_SIM_FORCE or
// _C_cudasim._force) to a value in range.
int pick(const char* kind, int natural, int n);

template <typename T>
uint64_t to_bits(T v) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "shuffle of a type wider than 8 bytes");
  uint64_t u = 0;
  std::memcpy(&u, &v, sizeof(T));
  return u;
}
template <typename T>
T from_bits(uint64_t u) {
  T v;
  std::memcpy(static_cast<void*>(&v), &u, sizeof(T));
  return v;
}

}  // namespace simt
}  // namespace fastcnn

// ---- the CUDA built-ins the kernels use -------------------------------------------------------
#define threadIdx (::fastcnn::simt::t_lane->tid)
#define blockIdx (::fastcnn::simt::t_lane->bid)
#define blockDim (::fastcnn::simt::t_lane->bdim)
#define gridDim (::fastcnn::simt::t_lane->gdim)

inline void __syncthreads(FASTCNN_SIMT_SITE_ARGS) { ::fastcnn::simt::syncthreads(FASTCNN_SIMT_SITE); }

template <typename T>
inline T __shfl_sync(unsigned mask, T v, int src, int width = 32, FASTCNN_SIMT_SITE_ARGS) {
  using namespace ::fastcnn::simt;
  return from_bits<T>(shfl(3, mask, to_bits(v), int(sizeof(T)), src, ((32 - width) << 8) | 0x1f, FASTCNN_SIMT_SITE));
}
template <typename T>
inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32,
                        FASTCNN_SIMT_SITE_ARGS) {
  using namespace ::fastcnn::simt;
  return from_bits<T>(shfl(0, mask, to_bits(v), int(sizeof(T)), int(delta), (32 - width) << 8, FASTCNN_SIMT_SITE));
}
template <typename T>
inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32,
                          FASTCNN_SIMT_SITE_ARGS) {
  using namespace ::fastcnn::simt;
  return from_bits<T>(shfl(1, mask, to_bits(v), int(sizeof(T)), int(delta), ((32 - width) << 8) | 0x1f, FASTCNN_SIMT_SITE));
}
template <typename T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32,
                         FASTCNN_SIMT_SITE_ARGS) {
  using namespace ::fastcnn::simt;
  return from_bits<T>(shfl(2, mask, to_bits(v), int(sizeof(T)), lane_mask, ((32 - width) << 8) | 0x1f, FASTCNN_SIMT_SITE));
}

// cuda_runtime.h declares this overload for nvcc only; the C entry point is simt.cpp's.
template <typename T>
inline cudaError_t cudaFuncSetAttribute(T* entry, cudaFuncAttribute attr, int value) {
  return ::cudaFuncSetAttribute(reinterpret_cast<const void*>(entry), attr, value);
}

inline float __uint_as_float(unsigned u) { return ::fastcnn::simt::from_bits<float>(u); }
inline unsigned __float_as_uint(float f) { return unsigned(::fastcnn::simt::to_bits(f)); }

// CUDA's integer min/max overloads (the device headers declare them only for nvcc).
inline int min(int a, int b) { return a < b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline long min(long a, long b) { return a < b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long max(long a, long b) { return a > b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
