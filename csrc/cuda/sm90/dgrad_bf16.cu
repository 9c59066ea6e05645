// dgrad (unit stride), bf16: dx = conv_transpose(dy, w), fp32 accumulation; 128x128x64 tile.
#include "cuda/sm90/sm90_conv.cuh"

using DgradBf16 = fastcnn::sm90::Dgrad<
    fastcnn::sm90::DgradConfig<cutlass::bfloat16_t, cute::Shape<cute::_128, cute::_128, cute::Shape<cute::_64>>>>;
FASTCNN_SM90_ENTRY_POINTS(dgrad, bf16, DgradBf16, fastcnn_sm90_dgrad_args)
