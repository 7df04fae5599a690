// Entry points of the CUDA implementations of paged_attention and int4_linear / int8_linear (the
// schemas and CPU implementations come from attention_ops.h and gemm_ops.h; same semantics).
//   paged_attention(query [T, Hq, D], key_cache [num_blocks, bs, Hkv, D], value_cache,
//                   query_start_loc int32 [B + 1], seq_lens int32 [B], block_tables int32 [B, max_blocks],
//                   float scale, int sliding_window, out [T, Hq, D] (mutated)) -> ()
//   int4_linear(x [..., K], qweight uint8 [N, ceil(K/64)*32], scale fp16 [N, K/G], min fp16 [N, K/G],
//               int group_size, bias [N]?) -> [..., N]
//   int8_linear(x [..., K], qweight int8 [N, K], scale fp16 [N, K/G], int group_size, bias [N]?)
#pragma once

#include <ATen/ATen.h>

#include <optional>

namespace pagedinfer::ops {

#ifdef PAGEDINFER_WITH_CUDA
void paged_attention_cuda(const at::Tensor& query, const at::Tensor& key_cache,
                          const at::Tensor& value_cache, const at::Tensor& query_start_loc,
                          const at::Tensor& seq_lens, const at::Tensor& block_tables, double scale,
                          int64_t sliding_window, const at::Tensor& out);

at::Tensor int4_linear_cuda(const at::Tensor& x, const at::Tensor& qweight, const at::Tensor& scale,
                            const at::Tensor& min, int64_t group_size,
                            const std::optional<at::Tensor>& bias);
at::Tensor int8_linear_cuda(const at::Tensor& x, const at::Tensor& qweight, const at::Tensor& scale,
                            int64_t group_size, const std::optional<at::Tensor>& bias);
#endif

}  // namespace pagedinfer::ops
