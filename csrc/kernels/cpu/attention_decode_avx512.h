// The bf16 decode kernel of the AVX-512 attention path (few query rows per KV head: decode and
// short verification). Included only by attention_kernels_avx512.cpp (AVX-512 flags).
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kernels/cpu/attention_kernels.h"
#include "kernels/cpu/attention_simd_avx512.h"

namespace pagedinfer::cpu::avx512_attn {

// Scores: for each row, 16 keys at a time, 16 vdpbf16ps accumulators over D (K rows read
// straight from the cache, query pairs in their natural order), then one transpose-and-add
// reduction gives the 16 scores in the lanes of one vector. Output: O[r] (fp32, d in lanes, in
// the vpunpck order of the tile kernel) += P pair . V pair, the V rows of two keys interleaved in
// registers. Each K/V row is read from memory once per GQA group.

// O[r][32 c ...] += sum over key pairs of P pair . V pair, for CP chunks of 32 d starting at c0.
template <int R, int CP>
void decode_pv(const uint32_t* Pb, const uint16_t* const* vp, int n2, int c0, int D, float* O) {
  __m512 acc[R][CP][2];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int cc = 0; cc < CP; ++cc)
#pragma GCC unroll 2
      for (int h = 0; h < 2; ++h)
        acc[r][cc][h] = _mm512_loadu_ps(O + static_cast<int64_t>(r) * D + 32 * (c0 + cc) + 16 * h);
  for (int jp = 0; jp < n2; ++jp) {
    __m512i lo[CP], hi[CP];
#pragma GCC unroll 4
    for (int cc = 0; cc < CP; ++cc) {
      const __m512i a = _mm512_loadu_si512(vp[2 * jp] + 32 * (c0 + cc));
      const __m512i b = _mm512_loadu_si512(vp[2 * jp + 1] + 32 * (c0 + cc));
      lo[cc] = _mm512_unpacklo_epi16(a, b);
      hi[cc] = _mm512_unpackhi_epi16(a, b);
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m512i p = _mm512_set1_epi32(static_cast<int>(Pb[r * (kKeyChunk / 2) + jp]));
#pragma GCC unroll 4
      for (int cc = 0; cc < CP; ++cc) {
        acc[r][cc][0] = dp_bf16(acc[r][cc][0], lo[cc], p);
        acc[r][cc][1] = dp_bf16(acc[r][cc][1], hi[cc], p);
      }
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int cc = 0; cc < CP; ++cc)
#pragma GCC unroll 2
      for (int h = 0; h < 2; ++h)
        _mm512_storeu_ps(O + static_cast<int64_t>(r) * D + 32 * (c0 + cc) + 16 * h, acc[r][cc][h]);
}

template <int R>
void decode_pv_all(const uint32_t* Pb, const uint16_t* const* vp, int n2, int D, float* O) {
  constexpr int CP = R <= 2 ? 4 : R <= 4 ? 2 : 1;
  const int chunks = D / 32;
  int c = 0;
  for (; c + CP <= chunks; c += CP) decode_pv<R, CP>(Pb, vp, n2, c, D, O);
  for (; c < chunks; ++c) decode_pv<R, 1>(Pb, vp, n2, c, D, O);
}

// Online-softmax update of one row with its chunk scores s[0, n) (keys [jlo, jhi) visible):
// probabilities as bf16 pairs into pb, running max m, sum l, output row o (rescaled).
inline void decode_softmax_row(const float* s, int n, int jlo, int jhi, uint32_t* pb, float& m,
                               float& l, float* o, int D) {
  const int n2 = (n + 1) / 2;
  if (jlo >= jhi) {  // nothing visible: zero weights
    for (int jp = 0; jp < n2; ++jp) pb[jp] = 0;
    return;
  }
  // Lanes = keys; mask the keys outside [jlo, jhi).
  __m512 sv[kKeyChunk / 16];
  __mmask16 live[kKeyChunk / 16];
  __m512 mx = _mm512_set1_ps(-INFINITY);
  const int nv = (n + 15) / 16;
  for (int v = 0; v < nv; ++v) {
    const int lo = jlo - 16 * v < 0 ? 0 : (jlo - 16 * v > 16 ? 16 : jlo - 16 * v);
    const int hi = jhi - 16 * v < 0 ? 0 : (jhi - 16 * v > 16 ? 16 : jhi - 16 * v);
    live[v] = static_cast<__mmask16>(((1u << hi) - 1) & ~((1u << lo) - 1));
    sv[v] = _mm512_loadu_ps(s + 16 * v);
    mx = _mm512_mask_max_ps(mx, live[v], mx, sv[v]);
  }
  const float m_new = std::max(m, _mm512_reduce_max_ps(mx));
  const float alpha = m == -INFINITY ? 0.0f : std::exp(m - m_new);
  const __m512 vm = _mm512_set1_ps(m_new);
  __m512 sum = _mm512_setzero_ps();
  __m512 pv[kKeyChunk / 16 + 1];
  for (int v = 0; v < nv; ++v) {
    pv[v] = _mm512_maskz_mov_ps(live[v], exp512(_mm512_sub_ps(sv[v], vm)));
    sum = _mm512_add_ps(sum, pv[v]);
  }
  pv[nv] = _mm512_setzero_ps();
  for (int v = 0; v < nv; v += 2)  // 32 keys -> 16 bf16 pairs, natural order
    _mm512_storeu_si512(pb + 8 * v, (__m512i)_mm512_cvtne2ps_pbh(pv[v + 1], pv[v]));
  if (alpha != 1.0f) {
    l *= alpha;
    const __m512 va = _mm512_set1_ps(alpha);
    for (int d = 0; d < D; d += 16) _mm512_storeu_ps(o + d, _mm512_mul_ps(_mm512_loadu_ps(o + d), va));
  }
  l += _mm512_reduce_add_ps(sum);
  m = m_new;
}

// One chunk of n keys for kvn KV heads of a decode item (kvn * rows <= 64). The cache row of a
// key holds every KV head side by side ([block_size, Hkv, D] per block), so the loops run over
// 16-key groups (one cache block when aligned) outside and heads inside: each group's K (then V)
// rows are consumed back to back as one contiguous stretch (kvn * D * 2 bytes per key) while
// they are in L1, instead of kvn passes over the chunk, each reading D * 2 of every 2 KiB.
// (Measured, 32 x 2,048 keys from DRAM, one thread: 6.4 -> 8.4 GB/s per CPU-second.) The next
// chunk's whole rows are software-prefetched, spread over the work; without that prefetch the
// kernel drops back to ~6.4 GB/s (the hardware prefetchers do not cover the random blocks).
// Per head gi: query Qb + gi * qstride (bf16 [rows, D]), state m, l + gi * rows_pad,
// O + gi * rows_pad * D (packed d order). krow/vrow: rows of head 0 of the cache; hoff0: the
// item's first head offset. next: the next chunk (whole rows of the item's heads) to prefetch.
inline void decode_chunk_heads(const BlockRows& br, int kvn, int rows_pad, const uint16_t* Qb,
                               const uint16_t* const* krow, const uint16_t* const* vrow,
                               int64_t hoff0, int64_t k0, int n, const uint16_t* zero_row,
                               float* m, float* l, float* O, const NextRows<uint16_t>& next) {
  const int D = br.D;
  const int R = br.rows;
  const int64_t qstride = static_cast<int64_t>(rows_pad) * D;
  // Scores S[(gi * R + r) * kKeyChunk + j], probabilities Pb[(gi * R + r) * kKeyChunk / 2 + jp]
  // (plan_paged_attention keeps kvn * rows <= 64 for decode items).
  alignas(64) float S[64 * kKeyChunk];
  alignas(64) uint32_t Pb[64 * kKeyChunk / 2];
  const int groups = (n + 15) / 16;
  PrefetchCursor pf{&next};
  const int steps = 2 * groups * kvn;
  const int pf_keys = (next.n + steps - 1) / steps;
  // 1. scores, 16 keys x all heads x all rows at a time
  for (int g = 0; g < groups; ++g) {
    const int j0 = 16 * g;
    for (int gi = 0; gi < kvn; ++gi) {
      pf.step(pf_keys);
      const int64_t hoff = hoff0 + static_cast<int64_t>(gi) * D;
      const uint16_t* k[16];
#pragma GCC unroll 16
      for (int kb = 0; kb < 16; ++kb) k[kb] = j0 + kb < n ? krow[j0 + kb] + hoff : zero_row;
      for (int r = 0; r < R; ++r) {
        const uint16_t* q = Qb + gi * qstride + static_cast<int64_t>(r) * D;
        __m512 acc[16];
#pragma GCC unroll 16
        for (int kb = 0; kb < 16; ++kb) acc[kb] = _mm512_setzero_ps();
        for (int c = 0; c < D; c += 32) {
          const __m512i qv = _mm512_loadu_si512(q + c);
#pragma GCC unroll 16
          for (int kb = 0; kb < 16; ++kb) acc[kb] = dp_bf16(acc[kb], _mm512_loadu_si512(k[kb] + c), qv);
        }
        _mm512_storeu_ps(S + (gi * R + r) * kKeyChunk + j0,
                         _mm512_mul_ps(reduce16(acc), _mm512_set1_ps(br.scale)));
      }
    }
  }
  // 2. online softmax per head and row
  for (int gi = 0; gi < kvn; ++gi)
    for (int r = 0; r < R; ++r) {
      int jlo, jhi;
      visible_range(br.first_pos + r / br.group, br.window, k0, n, &jlo, &jhi);
      decode_softmax_row(S + (gi * R + r) * kKeyChunk, n, jlo, jhi, Pb + (gi * R + r) * (kKeyChunk / 2),
                         m[gi * rows_pad + r], l[gi * rows_pad + r],
                         O + gi * qstride + static_cast<int64_t>(r) * D, D);
    }
  // 3. output, 16 keys x all heads at a time (the padding key of an odd n has weight 0)
  for (int g = 0; g < groups; ++g) {
    const int j0 = 16 * g;
    const int np = ((n - j0 < 16 ? n - j0 : 16) + 1) / 2;
    for (int gi = 0; gi < kvn; ++gi) {
      pf.step(pf_keys);
      const int64_t hoff = hoff0 + static_cast<int64_t>(gi) * D;
      const uint16_t* v[16];
#pragma GCC unroll 16
      for (int kb = 0; kb < 16; ++kb) v[kb] = j0 + kb < n ? vrow[j0 + kb] + hoff : zero_row;
      const uint32_t* pb = Pb + gi * R * (kKeyChunk / 2) + j0 / 2;
      float* o = O + gi * qstride;
      switch (R) {
        case 1: decode_pv_all<1>(pb, v, np, D, o); break;
        case 2: decode_pv_all<2>(pb, v, np, D, o); break;
        case 3: decode_pv_all<3>(pb, v, np, D, o); break;
        case 4: decode_pv_all<4>(pb, v, np, D, o); break;
        case 5: decode_pv_all<5>(pb, v, np, D, o); break;
        case 6: decode_pv_all<6>(pb, v, np, D, o); break;
        case 7: decode_pv_all<7>(pb, v, np, D, o); break;
        default: decode_pv_all<8>(pb, v, np, D, o); break;
      }
    }
  }
  pf.step(next.n);
}

}  // namespace pagedinfer::cpu::avx512_attn
