// Backend choice shared by every kernel entry point.
//
// The public ops (fastcnn::conv2d, ...) have one kernel per dispatch key (CPU, CUDA). The backend
// the user picked (fastcnn.set_backend / FASTCNN_BACKEND) decides, per call, whether that kernel
// runs our C++/CUDA code or hands the call to the Triton implementation, which Python registers
// as the op fastcnn::_triton_<op> with the same schema. Routing here, below the dispatcher, keeps
// one op name in traced graphs (torch.compile sees fastcnn::conv2d whatever the backend).
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <atomic>
#include <string>

namespace fastcnn {

enum class Backend : int { Auto = 0, CPU = 1, CUDA = 2, Triton = 3 };

Backend current_backend();
void set_current_backend(Backend b);
const char* backend_name(Backend b);

// Handle of the Triton twin of `op` ("conv2d" -> fastcnn::_triton_conv2d).
const c10::OperatorHandle& triton_op(const char* op);

// Decide for one call whose tensors live on `device`, given the backend in force:
//   true  -> the caller must forward the call to fastcnn::_triton_<op>;
//   false -> run the native kernel of this dispatch key.
// Throws a ValueError naming the backend and the device when the backend cannot run them.
// `native_is_cuda` is true in CUDA kernels, false in CPU kernels.
bool use_triton(const char* op, const c10::Device& device, bool native_is_cuda);

// Output allocation. With poisoning on (tests: fastcnn._C._set_poison(True)) every output is
// filled with NaN (integers: -1) before the kernel runs, so an element a kernel forgets to write
// fails the comparison instead of passing by luck.
bool poison_outputs();
void set_poison_outputs(bool on);
at::Tensor new_output(at::IntArrayRef sizes, const at::TensorOptions& opts);
void poison(const at::Tensor& t);

// Forward a call to the Triton twin; Sig is the kernel's own signature (it matches the schema).
template <typename Sig, typename... Args>
decltype(auto) call_triton(const char* op, Args&&... args) {
  return triton_op(op).typed<Sig>().call(std::forward<Args>(args)...);
}

}  // namespace fastcnn
