// AVX-512 (BF16) twins of gemm_kernels.cpp. Compiled with AVX-512 flags; entered only when
// active_isa() says the CPU has them. Layouts: gemm_kernels.h.
//
// INT4 GEMV: a 32-byte load of qweight is widened to 32 words (low nibble | high nibble << 4);
// vpermw maps each word's low 5 bits through a 32-entry table holding bf16(i & 15) twice, so the
// low nibbles become 32 exact bf16 values with no masking, and (word >> 4) gives the high ones.
// vdpbf16ps multiplies them by bf16 activations (x_hi, plus x_lo when x is not bf16) into fp32;
// each group's partial is scaled once (fma with its scale), and the min term is
// sum_g min[g] * x_sum[g]. Two weight rows per pass share the activation loads; each (row, x row)
// keeps two accumulators so the fma chains do not limit throughput.
// GCC 12 flags its own intrinsics headers (_mm512_reduce_add_ps, _mm512_setzero_*) as reading
// uninitialized values; the warning is spurious.
#pragma GCC diagnostic ignored "-Wuninitialized"  // (-Wmaybe-uninitialized: cmake/utils.cmake)
#include <immintrin.h>

#include <algorithm>
#include <vector>

#include "kernels/cpu/gemm_kernels.h"

namespace pagedinfer::cpu {
namespace {

inline __m512i nibble_table() {
  const __m512 iota = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  return (__m512i)_mm512_cvtne2ps_pbh(iota, iota);
}

// fp16 [count] -> fp32 [count].
inline void halves_to_floats(const uint16_t* src, int64_t count, float* dst) {
  int64_t i = 0;
  for (; i + 16 <= count; i += 16)
    _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)(src + i))));
  if (i < count) {
    const __mmask16 mask = static_cast<__mmask16>((1u << (count - i)) - 1);
    _mm512_mask_storeu_ps(dst + i, mask, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, src + i)));
  }
}

inline void prefetch_rows(const void* p, int64_t bytes) {
  for (int64_t off = 0; off < bytes; off += 64) _mm_prefetch(static_cast<const char*>(p) + off, _MM_HINT_T0);
}

// sum_i a[i] * b[i]
inline float dot_floats(const float* a, const float* b, int64_t count) {
  __m512 acc = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= count; i += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc);
  if (i < count) {
    const __mmask16 mask = static_cast<__mmask16>((1u << (count - i)) - 1);
    acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, a + i), _mm512_maskz_loadu_ps(mask, b + i), acc);
  }
  return _mm512_reduce_add_ps(acc);
}

// Rows ahead of the current ones that the GEMV loops prefetch, one line per chunk of work: the
// hardware prefetchers do not run far enough ahead of two interleaved row streams. 16 rows (about
// 0.3 us of work for K = 576) hide L3 / DRAM latency; 2 rows left ~10 % of the default model's
// decode GEMV time waiting (4.6 vs 4.1 ms for its 120 INT4 calls per step).
constexpr int64_t kPrefetchRows = 16;
inline int log2_of(int64_t g) { return g == 32 ? 5 : g == 64 ? 6 : 7; }

// result[r * MB + m] = sum_k q-part of rows n + r, x rows m0 + m (scale applied, min not yet).
template <int MB, int NR, bool kLo>
void int4_rows(const Int4Args& w, const PreparedX& x, int64_t m0, int64_t n, const float* sc,
               float* result) {
  const int64_t K = w.K, groups = K / w.group_size, rb = int4_row_bytes(K), full = K / 64;
  const int shift = log2_of(w.group_size);
  const __m512i table = nibble_table();
  const uint8_t* q[NR];
  for (int r = 0; r < NR; ++r) q[r] = w.qweight + (n + r) * rb;
  const uint16_t* xh = x.x_hi + m0 * K;
  const uint16_t* xl = kLo ? x.x_lo + m0 * K : nullptr;
  // acc[(r * MB + m) * 2 + half]: one flat array, so GCC keeps it in registers.
  __m512 acc[NR * MB * 2];
#pragma GCC unroll 16
  for (int i = 0; i < NR * MB * 2; ++i) acc[i] = _mm512_setzero_ps();

  // Software prefetch of rows kPrefetchRows ahead (NR of them, one line per chunk); without any
  // the loop waited on DRAM (2.2 ms vs 1.0 ms for 4096 x 4096, one thread).
  const char* next = reinterpret_cast<const char*>(q[0]) + kPrefetchRows * rb;
  for (int64_t c = 0; c < full; ++c) {
    _mm_prefetch(next + 64 * c, _MM_HINT_T0);
    __m512bh wl[NR], wh[NR];
#pragma GCC unroll 4
    for (int r = 0; r < NR; ++r) {
      const __m512i wd = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i*)(q[r] + 32 * c)));
      wl[r] = (__m512bh)_mm512_permutexvar_epi16(wd, table);
      wh[r] = (__m512bh)_mm512_permutexvar_epi16(_mm512_srli_epi16(wd, 4), table);
    }
    const int64_t klo = 64 * c, khi = klo + 32, gl = klo >> shift, gh = khi >> shift;
#pragma GCC unroll 4
    for (int m = 0; m < MB; ++m) {
      const __m512bh xa = (__m512bh)_mm512_loadu_si512(xh + m * K + klo);
      const __m512bh xb = (__m512bh)_mm512_loadu_si512(xh + m * K + khi);
#pragma GCC unroll 4
      for (int r = 0; r < NR; ++r) {
        __m512 pl = _mm512_dpbf16_ps(_mm512_setzero_ps(), wl[r], xa);
        __m512 ph = _mm512_dpbf16_ps(_mm512_setzero_ps(), wh[r], xb);
        if constexpr (kLo) {
          pl = _mm512_dpbf16_ps(pl, wl[r], (__m512bh)_mm512_loadu_si512(xl + m * K + klo));
          ph = _mm512_dpbf16_ps(ph, wh[r], (__m512bh)_mm512_loadu_si512(xl + m * K + khi));
        }
        acc[(r * MB + m) * 2] = _mm512_fmadd_ps(pl, _mm512_set1_ps(sc[r * groups + gl]), acc[(r * MB + m) * 2]);
        acc[(r * MB + m) * 2 + 1] = _mm512_fmadd_ps(ph, _mm512_set1_ps(sc[r * groups + gh]), acc[(r * MB + m) * 2 + 1]);
      }
    }
  }
  if (K % 64 != 0) {  // a last half chunk: its 32 low nibbles, in group (64 * full) / G
    const int64_t klo = 64 * full, gl = klo >> shift;
#pragma GCC unroll 4
    for (int r = 0; r < NR; ++r) {
      const __m512i wd = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i*)(q[r] + 32 * full)));
      const __m512bh wl = (__m512bh)_mm512_permutexvar_epi16(wd, table);
      for (int m = 0; m < MB; ++m) {
        __m512 pl = _mm512_dpbf16_ps(_mm512_setzero_ps(), wl, (__m512bh)_mm512_loadu_si512(xh + m * K + klo));
        if constexpr (kLo)
          pl = _mm512_dpbf16_ps(pl, wl, (__m512bh)_mm512_loadu_si512(xl + m * K + klo));
        acc[(r * MB + m) * 2] = _mm512_fmadd_ps(pl, _mm512_set1_ps(sc[r * groups + gl]), acc[(r * MB + m) * 2]);
      }
    }
  }
  for (int r = 0; r < NR; ++r)
    for (int m = 0; m < MB; ++m)
      result[r * MB + m] = _mm512_reduce_add_ps(_mm512_add_ps(acc[(r * MB + m) * 2], acc[(r * MB + m) * 2 + 1]));
}

template <int NR, bool kLo>
void int4_rows_mb(int mb, const Int4Args& w, const PreparedX& x, int64_t m0, int64_t n,
                  const float* sc, float* result) {
  switch (mb) {
    case 1: return int4_rows<1, NR, kLo>(w, x, m0, n, sc, result);
    case 2: return int4_rows<2, NR, kLo>(w, x, m0, n, sc, result);
    case 3: return int4_rows<3, NR, kLo>(w, x, m0, n, sc, result);
    default: return int4_rows<4, NR, kLo>(w, x, m0, n, sc, result);
  }
}

// Same shape for INT8 with fp32 activations: w = cvt(q), fma with x32, per-group scale.
template <int MB, int NR>
void int8_rows(const Int8Args& w, const PreparedX& x, int64_t m0, int64_t n, const float* sc,
               float* result) {
  const int64_t K = w.K, G = w.group_size, groups = K / G;
  const int8_t* q[NR];
  for (int r = 0; r < NR; ++r) q[r] = w.qweight + (n + r) * K;
  const float* xr = x.x32 + m0 * K;
  __m512 acc[NR][MB][2];
  for (int r = 0; r < NR; ++r)
    for (int m = 0; m < MB; ++m) acc[r][m][0] = acc[r][m][1] = _mm512_setzero_ps();
  const char* next = reinterpret_cast<const char*>(q[0]) + kPrefetchRows * K;  // as in int4_rows
  for (int64_t g = 0; g < groups; ++g) {
    for (int64_t off = 0; off < NR * G; off += 64) _mm_prefetch(next + g * NR * G + off, _MM_HINT_T0);
    __m512 p[NR][MB][2];
    for (int r = 0; r < NR; ++r)
      for (int m = 0; m < MB; ++m) p[r][m][0] = p[r][m][1] = _mm512_setzero_ps();
    for (int64_t v = 0; v < G; v += 32) {
      const int64_t k = g * G + v;
      __m512 w0[NR], w1[NR];
      for (int r = 0; r < NR; ++r) {
        w0[r] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)(q[r] + k))));
        w1[r] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)(q[r] + k + 16))));
      }
      for (int m = 0; m < MB; ++m) {
        const __m512 x0 = _mm512_loadu_ps(xr + m * K + k), x1 = _mm512_loadu_ps(xr + m * K + k + 16);
        for (int r = 0; r < NR; ++r) {
          p[r][m][0] = _mm512_fmadd_ps(w0[r], x0, p[r][m][0]);
          p[r][m][1] = _mm512_fmadd_ps(w1[r], x1, p[r][m][1]);
        }
      }
    }
    for (int r = 0; r < NR; ++r) {
      const __m512 s = _mm512_set1_ps(sc[r * groups + g]);
      for (int m = 0; m < MB; ++m) {
        acc[r][m][0] = _mm512_fmadd_ps(p[r][m][0], s, acc[r][m][0]);
        acc[r][m][1] = _mm512_fmadd_ps(p[r][m][1], s, acc[r][m][1]);
      }
    }
  }
  for (int r = 0; r < NR; ++r)
    for (int m = 0; m < MB; ++m)
      result[r * MB + m] = _mm512_reduce_add_ps(_mm512_add_ps(acc[r][m][0], acc[r][m][1]));
}

template <int NR>
void int8_rows_mb(int mb, const Int8Args& w, const PreparedX& x, int64_t m0, int64_t n,
                  const float* sc, float* result) {
  switch (mb) {
    case 1: return int8_rows<1, NR>(w, x, m0, n, sc, result);
    case 2: return int8_rows<2, NR>(w, x, m0, n, sc, result);
    case 3: return int8_rows<3, NR>(w, x, m0, n, sc, result);
    default: return int8_rows<4, NR>(w, x, m0, n, sc, result);
  }
}

inline __m512 load16(const void* row, DType dt, int64_t k) {
  switch (dt) {
    case DType::kBF16:
      return _mm512_castsi512_ps(_mm512_slli_epi32(
          _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)(static_cast<const uint16_t*>(row) + k))), 16));
    case DType::kF16:
      return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)(static_cast<const uint16_t*>(row) + k)));
    default:
      return _mm512_loadu_ps(static_cast<const float*>(row) + k);
  }
}

}  // namespace

void prepare_x_avx512(const void* x, DType dt, int64_t ldx_bytes, PreparedX& p) {
  const int64_t G = p.group_size, groups = p.K / G;
  for (int64_t m = 0; m < p.M; ++m) {
    const void* row = static_cast<const char*>(x) + m * ldx_bytes;
    for (int64_t g = 0; g < groups; ++g) {
      __m512 sum = _mm512_setzero_ps();
      for (int64_t k = g * G; k < (g + 1) * G; k += 16) {
        const __m512 v = load16(row, dt, k);
        _mm512_storeu_ps(p.x32 + m * p.K + k, v);
        const __m256i hi = (__m256i)_mm512_cvtneps_pbh(v);
        _mm256_storeu_si256((__m256i*)(p.x_hi + m * p.K + k), hi);
        if (p.x_lo != nullptr) {
          const __m512 hi32 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(hi), 16));
          _mm256_storeu_si256((__m256i*)(p.x_lo + m * p.K + k),
                              (__m256i)_mm512_cvtneps_pbh(_mm512_sub_ps(v, hi32)));
        }
        sum = _mm512_add_ps(sum, v);
      }
      p.x_sum[m * groups + g] = _mm512_reduce_add_ps(sum);
    }
  }
}

void int4_gemv_avx512(const Int4Args& w, const PreparedX& x, const float* bias, void* out,
                      DType out_dt, int64_t ldo, int64_t n_begin, int64_t n_end) {
  // Scales and mins are widened 32 rows at a time (one contiguous run each): per-row setup is
  // what dominates the small layers of the default model (K = 576 is only 9 chunks a row).
  constexpr int64_t kRowBlock = 32;
  const int64_t groups = w.K / w.group_size;
  const bool lo = x.x_lo != nullptr;
  thread_local std::vector<float> sm;
  sm.resize(static_cast<size_t>(2 * kRowBlock * groups));
  float* sc_block = sm.data();
  float* mn_block = sc_block + kRowBlock * groups;
  float result[8];
  for (int64_t nb = n_begin; nb < n_end; nb += kRowBlock) {
    const int64_t rows = std::min(kRowBlock, n_end - nb);
    halves_to_floats(w.scale + nb * groups, rows * groups, sc_block);
    halves_to_floats(w.min + nb * groups, rows * groups, mn_block);
    for (int64_t n = nb; n < nb + rows; n += 2) {
      const int nr = n + 2 <= nb + rows ? 2 : 1;
      const float* sc = sc_block + (n - nb) * groups;
      for (int64_t m0 = 0; m0 < x.M; m0 += 4) {
        const int mb = static_cast<int>(std::min<int64_t>(4, x.M - m0));
        if (nr == 2) {
          lo ? int4_rows_mb<2, true>(mb, w, x, m0, n, sc, result)
             : int4_rows_mb<2, false>(mb, w, x, m0, n, sc, result);
        } else {
          lo ? int4_rows_mb<1, true>(mb, w, x, m0, n, sc, result)
             : int4_rows_mb<1, false>(mb, w, x, m0, n, sc, result);
        }
        for (int r = 0; r < nr; ++r)
          for (int m = 0; m < mb; ++m) {
            float v = result[r * mb + m] + dot_floats(mn_block + (n + r - nb) * groups,
                                                      x.x_sum + (m0 + m) * groups, groups);
            if (bias != nullptr) v += bias[n + r];
            store_value(out, out_dt, (m0 + m) * ldo + n + r, v);
          }
      }
    }
  }
}

void int8_gemv_avx512(const Int8Args& w, const PreparedX& x, const float* bias, void* out,
                      DType out_dt, int64_t ldo, int64_t n_begin, int64_t n_end) {
  constexpr int64_t kRowBlock = 32;  // scales widened 32 rows at a time, as in int4_gemv_avx512
  const int64_t groups = w.K / w.group_size;
  thread_local std::vector<float> sm;
  sm.resize(static_cast<size_t>(kRowBlock * groups));
  float result[8];
  for (int64_t nb = n_begin; nb < n_end; nb += kRowBlock) {
    const int64_t rows = std::min(kRowBlock, n_end - nb);
    halves_to_floats(w.scale + nb * groups, rows * groups, sm.data());
    for (int64_t n = nb; n < nb + rows; n += 2) {
      const int nr = n + 2 <= nb + rows ? 2 : 1;
      const float* sc = sm.data() + (n - nb) * groups;
      for (int64_t m0 = 0; m0 < x.M; m0 += 4) {
        const int mb = static_cast<int>(std::min<int64_t>(4, x.M - m0));
        if (nr == 2) int8_rows_mb<2>(mb, w, x, m0, n, sc, result);
        else int8_rows_mb<1>(mb, w, x, m0, n, sc, result);
        for (int r = 0; r < nr; ++r)
          for (int m = 0; m < mb; ++m) {
            float v = result[r * mb + m];
            if (bias != nullptr) v += bias[n + r];
            store_value(out, out_dt, (m0 + m) * ldo + n + r, v);
          }
      }
    }
  }
}

// Dequantization for the large-M paths. bf16: per group a 16-entry table
// bf16(fma(i, scale, min)), duplicated to 32 words, then one vpermw per 32 weights; the row's
// scales and mins are widened to fp32 first so each table costs one fma and one convert.
void int4_scales_to_floats_avx512(const Int4Args& w, int64_t n_begin, int64_t n_end, float* sc,
                                  float* mn) {
  const int64_t groups = w.K / w.group_size;
  halves_to_floats(w.scale + n_begin * groups, (n_end - n_begin) * groups, sc);
  halves_to_floats(w.min + n_begin * groups, (n_end - n_begin) * groups, mn);
}

void int4_dequant_bf16_avx512(const Int4Args& w, int64_t n_begin, int64_t n_end, int64_t k_begin,
                              int64_t k_end, uint16_t* dst, int64_t ldd, const float* sc_rows,
                              const float* mn_rows) {
  const int64_t K = k_end, groups = w.K / w.group_size, rb = int4_row_bytes(w.K);
  const int shift = log2_of(w.group_size);
  const __m512 iota = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  thread_local std::vector<float> sm;
  sm.resize(2 * groups);
  float* const sc_own = sm.data();
  float* const mn_own = sc_own + groups;
  for (int64_t n = n_begin; n < n_end; ++n) {
    const uint8_t* q = w.qweight + n * rb;
    const float* sc = sc_own;
    const float* mn = mn_own;
    if (sc_rows != nullptr) {  // widened by the caller once for all its K blocks
      sc = sc_rows + (n - n_begin) * groups;
      mn = mn_rows + (n - n_begin) * groups;
    } else {
      halves_to_floats(w.scale + n * groups, groups, sc_own);
      halves_to_floats(w.min + n * groups, groups, mn_own);
    }
    uint16_t* d = dst + (n - n_begin) * ldd - k_begin;
    prefetch_rows(q + k_end / 2, (k_end - k_begin) / 2);  // this row's next K block
    for (int64_t c = k_begin / 64; c < (k_end + 63) / 64; ++c) {
      const int64_t klo = 64 * c, khi = klo + 32, gl = klo >> shift, gh = khi >> shift;
      // A last chunk past K still has its 32 bytes (high nibbles zero): load them all.
      const __m512i wd = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i*)(q + 32 * c)));
      const __m512 vl = _mm512_fmadd_ps(iota, _mm512_set1_ps(sc[gl]), _mm512_set1_ps(mn[gl]));
      const __m512i tl = (__m512i)_mm512_cvtne2ps_pbh(vl, vl);
      _mm512_storeu_si512(d + klo, _mm512_permutexvar_epi16(wd, tl));
      if (khi >= K) break;
      __m512i th = tl;
      if (gh != gl) {
        const __m512 vh = _mm512_fmadd_ps(iota, _mm512_set1_ps(sc[gh]), _mm512_set1_ps(mn[gh]));
        th = (__m512i)_mm512_cvtne2ps_pbh(vh, vh);
      }
      _mm512_storeu_si512(d + khi, _mm512_permutexvar_epi16(_mm512_srli_epi16(wd, 4), th));
    }
  }
}

void int4_dequant_avx512(const Int4Args& w, int64_t n_begin, int64_t n_end, void* dst, DType dt) {
  if (dt == DType::kBF16)
    return int4_dequant_bf16_avx512(w, n_begin, n_end, 0, w.K, static_cast<uint16_t*>(dst), w.K,
                                    nullptr, nullptr);
  const int64_t K = w.K, groups = K / w.group_size, rb = int4_row_bytes(K), chunks = (K + 63) / 64;
  const int shift = log2_of(w.group_size);
  const __m512i mask4 = _mm512_set1_epi32(0x0F);
  for (int64_t n = n_begin; n < n_end; ++n) {  // fp32: widen, convert, fma
    const uint8_t* q = w.qweight + n * rb;
    const uint16_t* s16 = w.scale + n * groups;
    const uint16_t* m16 = w.min + n * groups;
    auto group_scale = [&](int64_t k) { return _mm512_set1_ps(_cvtsh_ss(s16[k >> shift])); };
    auto group_min = [&](int64_t k) { return _mm512_set1_ps(_cvtsh_ss(m16[k >> shift])); };
    float* d = static_cast<float*>(dst) + (n - n_begin) * K;
    for (int64_t c = 0; c < chunks; ++c) {
      const int64_t klo = 64 * c, khi = klo + 32;
      for (int h = 0; h < 2; ++h) {  // bytes 16h .. 16h + 15: k = klo + 16h + j and khi + 16h + j
        const __m512i b = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)(q + 32 * c + 16 * h)));
        const __m512 lo = _mm512_cvtepi32_ps(_mm512_and_si512(b, mask4));
        _mm512_storeu_ps(d + klo + 16 * h, _mm512_fmadd_ps(lo, group_scale(klo), group_min(klo)));
        if (khi < K) {
          const __m512 hi = _mm512_cvtepi32_ps(_mm512_srli_epi32(b, 4));
          _mm512_storeu_ps(d + khi + 16 * h, _mm512_fmadd_ps(hi, group_scale(khi), group_min(khi)));
        }
      }
    }
  }
}

void int8_dequant_avx512(const Int8Args& w, int64_t n_begin, int64_t n_end, void* dst, DType dt) {
  const int64_t K = w.K, G = w.group_size, groups = K / G;
  for (int64_t n = n_begin; n < n_end; ++n) {
    const int8_t* q = w.qweight + n * K;
    for (int64_t g = 0; g < groups; ++g) {
      const __m512 s = _mm512_set1_ps(_cvtsh_ss(w.scale[n * groups + g]));
      for (int64_t k = g * G; k < (g + 1) * G; k += 32) {
        const __m512 a = _mm512_mul_ps(
            _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)(q + k)))), s);
        const __m512 b = _mm512_mul_ps(
            _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)(q + k + 16)))), s);
        if (dt == DType::kBF16) {
          _mm512_storeu_si512(static_cast<uint16_t*>(dst) + (n - n_begin) * K + k,
                              (__m512i)_mm512_cvtne2ps_pbh(b, a));
        } else {
          float* d = static_cast<float*>(dst) + (n - n_begin) * K + k;
          _mm512_storeu_ps(d, a);
          _mm512_storeu_ps(d + 16, b);
        }
      }
    }
  }
}

void int8_dequant_bf16_avx512(const Int8Args& w, int64_t n_begin, int64_t n_end, int64_t k_begin,
                              int64_t k_end, uint16_t* dst, int64_t ldd) {
  const int64_t K = w.K, shift = log2_of(w.group_size), groups = K / w.group_size;
  for (int64_t n = n_begin; n < n_end; ++n) {
    const int8_t* q = w.qweight + n * K;
    uint16_t* d = dst + (n - n_begin) * ldd - k_begin;
    prefetch_rows(q + k_end, k_end - k_begin);  // this row's next K block
    for (int64_t k = k_begin; k < k_end; k += 32) {
      const __m512 s = _mm512_set1_ps(_cvtsh_ss(w.scale[n * groups + (k >> shift)]));
      const __m512 a = _mm512_mul_ps(
          _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)(q + k)))), s);
      const __m512 b = _mm512_mul_ps(
          _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)(q + k + 16)))), s);
      _mm512_storeu_si512(d + k, (__m512i)_mm512_cvtne2ps_pbh(b, a));
    }
  }
}

}  // namespace pagedinfer::cpu
