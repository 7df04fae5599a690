// Weight-only INT4 / INT8 linear layers (y = x @ W^T + bias), entry points that
// torch_bindings.cpp registers. Packed layouts: csrc/kernels/cpu/gemm_kernels.h.
//
//   int4_linear(x [..., K] fp32/bf16/fp16, qweight uint8 [N, ceil(K/64)*32],
//               scale fp16 [N, K/G], min fp16 [N, K/G], group_size G, bias [N]?) -> [..., N]
//   int8_linear(x [..., K], qweight int8 [N, K], scale fp16 [N, K/G], group_size G, bias [N]?)
// The output has x's dtype. K is scale.size(1) * G.
#pragma once

#include <ATen/ATen.h>

#include <optional>

namespace pagedinfer::ops {

at::Tensor int4_linear_cpu(const at::Tensor& x, const at::Tensor& qweight, const at::Tensor& scale,
                           const at::Tensor& min, int64_t group_size,
                           const std::optional<at::Tensor>& bias);
at::Tensor int8_linear_cpu(const at::Tensor& x, const at::Tensor& qweight, const at::Tensor& scale,
                           int64_t group_size, const std::optional<at::Tensor>& bias);

}  // namespace pagedinfer::ops
