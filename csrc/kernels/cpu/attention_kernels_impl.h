// The body of one paged-attention work item, written once and compiled per ISA: it is included
// inside namespace scalar_attn by attention_kernels.cpp and inside avx512_attn by
// attention_kernels_avx512.cpp, after each has defined its primitives:
//   float  load_f32(T)  / T store_as<T>(float)               one value
//   void   load_rows(const T* src, int64_t stride, int n, int D, float* dst)   n rows -> [n, D]
//   float  dot(const float* a, const float* b, int D)
//   void   axpy(float* y, float a, const float* x, int D)     y += a x
//   void   scale(float* y, float a, int D)                    y *= a
//   float  exp_sub_sum(float* s, int n, float m)              s = exp(s - m), returns the sum
//   void   store_row(T* dst, const float* src, float mul, int D)  dst = (T)(src * mul)
//   bool   attend_block_fast(...)                              an ISA's own kernel for one block
//                                                             of keys, or false to use the generic
// Semantics and layouts: attention_kernels.h.
#pragma once
// (no include guard effect across namespaces: each ISA file includes this exactly once)

// Scratch of one item, reused across calls on the same thread (64-byte aligned, grows as needed).
struct ItemScratch {
  std::vector<float> buf;
  float* get(size_t floats) {
    if (buf.size() < floats + 16) buf.resize(floats + 16);
    auto addr = reinterpret_cast<uintptr_t>(buf.data());
    return reinterpret_cast<float*>((addr + 63) & ~uintptr_t{63});
  }
};

// Keys are handled in chunks of at most this many positions (one cache block or less).
constexpr int kKeyChunk = 64;

// Online-softmax update of every row with the chunk's keys (fp32 K and V rows [n, D]).
// Q rows are pre-scaled; m, l, acc are the running max, sum and unnormalized output.
inline void attend_chunk_f32(const BlockRows& br, const float* Q, const float* K, const float* V,
                             int64_t k0, int n, float* S, float* m, float* l, float* acc) {
  const int D = br.D;
  for (int r = 0; r < br.rows; ++r) {
    int jlo, jhi;
    visible_range(br.first_pos + r / br.group, br.window, k0, n, &jlo, &jhi);
    if (jlo >= jhi) continue;
    const float* q = Q + static_cast<int64_t>(r) * D;
    float* s = S;
    float mx = -INFINITY;
    for (int j = jlo; j < jhi; ++j) {
      s[j] = dot(q, K + static_cast<int64_t>(j) * D, D);
      mx = s[j] > mx ? s[j] : mx;
    }
    float* o = acc + static_cast<int64_t>(r) * D;
    if (mx > m[r]) {
      const float alpha = m[r] == -INFINITY ? 0.0f : std::exp(m[r] - mx);
      l[r] *= alpha;
      scale(o, alpha, D);
      m[r] = mx;
    }
    l[r] += exp_sub_sum(s + jlo, jhi - jlo, m[r]);
    for (int j = jlo; j < jhi; ++j) axpy(o, s[j], V + static_cast<int64_t>(j) * D, D);
  }
}

template <typename T>
void run_item_t(const PagedAttentionParams& p, const AttentionWorkItem& w, float* partials,
                float* lse) {
  thread_local ItemScratch scratch;
  const int D = static_cast<int>(p.head_dim);
  const int group = static_cast<int>(p.num_heads / p.num_kv_heads);
  const int ntok = w.q_end - w.q_begin;
  const int rows = ntok * group;
  const int kvn = w.kv_end - w.kv_begin;
  const int64_t bs = p.block_size;
  const int64_t q_len = p.query_start_loc[w.seq + 1] - p.query_start_loc[w.seq];
  const int64_t first_pos = p.seq_lens[w.seq] - q_len + w.q_begin;
  const int64_t last_pos = first_pos + ntok - 1;
  const int64_t tok0 = p.query_start_loc[w.seq] + w.q_begin;
  const int64_t state = static_cast<int64_t>(kvn) * rows;

  float* Q = scratch.get(2 * state * D + 2 * state + 2 * kKeyChunk * D + rows * kKeyChunk + 64);
  float* acc = Q + state * D;
  float* m = acc + state * D;
  float* l = m + state;
  float* Kf = l + state;
  float* Vf = Kf + kKeyChunk * D;
  float* S = Vf + kKeyChunk * D;

  const T* query = static_cast<const T*>(p.query);
  for (int gi = 0; gi < kvn; ++gi)
    for (int t = 0; t < ntok; ++t)
      for (int hh = 0; hh < group; ++hh) {
        const int64_t head = static_cast<int64_t>(w.kv_begin + gi) * group + hh;
        const T* src = query + (tok0 + t) * p.q_stride_token + head * p.q_stride_head;
        float* dst = Q + ((static_cast<int64_t>(gi) * rows) + t * group + hh) * D;
        load_rows(src, 0, 1, D, dst);
        for (int d = 0; d < D; ++d) dst[d] *= p.scale;
      }
  for (int64_t i = 0; i < state; ++i) { m[i] = -INFINITY; l[i] = 0.0f; }
  for (int64_t i = 0; i < state * D; ++i) acc[i] = 0.0f;

  // Keys any row of the item can see.
  int64_t k_lo = w.k_begin, k_hi = w.k_end;
  if (p.sliding_window > 0 && first_pos - p.sliding_window + 1 > k_lo)
    k_lo = first_pos - p.sliding_window + 1;
  if (last_pos + 1 < k_hi) k_hi = last_pos + 1;

  const BlockRows br{rows, group, D, first_pos, p.sliding_window};
  const T* kc = static_cast<const T*>(p.key_cache);
  const T* vc = static_cast<const T*>(p.value_cache);
  const int32_t* table = p.block_tables + static_cast<int64_t>(w.seq) * p.max_blocks;
  const int64_t row_stride = p.num_kv_heads * D;  // between consecutive positions of one head
  for (int64_t k0 = k_lo; k0 < k_hi;) {
    const int64_t off = k0 % bs;
    int64_t n = bs - off;
    if (k_hi - k0 < n) n = k_hi - k0;
    if (n > kKeyChunk) n = kKeyChunk;
    const int64_t slot = static_cast<int64_t>(table[k0 / bs]) * bs + off;
    for (int gi = 0; gi < kvn; ++gi) {
      const int64_t base = (slot * p.num_kv_heads + w.kv_begin + gi) * D;
      const int64_t so = static_cast<int64_t>(gi) * rows;
      if (attend_block_fast(br, Q + so * D, kc + base, vc + base, row_stride, k0,
                            static_cast<int>(n), S, m + so, l + so, acc + so * D))
        continue;
      load_rows(kc + base, row_stride, static_cast<int>(n), D, Kf);
      load_rows(vc + base, row_stride, static_cast<int>(n), D, Vf);
      attend_chunk_f32(br, Q + so * D, Kf, Vf, k0, static_cast<int>(n), S, m + so, l + so,
                       acc + so * D);
    }
    k0 += n;
  }

  if (w.part_offset < 0) {
    T* out = static_cast<T*>(p.out);
    for (int gi = 0; gi < kvn; ++gi)
      for (int r = 0; r < rows; ++r) {
        const int64_t s = static_cast<int64_t>(gi) * rows + r;
        const int64_t head = static_cast<int64_t>(w.kv_begin + gi) * group + r % group;
        T* dst = out + (tok0 + r / group) * p.o_stride_token + head * p.o_stride_head;
        store_row(dst, acc + s * D, l[s] > 0.0f ? 1.0f / l[s] : 0.0f, D);
      }
  } else {
    float* po = partials + w.part_offset;
    float* pl = lse + w.part_offset / D;
    for (int64_t s = 0; s < state; ++s) {
      const float inv = l[s] > 0.0f ? 1.0f / l[s] : 0.0f;
      for (int d = 0; d < D; ++d) po[s * D + d] = acc[s * D + d] * inv;
      pl[s] = l[s] > 0.0f ? m[s] + std::log(l[s]) : -INFINITY;
    }
  }
}

inline void run_item_dispatch(const PagedAttentionParams& p, const AttentionWorkItem& w,
                              float* partials, float* lse) {
  switch (p.dtype) {
    case AttnDtype::kF32: run_item_t<float>(p, w, partials, lse); break;
    case AttnDtype::kBF16: run_item_t<bf16_t>(p, w, partials, lse); break;
    case AttnDtype::kF16: run_item_t<f16_t>(p, w, partials, lse); break;
  }
}
