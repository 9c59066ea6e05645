// CUDA conv1x1 kernels: the implicit-GEMM family of igemm.cuh with k1x1 = true (see
// conv1x1_kernel.cuh). Torch-free.
#include "cuda/conv1x1_kernel.cuh"

#include "cuda/igemm.cuh"

namespace fastcnn {
namespace cuda {

template <typename T>
void launch_conv1x1_fprop(const ConvFpropParams& p, cudaStream_t stream) {
  igemm::ConvFamily<T, true>::fprop(p, stream);
}
template <typename T>
void launch_conv1x1_dgrad(const ConvDgradParams& p, cudaStream_t stream) {
  igemm::ConvFamily<T, true>::dgrad(p, stream);
}
template <typename T>
int64_t conv1x1_wgrad_workspace_bytes(const ConvWgradParams& p) {
  return igemm::ConvFamily<T, true>::wgrad_ws(p);
}
template <typename T>
void launch_conv1x1_wgrad(const ConvWgradParams& p, cudaStream_t stream) {
  igemm::ConvFamily<T, true>::wgrad(p, stream);
}

#define FASTCNN_INSTANTIATE_CONV1X1(T)                                        \
  template void launch_conv1x1_fprop<T>(const ConvFpropParams&, cudaStream_t); \
  template void launch_conv1x1_dgrad<T>(const ConvDgradParams&, cudaStream_t); \
  template int64_t conv1x1_wgrad_workspace_bytes<T>(const ConvWgradParams&);   \
  template void launch_conv1x1_wgrad<T>(const ConvWgradParams&, cudaStream_t);

FASTCNN_INSTANTIATE_CONV1X1(float)
FASTCNN_INSTANTIATE_CONV1X1(double)
FASTCNN_INSTANTIATE_CONV1X1(__half)
FASTCNN_INSTANTIATE_CONV1X1(__nv_bfloat16)

#undef FASTCNN_INSTANTIATE_CONV1X1

}  // namespace cuda
}  // namespace fastcnn
