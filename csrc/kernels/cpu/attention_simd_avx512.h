// Vector helpers shared by the AVX-512 and AMX attention files (both compiled with AVX-512 flags).
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "kernels/cpu/attention_kernels.h"

namespace pagedinfer::cpu::avx512_attn {

// exp(x) for x <= ~88: 2^(x log2 e) = 2^n * 2^f, |f| <= 1/2, 2^f by a degree-6 polynomial
// (relative error ~2e-7); inputs below -100 give ~0 (use a mask where exact zeros matter).
inline __m512 exp512(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-100.0f));
  const __m512 t = _mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f));
  const __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_mul_ps(_mm512_sub_ps(t, n), _mm512_set1_ps(0.693147180559945309f));
  __m512 y = _mm512_set1_ps(1.0f / 720);
  y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(1.0f / 120));
  y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(1.0f / 24));
  y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(1.0f / 6));
  y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(0.5f));
  y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(1.0f));
  y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(y, n);
}

inline __m512 dp_bf16(__m512 acc, __m512i a, __m512i b) {
  return _mm512_dpbf16_ps(acc, (__m512bh)a, (__m512bh)b);
}

// Lane r of the result: (bf16(a[r]), bf16(b[r])) as one dword, the pair layout of vdpbf16ps.
inline __m512i pack_pair(__m512 a, __m512 b) {
  const __m512i lo = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(a));
  const __m512i hi = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(b));
  return _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16));
}

// V rows of two keys interleaved by vpunpck{l,h}wd put, at packed position q of each 32-wide
// chunk, the head-dim index packed_d(q).
inline int packed_d(int q) { return (q & ~31) + 8 * ((q & 15) >> 2) + (q & 3) + 4 * ((q & 31) >> 4); }

// Sum of each of 16 vectors, as the 16 lanes of one vector (lane k = sum of v[k]).
inline __m512 reduce16(__m512* v) {
  __m512 x[8], y[4];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i)
    x[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]), _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    const __m512d a = _mm512_castps_pd(x[2 * i]), b = _mm512_castps_pd(x[2 * i + 1]);
    y[i] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(a, b)), _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)));
  }
  // y[i] lane group L holds the 128-bit-lane-L partial sums of v[4i .. 4i+3].
  const __m512 w01 = _mm512_add_ps(_mm512_shuffle_f32x4(y[0], y[1], 0x44), _mm512_shuffle_f32x4(y[0], y[1], 0xEE));
  const __m512 w23 = _mm512_add_ps(_mm512_shuffle_f32x4(y[2], y[3], 0x44), _mm512_shuffle_f32x4(y[2], y[3], 0xEE));
  return _mm512_add_ps(_mm512_shuffle_f32x4(w01, w23, 0x88), _mm512_shuffle_f32x4(w01, w23, 0xDD));
}

// out[c] = column c of the 16 x 16 dword matrix in rows r[0..15].
inline void transpose16(const __m512i* r, __m512i* out) {
  __m512i t[16], u[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {
    u[4 * i + 0] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
    u[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
    u[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
    u[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
  }
  // u[4i + k], 128-bit lane L: rows 4i..4i+3 of column 4L + k.
  for (int k = 0; k < 4; ++k) {
    const __m512i x01 = _mm512_shuffle_i32x4(u[k], u[4 + k], 0x44);
    const __m512i x23 = _mm512_shuffle_i32x4(u[k], u[4 + k], 0xEE);
    const __m512i y01 = _mm512_shuffle_i32x4(u[8 + k], u[12 + k], 0x44);
    const __m512i y23 = _mm512_shuffle_i32x4(u[8 + k], u[12 + k], 0xEE);
    out[0 + k] = _mm512_shuffle_i32x4(x01, y01, 0x88);
    out[4 + k] = _mm512_shuffle_i32x4(x01, y01, 0xDD);
    out[8 + k] = _mm512_shuffle_i32x4(x23, y23, 0x88);
    out[12 + k] = _mm512_shuffle_i32x4(x23, y23, 0xDD);
  }
}

// Each 32-wide chunk of a row [D], in place: out[i] = chunk[idx[i]] (idx: 32 positions).
inline void permute_row_chunks(float* row, int D, const int32_t* idx) {
  const __m512i i0 = _mm512_loadu_si512(idx), i1 = _mm512_loadu_si512(idx + 16);
  for (int c = 0; c < D; c += 32) {
    const __m512 lo = _mm512_loadu_ps(row + c), hi = _mm512_loadu_ps(row + c + 16);
    _mm512_storeu_ps(row + c, _mm512_permutex2var_ps(lo, i0, hi));
    _mm512_storeu_ps(row + c + 16, _mm512_permutex2var_ps(lo, i1, hi));
  }
}

// Row [D] in packed order (see packed_d) -> natural order, in place.
inline void unpack_row(float* row, int D) {
  alignas(64) static const int32_t idx[32] = {0,  1,  2,  3,  16, 17, 18, 19, 4,  5,  6,
                                              7,  20, 21, 22, 23, 8,  9,  10, 11, 24, 25,
                                              26, 27, 12, 13, 14, 15, 28, 29, 30, 31};
  permute_row_chunks(row, D, idx);
}

// O [D / 32][2R][16] -> [R, D] in place (tmp: R * D floats). Chunk c holds the even d of row r,
// O[r][32c + 2i], at [c][r][i] and the odd ones at [c][R + r][i] (the AMX decode kernel's order).
inline void unstack_even_odd(float* O, int R, int D, float* tmp) {
  const __m512i lo = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  const __m512i hi = _mm512_set_epi32(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8);
  for (int c = 0; c < D / 32; ++c)
    for (int r = 0; r < R; ++r) {
      const __m512 e = _mm512_loadu_ps(O + (c * 2 * R + r) * 16);
      const __m512 o = _mm512_loadu_ps(O + (c * 2 * R + R + r) * 16);
      _mm512_storeu_ps(tmp + r * D + 32 * c, _mm512_permutex2var_ps(e, lo, o));
      _mm512_storeu_ps(tmp + r * D + 32 * c + 16, _mm512_permutex2var_ps(e, hi, o));
    }
  std::memcpy(O, tmp, sizeof(float) * R * D);
}

// Prefetches the next chunk's rows a few keys at a time, spread over the chunk's work: a burst
// of thousands of prefetches would hold up the computation behind it.
struct PrefetchCursor {
  const NextRows<uint16_t>* next;
  int done = 0;
  void step(int keys) {
    const int end = done + keys < next->n ? done + keys : next->n;
    for (; done < end; ++done) {
      const char* kr = reinterpret_cast<const char*>(next->k[done] + next->hoff);
      const char* vr = reinterpret_cast<const char*>(next->v[done] + next->hoff);
      for (int64_t b = 0; b < next->bytes; b += 64) {
        _mm_prefetch(kr + b, _MM_HINT_T0);
        _mm_prefetch(vr + b, _MM_HINT_T0);
      }
    }
  }
};

}  // namespace pagedinfer::cpu::avx512_attn
