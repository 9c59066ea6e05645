// compute-sanitizer's self-test on the GPU machine (tools/gpu_run.py, step "preflight").
//
//   probe clean   every launch in bounds and race-free: memcheck and racecheck must report 0 errors
//   probe oob     one write past the end of a cudaMalloc'd array: memcheck must report it
//   probe race    shared memory read by another thread with no barrier: racecheck must report it
//
// A sanitizer that reports errors on `clean`, or misses the planted bug, is not trusted: gpu_run.py
// counts either as a sanitizer error. Exit status 0 when the computed values are right.
#include <cstdio>
#include <cstring>
#include <cuda_runtime.h>

#define CHECK(call)                                                                       \
  do {                                                                                    \
    cudaError_t e_ = (call);                                                              \
    if (e_ != cudaSuccess) {                                                              \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
      return 2;                                                                           \
    }                                                                                     \
  } while (0)

// y[i] = 2 x[i] for i < n; `extra` threads past n write one element too far (the planted bug).
__global__ void scale(const float* x, float* y, int n, int extra) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = 2.0f * x[i];
  if (extra && i == n) y[i] = 0.0f;
}

// Block sum through shared memory; with `planted` the barrier between the writes and the reads is gone.
__global__ void block_sum(const float* x, float* out, int planted) {
  __shared__ float s[128];
  int t = threadIdx.x;
  s[t] = x[blockIdx.x * blockDim.x + t];
  if (!planted) __syncthreads();
  if (t == 0) {
    float acc = 0.0f;
    for (int k = 0; k < 128; ++k) acc += s[k];
    out[blockIdx.x] = acc;
  }
}

int main(int argc, char** argv) {
  const char* mode = argc > 1 ? argv[1] : "clean";
  const int n = 1 << 14, blocks = n / 128;
  float *x, *y, *sums;
  CHECK(cudaMalloc(&x, n * sizeof(float)));
  CHECK(cudaMalloc(&y, n * sizeof(float)));
  CHECK(cudaMalloc(&sums, blocks * sizeof(float)));
  static float h[1 << 14], hs[(1 << 14) / 128];
  for (int i = 0; i < n; ++i) h[i] = (float)((i * 7919) % 101) - 50.0f;  // not zeros: nothing hides
  CHECK(cudaMemcpy(x, h, n * sizeof(float), cudaMemcpyHostToDevice));

  scale<<<(n + 128) / 128, 128>>>(x, y, n, std::strcmp(mode, "oob") == 0);
  CHECK(cudaGetLastError());
  block_sum<<<blocks, 128>>>(y, sums, std::strcmp(mode, "race") == 0);
  CHECK(cudaGetLastError());
  CHECK(cudaDeviceSynchronize());
  CHECK(cudaMemcpy(hs, sums, blocks * sizeof(float), cudaMemcpyDeviceToHost));
  int bad = 0;
  for (int b = 0; b < blocks && std::strcmp(mode, "race") != 0; ++b) {
    float want = 0.0f;
    for (int k = 0; k < 128; ++k) want += 2.0f * h[b * 128 + k];
    if (hs[b] != want) ++bad;
  }
  std::printf("probe %s: %d wrong block sums of %d\n", mode, bad, blocks);
  CHECK(cudaFree(x));
  CHECK(cudaFree(y));
  CHECK(cudaFree(sums));
  return bad ? 1 : 0;
}
