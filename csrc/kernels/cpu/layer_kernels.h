// CPU kernels for the small per-layer ops of a transformer block, fused so that a decode step
// makes a few calls per layer instead of dozens: RMSNorm (optionally fused with the residual
// add), SiLU-and-multiply (SwiGLU), rotary position embedding (half-split "NeoX" layout), and
// the row argmax of greedy sampling.
// Raw pointers and sizes only; csrc/ops/layer_ops_cpu.cpp checks shapes and indices.
//
// Arithmetic in fp32 whatever the storage dtype; each output is rounded once to the storage
// dtype (the residual sum is rounded before it is normalized, so the stored residual and the
// normalized value agree with an unfused bf16 model).
#pragma once

#include <cstdint>

namespace pagedinfer::cpu {

enum class LayerDtype { kF32 = 0, kBF16 = 1, kF16 = 2 };

// Rows [row_begin, row_end) of [rows, hidden] tensors; strides in elements between rows.
//   fused_add_rms_norm: residual += x; x = residual / rms(residual) * weight   (both in place)
//   rms_norm:           out = x / rms(x) * weight, rms(v) = sqrt(mean(v^2) + eps)
void fused_add_rms_norm(LayerDtype dtype, void* x, int64_t x_stride, void* residual,
                        int64_t residual_stride, const void* weight, int64_t hidden, float eps,
                        int64_t row_begin, int64_t row_end);
void rms_norm(LayerDtype dtype, void* out, int64_t out_stride, const void* x, int64_t x_stride,
              const void* weight, int64_t hidden, float eps, int64_t row_begin, int64_t row_end);

// out[r, i] = silu(x[r, i]) * x[r, d + i] for i < d; x is [rows, 2d], out [rows, d].
void silu_and_mul(LayerDtype dtype, void* out, int64_t out_stride, const void* x,
                  int64_t x_stride, int64_t d, int64_t row_begin, int64_t row_end);

// In place on qk [T, H, D] (the D values of a head contiguous): with p = positions[t],
//   qk[t, h, i] = qk[t, h, i] * cos[p, i] + qk[t, h, (i + D/2) % D] * sin[p, i]
// where cos / sin are fp32 [max_positions, D] tables, sin holding -sin in its first half (the
// half-split rotation of HF's rotate_half). Tokens [token_begin, token_end).
void rotary_embedding(LayerDtype dtype, void* qk, int64_t stride_token, int64_t stride_head,
                      int64_t num_heads, int64_t head_dim, const int64_t* positions,
                      const float* cos, const float* sin, int64_t token_begin, int64_t token_end);

// out[r] = the index of the first maximum of row r of x [rows, n], n >= 1 (greedy sampling). A
// NaN counts as the maximum and the first NaN wins, as torch.max(dim) decides.
void argmax_rows(LayerDtype dtype, const void* x, int64_t x_stride, int64_t n, int64_t* out,
                 int64_t row_begin, int64_t row_end);

#ifdef PAGEDINFER_HAVE_AVX512
// AVX-512 twins (layer_kernels_avx512.cpp); the functions above call them when active_isa() allows.
void fused_add_rms_norm_avx512(LayerDtype dtype, void* x, int64_t x_stride, void* residual,
                               int64_t residual_stride, const void* weight, int64_t hidden,
                               float eps, int64_t row_begin, int64_t row_end);
void rms_norm_avx512(LayerDtype dtype, void* out, int64_t out_stride, const void* x,
                     int64_t x_stride, const void* weight, int64_t hidden, float eps,
                     int64_t row_begin, int64_t row_end);
void silu_and_mul_avx512(LayerDtype dtype, void* out, int64_t out_stride, const void* x,
                         int64_t x_stride, int64_t d, int64_t row_begin, int64_t row_end);
void rotary_embedding_avx512(LayerDtype dtype, void* qk, int64_t stride_token, int64_t stride_head,
                             int64_t num_heads, int64_t head_dim, const int64_t* positions,
                             const float* cos, const float* sin, int64_t token_begin,
                             int64_t token_end);
void argmax_rows_avx512(LayerDtype dtype, const void* x, int64_t x_stride, int64_t n, int64_t* out,
                        int64_t row_begin, int64_t row_end);
#endif

}  // namespace pagedinfer::cpu
