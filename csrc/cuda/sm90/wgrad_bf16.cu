// wgrad, bf16 inputs, fp32 chunk partials in the workspace, bf16 result after the fixed-order reduction.
// Tile 128 (K) x 64 (C, nested: the im2col box runs over channels) x 64 (pixels): a 128-wide C tile
// would leave half of it empty on the C = 64 layers (ResNet layer1, GoogLeNet's narrow branches).
#include "cuda/sm90/sm90_conv.cuh"

using WgradBf16 = fastcnn::sm90::Wgrad<fastcnn::sm90::WgradConfig<
    cutlass::bfloat16_t, cute::Shape<cute::_128, cute::Shape<cute::_64>, cute::Shape<cute::_64>>>>;
FASTCNN_SM90_ENTRY_POINTS(wgrad, bf16, WgradBf16, fastcnn_sm90_wgrad_args)
