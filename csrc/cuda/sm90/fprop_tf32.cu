// fprop, fp32 NHWC x KRSC -> NHWC with TF32 wgmma (taken only where PyTorch allows TF32 for convs and
// matmuls), fp32 accumulation, fused bias/residual/ReLU; 128x128x32 tile (32 fp32 = one 128-byte row).
#include "cuda/sm90/sm90_conv.cuh"

using FpropTf32 = fastcnn::sm90::Fprop<
    fastcnn::sm90::FpropConfig<float, cute::Shape<cute::_128, cute::_128, cute::Shape<cute::_32>>>>;
FASTCNN_SM90_ENTRY_POINTS(fprop, tf32, FpropTf32, fastcnn_sm90_fprop_args)
