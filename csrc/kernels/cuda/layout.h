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

// ---- Packed weight-only quantized matrices for the CUDA GEMM (python/pagedinfer/quant_cuda.py).
// Logical weight W [N, K]; padded to N_pad = round_up(N, kGemmNPad), K_pad = round_up(K, 128) with
// q = 0, scale = 0, min = 0 (so padded weights are exactly 0). Stored as int32 words:
//   packed [N_pad / 8, K_pad / 128, 32 lanes, kWords] ; kWords = 4 (INT4) or 8 (INT8)
// so one 16-byte load per lane (INT4) gives a warp the B fragments of an n8 x k128 slab.
// Word w, sub-value j of lane L in slab (nt, kc) holds the weight of
//   n = 8 nt + L / 4,   k = 128 kc + 16 kt + mma_b_k(L, i >> 1, i & 1)
//   INT4: kt = 2w + j / 4, i = j % 4, nibble j at bits 4j..4j+3, value q in 0..15
//   INT8: kt = w, i = j, byte j at bits 8j..8j+7, value stored as q + 128 (q in -128..127)
// i.e. each k16 tile's 4 values of a lane are b0.lo, b0.hi, b1.lo, b1.hi of the mma B fragment.
// Scales (and INT4 mins) are fp32 [K_pad / G, N] (group-major, so a warp reads 8 consecutive n;
// N unpadded, so the op reads N from scales.size(1); columns >= N read scale 0 in the kernels).
constexpr int kGemmNPad = 64;     // one CTA covers 64 output columns (4 warps x 2 n8 tiles)
constexpr int kGemmKChunk = 128;  // one packed slab spans 128 k

template <int kBits> struct PackedGeom {
  static constexpr int kWords = kBits == 4 ? 4 : 8;  // int32 words per lane per slab
  static constexpr int kPerWord = 32 / kBits;        // values per word
};

struct PackedPos {
  int64_t word;  // index into the int32 packed array
  int shift;     // bit offset of the value in that word
};

// Where the weight (n, k) lives. k_pad = K_pad.
template <int kBits>
PI_HD PackedPos packed_pos(int64_t n, int64_t k, int64_t k_pad) {
  const int64_t nt = n / 8, kc = k / kGemmKChunk;
  const int kk = static_cast<int>(k % kGemmKChunk), kt = kk / 16, r = kk % 16;
  const int t = (r & 7) >> 1, e = r & 1, half = r >> 3;  // r = 2t + e + 8 half
  const int lane = static_cast<int>(n % 8) * 4 + t;
  const int i = e + 2 * half;
  int w, j;
  if (kBits == 4) { w = kt >> 1; j = (kt & 1) * 4 + i; } else { w = kt; j = i; }
  const int64_t slab = nt * (k_pad / kGemmKChunk) + kc;
  return {(slab * 32 + lane) * PackedGeom<kBits>::kWords + w, j * kBits};
}

// The inverse, as the fast kernel walks it: lane, word w, sub-value j -> (n - 8 nt, k - 128 kc).
template <int kBits>
PI_HD void packed_fragment_nk(int lane, int w, int j, int* n_in_tile, int* k_in_chunk) {
  const int kt = kBits == 4 ? 2 * w + j / 4 : w;
  const int i = kBits == 4 ? j % 4 : j;
  *n_in_tile = mma_b_n(lane);
  *k_in_chunk = 16 * kt + mma_b_k(lane, i >> 1, i & 1);
}

// What the fast kernel reads for k tile kt (0..7) of a slab, B-fragment value i (0..3 =
// b0.lo, b0.hi, b1.lo, b1.hi): word fragment_word(kt) of the lane's kWords, at fragment_shift.
template <int kBits> PI_HD int fragment_word(int kt) { return kBits == 4 ? kt >> 1 : kt; }
template <int kBits> PI_HD int fragment_shift(int kt, int i) {
  return kBits == 4 ? 4 * ((kt & 1) * 4 + i) : 8 * i;
}

PI_HD int64_t scale_index(int64_t n, int64_t k, int group_size, int64_t n_cols) {
  return (k / group_size) * n_cols + n;
}

// Split-K plan of the fast GEMM: grid = (N_pad / 64, splits, 1); split s covers k slabs
// [s * chunks_per_split, min(K_pad / 128, (s + 1) * chunks_per_split)). Enough CTAs to keep every
// SM streaming weights (about 4 per SM), but never an empty split.
struct GemmPlan {
  int splits;
  int chunks_per_split;
};
PI_HD GemmPlan plan_gemm(int64_t n_pad, int64_t k_pad, int num_sms) {
  const int64_t n_blocks = n_pad / kGemmNPad, chunks = k_pad / kGemmKChunk;
  int64_t splits = ceil_div(4 * static_cast<int64_t>(num_sms), n_blocks);
  const int64_t max_splits = chunks >= 2 ? chunks / 2 : 1;  // at least 2 slabs per split
  if (splits > max_splits) splits = max_splits;
  if (splits < 1) splits = 1;
  const int64_t per = ceil_div(chunks, splits);
  return {static_cast<int>(ceil_div(chunks, per)), static_cast<int>(per)};
}

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
