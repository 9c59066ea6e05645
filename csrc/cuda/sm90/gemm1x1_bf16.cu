// 1x1 conv (stride 1, no padding) as a persistent cooperative GEMM, bf16, fp32 accumulation, the same
// fused bias/residual/ReLU epilogue; 128x128x64 tile over two consumer warpgroups.
#include "cuda/sm90/sm90_conv.cuh"

using GemmBf16 = fastcnn::sm90::Gemm<
    fastcnn::sm90::GemmConfig<cutlass::bfloat16_t, cute::Shape<cute::_128, cute::_128, cute::_64>>>;
FASTCNN_SM90_ENTRY_POINTS(gemm, bf16, GemmBf16, fastcnn_sm90_gemm_args)
