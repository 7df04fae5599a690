// AVX-512 twin of the paged-attention item kernel (attention_kernels_impl.h). Compiled with
// AVX-512 F/BW/VL/DQ/BF16 flags; entered only when active_isa() says the CPU has them.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "kernels/cpu/attention_kernels.h"
#include "kernels/cpu/attention_decode_avx512.h"
#include "kernels/cpu/attention_simd_avx512.h"
#include "kernels/cpu/half_types.h"

namespace pagedinfer::cpu::avx512_attn {
namespace {

// ---- vector primitives ------------------------------------------------------------------------

inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
inline __m512 load16(const bf16_t* p) {
  return _mm512_castsi512_ps(
      _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16));
}
inline __m512 load16(const f16_t* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
inline __m512 load16_mask(const float* p, __mmask16 k) { return _mm512_maskz_loadu_ps(k, p); }
inline __m512 load16_mask(const bf16_t* p, __mmask16 k) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(
      _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(k, p)), 16));
}
inline __m512 load16_mask(const f16_t* p, __mmask16 k) {
  return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, p));
}

inline void store16(float* p, __m512 v) { _mm512_storeu_ps(p, v); }
inline void store16(bf16_t* p, __m512 v) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), (__m256i)_mm512_cvtneps_pbh(v));
}
inline void store16(f16_t* p, __m512 v) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
}

template <typename T>
void load_rows(const T* src, int64_t stride, int n, int D, float* dst) {
  for (int j = 0; j < n; ++j) {
    const T* s = src + j * stride;
    float* o = dst + static_cast<int64_t>(j) * D;
    int d = 0;
    for (; d + 16 <= D; d += 16) store16(o + d, load16(s + d));
    if (d < D) {
      const __mmask16 k = static_cast<__mmask16>((1u << (D - d)) - 1);
      _mm512_mask_storeu_ps(o + d, k, load16_mask(s + d, k));
    }
  }
}

inline float dot(const float* a, const float* b, int D) {
  __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
  int d = 0;
  for (; d + 32 <= D; d += 32) {
    s0 = _mm512_fmadd_ps(load16(a + d), load16(b + d), s0);
    s1 = _mm512_fmadd_ps(load16(a + d + 16), load16(b + d + 16), s1);
  }
  for (; d + 16 <= D; d += 16) s0 = _mm512_fmadd_ps(load16(a + d), load16(b + d), s0);
  if (d < D) {
    const __mmask16 k = static_cast<__mmask16>((1u << (D - d)) - 1);
    s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(k, a + d), _mm512_maskz_loadu_ps(k, b + d), s1);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

inline void axpy(float* y, float a, const float* x, int D) {
  const __m512 va = _mm512_set1_ps(a);
  int d = 0;
  for (; d + 16 <= D; d += 16) store16(y + d, _mm512_fmadd_ps(va, load16(x + d), load16(y + d)));
  for (; d < D; ++d) y[d] += a * x[d];
}

inline void scale(float* y, float a, int D) {
  const __m512 va = _mm512_set1_ps(a);
  int d = 0;
  for (; d + 16 <= D; d += 16) store16(y + d, _mm512_mul_ps(va, load16(y + d)));
  for (; d < D; ++d) y[d] *= a;
}

inline float exp_sub_sum(float* s, int n, float m) {
  const __m512 vm = _mm512_set1_ps(m);
  __m512 sum = _mm512_setzero_ps();
  int j = 0;
  for (; j + 16 <= n; j += 16) {
    const __m512 e = exp512(_mm512_sub_ps(load16(s + j), vm));
    store16(s + j, e);
    sum = _mm512_add_ps(sum, e);
  }
  if (j < n) {
    const __mmask16 k = static_cast<__mmask16>((1u << (n - j)) - 1);
    const __m512 e = _mm512_maskz_mov_ps(k, exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, s + j), vm)));
    _mm512_mask_storeu_ps(s + j, k, e);
    sum = _mm512_add_ps(sum, e);
  }
  return _mm512_reduce_add_ps(sum);
}

template <typename T>
void store_row(T* dst, const float* src, float mul, int D) {
  const __m512 vm = _mm512_set1_ps(mul);
  int d = 0;
  for (; d + 16 <= D; d += 16) store16(dst + d, _mm512_mul_ps(load16(src + d), vm));
  for (; d < D; ++d) dst[d] = from_f32<T>(src[d] * mul);
}

// ---- bf16 fast path: 16 query rows in the lanes of a vector ------------------------------------
// Q.K^T and P.V are vdpbf16ps dot products of bf16 pairs accumulated in fp32:
//   scores  S[j][r]  += Qp[dp][r] . K[j] pair dp     Qp[dp][r] = (Q[r][2dp], Q[r][2dp+1]), lanes r
//   output  OT[q][r] += Pp[jp][r] . Vp[jp][q]        Pp[jp][r] = (P[r][2jp], P[r][2jp+1]), lanes r
// K pairs are broadcast straight from the cache rows (no packing); V rows are interleaved two keys
// at a time (Vp[jp][q] = (V[2jp][d(q)], V[2jp+1][d(q)]) by vpunpck{l,h}wd, which orders d within
// each 32-wide chunk as d(q) below); OT stays in that order until fast_finish. The softmax runs on
// whole vectors (16 rows), the probabilities are rounded to bf16 for P.V (as GPU flash attention
// does), the running sum l uses them unrounded.

template <typename T>
bool fast_path_ok(int D) { return std::is_same_v<T, bf16_t> && D % 32 == 0 && D <= 512; }


// Items of more than kDecodeRows rows per KV head run on the AMX tile kernel when allowed and
// available, else on the vdpbf16ps tile kernel. Decode items of 3 to kDecodeRows rows run on
// their own AMX kernel (attention_decode_amx.cpp), else on the vdpbf16ps decode kernel
// (attention_decode_avx512.h): a tile product costs the same for 1 row as for 16, the vdpbf16ps
// kernel's work shrinks with the rows. Measured, 32 sequences x 1,024 keys from DRAM, AMX vs
// vdpbf16ps: 8.5-9.2 vs 10.7-11.7 ms at 4 rows, D = 128; 5.6 vs 6.0-6.4 ms at 4 rows, D = 64;
// 6.3 vs 7.8-8.1 ms at 3 rows, D = 128. At 3 rows, D = 64 (the default model) AMX was slower
// (2.4 vs 2.0 ms) until its next-chunk prefetch: now even there (1.36-1.54 vs 1.37-1.41 ms), and
// 64 sequences x 176 keys (the 64-request benchmark) 514-540 vs 574-579 us.
constexpr int kAmxDecodeMinRows = 3;
inline bool use_decode(const BlockRows& br) { return br.rows <= kDecodeRows; }
inline bool use_amx(const BlockRows& br) { return !use_decode(br) && br.allow_amx && amx_ready(); }
inline bool use_amx_decode(const BlockRows& br) {
  return use_decode(br) && br.rows >= kAmxDecodeMinRows && br.allow_amx && amx_ready();
}

// Q fp32 [rows_pad, D] holding bf16 values -> Qp uint32 [D / 2, rows_pad] (tile kernels, AMX
// decode kernel) or bf16 [rows_pad, D] (vdpbf16ps decode kernel).
inline void fast_prepare(const BlockRows& br, const float* Q, int rows_pad, float* Qp_f) {
  const int D = br.D;
  uint32_t* Qp = reinterpret_cast<uint32_t*>(Qp_f);
  if (use_decode(br) && !use_amx_decode(br)) {
    uint16_t* Qb = reinterpret_cast<uint16_t*>(Qp_f);
    for (int64_t i = 0; i < static_cast<int64_t>(rows_pad) * D; ++i) Qb[i] = f32_to_bits(Q[i]) >> 16;
    return;
  }
  // 16 rows x 32 d at a time: 16 x 16 dword pairs, transposed.
  for (int rv = 0; rv < rows_pad / 16; ++rv)
    for (int b = 0; b < D / 32; ++b) {
      __m512i rowsv[16], cols[16];
      for (int k = 0; k < 16; ++k) {
        const float* q = Q + static_cast<int64_t>(rv * 16 + k) * D + 32 * b;
        rowsv[k] = (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(q + 16), _mm512_loadu_ps(q));
      }
      transpose16(rowsv, cols);
      for (int k = 0; k < 16; ++k)
        _mm512_storeu_si512(Qp + static_cast<int64_t>(16 * b + k) * rows_pad + rv * 16, cols[k]);
    }
}

// OT [D (packed order), rows_pad] (tile kernel) or O [rows_pad, D (packed order)] (decode kernel)
// -> [rows_pad, D] in place (tmp: rows_pad * D floats).
inline void fast_finish(const BlockRows& br, float* OT, int rows_pad, float* tmp) {
  const int D = br.D;
  if (use_amx_decode(br)) {  // O [D / 32][2 rows][16] (attention_decode_amx.cpp)
    unstack_even_odd(OT, br.rows, D, tmp);
    return;
  }
  if (use_decode(br) || use_amx(br)) {  // O [rows_pad, D (packed order)]
    for (int r = 0; r < br.rows; ++r) unpack_row(OT + static_cast<int64_t>(r) * D, D);
    return;
  }
  for (int q = 0; q < D; ++q) {
    const int d = packed_d(q);
    for (int r = 0; r < rows_pad; ++r) tmp[static_cast<int64_t>(r) * D + d] = OT[static_cast<int64_t>(q) * rows_pad + r];
  }
  std::memcpy(OT, tmp, sizeof(float) * rows_pad * D);
}


// S[j][rv0 * 16 ...] for RV row vectors and all n keys, KB keys at a time.
template <int RV>
void qk_rows(const uint32_t* Qp, int rows_pad, int rv0, const uint32_t* const* kp_all, int n,
             int D, float scale, float* S) {
  constexpr int KB = 16 / RV;
  const __m512 vscale = _mm512_set1_ps(scale);
  for (int j0 = 0; j0 < n; j0 += KB) {
    const uint32_t* kp[KB];
#pragma GCC unroll 16
    for (int kb = 0; kb < KB; ++kb) kp[kb] = kp_all[j0 + kb < n ? j0 + kb : n];  // [n]: zero row
    __m512 acc[RV][KB];
#pragma GCC unroll 16
    for (int rv = 0; rv < RV; ++rv)
#pragma GCC unroll 16
      for (int kb = 0; kb < KB; ++kb) acc[rv][kb] = _mm512_setzero_ps();
    const uint32_t* q = Qp + rv0 * 16;
    for (int dp = 0; dp < D / 2; ++dp, q += rows_pad) {
      __m512i qv[RV];
#pragma GCC unroll 4
      for (int rv = 0; rv < RV; ++rv) qv[rv] = _mm512_loadu_si512(q + rv * 16);
#pragma GCC unroll 16
      for (int kb = 0; kb < KB; ++kb) {
        const __m512i b = _mm512_set1_epi32(static_cast<int>(kp[kb][dp]));
#pragma GCC unroll 4
        for (int rv = 0; rv < RV; ++rv) acc[rv][kb] = dp_bf16(acc[rv][kb], qv[rv], b);
      }
    }
#pragma GCC unroll 16
    for (int kb = 0; kb < KB; ++kb) {
      if (j0 + kb >= n) break;
#pragma GCC unroll 4
      for (int rv = 0; rv < RV; ++rv)
        _mm512_storeu_ps(S + static_cast<int64_t>(j0 + kb) * rows_pad + (rv0 + rv) * 16,
                         _mm512_mul_ps(acc[rv][kb], vscale));
    }
  }
}

// OT[q][rv0 * 16 ...] += Pp . Vp over n2 key pairs, DB output positions at a time.
template <int RV>
void pv_rows(const uint32_t* Pp, int rows_pad, int rv0, const uint32_t* Vp, int n2, int D,
             float* OT) {
  constexpr int DB = RV == 1 ? 16 : RV == 2 ? 8 : 4;
  for (int q0 = 0; q0 < D; q0 += DB) {
    __m512 acc[RV][DB];
#pragma GCC unroll 4
    for (int rv = 0; rv < RV; ++rv)
#pragma GCC unroll 16
      for (int db = 0; db < DB; ++db)
        acc[rv][db] = _mm512_loadu_ps(OT + static_cast<int64_t>(q0 + db) * rows_pad + (rv0 + rv) * 16);
    for (int jp = 0; jp < n2; ++jp) {
      __m512i pv[RV];
#pragma GCC unroll 4
      for (int rv = 0; rv < RV; ++rv)
        pv[rv] = _mm512_loadu_si512(Pp + static_cast<int64_t>(jp) * rows_pad + (rv0 + rv) * 16);
      const uint32_t* v = Vp + static_cast<int64_t>(jp) * D + q0;
#pragma GCC unroll 16
      for (int db = 0; db < DB; ++db) {
        const __m512i b = _mm512_set1_epi32(static_cast<int>(v[db]));
#pragma GCC unroll 4
        for (int rv = 0; rv < RV; ++rv) acc[rv][db] = dp_bf16(acc[rv][db], pv[rv], b);
      }
    }
#pragma GCC unroll 4
    for (int rv = 0; rv < RV; ++rv)
#pragma GCC unroll 16
      for (int db = 0; db < DB; ++db)
        _mm512_storeu_ps(OT + static_cast<int64_t>(q0 + db) * rows_pad + (rv0 + rv) * 16, acc[rv][db]);
  }
}



// Decode items: one chunk for all the item's KV heads, streaming whole cache rows
// (attention_decode_avx512.h).
template <typename T>
bool fast_chunk_heads(const BlockRows& br, int kvn, int rows_pad, const float* Qp_f,
                      const T* const* krow, const T* const* vrow, int64_t hoff0, int64_t k0, int n,
                      const T* zero_row, float* m, float* l, float* O, const NextRows<T>& next) {
  if constexpr (std::is_same_v<T, bf16_t>) {
    if (!use_decode(br)) return false;
    // At most 64 rows per call (its score buffers); plan_paged_attention already keeps
    // kvn * rows <= 64 for decode items, so this loop runs once.
    const int step = std::max(1, 64 / br.rows);
    const int D = br.D;
    const auto* kr = reinterpret_cast<const uint16_t* const*>(krow);
    const auto* vr = reinterpret_cast<const uint16_t* const*>(vrow);
    for (int h0 = 0; h0 < kvn; h0 += step) {
      const int cnt = std::min(step, kvn - h0);
      const int64_t so = static_cast<int64_t>(h0) * rows_pad;
      const int64_t hoff = hoff0 + static_cast<int64_t>(h0) * D;
      // The next chunk's rows of these cnt heads.
      const NextRows<uint16_t> heads_next{reinterpret_cast<const uint16_t* const*>(next.k),
                                          reinterpret_cast<const uint16_t* const*>(next.v), next.n,
                                          next.hoff + static_cast<int64_t>(h0) * D,
                                          static_cast<int64_t>(cnt) * D * 2};
      const float* q = Qp_f + so * D / 2;
      if (use_amx_decode(br))
        amx_decode_chunk(br, cnt, rows_pad, reinterpret_cast<const uint32_t*>(q), kr, vr, hoff, k0, n,
                         m + so, l + so, O + so * D, heads_next);
      else
        decode_chunk_heads(br, cnt, rows_pad, reinterpret_cast<const uint16_t*>(q), kr, vr, hoff, k0, n,
                           reinterpret_cast<const uint16_t*>(zero_row), m + so, l + so, O + so * D,
                           heads_next);
    }
    return true;
  }
  return false;
}

template <typename T>
void fast_chunk(const BlockRows& br, int rows_pad, const float* Qp_f, const T* const* krow,
                const T* const* vrow, int64_t hoff, int64_t k0, int n, float* S, float* Kf,
                float* Vp_f,
                float* Pp_f, const T* zero_row, float* m, float* l, float* OT,
                const NextRows<T>& next) {
  if constexpr (std::is_same_v<T, bf16_t>) {
    if (use_amx(br)) {
      const uint16_t* kp[kKeyChunk];
      const uint16_t* vp[kKeyChunk];
      for (int j = 0; j < n; ++j) {
        kp[j] = reinterpret_cast<const uint16_t*>(krow[j] + hoff);
        vp[j] = reinterpret_cast<const uint16_t*>(vrow[j] + hoff);
      }
      const NextRows<uint16_t> next16{reinterpret_cast<const uint16_t* const*>(next.k),
                                      reinterpret_cast<const uint16_t* const*>(next.v), next.n,
                                      next.hoff, next.bytes};
      amx_tile_chunk(br, rows_pad, reinterpret_cast<const uint32_t*>(Qp_f), kp, vp, k0, n, S,
                     reinterpret_cast<uint32_t*>(Pp_f), Kf, reinterpret_cast<const uint16_t*>(zero_row),
                     m, l, OT, next16);
      return;
    }
    prefetch_rows(next);
    const int D = br.D;
    const int nrv = rows_pad / 16;
    const uint32_t* Qp = reinterpret_cast<const uint32_t*>(Qp_f);
    uint32_t* Vp = reinterpret_cast<uint32_t*>(Vp_f);
    uint32_t* Pp = reinterpret_cast<uint32_t*>(Pp_f);
    const uint32_t* kp[kKeyChunk + 1];
    for (int j = 0; j < n; ++j) kp[j] = reinterpret_cast<const uint32_t*>(krow[j] + hoff);
    kp[n] = reinterpret_cast<const uint32_t*>(zero_row);

    // 1. scores
    for (int rv0 = 0; rv0 < nrv; rv0 += 4) {
      switch (nrv - rv0 >= 4 ? 4 : nrv - rv0) {
        case 1: qk_rows<1>(Qp, rows_pad, rv0, kp, n, D, br.scale, S); break;
        case 2: qk_rows<2>(Qp, rows_pad, rv0, kp, n, D, br.scale, S); break;
        case 3: qk_rows<3>(Qp, rows_pad, rv0, kp, n, D, br.scale, S); break;
        default: qk_rows<4>(Qp, rows_pad, rv0, kp, n, D, br.scale, S); break;
      }
    }
    // 2. masked online softmax, 16 rows at a time; P (bf16 pairs) into Pp
    const int n2 = (n + 1) / 2;
    const __m512 neg_inf = _mm512_set1_ps(-INFINITY);
    const __m512 floor_m = _mm512_set1_ps(-1e30f);
    for (int rv = 0; rv < nrv; ++rv) {
      alignas(64) int32_t pos[16];
      for (int i = 0; i < 16; ++i) {
        const int r = rv * 16 + i;
        pos[i] = r < br.rows ? static_cast<int32_t>(br.first_pos + r / br.group) : -(1 << 30);
      }
      const __m512i posv = _mm512_load_si512(pos);
      const bool windowed = br.window > 0;
      const __m512i lowv = _mm512_sub_epi32(posv, _mm512_set1_epi32(static_cast<int32_t>(windowed ? br.window - 1 : 0)));
      float* s = S + rv * 16;
      __m512 mx = neg_inf;
      for (int j = 0; j < n; ++j) {
        const __m512i kv = _mm512_set1_epi32(static_cast<int32_t>(k0 + j));
        __mmask16 vis = _mm512_cmple_epi32_mask(kv, posv);
        if (windowed) vis &= _mm512_cmpge_epi32_mask(kv, lowv);
        const __m512 v = _mm512_mask_mov_ps(neg_inf, vis, _mm512_loadu_ps(s + static_cast<int64_t>(j) * rows_pad));
        _mm512_storeu_ps(s + static_cast<int64_t>(j) * rows_pad, v);
        mx = _mm512_max_ps(mx, v);
      }
      const __m512 m_old = _mm512_loadu_ps(m + rv * 16);
      const __m512 m_new = _mm512_max_ps(m_old, mx);
      const __m512 m_use = _mm512_max_ps(m_new, floor_m);
      const __m512 alpha = exp512(_mm512_sub_ps(_mm512_max_ps(m_old, floor_m), m_use));
      __m512 lsum = _mm512_mul_ps(_mm512_loadu_ps(l + rv * 16), alpha);
      for (int jp = 0; jp < n2; ++jp) {
        __m512 pr[2];
        for (int k = 0; k < 2; ++k) {
          const int j = 2 * jp + k;
          if (j >= n) { pr[k] = _mm512_setzero_ps(); continue; }
          const __m512 v = _mm512_loadu_ps(s + static_cast<int64_t>(j) * rows_pad);
          const __mmask16 live = _mm512_cmp_ps_mask(v, neg_inf, _CMP_NEQ_OQ);
          pr[k] = _mm512_maskz_mov_ps(live, exp512(_mm512_sub_ps(v, m_use)));
          lsum = _mm512_add_ps(lsum, pr[k]);
        }
        _mm512_storeu_si512(Pp + static_cast<int64_t>(jp) * rows_pad + rv * 16, pack_pair(pr[0], pr[1]));
      }
      _mm512_storeu_ps(m + rv * 16, m_new);
      _mm512_storeu_ps(l + rv * 16, lsum);
      if (_mm512_cmp_ps_mask(alpha, _mm512_set1_ps(1.0f), _CMP_NEQ_OQ)) {
        float* o = OT + rv * 16;
        for (int q = 0; q < D; ++q)
          _mm512_storeu_ps(o + static_cast<int64_t>(q) * rows_pad,
                           _mm512_mul_ps(_mm512_loadu_ps(o + static_cast<int64_t>(q) * rows_pad), alpha));
      }
    }
    // 3. V rows interleaved in pairs of keys
    for (int jp = 0; jp < n2; ++jp) {
      const T* v0 = vrow[2 * jp] + hoff;
      const T* v1 = 2 * jp + 1 < n ? vrow[2 * jp + 1] + hoff : zero_row;
      uint32_t* dst = Vp + static_cast<int64_t>(jp) * D;
      for (int c = 0; c < D; c += 32) {
        const __m512i a = _mm512_loadu_si512(v0 + c);
        const __m512i b = _mm512_loadu_si512(v1 + c);
        _mm512_storeu_si512(dst + c, _mm512_unpacklo_epi16(a, b));
        _mm512_storeu_si512(dst + c + 16, _mm512_unpackhi_epi16(a, b));
      }
    }
    // 4. output
    for (int rv0 = 0; rv0 < nrv; rv0 += 4) {
      switch (nrv - rv0 >= 4 ? 4 : nrv - rv0) {
        case 1: pv_rows<1>(Pp, rows_pad, rv0, Vp, n2, D, OT); break;
        case 2: pv_rows<2>(Pp, rows_pad, rv0, Vp, n2, D, OT); break;
        case 3: pv_rows<3>(Pp, rows_pad, rv0, Vp, n2, D, OT); break;
        default: pv_rows<4>(Pp, rows_pad, rv0, Vp, n2, D, OT); break;
      }
    }
  }
}

#include "kernels/cpu/attention_kernels_impl.h"

}  // namespace

void run_item(const PagedAttentionParams& p, const AttentionWorkItem& item, float* partials,
              float* lse) {
  run_item_dispatch(p, item, partials, lse);
}

}  // namespace pagedinfer::cpu::avx512_attn
