// Scalar implementations of layer_kernels.h (the twins of layer_kernels_avx512.cpp). These ops move a few KB per row;
// at batch 1 they are bound by call overhead, not arithmetic, which is why they are fused.
#include "kernels/cpu/layer_kernels.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/half_types.h"

namespace pagedinfer::cpu {
namespace {

// Stores without branches (half_types.h's from_f32 tests for NaN with a branch, which keeps the
// compiler from vectorizing a row loop). bf16: round to nearest even, NaN -> quiet NaN.
template <typename T> inline T store(float x) { return from_f32<T>(x); }
template <> inline bf16_t store<bf16_t>(float x) {
  const uint32_t u = f32_to_bits(x);
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  return bf16_t{static_cast<uint16_t>(x != x ? 0x7fc0u : rounded)};
}

template <typename T>
void add_norm_rows(T* x, int64_t xs, T* res, int64_t rs, const T* w, int64_t n, float eps,
                   int64_t r0, int64_t r1) {
  std::vector<float> buf(n);
  for (int64_t r = r0; r < r1; ++r) {
    T* xr = x + r * xs;
    T* rr = res + r * rs;
    float ss = 0.f;
    for (int64_t i = 0; i < n; ++i) {
      const T sum = store<T>(to_f32(xr[i]) + to_f32(rr[i]));
      rr[i] = sum;
      buf[i] = to_f32(sum);
      ss += buf[i] * buf[i];
    }
    const float inv = 1.f / std::sqrt(ss / static_cast<float>(n) + eps);
    for (int64_t i = 0; i < n; ++i) xr[i] = store<T>(buf[i] * inv * to_f32(w[i]));
  }
}

template <typename T>
void norm_rows(T* out, int64_t os, const T* x, int64_t xs, const T* w, int64_t n, float eps,
               int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const T* xr = x + r * xs;
    T* orow = out + r * os;
    float ss = 0.f;
    for (int64_t i = 0; i < n; ++i) ss += to_f32(xr[i]) * to_f32(xr[i]);
    const float inv = 1.f / std::sqrt(ss / static_cast<float>(n) + eps);
    for (int64_t i = 0; i < n; ++i) orow[i] = store<T>(to_f32(xr[i]) * inv * to_f32(w[i]));
  }
}

// exp(x) for the SiLU: 2^(x log2 e) split into 2^i (exponent bits) and 2^f, f in [0, 1), by a
// degree-6 polynomial (relative error < 2e-7, below fp32 rounding of the SiLU's other terms).
// Plain arithmetic without calls or branches, so the compiler vectorizes the row loop; std::exp
// is a library call per element (~25 ns), which made this op cost as much as a GEMM at batch 1.
inline float exp_approx(float x) {
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  const float t = x * 1.44269504088896341f;                 // in [-125.6, 127]
  const int32_t i = static_cast<int32_t>(t + 128.0f) - 128;  // floor: truncation of a positive
  const float f = t - static_cast<float>(i);
  float p = 1.5403530393381606e-4f;
  p = p * f + 1.3333558146428443e-3f;
  p = p * f + 9.6181291076284772e-3f;
  p = p * f + 5.5504108664821580e-2f;
  p = p * f + 2.4022650695910071e-1f;
  p = p * f + 6.9314718055994531e-1f;
  p = p * f + 1.0f;
  return p * bits_to_f32(static_cast<uint32_t>(i + 127) << 23);
}

template <typename T>
void silu_mul_rows(T* out, int64_t os, const T* x, int64_t xs, int64_t d, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const T* g = x + r * xs;
    const T* u = g + d;
    T* o = out + r * os;
    for (int64_t i = 0; i < d; ++i) {
      const float a = to_f32(g[i]);
      o[i] = store<T>(a / (1.f + exp_approx(-a)) * to_f32(u[i]));
    }
  }
}

template <typename T>
void rotary_rows(T* qk, int64_t st, int64_t sh, int64_t heads, int64_t D, const int64_t* pos,
                 const float* cos, const float* sin, int64_t t0, int64_t t1) {
  const int64_t half = D / 2;
  std::vector<float> v(D);
  for (int64_t t = t0; t < t1; ++t) {
    const float* c = cos + pos[t] * D;
    const float* s = sin + pos[t] * D;
    for (int64_t h = 0; h < heads; ++h) {
      T* row = qk + t * st + h * sh;
      for (int64_t i = 0; i < D; ++i) v[i] = to_f32(row[i]);
      for (int64_t i = 0; i < half; ++i) {
        row[i] = store<T>(v[i] * c[i] + v[i + half] * s[i]);
        row[i + half] = store<T>(v[i + half] * c[i + half] + v[i] * s[i + half]);
      }
    }
  }
}

template <typename T>
void argmax_row_range(const T* x, int64_t xs, int64_t n, int64_t* out, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const T* row = x + r * xs;
    float best = to_f32(row[0]);
    int64_t idx = 0;
    for (int64_t i = 1; i < n && best == best; ++i) {  // stops at a NaN: it is the maximum
      const float v = to_f32(row[i]);
      if (v > best || v != v) {
        best = v;
        idx = i;
      }
    }
    out[r] = idx;
  }
}

}  // namespace


void fused_add_rms_norm(LayerDtype dtype, void* x, int64_t xs, void* res, int64_t rs,
                        const void* w, int64_t n, float eps, int64_t r0, int64_t r1) {
#ifdef PAGEDINFER_HAVE_AVX512
  if (active_isa() == Isa::kAvx512) return fused_add_rms_norm_avx512(dtype, x, xs, res, rs, w, n, eps, r0, r1);
#endif
  switch (dtype) {
    case LayerDtype::kF32:
      add_norm_rows(static_cast<float*>(x), xs, static_cast<float*>(res), rs,
                    static_cast<const float*>(w), n, eps, r0, r1);
      break;
    case LayerDtype::kBF16:
      add_norm_rows(static_cast<bf16_t*>(x), xs, static_cast<bf16_t*>(res), rs,
                    static_cast<const bf16_t*>(w), n, eps, r0, r1);
      break;
    case LayerDtype::kF16:
      add_norm_rows(static_cast<f16_t*>(x), xs, static_cast<f16_t*>(res), rs,
                    static_cast<const f16_t*>(w), n, eps, r0, r1);
      break;
  }
}

void rms_norm(LayerDtype dtype, void* out, int64_t os, const void* x, int64_t xs, const void* w,
              int64_t n, float eps, int64_t r0, int64_t r1) {
#ifdef PAGEDINFER_HAVE_AVX512
  if (active_isa() == Isa::kAvx512) return rms_norm_avx512(dtype, out, os, x, xs, w, n, eps, r0, r1);
#endif
  switch (dtype) {
    case LayerDtype::kF32:
      norm_rows(static_cast<float*>(out), os, static_cast<const float*>(x), xs,
                static_cast<const float*>(w), n, eps, r0, r1);
      break;
    case LayerDtype::kBF16:
      norm_rows(static_cast<bf16_t*>(out), os, static_cast<const bf16_t*>(x), xs,
                static_cast<const bf16_t*>(w), n, eps, r0, r1);
      break;
    case LayerDtype::kF16:
      norm_rows(static_cast<f16_t*>(out), os, static_cast<const f16_t*>(x), xs,
                static_cast<const f16_t*>(w), n, eps, r0, r1);
      break;
  }
}

void silu_and_mul(LayerDtype dtype, void* out, int64_t os, const void* x, int64_t xs, int64_t d,
                  int64_t r0, int64_t r1) {
#ifdef PAGEDINFER_HAVE_AVX512
  if (active_isa() == Isa::kAvx512) return silu_and_mul_avx512(dtype, out, os, x, xs, d, r0, r1);
#endif
  switch (dtype) {
    case LayerDtype::kF32:
      silu_mul_rows(static_cast<float*>(out), os, static_cast<const float*>(x), xs, d, r0, r1);
      break;
    case LayerDtype::kBF16:
      silu_mul_rows(static_cast<bf16_t*>(out), os, static_cast<const bf16_t*>(x), xs, d, r0, r1);
      break;
    case LayerDtype::kF16:
      silu_mul_rows(static_cast<f16_t*>(out), os, static_cast<const f16_t*>(x), xs, d, r0, r1);
      break;
  }
}

void rotary_embedding(LayerDtype dtype, void* qk, int64_t st, int64_t sh, int64_t heads,
                      int64_t D, const int64_t* pos, const float* cos, const float* sin,
                      int64_t t0, int64_t t1) {
#ifdef PAGEDINFER_HAVE_AVX512
  if (active_isa() == Isa::kAvx512)
    return rotary_embedding_avx512(dtype, qk, st, sh, heads, D, pos, cos, sin, t0, t1);
#endif
  switch (dtype) {
    case LayerDtype::kF32:
      rotary_rows(static_cast<float*>(qk), st, sh, heads, D, pos, cos, sin, t0, t1);
      break;
    case LayerDtype::kBF16:
      rotary_rows(static_cast<bf16_t*>(qk), st, sh, heads, D, pos, cos, sin, t0, t1);
      break;
    case LayerDtype::kF16:
      rotary_rows(static_cast<f16_t*>(qk), st, sh, heads, D, pos, cos, sin, t0, t1);
      break;
  }
}

void argmax_rows(LayerDtype dtype, const void* x, int64_t xs, int64_t n, int64_t* out, int64_t r0,
                 int64_t r1) {
#ifdef PAGEDINFER_HAVE_AVX512
  if (active_isa() == Isa::kAvx512) return argmax_rows_avx512(dtype, x, xs, n, out, r0, r1);
#endif
  switch (dtype) {
    case LayerDtype::kF32: return argmax_row_range(static_cast<const float*>(x), xs, n, out, r0, r1);
    case LayerDtype::kBF16: return argmax_row_range(static_cast<const bf16_t*>(x), xs, n, out, r0, r1);
    case LayerDtype::kF16: return argmax_row_range(static_cast<const f16_t*>(x), xs, n, out, r0, r1);
  }
}

}  // namespace pagedinfer::cpu
