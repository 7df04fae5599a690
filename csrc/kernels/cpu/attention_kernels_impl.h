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
//   bool   fast_path_ok<T>(D)   whether the ISA's own chunk kernel serves this dtype and size;
//          then fast_prepare (pack the query), fast_chunk (one chunk of keys), fast_finish
//          (unpack the output accumulator) are used instead of the generic fp32 path;
//          fast_chunk_heads may take one chunk for all the item's KV heads at once (returns
//          false where it does not apply, then fast_chunk runs per head)
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


// Online-softmax update of every row with a chunk of n keys (fp32 K and V rows [n, D]).
// m, l, acc: running max (of scaled scores), sum and unnormalized output of each row.
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
      s[j] = dot(q, K + static_cast<int64_t>(j) * D, D) * br.scale;
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

// Scratch layout of an item, in floats. Rows of one KV head are padded to a multiple of 16 (the
// fast kernels keep 16 rows in a vector's lanes); padded rows are never written out.
template <typename T>
void run_item_t(const PagedAttentionParams& p, const AttentionWorkItem& w, float* partials,
                float* lse) {
  thread_local ItemScratch scratch;
  const int D = static_cast<int>(p.head_dim);
  const int group = static_cast<int>(p.num_heads / p.num_kv_heads);
  const int ntok = w.q_end - w.q_begin;
  const int rows = ntok * group;
  const int rows_pad = (rows + 15) / 16 * 16;
  const int kvn = w.kv_end - w.kv_begin;
  const int64_t bs = p.block_size;
  const int64_t q_len = p.query_start_loc[w.seq + 1] - p.query_start_loc[w.seq];
  const int64_t first_pos = p.seq_lens[w.seq] - q_len + w.q_begin;
  const int64_t last_pos = first_pos + ntok - 1;
  const int64_t tok0 = p.query_start_loc[w.seq] + w.q_begin;
  const int64_t state = static_cast<int64_t>(kvn) * rows_pad;
  const bool fast = fast_path_ok<T>(D);
  const BlockRows br{rows, group, D, first_pos, p.sliding_window, p.scale, p.allow_amx,
                     p.num_kv_heads * D};

  const int64_t chunk_floats = static_cast<int64_t>(kKeyChunk) * (2 * D + rows_pad + D / 2 + rows_pad / 2 + 16) + D;
  float* Q = scratch.get(2 * state * D + 2 * state + state * D / 2 + chunk_floats + 64);
  float* acc = Q + state * D;
  float* m = acc + state * D;
  float* l = m + state;
  float* Qp = l + state;                    // fast path: packed bf16 query pairs, state * D / 2
  float* Kf = Qp + state * D / 2;           // generic path: fp32 K rows [kKeyChunk, D]
  float* Vf = Kf + kKeyChunk * D;           // generic path: fp32 V rows; fast path: packed V
  float* S = Vf + kKeyChunk * D;            // scores [kKeyChunk, rows_pad]
  float* Pp = S + kKeyChunk * rows_pad;     // fast path: packed probabilities
  float* zero = Pp + kKeyChunk * rows_pad / 2 + 16 * kKeyChunk;  // D zeros: padding key row

  const T* query = static_cast<const T*>(p.query);
  for (int64_t i = 0; i < state * D; ++i) Q[i] = 0.0f;
  for (int gi = 0; gi < kvn; ++gi)
    for (int t = 0; t < ntok; ++t)
      for (int hh = 0; hh < group; ++hh) {
        const int64_t head = static_cast<int64_t>(w.kv_begin + gi) * group + hh;
        const T* src = query + (tok0 + t) * p.q_stride_token + head * p.q_stride_head;
        load_rows(src, 0, 1, D, Q + (static_cast<int64_t>(gi) * rows_pad + t * group + hh) * D);
      }
  for (int64_t i = 0; i < state; ++i) { m[i] = -INFINITY; l[i] = 0.0f; }
  for (int64_t i = 0; i < state * D; ++i) acc[i] = 0.0f;
  for (int d = 0; d < D; ++d) zero[d] = 0.0f;
  if (fast)
    for (int gi = 0; gi < kvn; ++gi)
      fast_prepare(br, Q + static_cast<int64_t>(gi) * rows_pad * D, rows_pad,
                   Qp + static_cast<int64_t>(gi) * rows_pad * D / 2);

  // Keys any row of the item can see.
  int64_t k_lo = w.k_begin, k_hi = w.k_end;
  if (p.sliding_window > 0 && first_pos - p.sliding_window + 1 > k_lo)
    k_lo = first_pos - p.sliding_window + 1;
  if (last_pos + 1 < k_hi) k_hi = last_pos + 1;

  const T* kc = static_cast<const T*>(p.key_cache);
  const T* vc = static_cast<const T*>(p.value_cache);
  const int32_t* table = p.block_tables + static_cast<int64_t>(w.seq) * p.max_blocks;
  const T* rows_a[2][kKeyChunk];  // row of head 0 at each key position: this and next chunk
  const T* rows_b[2][kKeyChunk];
  // Block by block: one division per chunk, not two per key. A 64-bit division costs tens of
  // cycles, and this runs between chunks, when no cache reads are in flight: with two per key,
  // 32 x 2,048 keys (D = 128, 8 KV heads) took 12.7-12.9 vs 12.4-12.5 ms, 1 x 32,768 keys
  // 7.0-7.7 vs 6.5-6.7 ms.
  const int64_t slot_elems = static_cast<int64_t>(p.num_kv_heads) * D;
  auto fill_rows = [&](int64_t c0, const T** kr, const T** vr) {
    const int n = static_cast<int>(k_hi - c0 < kKeyChunk ? k_hi - c0 : kKeyChunk);
    int64_t blk = c0 / bs, in_blk = c0 - blk * bs;
    for (int j = 0; j < n; ++blk, in_blk = 0) {
      const int64_t base = (static_cast<int64_t>(table[blk]) * bs + in_blk) * slot_elems;
      const int m = static_cast<int>(std::min<int64_t>(n - j, bs - in_blk));
      for (int i = 0; i < m; ++i, ++j) {
        kr[j] = kc + base + i * slot_elems;
        vr[j] = vc + base + i * slot_elems;
      }
    }
    return n;
  };
  int cur = 0;
  int n = k_lo < k_hi ? fill_rows(k_lo, rows_a[0], rows_b[0]) : 0;
  for (int64_t k0 = k_lo; k0 < k_hi; k0 += kKeyChunk) {
    const T* const* krow = rows_a[cur];
    const T* const* vrow = rows_b[cur];
    const int n_next = k0 + kKeyChunk < k_hi ? fill_rows(k0 + kKeyChunk, rows_a[1 - cur], rows_b[1 - cur]) : 0;
    if (fast && fast_chunk_heads(br, kvn, rows_pad, Qp, krow, vrow,
                                 static_cast<int64_t>(w.kv_begin) * D, k0, n,
                                 reinterpret_cast<const T*>(zero), m, l, acc,
                                 NextRows<T>{rows_a[1 - cur], rows_b[1 - cur], n_next,
                                             static_cast<int64_t>(w.kv_begin) * D,
                                             static_cast<int64_t>(kvn * D * sizeof(T))})) {
      cur = 1 - cur;
      n = n_next;
      continue;
    }
    for (int gi = 0; gi < kvn; ++gi) {
      const int64_t hoff = static_cast<int64_t>(w.kv_begin + gi) * D;
      const int64_t so = static_cast<int64_t>(gi) * rows_pad;
      const NextRows<T> next{rows_a[1 - cur], rows_b[1 - cur], n_next, hoff,
                             static_cast<int64_t>(D * sizeof(T))};
      if (fast) {
        fast_chunk(br, rows_pad, Qp + so * D / 2, krow, vrow, hoff, k0, n, S, Kf, Vf, Pp,
                   reinterpret_cast<const T*>(zero), m + so, l + so, acc + so * D, next);
        continue;
      }
      prefetch_rows(next);
      for (int j = 0; j < n; ++j) {
        load_rows(krow[j] + hoff, 0, 1, D, Kf + static_cast<int64_t>(j) * D);
        load_rows(vrow[j] + hoff, 0, 1, D, Vf + static_cast<int64_t>(j) * D);
      }
      attend_chunk_f32(br, Q + so * D, Kf, Vf, k0, n, S, m + so, l + so, acc + so * D);
    }
    cur = 1 - cur;
    n = n_next;
  }
  if (fast)  // back to [rows_pad, D] per KV head
    for (int gi = 0; gi < kvn; ++gi)
      fast_finish(br, acc + static_cast<int64_t>(gi) * rows_pad * D, rows_pad, Q);

  if (w.part_offset < 0) {
    T* out = static_cast<T*>(p.out);
    for (int gi = 0; gi < kvn; ++gi)
      for (int r = 0; r < rows; ++r) {
        const int64_t s = static_cast<int64_t>(gi) * rows_pad + r;
        const int64_t head = static_cast<int64_t>(w.kv_begin + gi) * group + r % group;
        T* dst = out + (tok0 + r / group) * p.o_stride_token + head * p.o_stride_head;
        store_row(dst, acc + s * D, l[s] > 0.0f ? 1.0f / l[s] : 0.0f, D);
      }
  } else {
    float* po = partials + w.part_offset;
    float* pl = lse + w.part_offset / D;
    for (int gi = 0; gi < kvn; ++gi)
      for (int r = 0; r < rows; ++r) {
        const int64_t s = static_cast<int64_t>(gi) * rows_pad + r;
        const int64_t o = static_cast<int64_t>(gi) * rows + r;
        const float inv = l[s] > 0.0f ? 1.0f / l[s] : 0.0f;
        for (int d = 0; d < D; ++d) po[o * D + d] = acc[s * D + d] * inv;
        pl[o] = l[s] > 0.0f ? m[s] + std::log(l[s]) : -INFINITY;
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
