// Entry points of the CUDA-only op implementations (paged attention, quantized GEMM) that
// torch_bindings.cpp registers for the CUDA dispatch key. Schemas:
//   paged_attention(query [T, Hq, D], key_cache [num_blocks, bs, Hkv, D], value_cache,
//                   query_start_loc int32 [B + 1], seq_lens int32 [B], block_tables int32 [B, max_blocks],
//                   float scale, int sliding_window, out [T, Hq, D] (mutated)) -> ()
//   int4_gemm_cuda(x [..., K], packed int32 [N_pad/8, K_pad/128, 32, 4], scales fp32 [K_pad/G, N],
//                  mins fp32 [K_pad/G, N], int group_size, bias [N]?) -> [..., N]
//   int8_gemm_cuda(x [..., K], packed int32 [N_pad/8, K_pad/128, 32, 8], scales fp32 [K_pad/G, N],
//                  int group_size, bias [N]?) -> [..., N]
//   dequantize_int4_cuda / dequantize_int8_cuda(packed, scales[, mins], int K, int group_size,
//                                               ScalarType dtype) -> [N, K]
// Packed layouts: csrc/kernels/cuda/layout.h, python/pagedinfer/quant_cuda.py.
#pragma once

#include <ATen/ATen.h>

#include <optional>

namespace pagedinfer::ops {

// Checks packed [N_pad/8, K_pad/128, 32, words] int32, scales (and mins) fp32 [K_pad/G, N] against
// K and group_size (quant_cuda_format_common.cpp). bits = 4 | 8; mins = nullptr for INT8.
struct PackedShape {
  int64_t n, n_pad, k_pad;
};
PackedShape check_packed(const char* op, int bits, const at::Tensor& packed, const at::Tensor& scales,
                         const at::Tensor* mins, int64_t k, int64_t group_size);

// CPU implementations of the CUDA-format ops: the packed layout decoded on the host with the same
// index functions (layout.h) -- the executable specification of the format, and what CPU tests run.
at::Tensor int4_gemm_cuda_format_cpu(const at::Tensor& x, const at::Tensor& packed,
                                     const at::Tensor& scales, const at::Tensor& mins,
                                     int64_t group_size, const std::optional<at::Tensor>& bias);
at::Tensor int8_gemm_cuda_format_cpu(const at::Tensor& x, const at::Tensor& packed,
                                     const at::Tensor& scales, int64_t group_size,
                                     const std::optional<at::Tensor>& bias);
at::Tensor dequantize_int4_cuda_format_cpu(const at::Tensor& packed, const at::Tensor& scales,
                                           const at::Tensor& mins, int64_t k, int64_t group_size,
                                           at::ScalarType dtype);
at::Tensor dequantize_int8_cuda_format_cpu(const at::Tensor& packed, const at::Tensor& scales,
                                           int64_t k, int64_t group_size, at::ScalarType dtype);

#ifdef PAGEDINFER_WITH_CUDA
void paged_attention_cuda(const at::Tensor& query, const at::Tensor& key_cache,
                          const at::Tensor& value_cache, const at::Tensor& query_start_loc,
                          const at::Tensor& seq_lens, const at::Tensor& block_tables, double scale,
                          int64_t sliding_window, const at::Tensor& out);

at::Tensor int4_gemm_cuda(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scales,
                          const at::Tensor& mins, int64_t group_size,
                          const std::optional<at::Tensor>& bias);
at::Tensor int8_gemm_cuda(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scales,
                          int64_t group_size, const std::optional<at::Tensor>& bias);
at::Tensor dequantize_int4_cuda(const at::Tensor& packed, const at::Tensor& scales,
                                const at::Tensor& mins, int64_t k, int64_t group_size,
                                at::ScalarType dtype);
at::Tensor dequantize_int8_cuda(const at::Tensor& packed, const at::Tensor& scales, int64_t k,
                                int64_t group_size, at::ScalarType dtype);
#endif

}  // namespace pagedinfer::ops
