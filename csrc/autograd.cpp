// Autograd of the public forward ops (conv2d, conv1x1, max_pool2d, add_relu) as C++
// torch::autograd::Functions registered for the Autograd key. Each backward calls the op's
// routed _<op>_backward op, so every backend differentiates the same way.
//
// Why C++ and not torch.library.register_autograd: the Python wrapper it generates cost ~300 us per
// conv per training step on the CPU (a tiny conv's forward+backward took 428 us with it, 106 us
// now, F.conv2d 91 us; its fill_defaults alone ~58 us a call); ResNet-50 runs 53 convs, 16
// add_relus and a pool per step. The contract is the one the Python version had:
// gradients only for the inputs that need them, the residual's gradient is the pre-activation
// gradient, a broadcast addend's gradient summed to its shape, max_pool2d's indices not
// differentiable. A second derivative fails with the backward ops' own message (fastcnn/_ops.py
// registers them a node that raises): under create_graph the backward op is called with autograd on.
#include <torch/autograd.h>
#include <torch/library.h>

#include <string>
#include <vector>

#include "backend.h"
#include "checks.h"

namespace fastcnn {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using OptT = const std::optional<at::Tensor>&;

// The edge index of each differentiable argument (-1: absent), for ctx->needs_input_grad: the
// autograd node has an edge per defined tensor argument only.
int64_t edge_of(OptT t, int64_t& next) { return t.has_value() && t->defined() ? next++ : -1; }
bool needs(AutogradContext* ctx, int64_t edge) { return edge >= 0 && ctx->needs_input_grad(size_t(edge)); }

// Calls a backward op: below autograd unless the graph of the gradient is being recorded
// (create_graph), where the op's node makes a second derivative fail with its message.
template <typename F>
auto call_backward(F&& f) {
  if (at::GradMode::is_enabled()) return f();
  at::AutoDispatchBelowADInplaceOrView below;
  return f();
}

using ConvBackwardResult = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// The schemas (csrc/fastcnn.cpp) as C++ signatures, for the typed op handles.
using Conv2dSig = at::Tensor(const at::Tensor&, const at::Tensor&, OptT, OptT, at::IntArrayRef, at::IntArrayRef,
                             at::IntArrayRef, int64_t, c10::string_view);
using Conv2dBackwardSig = ConvBackwardResult(const at::Tensor&, const at::Tensor&, const at::Tensor&, OptT,
                                             at::IntArrayRef, at::IntArrayRef, at::IntArrayRef, int64_t,
                                             c10::string_view, std::array<bool, 4>);
using Conv1x1Sig = at::Tensor(const at::Tensor&, const at::Tensor&, OptT, OptT, at::IntArrayRef, c10::string_view);
using Conv1x1BackwardSig = ConvBackwardResult(const at::Tensor&, const at::Tensor&, const at::Tensor&, OptT,
                                              at::IntArrayRef, c10::string_view, std::array<bool, 4>);
using MaxPool2dSig = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, at::IntArrayRef, at::IntArrayRef,
                                                        at::IntArrayRef, at::IntArrayRef, bool, bool);
using MaxPool2dBackwardSig = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, at::IntArrayRef,
                                        at::IntArrayRef, at::IntArrayRef, at::IntArrayRef, bool);
using BinarySig = at::Tensor(const at::Tensor&, const at::Tensor&);  // add_relu and its backward

// The shared part of conv2d's and conv1x1's backward: which gradients to compute, and what each
// argument gets. `call(mask)` runs the backward op.
template <typename Call>
variable_list conv_grads(AutogradContext* ctx, const at::Tensor& grad, size_t n_args, Call&& call) {
  const bool relu = ctx->saved_data["relu"].toBool();
  const int64_t e_bias = ctx->saved_data["e_bias"].toInt(), e_res = ctx->saved_data["e_res"].toInt();
  const bool need_x = ctx->needs_input_grad(0), need_w = ctx->needs_input_grad(1), need_b = needs(ctx, e_bias),
             need_r = needs(ctx, e_res);
  const std::array<bool, 4> mask{need_x, need_w, need_b, need_r && relu};
  at::Tensor gi, gw, gb, ga;
  if (mask[0] || mask[1] || mask[2] || mask[3]) std::tie(gi, gw, gb, ga) = call(mask);
  variable_list out(n_args);
  if (need_x) out[0] = gi;
  if (need_w) out[1] = gw;
  if (need_b) out[2] = gb;
  if (need_r) out[3] = relu ? ga : grad;  // without ReLU the residual's gradient is the output's
  return out;
}

void save_conv(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& weight, OptT bias, OptT residual,
               const at::Tensor& out, bool relu) {
  int64_t next = 2;  // input, weight
  ctx->saved_data["e_bias"] = edge_of(bias, next);
  ctx->saved_data["e_res"] = edge_of(residual, next);
  ctx->saved_data["relu"] = relu;
  ctx->save_for_backward({input, weight, relu ? out : at::Tensor()});
}

struct Conv2dFn : torch::autograd::Function<Conv2dFn> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& weight, OptT bias,
                            OptT residual, at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                            int64_t groups, c10::string_view activation) {
    static const auto h = typed_op<Conv2dSig>("fastcnn::conv2d");
    at::Tensor out;
    {
      at::AutoDispatchBelowADInplaceOrView below;
      out = h.call(input, weight, bias, residual, stride, padding, dilation, groups, activation);
    }
    save_conv(ctx, input, weight, bias, residual, out, parse_activation("conv2d", activation) == Activation::ReLU);
    ctx->saved_data["stride"] = stride.vec();
    ctx->saved_data["padding"] = padding.vec();
    ctx->saved_data["dilation"] = dilation.vec();
    ctx->saved_data["groups"] = groups;
    ctx->saved_data["activation"] = std::string(activation);
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto h = typed_op<Conv2dBackwardSig>("fastcnn::_conv2d_backward");
    const auto saved = ctx->get_saved_variables();
    const auto stride = ctx->saved_data["stride"].toIntVector(), padding = ctx->saved_data["padding"].toIntVector(),
               dilation = ctx->saved_data["dilation"].toIntVector();
    const int64_t groups = ctx->saved_data["groups"].toInt();
    const std::string act = ctx->saved_data["activation"].toStringRef();
    const std::optional<at::Tensor> out = saved[2].defined() ? std::optional<at::Tensor>(saved[2]) : std::nullopt;
    return conv_grads(ctx, grads[0], 9, [&](std::array<bool, 4> mask) {
      return call_backward([&] {
        return h.call(grads[0], saved[0], saved[1], out, stride, padding, dilation, groups, act, mask);
      });
    });
  }
};

struct Conv1x1Fn : torch::autograd::Function<Conv1x1Fn> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& weight, OptT bias,
                            OptT residual, at::IntArrayRef stride, c10::string_view activation) {
    static const auto h = typed_op<Conv1x1Sig>("fastcnn::conv1x1");
    at::Tensor out;
    {
      at::AutoDispatchBelowADInplaceOrView below;
      out = h.call(input, weight, bias, residual, stride, activation);
    }
    save_conv(ctx, input, weight, bias, residual, out, parse_activation("conv1x1", activation) == Activation::ReLU);
    ctx->saved_data["stride"] = stride.vec();
    ctx->saved_data["activation"] = std::string(activation);
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto h = typed_op<Conv1x1BackwardSig>("fastcnn::_conv1x1_backward");
    const auto saved = ctx->get_saved_variables();
    const auto stride = ctx->saved_data["stride"].toIntVector();
    const std::string act = ctx->saved_data["activation"].toStringRef();
    const std::optional<at::Tensor> out = saved[2].defined() ? std::optional<at::Tensor>(saved[2]) : std::nullopt;
    return conv_grads(ctx, grads[0], 6, [&](std::array<bool, 4> mask) {
      return call_backward([&] { return h.call(grads[0], saved[0], saved[1], out, stride, act, mask); });
    });
  }
};

struct MaxPool2dFn : torch::autograd::Function<MaxPool2dFn> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& input, at::IntArrayRef kernel_size,
                               at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                               bool ceil_mode, bool with_indices) {
    static const auto h = typed_op<MaxPool2dSig>("fastcnn::max_pool2d");
    at::Tensor out, idx;
    {
      at::AutoDispatchBelowADInplaceOrView below;
      std::tie(out, idx) = h.call(input, kernel_size, stride, padding, dilation, ceil_mode, with_indices);
    }
    ctx->mark_non_differentiable({idx});
    // With empty idx (with_indices=False) the backward recomputes each window's argmax.
    ctx->save_for_backward({input, idx});
    ctx->saved_data["kernel_size"] = kernel_size.vec();
    ctx->saved_data["stride"] = stride.vec();
    ctx->saved_data["padding"] = padding.vec();
    ctx->saved_data["dilation"] = dilation.vec();
    ctx->saved_data["ceil_mode"] = ceil_mode;
    return {out, idx};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto h = typed_op<MaxPool2dBackwardSig>("fastcnn::_max_pool2d_backward");
    const auto saved = ctx->get_saved_variables();
    const auto k = ctx->saved_data["kernel_size"].toIntVector(), s = ctx->saved_data["stride"].toIntVector(),
               p = ctx->saved_data["padding"].toIntVector(), d = ctx->saved_data["dilation"].toIntVector();
    const bool ceil_mode = ctx->saved_data["ceil_mode"].toBool();
    variable_list out(7);
    out[0] = call_backward([&] { return h.call(grads[0], saved[0], saved[1], k, s, p, d, ceil_mode); });
    return out;
  }
};

struct AddReluFn : torch::autograd::Function<AddReluFn> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& other) {
    static const auto h = typed_op<BinarySig>("fastcnn::add_relu");
    at::Tensor out;
    {
      at::AutoDispatchBelowADInplaceOrView below;
      out = h.call(input, other);
    }
    ctx->save_for_backward({out});
    ctx->saved_data["input_shape"] = input.sizes().vec();
    ctx->saved_data["other_shape"] = other.sizes().vec();
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto h = typed_op<BinarySig>("fastcnn::_add_relu_backward");
    const auto saved = ctx->get_saved_variables();
    const bool need[2] = {ctx->needs_input_grad(0), ctx->needs_input_grad(1)};
    variable_list out(2);
    if (!need[0] && !need[1]) return out;
    const at::Tensor g = call_backward([&] { return h.call(grads[0], saved[0]); });
    const char* keys[2] = {"input_shape", "other_shape"};
    for (int i = 0; i < 2; ++i) {
      if (!need[i]) continue;
      const auto shape = ctx->saved_data[keys[i]].toIntVector();
      out[i] = g.sizes() == at::IntArrayRef(shape) ? g : g.sum_to_size(shape);  // a broadcast addend
    }
    return out;
  }
};

at::Tensor conv2d_autograd(const at::Tensor& input, const at::Tensor& weight, OptT bias, OptT residual,
                           at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                           c10::string_view activation) {
  return Conv2dFn::apply(input, weight, bias, residual, stride, padding, dilation, groups, activation);
}

at::Tensor conv1x1_autograd(const at::Tensor& input, const at::Tensor& weight, OptT bias, OptT residual,
                            at::IntArrayRef stride, c10::string_view activation) {
  return Conv1x1Fn::apply(input, weight, bias, residual, stride, activation);
}

std::tuple<at::Tensor, at::Tensor> max_pool2d_autograd(const at::Tensor& input, at::IntArrayRef kernel_size,
                                                       at::IntArrayRef stride, at::IntArrayRef padding,
                                                       at::IntArrayRef dilation, bool ceil_mode, bool with_indices) {
  auto r = MaxPool2dFn::apply(input, kernel_size, stride, padding, dilation, ceil_mode, with_indices);
  return {r[0], r[1]};
}

at::Tensor add_relu_autograd(const at::Tensor& input, const at::Tensor& other) {
  return AddReluFn::apply(input, other);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastcnn, Autograd, m) {
  m.impl("conv2d", &conv2d_autograd);
  m.impl("conv1x1", &conv1x1_autograd);
  m.impl("max_pool2d", &max_pool2d_autograd);
  m.impl("add_relu", &add_relu_autograd);
}

}  // namespace fastcnn
