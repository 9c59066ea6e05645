// Autocast rules of the fastcnn ops, as PyTorch's own: under torch.autocast(device, dtype) the
// convolutions cast their floating inputs to the autocast dtype (conv2d's lower_precision_fp
// policy; the weight cast is cached per autocast region, as for nn.Conv2d), add_relu promotes both
// addends to the widest floating type among them (torch.add's promote policy). max_pool2d and the
// backward ops run in their inputs' dtype: the Autocast keys fall through for them.
#include <ATen/autocast_mode.h>
#include <torch/library.h>

#include "backend.h"

namespace fastcnn {
namespace {

using OptT = const std::optional<at::Tensor>&;

template <c10::DeviceType D>
struct Rules {
  static at::Tensor conv2d(const at::Tensor& input, const at::Tensor& weight, OptT bias, OptT residual,
                           at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                           c10::string_view activation) {
    c10::impl::ExcludeDispatchKeyGuard no_autocast(at::autocast::get_autocast_dispatch_key_from_device_type(D));
    const auto t = at::autocast::get_lower_precision_fp_from_device_type(D);
    static const auto h = typed_op<decltype(conv2d)>("fastcnn::conv2d");
    using at::autocast::cached_cast;
    return h.call(cached_cast(t, input, D), cached_cast(t, weight, D), cached_cast(t, bias, D),
                  cached_cast(t, residual, D), stride, padding, dilation, groups, activation);
  }

  static at::Tensor conv1x1(const at::Tensor& input, const at::Tensor& weight, OptT bias, OptT residual,
                            at::IntArrayRef stride, c10::string_view activation) {
    c10::impl::ExcludeDispatchKeyGuard no_autocast(at::autocast::get_autocast_dispatch_key_from_device_type(D));
    const auto t = at::autocast::get_lower_precision_fp_from_device_type(D);
    static const auto h = typed_op<decltype(conv1x1)>("fastcnn::conv1x1");
    using at::autocast::cached_cast;
    return h.call(cached_cast(t, input, D), cached_cast(t, weight, D), cached_cast(t, bias, D),
                  cached_cast(t, residual, D), stride, activation);
  }

  static at::Tensor add_relu(const at::Tensor& input, const at::Tensor& other) {
    c10::impl::ExcludeDispatchKeyGuard no_autocast(at::autocast::get_autocast_dispatch_key_from_device_type(D));
    const auto t = at::autocast::promote_type(at::autocast::get_lower_precision_fp_from_device_type(D), D, input,
                                              other);
    static const auto h = typed_op<decltype(add_relu)>("fastcnn::add_relu");
    using at::autocast::cached_cast;
    return h.call(cached_cast(t, input, D), cached_cast(t, other, D));
  }

  static void registrations(torch::Library& m) {
    m.impl("conv2d", &conv2d);
    m.impl("conv1x1", &conv1x1);
    m.impl("add_relu", &add_relu);
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(fastcnn, AutocastCPU, m) { Rules<c10::DeviceType::CPU>::registrations(m); }
TORCH_LIBRARY_IMPL(fastcnn, AutocastCUDA, m) { Rules<c10::DeviceType::CUDA>::registrations(m); }

}  // namespace fastcnn
