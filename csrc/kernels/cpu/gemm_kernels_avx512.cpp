// AVX-512 (BF16) dequantization twins of gemm_kernels.cpp, for the large-M paths (the GEMV twins
// are in gemv_kernels_avx512.cpp). Compiled with AVX-512 flags; entered only when active_isa()
// says the CPU has them. Layouts: gemm_kernels.h.
#include <immintrin.h>

#include <algorithm>
#include <vector>

#include "kernels/cpu/gemm_kernels.h"
#include "kernels/cpu/gemm_simd_avx512.h"

namespace pagedinfer::cpu {

using avx512_gemm::halves_to_floats;
using avx512_gemm::log2_of;
using avx512_gemm::prefetch_bytes;

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
    prefetch_bytes(q + k_end / 2, (k_end - k_begin) / 2);  // this row's next K block
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
    prefetch_bytes(q + k_end, k_end - k_begin);  // this row's next K block
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
