// Index and layout arithmetic of the CUDA kernels, in a plain header that g++ compiles too, so the
// CPU tests exercise exactly the functions the kernels use (csrc/ops/cuda_layout_selftest.cpp).
// Nothing here touches memory beyond the pointers it is given; everything is integer arithmetic.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define PI_HD __host__ __device__ __forceinline__
#else
#define PI_HD inline
#endif

namespace pagedinfer::cuda::layout {

PI_HD int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
PI_HD int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// ---- mma.sync.m16n8k16 fragments (bf16/fp16 in, fp32 accumulate), PTX ISA "Matrix Fragments for
// mma.m16n8k16". lane = 0..31, g = lane / 4 (groupID), t = lane % 4 (threadID_in_group).
// A (16x16, row-major) in 4 b32 registers r = 0..3, each two halves e = 0 (low 16 bits), 1 (high):
//   row = g + 8 * (r & 1), col = 2t + e + 8 * (r >> 1)
// B (16x8, K x N) in 2 registers r = 0..1:  k = 2t + e + 8r, n = g
// C/D (16x8 fp32) in 4 registers i = 0..3: row = g + 8 * (i >> 1), col = 2t + (i & 1)
PI_HD int mma_a_row(int lane, int r) { return lane / 4 + 8 * (r & 1); }
PI_HD int mma_a_col(int lane, int r, int e) { return 2 * (lane % 4) + e + 8 * (r >> 1); }
PI_HD int mma_b_k(int lane, int r, int e) { return 2 * (lane % 4) + e + 8 * r; }
PI_HD int mma_b_n(int lane) { return lane / 4; }
PI_HD int mma_c_row(int lane, int i) { return lane / 4 + 8 * (i >> 1); }
PI_HD int mma_c_col(int lane, int i) { return 2 * (lane % 4) + (i & 1); }

// Prefill tiles: a sequence with q_len > 1 queries has ceil(q_len / 64) query tiles (q_len 1 is
// the split kernel's). The prefill grid is an upper bound on their total, known on the host from T
// and B alone: sum ceil(q / 64) <= sum (q / 64 + 1) over at most min(B, T / 2) such sequences.
constexpr int kPrefillTileRows = 64;
PI_HD int prefill_tiles_of(int64_t q_len) {
  return q_len > 1 ? static_cast<int>(ceil_div(q_len, kPrefillTileRows)) : 0;
}
PI_HD int64_t prefill_tile_bound(int64_t num_tokens, int64_t num_seqs) {
  const int64_t multi = num_seqs < num_tokens / 2 ? num_seqs : num_tokens / 2;
  return multi + ceil_div(num_tokens, kPrefillTileRows);
}

// Flash-attention re-use of accumulators: the C fragments of S = Q K^T for n tiles 2kk and
// 2kk + 1 (keys 16kk .. 16kk + 15) are, register for register, the A fragment of P for k step kk:
// A register r, half e is S n tile 2kk + p_from_s_tile(r), C element p_from_s_elem(r, e).
PI_HD int p_from_s_tile(int r) { return r >> 1; }
PI_HD int p_from_s_elem(int r, int e) { return 2 * (r & 1) + e; }

// ---- Weight-only quantized GEMM on the formats of python/pagedinfer/quant.py (the CPU ops' own,
// so a module moved to the GPU needs no repacking). K is a multiple of G (32, 64 or 128).
//   INT4: qweight uint8 [N, ceil(K/64) * 32]: row n, chunk j (64 k) is 32 bytes; byte b holds
//         k = 64j + b (low nibble) and 64j + 32 + b (high nibble). scale, min fp16 [N, K/G].
//   INT8: qweight int8 [N, K]; scale fp16 [N, K/G].
// The fast kernel walks K in slabs of 128. mma.sync does not care in which order k is summed, as
// long as A and B agree, so each slab is taken in a "virtual" order that lets every lane fill its
// B fragments from one contiguous load of its own row: lane (g = lane/4, t = lane%4) reads row
// n = 8 nt + g, INT4: bytes [64 c + 16 t, +16) (t/2 picks the 64-k chunk, t%2 its half);
// INT8: bytes [128 c + 32 t, +32). Virtual k tile v (0..7), virtual column vk (0..15) of the
// m16n8k16 tile, vk = 2t + e + 8h (the PTX fragment map), is physical k 128 c + slab_phys_k:
//   INT4: 64 (t >> 1) + 16 (t & 1) + 4 (v & 3) + 2h + e + 32 (v >> 2)
//   INT8: 32 t + 4v + 2h + e
// x is staged in shared memory in the virtual order (slab_virtual_k), so the A-fragment loads are
// the standard, conflict-free ones.
constexpr int kGemmNPerCta = 64;  // one CTA covers 64 output columns (4 warps x 2 n8 tiles)
constexpr int kGemmKChunk = 128;  // one slab spans 128 k

template <int kBits> PI_HD int slab_phys_k(int v, int vk) {
  const int t = (vk & 7) >> 1, e = vk & 1, h = vk >> 3;
  if (kBits == 4) return 64 * (t >> 1) + 16 * (t & 1) + 4 * (v & 3) + 2 * h + e + 32 * (v >> 2);
  return 32 * t + 4 * v + 2 * h + e;
}
// Inverse: physical offset p (0..127) in the slab -> 16 v + vk.
template <int kBits> PI_HD int slab_virtual_k(int p) {
  int t, v;
  if (kBits == 4) {
    t = 2 * ((p >> 6) & 1) + ((p >> 4) & 1);
    v = 4 * ((p >> 5) & 1) + ((p >> 2) & 3);
  } else {
    t = p >> 5;
    v = (p >> 2) & 7;
  }
  const int h = (p >> 1) & 1, e = p & 1;
  return 16 * v + 2 * t + e + 8 * h;
}
// Bytes each lane loads per slab and n8 tile, and the row offset of its load.
template <int kBits> struct SlabGeom {
  static constexpr int kLaneBytes = kBits == 4 ? 16 : 32;
  static constexpr int kWords = kLaneBytes / 4;
};
template <int kBits> PI_HD int64_t lane_row_byte(int64_t c, int t) {
  return kBits == 4 ? 64 * c + 16 * t : 128 * c + 32 * t;
}
// First physical k (offset in the slab) of the lane's load; INT4 loads hold two 16-k runs, the
// second 32 further on. A lane's load is inside the row iff this k < K (INT4: < ceil(K/64) * 64).
template <int kBits> PI_HD int lane_first_k(int t) {
  return kBits == 4 ? 64 * (t >> 1) + 16 * (t & 1) : 32 * t;
}
// Value (v, i = 2h + e) of the lane's loaded words: word index and bit shift. (INT4 byte
// b = 4 (v & 3) + i, low nibble for v < 4; INT8 byte 4v + i.)
template <int kBits> PI_HD int fragment_word(int v) { return kBits == 4 ? (v & 3) : v; }
template <int kBits> PI_HD int fragment_shift(int v, int i) {
  return kBits == 4 ? 8 * i + 4 * (v >> 2) : 8 * i;
}
// The group scales a lane needs in a slab: INT4 slot s = v >> 2 (two runs 32 apart), INT8 one.
template <int kBits> PI_HD int scale_slot(int v) { return kBits == 4 ? (v >> 2) : 0; }
template <int kBits> PI_HD int scale_slot_k(int t, int slot) { return lane_first_k<kBits>(t) + 32 * slot; }

// Split-K plan of the fast GEMM: grid = (ceil(N / 64), splits); split s covers slabs
// [s * chunks_per_split, min(slabs, (s + 1) * chunks_per_split)). Enough CTAs to keep every SM
// streaming weights (about 4 per SM), at least 2 slabs per split, never an empty split.
struct GemmPlan {
  int splits;
  int chunks_per_split;
};
PI_HD GemmPlan plan_gemm(int64_t n, int64_t k, int num_sms) {
  const int64_t n_blocks = ceil_div(n, kGemmNPerCta), chunks = ceil_div(k, kGemmKChunk);
  int64_t splits = ceil_div(4 * static_cast<int64_t>(num_sms), n_blocks);
  const int64_t max_splits = chunks >= 2 ? chunks / 2 : 1;
  if (splits > max_splits) splits = max_splits;
  if (splits < 1) splits = 1;
  const int64_t per = ceil_div(chunks, splits);
  return {static_cast<int>(ceil_div(chunks, per)), static_cast<int>(per)};
}

// Where weight (n, k) of the CPU format lives: byte offset in qweight and bit shift.
template <int kBits> PI_HD int64_t weight_byte(int64_t n, int64_t k, int64_t k_cols) {
  if (kBits == 8) return n * k_cols + k;
  const int64_t row_bytes = ceil_div(k_cols, 64) * 32;
  return n * row_bytes + (k / 64) * 32 + (k % 32);
}
template <int kBits> PI_HD int weight_shift(int64_t k) { return kBits == 4 ? static_cast<int>((k % 64) / 32) * 4 : 0; }

// ---- Paged attention (varlen): see csrc/ops/attention_ops_cuda.cpp for the tensor layouts.
// The sequence that owns flattened query token t: the i with qsl[i] <= t < qsl[i + 1] (empty
// sequences, qsl[i] == qsl[i + 1], own nothing). Binary search; qsl is non-decreasing, qsl[0] = 0.
PI_HD int find_sequence(const int32_t* query_start_loc, int num_seqs, int64_t t) {
  int lo = 0, hi = num_seqs - 1;  // answer in [lo, hi]
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (query_start_loc[mid] <= t) lo = mid; else hi = mid - 1;
  }
  return lo;
}

// Keys that query token t of sequence i attends to: [begin, end). end = its position + 1.
struct KeyRange {
  int64_t begin, end;
};
PI_HD KeyRange key_range(int64_t seq_len, int64_t q_len, int64_t j_in_seq, int64_t sliding_window) {
  const int64_t pos = seq_len - q_len + j_in_seq;
  int64_t begin = 0;
  if (sliding_window > 0 && pos - sliding_window + 1 > 0) begin = pos - sliding_window + 1;
  return {begin, pos + 1};  // empty (end <= begin) only for invalid input (seq_len < q_len)
}

// Element offset of (token position p, kv head h, dim 0) in a cache [num_blocks, bs, Hkv, D] of
// sequence i, given the block id from block_tables[i][p / bs].
PI_HD int64_t kv_offset(int64_t block_id, int64_t p, int64_t block_size, int64_t num_kv_heads,
                        int64_t head_dim, int64_t h) {
  return ((block_id * block_size + p % block_size) * num_kv_heads + h) * head_dim;
}

// Split-K plan of the decode kernel: each CTA handles up to partition_size keys of one (query token,
// KV head); num_partitions is an upper bound for every token (max_context = max_blocks * bs,
// capped by the window), so it is known without reading seq_lens from the GPU. The logits of the
// whole GQA group sit in shared memory: partition_size * group <= 8192 floats (32 KiB).
struct AttentionPlan {
  int partition_size;
  int num_partitions;
};
PI_HD AttentionPlan plan_attention(int64_t max_context, int64_t sliding_window, int group) {
  int p = 512;
  while (p > 32 && static_cast<int64_t>(p) * group > 8192) p /= 2;
  int64_t span = max_context;
  if (sliding_window > 0 && sliding_window < span) span = sliding_window;
  if (span < 1) span = 1;
  return {p, static_cast<int>(ceil_div(span, p))};
}

// Shared memory (in floats) of the split decode kernel: scaled queries [G, D], probabilities
// [G, P], the cross-slot reduction of V [slots, 8 heads, D] and max/sum [2, G]. slots = 128 / TPK
// where TPK (threads per key row) is the power of two >= D * elem_bytes / 16, at most 32.
PI_HD int attention_threads_per_key(int head_dim, int elem_bytes) {
  const int chunks = head_dim * elem_bytes / 16;
  int tpk = 4;
  while (tpk < chunks && tpk < 32) tpk *= 2;
  return tpk;
}
PI_HD int64_t attention_split_smem_floats(int head_dim, int elem_bytes, int group, int partition) {
  const int slots = 128 / attention_threads_per_key(head_dim, elem_bytes);
  return static_cast<int64_t>(group) * head_dim + static_cast<int64_t>(group) * partition +
         static_cast<int64_t>(slots) * 8 * head_dim + 2 * group;
}

}  // namespace pagedinfer::cuda::layout
