// The entry points of the sm90 translation units (one CUTLASS instantiation each), C linkage, named
// fastcnn_sm90_<pass>_<tag>_<fn>; module.cpp puts them into the table (sm90_table.h) by dtype.
#pragma once

#include "cuda/sm90_table.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FASTCNN_SM90_DECLARE(PASS, TAG, ARGS)                                                          \
  int32_t fastcnn_sm90_##PASS##_##TAG##_can_implement(const struct ARGS* a);                          \
  int32_t fastcnn_sm90_##PASS##_##TAG##_workspace_bytes(const struct ARGS* a, size_t* bytes);         \
  int32_t fastcnn_sm90_##PASS##_##TAG##_run(const struct ARGS* a, void* ws, size_t ws_bytes,          \
                                            struct CUstream_st* stream);

FASTCNN_SM90_DECLARE(fprop, bf16, fastcnn_sm90_fprop_args)
FASTCNN_SM90_DECLARE(fprop, fp16, fastcnn_sm90_fprop_args)
FASTCNN_SM90_DECLARE(fprop, tf32, fastcnn_sm90_fprop_args)
FASTCNN_SM90_DECLARE(dgrad, bf16, fastcnn_sm90_dgrad_args)
FASTCNN_SM90_DECLARE(dgrad, fp16, fastcnn_sm90_dgrad_args)
FASTCNN_SM90_DECLARE(wgrad, bf16, fastcnn_sm90_wgrad_args)
FASTCNN_SM90_DECLARE(gemm, bf16, fastcnn_sm90_gemm_args)

#undef FASTCNN_SM90_DECLARE

#ifdef __cplusplus
}
#endif
