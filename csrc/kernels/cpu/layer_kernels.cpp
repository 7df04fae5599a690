// Scalar (auto-vectorized) implementations of layer_kernels.h. These ops move a few KB per row;
// at batch 1 they are bound by call overhead, not arithmetic, which is why they are fused.
#include "kernels/cpu/layer_kernels.h"

#include <cmath>
#include <vector>

#include "kernels/cpu/half_types.h"

namespace pagedinfer::cpu {
namespace {

template <typename T>
void add_norm_rows(T* x, int64_t xs, T* res, int64_t rs, const T* w, int64_t n, float eps,
                   int64_t r0, int64_t r1) {
  std::vector<float> buf(n);
  for (int64_t r = r0; r < r1; ++r) {
    T* xr = x + r * xs;
    T* rr = res + r * rs;
    float ss = 0.f;
    for (int64_t i = 0; i < n; ++i) {
      const T sum = from_f32<T>(to_f32(xr[i]) + to_f32(rr[i]));
      rr[i] = sum;
      buf[i] = to_f32(sum);
      ss += buf[i] * buf[i];
    }
    const float inv = 1.f / std::sqrt(ss / static_cast<float>(n) + eps);
    for (int64_t i = 0; i < n; ++i) xr[i] = from_f32<T>(buf[i] * inv * to_f32(w[i]));
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
    for (int64_t i = 0; i < n; ++i) orow[i] = from_f32<T>(to_f32(xr[i]) * inv * to_f32(w[i]));
  }
}

template <typename T>
void silu_mul_rows(T* out, int64_t os, const T* x, int64_t xs, int64_t d, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const T* g = x + r * xs;
    const T* u = g + d;
    T* o = out + r * os;
    for (int64_t i = 0; i < d; ++i) {
      const float a = to_f32(g[i]);
      o[i] = from_f32<T>(a / (1.f + std::exp(-a)) * to_f32(u[i]));
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
        row[i] = from_f32<T>(v[i] * c[i] + v[i + half] * s[i]);
        row[i + half] = from_f32<T>(v[i + half] * c[i + half] + v[i] * s[i + half]);
      }
    }
  }
}

}  // namespace


void fused_add_rms_norm(LayerDtype dtype, void* x, int64_t xs, void* res, int64_t rs,
                        const void* w, int64_t n, float eps, int64_t r0, int64_t r1) {
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

}  // namespace pagedinfer::cpu
