// Paged attention op: argument checks shared by every backend, and the per-backend entry points
// that torch_bindings.cpp registers.
//
//   paged_attention(query [T, Hq, D], key_cache [num_blocks, block_size, Hkv, D],
//                   value_cache (same), query_start_loc [B + 1] int32, seq_lens [B] int32,
//                   block_tables [B, max_blocks] int32, float scale, int sliding_window,
//                   out [T, Hq, D] (mutated))
// Semantics (positions, causal mask, sliding window, GQA): csrc/kernels/cpu/attention_kernels.h.
#pragma once

#include <ATen/ATen.h>

namespace pagedinfer::ops {

// Shape, dtype and device checks (everything but index values).
void check_paged_attention_args(const at::Tensor& query, const at::Tensor& key_cache,
                                const at::Tensor& value_cache, const at::Tensor& query_start_loc,
                                const at::Tensor& seq_lens, const at::Tensor& block_tables,
                                double scale, const at::Tensor& out);

// Index checks on host copies of the metadata: query_start_loc starts at 0, never decreases and
// ends at T; q_len <= seq_len <= max_blocks * block_size; every block id that will be read is in
// [0, num_blocks). Raises IndexError/ValueError naming the argument and the offending entry.
void check_paged_attention_indices(const int32_t* query_start_loc, const int32_t* seq_lens,
                                   const int32_t* block_tables, int64_t num_seqs,
                                   int64_t max_blocks, int64_t num_tokens, int64_t num_blocks,
                                   int64_t block_size, int64_t sliding_window);

void paged_attention_cpu(const at::Tensor& query, const at::Tensor& key_cache,
                         const at::Tensor& value_cache, const at::Tensor& query_start_loc,
                         const at::Tensor& seq_lens, const at::Tensor& block_tables, double scale,
                         int64_t sliding_window, const at::Tensor& out);

// RoPE on qkv's q and k heads (in place), k and v into the cache, paged attention of the q heads:
// out [T, num_heads * D] (attention_block_cpu.cpp).
at::Tensor rope_cache_attention_cpu(const at::Tensor& qkv, const at::Tensor& positions,
                                    const at::Tensor& cos, const at::Tensor& sin,
                                    const at::Tensor& key_cache, const at::Tensor& value_cache,
                                    const at::Tensor& slot_mapping,
                                    const at::Tensor& query_start_loc, const at::Tensor& seq_lens,
                                    const at::Tensor& block_tables, int64_t num_heads, double scale,
                                    int64_t sliding_window);

}  // namespace pagedinfer::ops
