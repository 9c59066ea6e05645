/* The C interface between fastcnn._C and fastcnn._C_sm90, the Hopper-native conv kernels (CUTLASS
 * SM90 collectives: wgmma + TMA im2col).
 *
 * _C builds and runs without CUTLASS. _C_sm90 (csrc/cuda/sm90/) holds one struct of function
 * pointers, exposed as the PyCapsule `fastcnn._C_sm90.table`; fastcnn's import hands its address to
 * the op fastcnn::_sm90_register (csrc/sm90_path.cpp), which checks `abi` and `size` and keeps it.
 *
 * Plain C, no torch, no CUDA headers (the stream is the driver's opaque CUstream_st*, the type
 * cudaStream_t names), so both sides and the CPU-only build include it. Conventions:
 *   - activations are NHWC with the channel stride 1; the other strides are element strides
 *     (n, h, w); weights are dense KRSC ([K][R][S][C]);
 *   - `*_can_implement` answers without touching the GPU (what CUTLASS's can_implement checks plus
 *     the TMA descriptor limits); `*_workspace_bytes` is the scratch `*_run` needs (16-byte aligned,
 *     from the caller: PyTorch's caching allocator); `*_run` enqueues on `stream`, never
 *     synchronises, and is CUDA-graph capturable (host-side work only: TMA descriptors are encoded
 *     on the host and cached per problem and pointers);
 *   - every entry point returns a fastcnn_sm90_status.
 */
#ifndef FASTCNN_SM90_TABLE_H_
#define FASTCNN_SM90_TABLE_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct CUstream_st; /* cudaStream_t == struct CUstream_st* */

/* Bump when a struct below changes layout; _C refuses a table of another version. */
#define FASTCNN_SM90_ABI 1

enum fastcnn_sm90_dtype {
  FASTCNN_SM90_BF16 = 0, /* bf16 storage, fp32 accumulation */
  FASTCNN_SM90_FP16 = 1, /* fp16 storage, fp32 accumulation */
  FASTCNN_SM90_TF32 = 2  /* fp32 storage, TF32 tensor-core math, fp32 accumulation */
};

enum fastcnn_sm90_status {
  FASTCNN_SM90_OK = 0,
  FASTCNN_SM90_NOT_IMPLEMENTED = 1, /* can_implement said no: the caller falls back */
  FASTCNN_SM90_BAD_ARGS = 2,        /* a null pointer, a size out of range, an unknown dtype */
  FASTCNN_SM90_WORKSPACE = 3,       /* workspace missing or smaller than *_workspace_bytes */
  FASTCNN_SM90_CUDA_ERROR = 4,      /* a CUDA runtime call failed (cudaGetLastError has it) */
  FASTCNN_SM90_NOT_BUILT = 5        /* this dtype has no kernel in this build */
};

/* A 2-d convolution (cross-correlation, floor output size). */
struct fastcnn_sm90_conv {
  int64_t N, H, W, C;       /* input [N, H, W, C] */
  int64_t K, R, S;          /* weight [K, R, S, C] */
  int64_t P, Q;             /* output [N, P, Q, K] */
  int64_t pad_h, pad_w;     /* zero rows / columns before the input (PyTorch's padding) */
  int64_t pad_h_end, pad_w_end; /* after it: pad_h, pad_w for PyTorch's convs; the dgrad stride
                                   phases (sm90_path.h) need other values */
  int64_t stride_h, stride_w, dil_h, dil_w;
  int32_t dtype; /* fastcnn_sm90_dtype */
};

/* y = act(conv(x, w) + bias[k] + res), act = relu when `relu`, else identity. */
struct fastcnn_sm90_fprop_args {
  struct fastcnn_sm90_conv shape;
  const void* x;
  int64_t x_stride[3]; /* n, h, w */
  const void* w;       /* [K][R][S][C] dense */
  const void* bias;    /* [K] or NULL */
  const void* res;     /* [N][P][Q][K] or NULL */
  int64_t res_stride[3];
  void* y;
  int64_t y_stride[3];
  int32_t relu;
};

/* dx = conv_transpose(dy, w): the input gradient for a given output gradient (any ReLU mask already
 * applied by the caller). Unit traversal stride only (CUTLASS 4.2's SM90 dgrad). */
struct fastcnn_sm90_dgrad_args {
  struct fastcnn_sm90_conv shape;
  const void* dy;
  int64_t dy_stride[3];
  const void* w; /* [K][R][S][C] dense */
  void* dx;
  int64_t dx_stride[3];
};

/* dw[k, c, r, s] = sum over n, p, q of dy[n, p, q, k] * x[n, p*sh - ph + r*dh, q*sw - pw + s*dw, c].
 * dy and x dense NHWC. The batch is split into chunks, each an independent CUTLASS wgrad into its
 * own fp32 slice of the workspace (all chunks in one launch), then reduced over the chunks in a fixed
 * order and written to dw with the given element strides (k, c, r, s): deterministic, no atomics. */
struct fastcnn_sm90_wgrad_args {
  struct fastcnn_sm90_conv shape;
  const void* dy;
  const void* x;
  void* dw;
  int64_t dw_stride[4]; /* k, c, r, s */
  int32_t num_sms;      /* the device's multiprocessor count: the split fills about one wave */
};

/* The 1x1 convolution (stride 1, no padding) as a persistent GEMM over the M = N*H*W pixel rows:
 * y[m, k] = act(sum_c x[m, c] * w[k, c] + bias[k] + res[m, k]). Row strides in elements. */
struct fastcnn_sm90_gemm_args {
  int64_t M, N, K; /* rows (pixels), output channels, input channels */
  int32_t dtype;
  const void* x; /* [M][K], row stride x_ld */
  int64_t x_ld;
  const void* w; /* [N][K] dense */
  const void* bias;
  const void* res; /* [M][N], row stride res_ld, or NULL */
  int64_t res_ld;
  void* y;
  int64_t y_ld;
  int32_t relu;
  int32_t num_sms; /* persistent grid size */
};

struct fastcnn_sm90_table {
  uint32_t abi;  /* FASTCNN_SM90_ABI */
  uint32_t size; /* sizeof(struct fastcnn_sm90_table) */
  const char* build; /* e.g. "CUTLASS 4.2.0, sm_90a, nvcc 13.0" */

  int32_t (*fprop_can_implement)(const struct fastcnn_sm90_fprop_args*);
  int32_t (*fprop_workspace_bytes)(const struct fastcnn_sm90_fprop_args*, size_t* bytes);
  int32_t (*fprop_run)(const struct fastcnn_sm90_fprop_args*, void* workspace, size_t workspace_bytes,
                       struct CUstream_st* stream);

  int32_t (*dgrad_can_implement)(const struct fastcnn_sm90_dgrad_args*);
  int32_t (*dgrad_workspace_bytes)(const struct fastcnn_sm90_dgrad_args*, size_t* bytes);
  int32_t (*dgrad_run)(const struct fastcnn_sm90_dgrad_args*, void* workspace, size_t workspace_bytes,
                       struct CUstream_st* stream);

  int32_t (*wgrad_can_implement)(const struct fastcnn_sm90_wgrad_args*);
  int32_t (*wgrad_workspace_bytes)(const struct fastcnn_sm90_wgrad_args*, size_t* bytes);
  int32_t (*wgrad_run)(const struct fastcnn_sm90_wgrad_args*, void* workspace, size_t workspace_bytes,
                       struct CUstream_st* stream);

  int32_t (*gemm_can_implement)(const struct fastcnn_sm90_gemm_args*);
  int32_t (*gemm_workspace_bytes)(const struct fastcnn_sm90_gemm_args*, size_t* bytes);
  int32_t (*gemm_run)(const struct fastcnn_sm90_gemm_args*, void* workspace, size_t workspace_bytes,
                      struct CUstream_st* stream);
};

static inline const char* fastcnn_sm90_status_name(int32_t s) {
  switch (s) {
    case FASTCNN_SM90_OK: return "ok";
    case FASTCNN_SM90_NOT_IMPLEMENTED: return "not implemented by the kernel (can_implement)";
    case FASTCNN_SM90_BAD_ARGS: return "bad arguments";
    case FASTCNN_SM90_WORKSPACE: return "workspace too small";
    case FASTCNN_SM90_CUDA_ERROR: return "CUDA error";
    case FASTCNN_SM90_NOT_BUILT: return "dtype not built";
    default: return "unknown status";
  }
}

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* FASTCNN_SM90_TABLE_H_ */
