// fastcnn::_cpu_add_relu: relu(input + other) in one pass, and its backward (arguments arrive validated).
//
// TensorIterator gives broadcasting, any strides and the output memory format of torch.add; the
// loops are ours: a contiguous fast path the compiler vectorises, and a strided one.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/TensorIterator.h>
#include <torch/library.h>

#include "backend.h"
#include "checks.h"

namespace fastcnn::cpu {
namespace {

template <typename T, typename F>
void binary_loop(at::TensorIterator& iter, F f) {
  // A 2-d loop (outer strides after the 3 inner ones), not for_each's 1-d adapter: that adapter
  // (TensorIterator::loop_2d_from_1d) copies the pointers into a c10::SmallVector, where GCC 12
  // reports 8 false -Wmaybe-uninitialized warnings once it is inlined here.
  iter.for_each([f](char** base, const int64_t* strides, int64_t n, int64_t outer) {
    char* data[3] = {base[0], base[1], base[2]};
    constexpr int64_t s = sizeof(T);
    for (int64_t j = 0; j < outer; ++j) {
      T* o = reinterpret_cast<T*>(data[0]);
      const T* a = reinterpret_cast<const T*>(data[1]);
      const T* b = reinterpret_cast<const T*>(data[2]);
      if (strides[0] == s && strides[1] == s && strides[2] == s) {
        for (int64_t i = 0; i < n; ++i) o[i] = f(a[i], b[i]);
      } else if (strides[0] == s && strides[1] == s && strides[2] == 0) {
        const T bv = b[0];
        for (int64_t i = 0; i < n; ++i) o[i] = f(a[i], bv);
      } else if (strides[0] == s && strides[1] == 0 && strides[2] == s) {
        const T av = a[0];
        for (int64_t i = 0; i < n; ++i) o[i] = f(av, b[i]);
      } else {
        for (int64_t i = 0; i < n; ++i) {
          *reinterpret_cast<T*>(data[0] + i * strides[0]) = f(*reinterpret_cast<const T*>(data[1] + i * strides[1]),
                                                              *reinterpret_cast<const T*>(data[2] + i * strides[2]));
        }
      }
      for (int k = 0; k < 3; ++k) data[k] += strides[3 + k];
    }
  });
}

at::Tensor add_relu(const at::Tensor& input, const at::Tensor& other) {
  at::Tensor out;
  auto iter = at::TensorIterator::borrowing_binary_op(out, input, other);
  poison(iter.output(0));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "fastcnn_add_relu_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    binary_loop<scalar_t>(iter, [](scalar_t a, scalar_t b) -> scalar_t {
      const acc_t v = static_cast<acc_t>(a) + static_cast<acc_t>(b);
      return static_cast<scalar_t>(v < acc_t(0) ? acc_t(0) : v);  // NaN stays NaN
    });
  });
  return iter.output();
}

at::Tensor add_relu_backward(const at::Tensor& grad_output, const at::Tensor& output) {
  at::Tensor gi;
  auto iter = at::TensorIterator::borrowing_binary_op(gi, grad_output, output);
  poison(iter.output(0));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, output.scalar_type(), "fastcnn_add_relu_backward_cpu",
                                  [&] {
                                    binary_loop<scalar_t>(iter, [](scalar_t g, scalar_t o) -> scalar_t {
                                      return o <= scalar_t(0) ? scalar_t(0) : g;
                                    });
                                  });
  return iter.output();
}

}  // namespace

TORCH_LIBRARY_IMPL(fastcnn, CPU, m) {
  m.impl(FASTCNN_IMPL_OP("cpu", "add_relu"), &add_relu);
  m.impl(FASTCNN_IMPL_OP("cpu", "add_relu_backward"), &add_relu_backward);
}

}  // namespace fastcnn::cpu
