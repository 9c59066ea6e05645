// Channel padding for the tensor-core paths: a conv whose input channel count C is not a whole
// number of 16-byte rows (the stem: C = 3, LeNet: C = 1 and 6) runs as the same conv on C rounded up,
// with zero channels in the input and zero input-channel slices in the weight (sum unchanged). The
// copy is made once per call inside the op, on the torch-aware side; the sm90 path uses it
// (csrc/cuda/sm90_dispatch.cpp) and the sm_80-style kernels can take the same helper.
#pragma once

#include <ATen/ATen.h>

namespace fastcnn {
namespace cuda {

// `t` ([N, C, H, W], any strides) as a fresh channels_last dense [N, c_pad, H, W] tensor, zero in
// channels C..c_pad-1. The weight [K, C, R, S] pads the same way (its dim 1 is the input channel).
inline at::Tensor pad_channels(const at::Tensor& t, int64_t c_pad) {
  TORCH_INTERNAL_ASSERT(t.dim() == 4 && c_pad >= t.size(1));
  at::Tensor out = at::zeros({t.size(0), c_pad, t.size(2), t.size(3)},
                             t.options().memory_format(at::MemoryFormat::ChannelsLast));
  out.narrow(1, 0, t.size(1)).copy_(t);
  return out;
}

}  // namespace cuda
}  // namespace fastcnn
