// Checks for the paged attention op, shared by the CPU and CUDA adapters.
#include <cmath>

#include "ops/attention_ops.h"
#include "ops/checks.h"

namespace pagedinfer::ops {

void check_paged_attention_args(const at::Tensor& query, const at::Tensor& key_cache,
                                const at::Tensor& value_cache, const at::Tensor& query_start_loc,
                                const at::Tensor& seq_lens, const at::Tensor& block_tables,
                                double scale, const at::Tensor& out) {
  const char* op = "paged_attention";
  check_dim(query, op, "query", 3, "[T, Hq, D]");
  check_dtype(query, op, "query", {at::kFloat, at::kBFloat16, at::kHalf});
  check_dim(key_cache, op, "key_cache", 4, "[num_blocks, block_size, Hkv, D]");
  check_dim(value_cache, op, "value_cache", 4, "[num_blocks, block_size, Hkv, D]");
  TORCH_CHECK_VALUE(value_cache.sizes() == key_cache.sizes(), op,
                    ": value_cache must have the shape of key_cache ", shape_str(key_cache),
                    ", got ", shape_str(value_cache));
  check_same_dtype(query, "query", key_cache, "key_cache", op);
  check_same_dtype(query, "query", value_cache, "value_cache", op);
  check_contiguous(key_cache, op, "key_cache");
  check_contiguous(value_cache, op, "value_cache");
  check_size(key_cache, op, "key_cache", 3, query.size(2), "head_dim, from query");
  const int64_t Hq = query.size(1), Hkv = key_cache.size(2);
  TORCH_CHECK_VALUE(Hq > 0 && Hkv > 0 && Hq % Hkv == 0, op,
                    ": the query heads (query.size(1) = ", Hq,
                    ") must be a positive multiple of the KV heads (key_cache.size(2) = ", Hkv, ")");
  TORCH_CHECK_VALUE(query.size(2) > 0, op, ": head_dim (query.size(2)) must be positive, got ",
                    query.size(2));
  TORCH_CHECK_VALUE(key_cache.size(1) > 0, op,
                    ": block_size (key_cache.size(1)) must be positive, got ", key_cache.size(1));
  check_dim(query_start_loc, op, "query_start_loc", 1, "[B + 1]");
  check_dtype(query_start_loc, op, "query_start_loc", {at::kInt});
  TORCH_CHECK_VALUE(query_start_loc.size(0) >= 1, op,
                    ": query_start_loc must have B + 1 >= 1 entries, got 0");
  const int64_t B = query_start_loc.size(0) - 1;
  check_dim(seq_lens, op, "seq_lens", 1, "[B]");
  check_dtype(seq_lens, op, "seq_lens", {at::kInt});
  check_size(seq_lens, op, "seq_lens", 0, B, "B, from query_start_loc");
  check_dim(block_tables, op, "block_tables", 2, "[B, max_blocks]");
  check_dtype(block_tables, op, "block_tables", {at::kInt});
  check_size(block_tables, op, "block_tables", 0, B, "B, from query_start_loc");
  check_dim(out, op, "out", 3, "[T, Hq, D]");
  TORCH_CHECK_VALUE(out.sizes() == query.sizes(), op, ": out must have the shape of query ",
                    shape_str(query), ", got ", shape_str(out));
  check_same_dtype(query, "query", out, "out", op);
  TORCH_CHECK_VALUE(out.stride(2) == 1 || out.size(2) == 1, op,
                    ": out's last dim must be contiguous (stride 1), got strides ", out.strides());
  TORCH_CHECK_VALUE(std::isfinite(scale), op, ": scale must be finite, got ", scale);
  check_same_device(query, "query", key_cache, "key_cache", op);
  check_same_device(query, "query", value_cache, "value_cache", op);
  check_same_device(query, "query", out, "out", op);
  check_same_device(query, "query", query_start_loc, "query_start_loc", op);
  check_same_device(query, "query", seq_lens, "seq_lens", op);
  check_same_device(query, "query", block_tables, "block_tables", op);
}

void check_paged_attention_indices(const int32_t* qsl, const int32_t* seq_lens,
                                   const int32_t* block_tables, int64_t num_seqs,
                                   int64_t max_blocks, int64_t num_tokens, int64_t num_blocks,
                                   int64_t block_size, int64_t sliding_window) {
  const char* op = "paged_attention";
  TORCH_CHECK_INDEX(qsl[0] == 0, op, ": query_start_loc[0] must be 0, got ", qsl[0]);
  TORCH_CHECK_INDEX(qsl[num_seqs] == num_tokens, op, ": query_start_loc[", num_seqs,
                    "] (the last entry) must equal T = query.size(0) = ", num_tokens, ", got ",
                    qsl[num_seqs]);
  const int64_t capacity = max_blocks * block_size;
  for (int64_t i = 0; i < num_seqs; ++i) {
    const int64_t q_len = static_cast<int64_t>(qsl[i + 1]) - qsl[i];
    TORCH_CHECK_INDEX(q_len >= 0, op, ": query_start_loc must be non-decreasing, got query_start_loc[",
                      i, "] = ", qsl[i], " > query_start_loc[", i + 1, "] = ", qsl[i + 1]);
    const int64_t len = seq_lens[i];
    TORCH_CHECK_INDEX(len >= q_len, op, ": seq_lens[", i, "] = ", len,
                      " is less than the sequence's query count ", q_len,
                      " (query_start_loc[", i + 1, "] - query_start_loc[", i, "])");
    TORCH_CHECK_INDEX(len <= capacity, op, ": seq_lens[", i, "] = ", len,
                      " exceeds what block_tables can address: max_blocks * block_size = ",
                      max_blocks, " * ", block_size, " = ", capacity);
    if (q_len == 0) continue;
    // Only the blocks this sequence's queries can see are read, so only those must be valid
    // (an engine may drop blocks that fell out of a sliding window).
    int64_t first_key = 0;
    if (sliding_window > 0) first_key = std::max<int64_t>(0, len - q_len - sliding_window + 1);
    const int32_t* row = block_tables + i * max_blocks;
    for (int64_t b = first_key / block_size; b <= (len - 1) / block_size; ++b)
      TORCH_CHECK_INDEX(row[b] >= 0 && row[b] < num_blocks, op, ": block_tables[", i, ", ", b,
                        "] = ", row[b], " is not a block id in [0, num_blocks = ", num_blocks,
                        ") (sequence ", i, " reads its keys up to position ", len - 1, ")");
  }
}

}  // namespace pagedinfer::ops
