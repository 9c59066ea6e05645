// fastcnn._C_sm90: the table of sm90 entry points (sm90_table.h), by dtype, as the PyCapsule
// `fastcnn._C_sm90.table`. No torch and no pybind: a plain CPython module whose only job is to hand
// the table to fastcnn._C (fastcnn/sm90.py passes its address to torch.ops.fastcnn._sm90_register).
#include <Python.h>

#include "cuda/sm90/sm90_kernels.h"
#include "cuda/sm90_table.h"
#include "cutlass/version.h"

namespace {

// setup.py passes the nvcc release that compiled the TUs (this file is host-compiled).
#define FASTCNN_STR2(x) #x
#define FASTCNN_STR(x) FASTCNN_STR2(x)
#if defined(FASTCNN_SM90_NVCC_MAJOR) && defined(FASTCNN_SM90_NVCC_MINOR)
#define FASTCNN_SM90_NVCC FASTCNN_STR(FASTCNN_SM90_NVCC_MAJOR) "." FASTCNN_STR(FASTCNN_SM90_NVCC_MINOR)
#else
#define FASTCNN_SM90_NVCC "unknown"
#endif
const char kBuild[] = "CUTLASS " FASTCNN_STR(CUTLASS_MAJOR) "." FASTCNN_STR(CUTLASS_MINOR) "." FASTCNN_STR(
    CUTLASS_PATCH) ", sm_90a, nvcc " FASTCNN_SM90_NVCC;

// Per pass: the built dtypes; any other dtype answers FASTCNN_SM90_NOT_BUILT.
int32_t fprop_can_implement(const fastcnn_sm90_fprop_args* a) {
  if (!a) return FASTCNN_SM90_BAD_ARGS;
  switch (a->shape.dtype) {
    case FASTCNN_SM90_BF16: return fastcnn_sm90_fprop_bf16_can_implement(a);
    case FASTCNN_SM90_FP16: return fastcnn_sm90_fprop_fp16_can_implement(a);
    case FASTCNN_SM90_TF32: return fastcnn_sm90_fprop_tf32_can_implement(a);
    default: return FASTCNN_SM90_NOT_BUILT;
  }
}
int32_t fprop_workspace_bytes(const fastcnn_sm90_fprop_args* a, size_t* bytes) {
  if (!a) return FASTCNN_SM90_BAD_ARGS;
  switch (a->shape.dtype) {
    case FASTCNN_SM90_BF16: return fastcnn_sm90_fprop_bf16_workspace_bytes(a, bytes);
    case FASTCNN_SM90_FP16: return fastcnn_sm90_fprop_fp16_workspace_bytes(a, bytes);
    case FASTCNN_SM90_TF32: return fastcnn_sm90_fprop_tf32_workspace_bytes(a, bytes);
    default: return FASTCNN_SM90_NOT_BUILT;
  }
}
int32_t fprop_run(const fastcnn_sm90_fprop_args* a, void* ws, size_t n, CUstream_st* s) {
  if (!a) return FASTCNN_SM90_BAD_ARGS;
  switch (a->shape.dtype) {
    case FASTCNN_SM90_BF16: return fastcnn_sm90_fprop_bf16_run(a, ws, n, s);
    case FASTCNN_SM90_FP16: return fastcnn_sm90_fprop_fp16_run(a, ws, n, s);
    case FASTCNN_SM90_TF32: return fastcnn_sm90_fprop_tf32_run(a, ws, n, s);
    default: return FASTCNN_SM90_NOT_BUILT;
  }
}

int32_t dgrad_can_implement(const fastcnn_sm90_dgrad_args* a) {
  if (!a) return FASTCNN_SM90_BAD_ARGS;
  switch (a->shape.dtype) {
    case FASTCNN_SM90_BF16: return fastcnn_sm90_dgrad_bf16_can_implement(a);
    case FASTCNN_SM90_FP16: return fastcnn_sm90_dgrad_fp16_can_implement(a);
    default: return FASTCNN_SM90_NOT_BUILT;
  }
}
int32_t dgrad_workspace_bytes(const fastcnn_sm90_dgrad_args* a, size_t* bytes) {
  if (!a) return FASTCNN_SM90_BAD_ARGS;
  switch (a->shape.dtype) {
    case FASTCNN_SM90_BF16: return fastcnn_sm90_dgrad_bf16_workspace_bytes(a, bytes);
    case FASTCNN_SM90_FP16: return fastcnn_sm90_dgrad_fp16_workspace_bytes(a, bytes);
    default: return FASTCNN_SM90_NOT_BUILT;
  }
}
int32_t dgrad_run(const fastcnn_sm90_dgrad_args* a, void* ws, size_t n, CUstream_st* s) {
  if (!a) return FASTCNN_SM90_BAD_ARGS;
  switch (a->shape.dtype) {
    case FASTCNN_SM90_BF16: return fastcnn_sm90_dgrad_bf16_run(a, ws, n, s);
    case FASTCNN_SM90_FP16: return fastcnn_sm90_dgrad_fp16_run(a, ws, n, s);
    default: return FASTCNN_SM90_NOT_BUILT;
  }
}

int32_t wgrad_can_implement(const fastcnn_sm90_wgrad_args* a) {
  if (!a) return FASTCNN_SM90_BAD_ARGS;
  return a->shape.dtype == FASTCNN_SM90_BF16 ? fastcnn_sm90_wgrad_bf16_can_implement(a) : FASTCNN_SM90_NOT_BUILT;
}
int32_t wgrad_workspace_bytes(const fastcnn_sm90_wgrad_args* a, size_t* bytes) {
  if (!a) return FASTCNN_SM90_BAD_ARGS;
  return a->shape.dtype == FASTCNN_SM90_BF16 ? fastcnn_sm90_wgrad_bf16_workspace_bytes(a, bytes)
                                             : FASTCNN_SM90_NOT_BUILT;
}
int32_t wgrad_run(const fastcnn_sm90_wgrad_args* a, void* ws, size_t n, CUstream_st* s) {
  if (!a) return FASTCNN_SM90_BAD_ARGS;
  return a->shape.dtype == FASTCNN_SM90_BF16 ? fastcnn_sm90_wgrad_bf16_run(a, ws, n, s) : FASTCNN_SM90_NOT_BUILT;
}

int32_t gemm_can_implement(const fastcnn_sm90_gemm_args* a) {
  if (!a) return FASTCNN_SM90_BAD_ARGS;
  return a->dtype == FASTCNN_SM90_BF16 ? fastcnn_sm90_gemm_bf16_can_implement(a) : FASTCNN_SM90_NOT_BUILT;
}
int32_t gemm_workspace_bytes(const fastcnn_sm90_gemm_args* a, size_t* bytes) {
  if (!a) return FASTCNN_SM90_BAD_ARGS;
  return a->dtype == FASTCNN_SM90_BF16 ? fastcnn_sm90_gemm_bf16_workspace_bytes(a, bytes) : FASTCNN_SM90_NOT_BUILT;
}
int32_t gemm_run(const fastcnn_sm90_gemm_args* a, void* ws, size_t n, CUstream_st* s) {
  if (!a) return FASTCNN_SM90_BAD_ARGS;
  return a->dtype == FASTCNN_SM90_BF16 ? fastcnn_sm90_gemm_bf16_run(a, ws, n, s) : FASTCNN_SM90_NOT_BUILT;
}

const fastcnn_sm90_table kTable = {
    FASTCNN_SM90_ABI,      sizeof(fastcnn_sm90_table), kBuild,
    fprop_can_implement,   fprop_workspace_bytes,      fprop_run,
    dgrad_can_implement,   dgrad_workspace_bytes,      dgrad_run,
    wgrad_can_implement,   wgrad_workspace_bytes,      wgrad_run,
    gemm_can_implement,    gemm_workspace_bytes,       gemm_run,
};

PyModuleDef kModule = {PyModuleDef_HEAD_INIT, "_C_sm90",
                       "fastcnn's Hopper conv kernels (CUTLASS SM90); `table` is their C entry points",
                       -1, nullptr, nullptr, nullptr, nullptr, nullptr};

}  // namespace

PyMODINIT_FUNC PyInit__C_sm90(void) {
  PyObject* m = PyModule_Create(&kModule);
  if (!m) return nullptr;
  PyObject* cap = PyCapsule_New(const_cast<fastcnn_sm90_table*>(&kTable), "fastcnn._C_sm90.table", nullptr);
  if (!cap || PyModule_AddObject(m, "table", cap) < 0) {
    Py_XDECREF(cap);
    Py_DECREF(m);
    return nullptr;
  }
  if (PyModule_AddStringConstant(m, "build", kBuild) < 0) {
    Py_DECREF(m);
    return nullptr;
  }
  return m;
}
