// Fused per-layer ops (CPU): entry points that torch_bindings.cpp registers.
//
//   fused_add_rms_norm(x [R, H] (mutated), residual [R, H] (mutated), weight [H], eps):
//       residual += x; x = residual / sqrt(mean(residual^2) + eps) * weight
//   rms_norm(out [R, H] (mutated), x [R, H], weight [H], eps)
//   silu_and_mul(out [R, d] (mutated), x [R, 2d]): out = silu(x[:, :d]) * x[:, d:]
//   rotary_embedding(positions [T] int64, qk [T, H, D] (mutated), cos [P, D] fp32, sin [P, D] fp32)
// Rows may be strided (a slice of a fused GEMM output); the last dim must be contiguous.
// x / residual / out / weight / qk share one dtype: fp32, bf16 or fp16.
#pragma once

#include <ATen/ATen.h>

namespace pagedinfer::ops {

void fused_add_rms_norm_cpu(const at::Tensor& x, const at::Tensor& residual,
                            const at::Tensor& weight, double eps);
void rms_norm_cpu(const at::Tensor& out, const at::Tensor& x, const at::Tensor& weight, double eps);
void silu_and_mul_cpu(const at::Tensor& out, const at::Tensor& x);
void rotary_embedding_cpu(const at::Tensor& positions, const at::Tensor& qk, const at::Tensor& cos,
                          const at::Tensor& sin);

// The index of each row's first maximum (NaN counts as the maximum), int64 [rows], for x [rows, n].
at::Tensor argmax_cpu(const at::Tensor& x);

}  // namespace pagedinfer::ops
