// Weight-only INT4 / INT8 GEMM: scalar twins, activation preparation and the ISA dispatch.
// Layouts: gemm_kernels.h.
#include "kernels/cpu/gemm_kernels.h"

#include <cmath>
#include <cstring>

#include "kernels/cpu/cpu_features.h"

namespace pagedinfer::cpu {

float bf16_to_float(uint16_t b) {
  const uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t float_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if (std::isnan(f)) return static_cast<uint16_t>((bits >> 16) | 0x40);
  bits += 0x7fff + ((bits >> 16) & 1);  // round to nearest even
  return static_cast<uint16_t>(bits >> 16);
}

float fp16_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1f;
  const uint32_t man = h & 0x3ff;
  float v;
  if (exp == 0) {
    v = std::ldexp(static_cast<float>(man), -24);  // zero or subnormal
  } else if (exp == 31) {
    v = man ? NAN : INFINITY;
  } else {
    v = std::ldexp(static_cast<float>(man | 0x400), static_cast<int>(exp) - 25);
  }
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  bits |= sign;
  std::memcpy(&v, &bits, 4);
  return v;
}

uint16_t float_to_fp16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000);
  const float a = std::fabs(f);
  if (std::isnan(f)) return sign | 0x7e00;
  if (a >= 65520.0f) return sign | 0x7c00;  // rounds to infinity
  if (a < 6.103515625e-05f) {               // subnormal: multiples of 2^-24, nearest even
    return sign | static_cast<uint16_t>(std::nearbyint(a * 16777216.0f));
  }
  int e;
  const float m = std::frexp(a, &e);  // a = m * 2^e, m in [0.5, 1)
  uint32_t man = static_cast<uint32_t>(std::nearbyint(m * 2048.0f));  // 11 significant bits
  if (man == 2048) { man = 1024; ++e; }
  const uint32_t exp = static_cast<uint32_t>(e - 1 + 15);
  if (exp >= 31) return sign | 0x7c00;
  return sign | static_cast<uint16_t>((exp << 10) | (man & 0x3ff));
}

void store_value(void* out, DType dt, int64_t index, float v) {
  switch (dt) {
    case DType::kF32: static_cast<float*>(out)[index] = v; break;
    case DType::kBF16: static_cast<uint16_t*>(out)[index] = float_to_bf16(v); break;
    case DType::kF16: static_cast<uint16_t*>(out)[index] = float_to_fp16(v); break;
  }
}

static float load_value(const void* x, DType dt, int64_t index) {
  switch (dt) {
    case DType::kBF16: return bf16_to_float(static_cast<const uint16_t*>(x)[index]);
    case DType::kF16: return fp16_to_float(static_cast<const uint16_t*>(x)[index]);
    default: return static_cast<const float*>(x)[index];
  }
}

void prepare_x(const void* x, DType dt, int64_t ldx_bytes, PreparedX& p) {
#ifdef PAGEDINFER_HAVE_AVX512
  if (active_isa() == Isa::kAvx512 && (p.x_hi != nullptr || p.x_q != nullptr))
    return prepare_x_avx512(x, dt, ldx_bytes, p);
#endif
  const int64_t groups = p.K / p.group_size;
  for (int64_t m = 0; m < p.M; ++m) {
    const void* row = static_cast<const char*>(x) + m * ldx_bytes;
    float* x32 = p.x32 + m * p.K;
    for (int64_t k = 0; k < p.K; ++k) x32[k] = load_value(row, dt, k);
    for (int64_t g = 0; g < groups; ++g) {
      float s = 0.f;
      for (int64_t j = 0; j < p.group_size; ++j) s += x32[g * p.group_size + j];
      p.x_sum[m * groups + g] = s;
    }
  }
}

namespace {

inline int int4_at(const uint8_t* row, int64_t k) {
  const uint8_t b = row[(k / 64) * 32 + (k % 32)];
  return (k % 64) < 32 ? (b & 0x0F) : (b >> 4);
}

void int4_gemv_scalar(const Int4Args& w, const PreparedX& x, const float* bias, void* out,
                      DType out_dt, int64_t ldo, int64_t n_begin, int64_t n_end) {
  const int64_t G = w.group_size, groups = w.K / G, row_bytes = int4_row_bytes(w.K);
  for (int64_t n = n_begin; n < n_end; ++n) {
    const uint8_t* row = w.qweight + n * row_bytes;
    for (int64_t m = 0; m < x.M; ++m) {
      const float* xr = x.x32 + m * w.K;
      float acc = 0.f;
      for (int64_t g = 0; g < groups; ++g) {
        float dot = 0.f;  // sum of q * x over the group; scale and min applied once per group
        for (int64_t j = 0; j < G; ++j) dot += static_cast<float>(int4_at(row, g * G + j)) * xr[g * G + j];
        acc += fp16_to_float(w.scale[n * groups + g]) * dot +
               fp16_to_float(w.min[n * groups + g]) * x.x_sum[m * groups + g];
      }
      if (bias != nullptr) acc += bias[n];
      store_value(out, out_dt, m * ldo + n, acc);
    }
  }
}

void int8_gemv_scalar(const Int8Args& w, const PreparedX& x, const float* bias, void* out,
                      DType out_dt, int64_t ldo, int64_t n_begin, int64_t n_end) {
  const int64_t G = w.group_size, groups = w.K / G;
  for (int64_t n = n_begin; n < n_end; ++n) {
    const int8_t* row = w.qweight + n * w.K;
    for (int64_t m = 0; m < x.M; ++m) {
      const float* xr = x.x32 + m * w.K;
      float acc = 0.f;
      for (int64_t g = 0; g < groups; ++g) {
        float dot = 0.f;
        for (int64_t j = 0; j < G; ++j) dot += static_cast<float>(row[g * G + j]) * xr[g * G + j];
        acc += fp16_to_float(w.scale[n * groups + g]) * dot;
      }
      if (bias != nullptr) acc += bias[n];
      store_value(out, out_dt, m * ldo + n, acc);
    }
  }
}

void int4_dequant_scalar(const Int4Args& w, int64_t n_begin, int64_t n_end, void* dst, DType dt) {
  const int64_t G = w.group_size, groups = w.K / G, row_bytes = int4_row_bytes(w.K);
  for (int64_t n = n_begin; n < n_end; ++n) {
    const uint8_t* row = w.qweight + n * row_bytes;
    for (int64_t k = 0; k < w.K; ++k) {
      const float s = fp16_to_float(w.scale[n * groups + k / G]);
      const float mn = fp16_to_float(w.min[n * groups + k / G]);
      store_value(dst, dt, (n - n_begin) * w.K + k, std::fma(static_cast<float>(int4_at(row, k)), s, mn));
    }
  }
}

void int8_dequant_scalar(const Int8Args& w, int64_t n_begin, int64_t n_end, void* dst, DType dt) {
  const int64_t G = w.group_size, groups = w.K / G;
  for (int64_t n = n_begin; n < n_end; ++n)
    for (int64_t k = 0; k < w.K; ++k)
      store_value(dst, dt, (n - n_begin) * w.K + k,
                  static_cast<float>(w.qweight[n * w.K + k]) * fp16_to_float(w.scale[n * groups + k / G]));
}

}  // namespace

void int4_gemv(const Int4Args& w, const PreparedX& x, const float* bias, void* out, DType out_dt,
               int64_t ldo, int64_t n_begin, int64_t n_end) {
#ifdef PAGEDINFER_HAVE_AVX512
  if (active_isa() == Isa::kAvx512 && (x.x_hi != nullptr || x.x_q != nullptr))
    return int4_gemv_avx512(w, x, bias, out, out_dt, ldo, n_begin, n_end);
#endif
  int4_gemv_scalar(w, x, bias, out, out_dt, ldo, n_begin, n_end);
}

void int8_gemv(const Int8Args& w, const PreparedX& x, const float* bias, void* out, DType out_dt,
               int64_t ldo, int64_t n_begin, int64_t n_end) {
#ifdef PAGEDINFER_HAVE_AVX512
  if (active_isa() == Isa::kAvx512 && (x.x_hi != nullptr || x.x_q != nullptr))
    return int8_gemv_avx512(w, x, bias, out, out_dt, ldo, n_begin, n_end);
#endif
  int8_gemv_scalar(w, x, bias, out, out_dt, ldo, n_begin, n_end);
}

void int4_dequant(const Int4Args& w, int64_t n_begin, int64_t n_end, void* dst, DType dt) {
#ifdef PAGEDINFER_HAVE_AVX512
  if (active_isa() == Isa::kAvx512) return int4_dequant_avx512(w, n_begin, n_end, dst, dt);
#endif
  int4_dequant_scalar(w, n_begin, n_end, dst, dt);
}

void int8_dequant(const Int8Args& w, int64_t n_begin, int64_t n_end, void* dst, DType dt) {
#ifdef PAGEDINFER_HAVE_AVX512
  if (active_isa() == Isa::kAvx512) return int8_dequant_avx512(w, n_begin, n_end, dst, dt);
#endif
  int8_dequant_scalar(w, n_begin, n_end, dst, dt);
}

}  // namespace pagedinfer::cpu
