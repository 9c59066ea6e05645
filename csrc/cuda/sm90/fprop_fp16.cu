// fprop, fp16 NHWC x KRSC -> NHWC, fp32 accumulation, fused bias/residual/ReLU; 128x128x64 tile.
#include "cuda/sm90/sm90_conv.cuh"

using FpropFp16 = fastcnn::sm90::Fprop<
    fastcnn::sm90::FpropConfig<cutlass::half_t, cute::Shape<cute::_128, cute::_128, cute::Shape<cute::_64>>>>;
FASTCNN_SM90_ENTRY_POINTS(fprop, fp16, FpropFp16, fastcnn_sm90_fprop_args)
