// Host entry points of cuda-sim's test kernels (selftest.cu): raw pointers to CPU memory, run to
// completion; findings are thrown as std::runtime_error.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace fastcnn {
namespace cuda {
namespace selftest {

// kind 0 f16 / 1 bf16: A [16][16], B [16][8] as 16-bit words; kind 2 tf32: A [16][8], B [8][8] as
// fp32 bits. C, D [16][8] fp32. D = A B + C through one mma.sync of one warp.
void run_mma(int kind, const void* A, const void* B, const float* C, float* D);
// mats [4][8][8] 16-bit; slot_of[32]: the 16-byte shared slot of row (i, r) at index 8i + r;
// out [32][4]: each lane's four result registers.
void run_ldmatrix(const uint16_t* mats, const int* slot_of, bool trans, uint32_t* out);
// mode 0 up, 1 down, 2 xor, 3 idx; operand[32] per lane; vals/out [32].
void run_shfl(int mode, int width, const int* operand, const long long* vals, long long* out);
// src [32][16] bytes, valid [32]; out [32][16]: thread t's 16 bytes copied by thread 31 - t;
// early [32][16]: the destination read before the wait (when early_read).
void run_cp_async(const unsigned char* src, const unsigned char* valid, bool early_read, unsigned char* out,
                  unsigned char* early);
// out[i] = cvt.rna.tf32.f32(in[i]) (fp32 bits).
void run_tf32(const uint32_t* in, uint32_t* out, int n);
// One purpose-written kernel per check (see selftest.cu for the names and their argument).
void run_check(const std::string& name, int arg, void* buf, const void* src);

}  // namespace selftest
}  // namespace cuda
}  // namespace fastcnn
