// cuda-sim's purpose-written test kernels (compiled only into fastcnn._C_cudasim, never by nvcc
// into the product): one per PTX primitive, written against the fragment tables of the PTX ISA
// independently of simt.cpp, and one per check the emulator makes. Torch-free; driven by
// tests/test_cuda_sim.py through the sim module (module.cpp).
#include "cuda/sim/selftest.h"

#include "cuda/common.cuh"

namespace fastcnn {
namespace cuda {
namespace selftest {
namespace {

// ---- mma.sync: A [16][K] row-major, B [K][8] row-major, C/D [16][8] row-major ------------------
// Fragments from the PTX ISA ("Matrix fragments for mma.m16n8k16 with floating point type",
// "... mma.m16n8k8 with .tf32"), groupID = lane >> 2, threadID_in_group = lane % 4:
//   f16/bf16 A: a_i for i in 0..7: row = groupID + 8 * ((i / 2) % 2), col = tig * 2 + (i % 2) + 8 * (i / 4)
//            B: b_i for i in 0..3: row = tig * 2 + (i % 2) + 8 * (i / 2), col = groupID
//   tf32     A: a_i for i in 0..3: row = groupID + 8 * (i % 2), col = tig + 4 * (i / 2)
//            B: b_i for i in 0..1: row = tig + 4 * i, col = groupID
//   C/D     c_i for i in 0..3: row = groupID + 8 * (i / 2), col = tig * 2 + (i % 2)
template <typename T>
__global__ void mma_kernel(const void* A, const void* B, const float* C, float* D) {
  const int lane = threadIdx.x, gid = lane >> 2, tig = lane & 3;
  uint32_t a[4], b[2];
  float d[4];
  if constexpr (sizeof(T) == 2) {
    const uint16_t* a16 = static_cast<const uint16_t*>(A);
    const uint16_t* b16 = static_cast<const uint16_t*>(B);
    uint16_t ae[8], be[4];
    for (int i = 0; i < 8; ++i) ae[i] = a16[(gid + 8 * ((i / 2) % 2)) * 16 + tig * 2 + (i % 2) + 8 * (i / 4)];
    for (int i = 0; i < 4; ++i) be[i] = b16[(tig * 2 + (i % 2) + 8 * (i / 2)) * 8 + gid];
    for (int r = 0; r < 4; ++r) a[r] = uint32_t(ae[2 * r]) | (uint32_t(ae[2 * r + 1]) << 16);
    for (int r = 0; r < 2; ++r) b[r] = uint32_t(be[2 * r]) | (uint32_t(be[2 * r + 1]) << 16);
  } else {
    const uint32_t* a32 = static_cast<const uint32_t*>(A);
    const uint32_t* b32 = static_cast<const uint32_t*>(B);
    for (int i = 0; i < 4; ++i) a[i] = a32[(gid + 8 * (i % 2)) * 8 + tig + 4 * (i / 2)];
    for (int i = 0; i < 2; ++i) b[i] = b32[(tig + 4 * i) * 8 + gid];
  }
  for (int i = 0; i < 4; ++i) d[i] = C[(gid + 8 * (i / 2)) * 8 + tig * 2 + (i % 2)];
  Mma<T>::run(d, a, b);
  for (int i = 0; i < 4; ++i) D[(gid + 8 * (i / 2)) * 8 + tig * 2 + (i % 2)] = d[i];
}

// ---- ldmatrix.x4: four 8x8 matrices of 16-bit elements; row r of matrix i lies at 16-byte
// slot slot_of[8i + r] of shared memory (a permutation: each lane's row address is its own). ---
__global__ void ldmatrix_kernel(const uint16_t* mats, const int* slot_of, bool trans, uint32_t* out) {
  FASTCNN_DYNAMIC_SMEM(smem);
  const int lane = threadIdx.x;
  const int mat = lane / 8, row = lane % 8;  // the row this lane addresses
  uint16_t* dst = reinterpret_cast<uint16_t*>(smem + slot_of[lane] * 16);
  for (int e = 0; e < 8; ++e) dst[e] = mats[(mat * 8 + row) * 8 + e];
  __syncthreads();
  uint32_t r[4];
  const uint32_t addr = smem_addr(smem + slot_of[lane] * 16);
  if (trans)
    ldsm_x4_trans(addr, r[0], r[1], r[2], r[3]);
  else
    ldsm_x4(addr, r[0], r[1], r[2], r[3]);
  for (int i = 0; i < 4; ++i) out[lane * 4 + i] = r[i];
}

// ---- shuffles: mode 0 up, 1 down, 2 xor, 3 idx, with a per-lane lane operand ------------------
__global__ void shfl_kernel(int mode, int width, const int* operand, const long long* vals, long long* out) {
  const int lane = threadIdx.x;
  const long long v = vals[lane];
  long long r = 0;
  switch (mode) {
    case 0: r = __shfl_up_sync(0xffffffffu, v, unsigned(operand[lane]), width); break;
    case 1: r = __shfl_down_sync(0xffffffffu, v, unsigned(operand[lane]), width); break;
    case 2: r = __shfl_xor_sync(0xffffffffu, v, operand[lane], width); break;
    default: r = __shfl_sync(0xffffffffu, v, operand[lane], width); break;
  }
  out[lane] = r;
}

// ---- cp.async: each of 32 threads copies 16 bytes (or zero-fills them: src size 0) ------------
// early_read: also read the destination right after the issue, before the wait (poison).
__global__ void cp_async_kernel(const unsigned char* src, const unsigned char* valid, bool early_read,
                                unsigned char* out, unsigned char* early) {
  FASTCNN_DYNAMIC_SMEM(smem);
  const int t = threadIdx.x;
  cp_async16(smem_addr(smem + 16 * t), valid[t] ? src + 16 * t : src, valid[t] != 0);
  cp_async_commit();
  if (early_read)
    for (int e = 0; e < 16; ++e) early[16 * t + e] = smem[16 * t + e];
  cp_async_wait<0>();
  __syncthreads();
  for (int e = 0; e < 16; ++e) out[16 * t + e] = smem[16 * (31 - t) + e];  // another thread's copy
}

// ---- cvt.rna.tf32.f32 (common.cuh's to_tf32), one element per thread -------------------------
__global__ void tf32_kernel(const uint32_t* in, uint32_t* out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = to_tf32(in[i]);
}

// ---- the checks -------------------------------------------------------------------------------
// Each thread writes its slot, (optionally) syncs, then reads the slot of a thread one warp ahead.
__global__ void barrier_kernel(bool with_barrier, int* out) {
  FASTCNN_SHARED(int, slots, [256]);
  const int t = threadIdx.x, n = blockDim.x;
  slots[t] = t * 7 + 1;
  if (with_barrier) __syncthreads();
  out[t] = slots[(t + 32) % n];
}

// ldmatrix of a stage whose cp.async has not been waited for.
__global__ void ldmatrix_before_wait_kernel(const unsigned char* src, uint32_t* out) {
  FASTCNN_DYNAMIC_SMEM(smem);
  const int lane = threadIdx.x;
  cp_async16(smem_addr(smem + 16 * lane), src + 16 * lane, true);
  cp_async_commit();
  uint32_t r[4];
  ldsm_x4(smem_addr(smem + 16 * lane), r[0], r[1], r[2], r[3]);  // the wait is missing
  cp_async_wait<0>();
  for (int i = 0; i < 4; ++i) out[lane * 4 + i] = r[i];
}

// Writes `over` bytes past the end of the dynamic shared memory (blockDim.x threads, 4 bytes each).
__global__ void smem_oob_kernel(int dyn_bytes, int over) {
  FASTCNN_DYNAMIC_SMEM(smem);
  const int t = threadIdx.x;
  int* p = reinterpret_cast<int*>(smem);
  if (4 * t < dyn_bytes + over) p[t] = t;
}

// A warp collective only half the warp reaches.
__global__ void divergent_kernel(int* out) {
  const int lane = threadIdx.x & 31;
  int v = lane;
  if (lane < 16) v = __shfl_xor_sync(0xffffffffu, v, 1);
  out[threadIdx.x] = v;
}

// Threads of one CTA at two different barriers.
__global__ void split_barrier_kernel(int* out) {
  if (threadIdx.x < 32) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1;
}

// A cp.async group committed and never waited for.
__global__ void pending_kernel(const unsigned char* src) {
  FASTCNN_DYNAMIC_SMEM(smem);
  cp_async16(smem_addr(smem + 16 * threadIdx.x), src + 16 * threadIdx.x, true);
  cp_async_commit();
}

// Uses `bytes` of dynamic shared memory.
__global__ void big_smem_kernel(int bytes, int* out) {
  FASTCNN_DYNAMIC_SMEM(smem);
  for (int i = threadIdx.x; i < bytes; i += blockDim.x) smem[i] = 1;
  __syncthreads();
  if (threadIdx.x == 0) out[0] = smem[bytes - 1];
}

// Reads one element past the end of `x` (n elements): only AddressSanitizer sees it.
__global__ void global_oob_kernel(const float* x, int n, float* out) {
  if (threadIdx.x == 0) out[0] = x[n];
}

__global__ void __launch_bounds__(128) bounded_kernel(int* out) { out[threadIdx.x] = 1; }

}  // namespace

void run_mma(int kind, const void* A, const void* B, const float* C, float* D) {
  if (kind == 0)
    FASTCNN_LAUNCH(1, 32, 0, nullptr, mma_kernel<__half>)(A, B, C, D);
  else if (kind == 1)
    FASTCNN_LAUNCH(1, 32, 0, nullptr, mma_kernel<__nv_bfloat16>)(A, B, C, D);
  else
    FASTCNN_LAUNCH(1, 32, 0, nullptr, mma_kernel<float>)(A, B, C, D);
}

void run_ldmatrix(const uint16_t* mats, const int* slot_of, bool trans, uint32_t* out) {
  FASTCNN_LAUNCH(1, 32, 32 * 16, nullptr, ldmatrix_kernel)(mats, slot_of, trans, out);
}

void run_shfl(int mode, int width, const int* operand, const long long* vals, long long* out) {
  FASTCNN_LAUNCH(1, 32, 0, nullptr, shfl_kernel)(mode, width, operand, vals, out);
}

void run_cp_async(const unsigned char* src, const unsigned char* valid, bool early_read, unsigned char* out,
                  unsigned char* early) {
  FASTCNN_LAUNCH(1, 32, 32 * 16, nullptr, cp_async_kernel)(src, valid, early_read, out, early);
}

void run_tf32(const uint32_t* in, uint32_t* out, int n) {
  FASTCNN_LAUNCH(unsigned((n + 255) / 256), 256, 0, nullptr, tf32_kernel)(in, out, n);
}

void run_check(const std::string& name, int arg, void* buf, const void* src) {
  int* out = static_cast<int*>(buf);
  if (name == "barrier") {
    FASTCNN_LAUNCH(1, 256, 0, nullptr, barrier_kernel)(arg != 0, out);
  } else if (name == "ldmatrix_before_wait") {
    FASTCNN_LAUNCH(1, 32, 32 * 16, nullptr, ldmatrix_before_wait_kernel)(static_cast<const unsigned char*>(src),
                                                                          static_cast<uint32_t*>(buf));
  } else if (name == "smem_oob") {
    FASTCNN_LAUNCH(1, 256, 512, nullptr, smem_oob_kernel)(512, arg);
  } else if (name == "divergent") {
    FASTCNN_LAUNCH(1, 32, 0, nullptr, divergent_kernel)(out);
  } else if (name == "split_barrier") {
    FASTCNN_LAUNCH(1, 64, 0, nullptr, split_barrier_kernel)(out);
  } else if (name == "pending") {
    FASTCNN_LAUNCH(1, 32, 32 * 16, nullptr, pending_kernel)(static_cast<const unsigned char*>(src));
  } else if (name == "big_smem") {  // arg: bytes; negative: set the attribute first
    const int bytes = arg < 0 ? -arg : arg;
    if (arg < 0) cudaFuncSetAttribute(big_smem_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
    FASTCNN_LAUNCH(1, 128, bytes, nullptr, big_smem_kernel)(bytes, out);
  } else if (name == "global_oob") {
    FASTCNN_LAUNCH(1, 32, 0, nullptr, global_oob_kernel)(static_cast<const float*>(src), arg, static_cast<float*>(buf));
  } else if (name == "block_size") {  // arg threads in one block
    FASTCNN_LAUNCH(1, arg, 0, nullptr, bounded_kernel)(out);
  } else if (name == "grid_y") {
    FASTCNN_LAUNCH(dim3(1, unsigned(arg), 1), 32, 0, nullptr, bounded_kernel)(out);
  } else {
    throw std::invalid_argument("cuda-sim selftest: unknown check '" + name + "'");
  }
}

}  // namespace selftest
}  // namespace cuda
}  // namespace fastcnn
