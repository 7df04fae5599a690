// Paged attention on CUDA: raw pointers + sizes + stream in, cudaError_t out.
// Tensor layouts (all contiguous in the last dim; strides in elements):
//   query [T, Hq, D], out [T, Hq, D] (same dtype), key_cache / value_cache
//   [num_blocks, block_size, Hkv, D] contiguous, query_start_loc int32 [B + 1],
//   seq_lens int32 [B], block_tables int32 [B, max_blocks]. Semantics in DESIGN.md.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/layout.h"

namespace pagedinfer::cuda {

enum class DType { kF32, kBF16, kF16 };

// Which kernel runs: kReference is one CTA per (token, head) with an online softmax over keys one
// at a time -- slow and obvious, kept to check the fast one on a GPU.
enum class Impl { kFast, kReference };

struct PagedAttentionArgs {
  const void* query;
  int64_t query_stride_token, query_stride_head;
  const void* key_cache;
  const void* value_cache;
  const int32_t* query_start_loc;
  const int32_t* seq_lens;
  const int32_t* block_tables;
  void* out;
  int64_t out_stride_token, out_stride_head;
  int64_t num_tokens, num_blocks;
  int num_seqs, max_blocks;
  int num_heads, num_kv_heads, head_dim, block_size;
  float scale;
  int64_t sliding_window;  // <= 0: none
  layout::AttentionPlan plan;
  // Split-K workspaces (fp32), used when plan.num_partitions > 1:
  // partial_out [T, Hq, P, D] (already divided by its own sum), partial_max / partial_sum [T, Hq, P].
  float* partial_out;
  float* partial_max;
  float* partial_sum;
  // Workspace int32 [B + 1] for the prefill kernel's tile map (first tile of each sequence);
  // allocated by the adapter when T > B.
  int32_t* prefill_tile_start;
  // Set by the launcher: tokens of sequences with q_len > 1 are left to the prefill kernel.
  bool multi_query_elsewhere;
};

// Whether the fast kernel can run this shape on the current device (shared memory); otherwise the
// adapter uses the reference kernel.
bool paged_attention_fast_supported(int head_dim, int elem_bytes, int group, int partition_size);

cudaError_t launch_paged_attention(const PagedAttentionArgs& args, DType dtype, Impl impl,
                                   cudaStream_t stream);

// The tensor-core prefill kernel (attention_prefill.cu): bf16 / fp16, head sizes 64, 80, 96, 128.
// It writes the rows of sequences with q_len > 1 only; launch_paged_attention pairs it with the
// split kernel for the rest.
bool paged_attention_prefill_supported(int head_dim, int elem_bytes);
cudaError_t launch_paged_attention_prefill(const PagedAttentionArgs& args, DType dtype,
                                           cudaStream_t stream);

}  // namespace pagedinfer::cuda
