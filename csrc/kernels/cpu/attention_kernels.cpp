// Paged attention on the CPU: the work planner, the merge of split-K partials, the ISA dispatch
// and the scalar twin of the per-item kernel (attention_kernels_impl.h). Semantics and layouts:
// attention_kernels.h.
#include "kernels/cpu/attention_kernels.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/half_types.h"

namespace pagedinfer::cpu {

namespace scalar_attn {

template <typename T>
void load_rows(const T* src, int64_t stride, int n, int D, float* dst) {
  for (int j = 0; j < n; ++j)
    for (int d = 0; d < D; ++d) dst[static_cast<int64_t>(j) * D + d] = to_f32(src[j * stride + d]);
}

// Eight partial sums, so the compiler may keep them in one vector without reassociating.
inline float dot(const float* a, const float* b, int D) {
  float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int d = 0;
  for (; d + 8 <= D; d += 8)
    for (int k = 0; k < 8; ++k) s[k] += a[d + k] * b[d + k];
  float t = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
  for (; d < D; ++d) t += a[d] * b[d];
  return t;
}

inline void axpy(float* y, float a, const float* x, int D) {
  for (int d = 0; d < D; ++d) y[d] += a * x[d];
}

inline void scale(float* y, float a, int D) {
  for (int d = 0; d < D; ++d) y[d] *= a;
}

inline float exp_sub_sum(float* s, int n, float m) {
  float sum = 0.0f;
  for (int j = 0; j < n; ++j) {
    s[j] = std::exp(s[j] - m);
    sum += s[j];
  }
  return sum;
}

template <typename T>
void store_row(T* dst, const float* src, float mul, int D) {
  for (int d = 0; d < D; ++d) dst[d] = from_f32<T>(src[d] * mul);
}

#include "kernels/cpu/attention_no_fast_path.h"
#include "kernels/cpu/attention_kernels_impl.h"

void run_item(const PagedAttentionParams& p, const AttentionWorkItem& item, float* partials,
              float* lse) {
  run_item_dispatch(p, item, partials, lse);
}

}  // namespace scalar_attn

void run_attention_item(const PagedAttentionParams& p, const AttentionWorkItem& item,
                        float* partials, float* lse) {
#ifdef PAGEDINFER_HAVE_AVX512
  if (active_isa() == Isa::kAvx512) {
    avx512_attn::run_item(p, item, partials, lse);
    return;
  }
#endif
#ifdef PAGEDINFER_HAVE_AVX2
  if (active_isa() == Isa::kAvx2) {
    avx2_attn::run_item(p, item, partials, lse);
    return;
  }
#endif
  scalar_attn::run_item(p, item, partials, lse);
}

namespace {

int64_t elem_bytes(const PagedAttentionParams& p) { return p.dtype == AttnDtype::kF32 ? 4 : 2; }

// Bytes of one key's K (or V) row for the item's KV heads.
int64_t item_row_bytes(const PagedAttentionParams& p, const AttentionWorkItem& w) {
  return static_cast<int64_t>(w.kv_end - w.kv_begin) * p.head_dim * elem_bytes(p);
}

}  // namespace

void prefetch_attention_item(const PagedAttentionParams& p, const AttentionWorkItem& w,
                             int max_keys) {
  const int64_t row = p.num_kv_heads * p.head_dim * elem_bytes(p);  // one slot, all KV heads
  const int64_t off = w.kv_begin * p.head_dim * elem_bytes(p);
  const int64_t bytes = item_row_bytes(p, w);
  const int32_t* table = p.block_tables + static_cast<int64_t>(w.seq) * p.max_blocks;
  const int64_t k_end = std::min<int64_t>(w.k_end, w.k_begin + max_keys);
  for (int64_t pos = w.k_begin; pos < k_end; ++pos) {
    const int64_t slot =
        static_cast<int64_t>(table[pos / p.block_size]) * p.block_size + pos % p.block_size;
    prefetch_kv_row(static_cast<const char*>(p.key_cache) + slot * row + off,
                    static_cast<const char*>(p.value_cache) + slot * row + off, bytes);
  }
}

int64_t attention_item_bytes(const PagedAttentionParams& p, const AttentionWorkItem& w) {
  return 2 * static_cast<int64_t>(w.k_end - w.k_begin) * item_row_bytes(p, w);
}

namespace {

// Rows (query tokens x GQA group) per KV head in a prefill tile: enough to make each K/V chunk a
// small GEMM, few enough that the tile's state stays in L2 (256 rows of D = 128: O 128 KiB, a
// chunk's scores 64 KiB). Each K/V chunk loaded serves all the tile's rows; 256 against 64, A/B:
// 4 x 512 tokens, 32 / 8 heads, D = 128, 13.7-14.1 vs 16.9-17.5 ms; 1 x 2,048 39.7-42.1 vs
// 53.3-56.9 ms; the default model's 512-token prompt 0.63-0.66 vs 0.70-0.75 ms (512: no better).
constexpr int kTileRows = 256;
// With fewer items than this per thread, long key ranges are split (split-K).
constexpr int kItemsPerThread = 4;
// A split-K chunk has at least this many keys (fewer cost more to merge than they save)...
constexpr int64_t kMinSplitKeys = 256;
// ...except when an item would otherwise leave threads idle: a batch-1 decode item (one item for
// all the KV heads) is split into as many chunks as the threads it should get, down to this
// many keys each. Each item costs ~2-3 us to set up and merge, so chunks of 64 keys pay off but
// more, smaller ones do not (the default model, 1 token, rope_cache_attention, A/B: 150 keys
// 18.4-18.9 vs 21.1-21.9 us, 300 keys 25.3-26.8 vs 33.4-33.7 us; 600 keys in 8 chunks of 75
// 43-47 vs 37-38 us in 2).
constexpr int64_t kMinThreadSplitKeys = 64;

}  // namespace

AttentionPlan plan_paged_attention(const PagedAttentionParams& p, int num_threads) {
  AttentionPlan plan;
  const int64_t group = p.num_heads / p.num_kv_heads;
  const int64_t D = p.head_dim;
  std::vector<AttentionWorkItem> base;
  double total = 0;
  for (int64_t i = 0; i < p.num_seqs; ++i) {
    const int64_t q_len = p.query_start_loc[i + 1] - p.query_start_loc[i];
    if (q_len <= 0) continue;
    const int64_t seq_first = p.seq_lens[i] - q_len;
    const int64_t tile = std::min<int64_t>(q_len, std::max<int64_t>(1, kTileRows / group));
    // Small tiles (decode, verification) take every KV head in one item: each cache block is then
    // read as one contiguous stream. Larger tiles have enough work per KV head.
    const int64_t kv_step = tile * group * p.num_kv_heads <= kTileRows ? p.num_kv_heads : 1;
    for (int64_t q0 = 0; q0 < q_len; q0 += tile) {
      const int64_t q1 = std::min(q_len, q0 + tile);
      int64_t k_lo = 0;
      if (p.sliding_window > 0) k_lo = std::max<int64_t>(0, seq_first + q0 - p.sliding_window + 1);
      const int64_t k_hi = seq_first + q1;
      for (int64_t g0 = 0; g0 < p.num_kv_heads; g0 += kv_step) {
        const int64_t g1 = std::min(p.num_kv_heads, g0 + kv_step);
        const double cost = static_cast<double>((q1 - q0) * group * (g1 - g0)) * (k_hi - k_lo + D);
        base.push_back({static_cast<int32_t>(i), static_cast<int32_t>(q0), static_cast<int32_t>(q1),
                        static_cast<int32_t>(g0), static_cast<int32_t>(g1),
                        static_cast<int32_t>(k_lo), static_cast<int32_t>(k_hi), -1, cost});
        total += cost;
      }
    }
  }
  const int64_t want_items = static_cast<int64_t>(num_threads) * kItemsPerThread;
  const bool split = num_threads > 1 && static_cast<int64_t>(base.size()) < want_items;
  const double target = total / static_cast<double>(want_items);
  for (const auto& b : base) {
    const int64_t keys = b.k_end - b.k_begin;
    int64_t n = 1;
    if (split) {
      n = static_cast<int64_t>(std::ceil(b.cost / std::max(target, 1.0)));
      n = std::max<int64_t>(1, std::min(n, keys / kMinSplitKeys));
      // The threads this item should get (kMinThreadSplitKeys).
      const auto share = static_cast<int64_t>(std::ceil(num_threads * b.cost / std::max(total, 1.0)));
      n = std::max(n, std::min(share, keys / kMinThreadSplitKeys));
    }
    if (n == 1) {
      plan.items.push_back(b);
      continue;
    }
    // Chunks of whole cache blocks where possible, so no block is read by two items.
    int64_t chunk = (keys + n - 1) / n;
    chunk = (chunk + p.block_size - 1) / p.block_size * p.block_size;
    const int64_t rows = static_cast<int64_t>(b.q_end - b.q_begin) * group * (b.kv_end - b.kv_begin);
    AttentionMergeGroup mg{b.seq, b.q_begin, b.q_end, b.kv_begin, b.kv_end, 0, plan.partial_floats};
    for (int64_t k0 = b.k_begin; k0 < b.k_end; k0 += chunk) {
      const int64_t k1 = std::min<int64_t>(b.k_end, k0 + chunk);
      AttentionWorkItem it = b;
      it.k_begin = static_cast<int32_t>(k0);
      it.k_end = static_cast<int32_t>(k1);
      it.part_offset = plan.partial_floats;
      it.cost = static_cast<double>(rows) * (k1 - k0 + D);
      plan.items.push_back(it);
      plan.partial_floats += rows * D;
      ++mg.n_splits;
    }
    plan.merges.push_back(mg);
  }
  std::stable_sort(plan.items.begin(), plan.items.end(),
                   [](const AttentionWorkItem& a, const AttentionWorkItem& b) { return a.cost > b.cost; });
  return plan;
}

namespace {

template <typename T>
void merge_t(const PagedAttentionParams& p, const AttentionMergeGroup& g, const float* partials,
             const float* lse) {
  const int64_t D = p.head_dim;
  const int64_t group = p.num_heads / p.num_kv_heads;
  const int64_t ntok = g.q_end - g.q_begin;
  const int64_t rows = ntok * group;
  const int64_t state = rows * (g.kv_end - g.kv_begin);
  const int64_t tok0 = p.query_start_loc[g.seq] + g.q_begin;
  std::vector<float> accum(D);
  T* out = static_cast<T*>(p.out);
  for (int64_t s = 0; s < state; ++s) {
    float mx = -INFINITY;
    for (int64_t c = 0; c < g.n_splits; ++c)
      mx = std::max(mx, lse[(g.part_offset / D) + c * state + s]);
    std::fill(accum.begin(), accum.end(), 0.0f);
    float wsum = 0.0f;
    if (mx != -INFINITY) {
      for (int64_t c = 0; c < g.n_splits; ++c) {
        const float w = std::exp(lse[(g.part_offset / D) + c * state + s] - mx);
        const float* o = partials + g.part_offset + (c * state + s) * D;
        for (int64_t d = 0; d < D; ++d) accum[d] += w * o[d];
        wsum += w;
      }
    }
    const float inv = wsum > 0.0f ? 1.0f / wsum : 0.0f;
    const int64_t gi = s / rows, r = s % rows;
    const int64_t head = (g.kv_begin + gi) * group + r % group;
    T* dst = out + (tok0 + r / group) * p.o_stride_token + head * p.o_stride_head;
    for (int64_t d = 0; d < D; ++d) dst[d] = from_f32<T>(accum[d] * inv);
  }
}

}  // namespace

void merge_attention_partials(const PagedAttentionParams& p, const AttentionMergeGroup& group,
                              const float* partials, const float* lse) {
  switch (p.dtype) {
    case AttnDtype::kF32: merge_t<float>(p, group, partials, lse); break;
    case AttnDtype::kBF16: merge_t<bf16_t>(p, group, partials, lse); break;
    case AttnDtype::kF16: merge_t<f16_t>(p, group, partials, lse); break;
  }
}

}  // namespace pagedinfer::cpu
