// CPU paged attention: one varlen op for decode, prefill, chunked prefill and speculative
// verification. Raw pointers and sizes only; csrc/ops/attention_ops_* checks every index first.
//
// THE SEMANTICS (the single reference for every backend; DESIGN.md "Data layouts"):
//   query        [T, Hq, D]     element (t, h, d) at query[t * q_stride_token + h * q_stride_head + d]
//   key_cache    [num_blocks, block_size, Hkv, D] contiguous; value_cache the same
//   query_start_loc [B + 1] int32, qsl[0] = 0, non-decreasing, qsl[B] = T
//   seq_lens     [B] int32: context length of sequence i *including* this step's tokens
//   block_tables [B, max_blocks] int32: key position p of sequence i lives in block
//                block_tables[i][p / block_size] at offset p % block_size
//   out          [T, Hq, D]     written in the query's dtype
// Sequence i has q_len_i = qsl[i+1] - qsl[i] queries (0 allowed: nothing to do) at positions
// seq_lens[i] - q_len_i ... seq_lens[i] - 1. The query at position p attends to keys
// max(0, p - W + 1) ... p with W = sliding_window (W <= 0: no window, keys 0 ... p), with weights
// softmax(scale * q . k) over those keys; query head h reads KV head h / (Hq / Hkv).
// Arithmetic: products and sums in fp32 whatever the storage dtype (bf16 x bf16 products are exact
// in fp32), output rounded once to the query dtype.
//
// Work split (see plan_paged_attention): a work item is one sequence x a range of KV heads x a
// tile of that sequence's queries x a range of key positions. Inside an item all query heads of a
// GQA group are processed together, so each K/V row is read once per group; items of a sequence
// whose key range was split (split-K, so one long sequence keeps every core busy) write a partial
// result (output normalized over its keys + log-sum-exp) that merge_partials combines.
#pragma once

#include <cstdint>
#include <vector>

namespace pagedinfer::cpu {

enum class AttnDtype { kF32 = 0, kBF16 = 1, kF16 = 2 };

struct PagedAttentionParams {
  const void* query;
  int64_t q_stride_token, q_stride_head;  // in elements; the D values of a head are contiguous
  const void* key_cache;
  const void* value_cache;
  void* out;
  int64_t o_stride_token, o_stride_head;  // in elements
  const int32_t* query_start_loc;         // [B + 1]
  const int32_t* seq_lens;                // [B]
  const int32_t* block_tables;            // [B, max_blocks] row-major
  int64_t num_seqs, max_blocks, block_size;
  int64_t num_heads, num_kv_heads, head_dim;
  float scale;
  int64_t sliding_window;  // <= 0: full causal
  AttnDtype dtype;
  bool allow_amx = true;  // AMX tiles where the CPU and OS allow (tests turn it off to cover both)
};

// One unit of work; every range is half-open. q_begin/q_end index the sequence's own queries
// (0 ... q_len), k_begin/k_end are key positions. part_offset < 0: write the final output;
// otherwise write rows x D floats of partial output at partials + part_offset and rows log-sum-exps
// at lse + part_offset / D, where rows = (kv_end - kv_begin) * (q_end - q_begin) * group.
struct AttentionWorkItem {
  int32_t seq, q_begin, q_end, kv_begin, kv_end, k_begin, k_end;
  int64_t part_offset;
  double cost;  // rows x keys, for ordering (largest first)
};

// The items of one (seq, kv range, query tile) whose keys were split into n_splits items with
// consecutive partial buffers starting at part_offset.
struct AttentionMergeGroup {
  int32_t seq, q_begin, q_end, kv_begin, kv_end, n_splits;
  int64_t part_offset;
};

struct AttentionPlan {
  std::vector<AttentionWorkItem> items;  // sorted by cost, largest first
  std::vector<AttentionMergeGroup> merges;
  int64_t partial_floats = 0;  // size of the partial-output buffer (the lse buffer is / D)
};

// Splits the batch into work items for num_threads threads. Indices must have been checked.
AttentionPlan plan_paged_attention(const PagedAttentionParams& p, int num_threads);

// Runs one item with the active ISA (scalar twin or AVX-512).
void run_attention_item(const PagedAttentionParams& p, const AttentionWorkItem& item,
                        float* partials, float* lse);

// Prefetches into L2 the cache rows of an item's first max_keys keys: a thread calls it for the
// item it will run next, so that item does not start on cold misses (inside an item the decode
// kernels prefetch each next chunk when chunks are small).
void prefetch_attention_item(const PagedAttentionParams& p, const AttentionWorkItem& item,
                             int max_keys);

// Bytes of K and V cache rows an item reads.
int64_t attention_item_bytes(const PagedAttentionParams& p, const AttentionWorkItem& item);

// Combines one merge group's partials into the final output.
void merge_attention_partials(const PagedAttentionParams& p, const AttentionMergeGroup& group,
                              const float* partials, const float* lse);

// Keys are handled in chunks of at most this many positions (possibly spanning cache blocks).
constexpr int kKeyChunk = 64;

// Items of at most this many query rows per KV head (decode, short verification) run on the
// decode kernels; larger ones on the tile kernels.
constexpr int kDecodeRows = 8;

// The rows of one item for one KV head, as the per-ISA block kernels see them.
struct BlockRows {
  int rows;       // tokens x group
  int group;      // query heads per KV head
  int D;
  int64_t first_pos;  // position of the item's first query token
  int64_t window;     // <= 0: none
  float scale;
  bool allow_amx;
  int64_t slot_stride;  // elements from one cache slot's row to the next (Hkv * D)
};

// Valid key range [jlo, jhi) inside a chunk starting at key position k0 with n keys, for the
// query at position pos.
inline void visible_range(int64_t pos, int64_t window, int64_t k0, int n, int* jlo, int* jhi) {
  int64_t lo = k0, hi = k0 + n;
  if (window > 0 && pos - window + 1 > lo) lo = pos - window + 1;
  if (pos + 1 < hi) hi = pos + 1;
  *jlo = static_cast<int>(lo - k0);
  *jhi = static_cast<int>(hi > lo ? hi - k0 : lo - k0);
}

// The rows of the next chunk for one KV head (head offset applied), to prefetch while the current
// chunk is computed: consecutive chunks live in unrelated blocks the hardware cannot guess.
template <typename T>
struct NextRows {
  const T* const* k;
  const T* const* v;
  int n;
  int64_t hoff;
  int64_t bytes;  // of one head's row
};

// Prefetches `bytes` of a K row and of a V row into L2.
inline void prefetch_kv_row(const void* k, const void* v, int64_t bytes) {
  for (int64_t b = 0; b < bytes; b += 64) {
    __builtin_prefetch(static_cast<const char*>(k) + b, 0, 2);
    __builtin_prefetch(static_cast<const char*>(v) + b, 0, 2);
  }
}

// Prefetches all of `next` into L2 at once (kernels that can, spread it over their work instead).
template <typename T>
inline void prefetch_rows(const NextRows<T>& next) {
  for (int j = 0; j < next.n; ++j)
    prefetch_kv_row(next.k[j] + next.hoff, next.v[j] + next.hoff, next.bytes);
}

namespace scalar_attn {
void run_item(const PagedAttentionParams& p, const AttentionWorkItem& item, float* partials,
              float* lse);
}
#ifdef PAGEDINFER_HAVE_AVX2
namespace avx2_attn {
void run_item(const PagedAttentionParams& p, const AttentionWorkItem& item, float* partials,
              float* lse);
}
#endif
#ifdef PAGEDINFER_HAVE_AVX512
namespace avx512_attn {
bool amx_ready();
// One chunk of keys on AMX tiles (attention_kernels_amx.cpp); layouts in that file.
void amx_tile_chunk(const BlockRows& br, int rows_pad, const uint32_t* Qp, const uint16_t* const* kp,
                    const uint16_t* const* vp, int64_t k0, int n, float* S, uint32_t* Pp,
                    float* scratch, const uint16_t* zero_row, float* m, float* l, float* O,
                    const NextRows<uint16_t>& next);
// One chunk of keys for all the KV heads of a decode item on AMX tiles
// (attention_decode_amx.cpp); layouts in that file.
void amx_decode_chunk(const BlockRows& br, int kvn, int rows_pad, const uint32_t* Qp,
                      const uint16_t* const* krow, const uint16_t* const* vrow, int64_t hoff0,
                      int64_t k0, int n, float* m, float* l, float* O,
                      const NextRows<uint16_t>& next);
void run_item(const PagedAttentionParams& p, const AttentionWorkItem& item, float* partials,
              float* lse);
}
#endif

}  // namespace pagedinfer::cpu
