// AVX2 twin of the paged-attention item kernel (attention_kernels_impl.h), for CPUs without
// AVX-512: the generic fp32 chunk path with 8-wide FMA dot products, AXPYs and exponentials.
// Compiled with AVX2 / FMA / F16C flags; entered only when active_isa() is kAvx2.
#include <immintrin.h>

#include <cmath>
#include <cstdint>

#include "kernels/cpu/attention_kernels.h"
#include "kernels/cpu/half_types.h"

namespace pagedinfer::cpu::avx2_attn {
namespace {

// ---- vector primitives ------------------------------------------------------------------------

inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 load8(const bf16_t* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
inline __m256 load8(const f16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

inline float hsum8(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}

// e^x, 8 lanes: 2^n x e^f with f in [-ln2 / 2, ln2 / 2] (degree-6 polynomial, as exp512);
// x is clamped at -87 so 2^n stays a normal float (e^-87 ~ 1.6e-38: zero for the softmax).
inline __m256 exp256(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
  const __m256 t = _mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f));
  const __m256 n = _mm256_round_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256 f = _mm256_mul_ps(_mm256_sub_ps(t, n), _mm256_set1_ps(0.693147180559945309f));
  __m256 y = _mm256_set1_ps(1.0f / 720);
  y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(1.0f / 120));
  y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(1.0f / 24));
  y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(1.0f / 6));
  y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(0.5f));
  y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(1.0f));
  y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(1.0f));
  const __m256i pow2n =
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(pow2n));
}

}  // namespace

template <typename T>
void load_rows(const T* src, int64_t stride, int n, int D, float* dst) {
  for (int j = 0; j < n; ++j) {
    const T* s = src + j * stride;
    float* o = dst + static_cast<int64_t>(j) * D;
    int d = 0;
    for (; d + 8 <= D; d += 8) _mm256_storeu_ps(o + d, load8(s + d));
    for (; d < D; ++d) o[d] = to_f32(s[d]);
  }
}

inline float dot(const float* a, const float* b, int D) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  int d = 0;
  for (; d + 16 <= D; d += 16) {
    s0 = _mm256_fmadd_ps(load8(a + d), load8(b + d), s0);
    s1 = _mm256_fmadd_ps(load8(a + d + 8), load8(b + d + 8), s1);
  }
  for (; d + 8 <= D; d += 8) s0 = _mm256_fmadd_ps(load8(a + d), load8(b + d), s0);
  float t = hsum8(_mm256_add_ps(s0, s1));
  for (; d < D; ++d) t += a[d] * b[d];
  return t;
}

inline void axpy(float* y, float a, const float* x, int D) {
  const __m256 va = _mm256_set1_ps(a);
  int d = 0;
  for (; d + 8 <= D; d += 8) _mm256_storeu_ps(y + d, _mm256_fmadd_ps(va, load8(x + d), load8(y + d)));
  for (; d < D; ++d) y[d] += a * x[d];
}

inline void scale(float* y, float a, int D) {
  const __m256 va = _mm256_set1_ps(a);
  int d = 0;
  for (; d + 8 <= D; d += 8) _mm256_storeu_ps(y + d, _mm256_mul_ps(va, load8(y + d)));
  for (; d < D; ++d) y[d] *= a;
}

inline float exp_sub_sum(float* s, int n, float m) {
  const __m256 vm = _mm256_set1_ps(m);
  __m256 sum = _mm256_setzero_ps();
  int j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256 e = exp256(_mm256_sub_ps(load8(s + j), vm));
    _mm256_storeu_ps(s + j, e);
    sum = _mm256_add_ps(sum, e);
  }
  float t = hsum8(sum);
  for (; j < n; ++j) {
    s[j] = std::exp(s[j] - m);
    t += s[j];
  }
  return t;
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

}  // namespace pagedinfer::cpu::avx2_attn
