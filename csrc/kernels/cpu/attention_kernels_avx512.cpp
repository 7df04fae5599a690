// AVX-512 twin of the paged-attention item kernel (attention_kernels_impl.h). Compiled with
// AVX-512 F/BW/VL/DQ/BF16 flags; entered only when active_isa() says the CPU has them.
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernels/cpu/attention_kernels.h"
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

// exp(x) for x <= ~88: 2^(x log2 e) = 2^n * 2^f, |f| <= 1/2, 2^f by a degree-6 polynomial
// (relative error ~2e-7); inputs below -100 give 0.
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

template <typename T>
bool attend_block_fast(const BlockRows&, const float*, const T*, const T*, int64_t, int64_t, int,
                       float*, float*, float*, float*) {
  return false;
}

#include "kernels/cpu/attention_kernels_impl.h"

}  // namespace

void run_item(const PagedAttentionParams& p, const AttentionWorkItem& item, float* partials,
              float* lse) {
  run_item_dispatch(p, item, partials, lse);
}

}  // namespace pagedinfer::cpu::avx512_attn
