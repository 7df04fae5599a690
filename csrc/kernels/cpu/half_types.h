// 16-bit float storage types for the CPU kernels, with portable scalar conversions (no torch, no
// ISA flags: the scalar twins and ARM builds use these; SIMD files convert whole vectors).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace pagedinfer::cpu {

struct bf16_t { uint16_t bits; };
struct f16_t { uint16_t bits; };
static_assert(sizeof(bf16_t) == 2 && sizeof(f16_t) == 2, "16-bit storage types");

inline float bits_to_f32(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
inline uint32_t f32_to_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }

inline float to_f32(float x) { return x; }
inline float to_f32(bf16_t x) { return bits_to_f32(static_cast<uint32_t>(x.bits) << 16); }
inline float to_f32(f16_t x) {
  const uint32_t h = x.bits;
  const uint32_t sign = (h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  if (exp == 0) {
    if (mant == 0) return bits_to_f32(sign);
    // Subnormal half: value = mant * 2^-24, exact in fp32.
    const float v = static_cast<float>(mant) * 5.9604644775390625e-8f;
    return sign ? -v : v;
  }
  if (exp == 31) return bits_to_f32(sign | 0x7f800000u | (mant << 13));
  return bits_to_f32(sign | ((exp + 112u) << 23) | (mant << 13));
}

template <typename T> T from_f32(float x);
template <> inline float from_f32<float>(float x) { return x; }
// Round to nearest even, as torch's .to(bfloat16) does; NaN stays NaN.
template <> inline bf16_t from_f32<bf16_t>(float x) {
  uint32_t u = f32_to_bits(x);
  if (std::isnan(x)) return bf16_t{static_cast<uint16_t>((u >> 16) | 0x40u)};
  u += 0x7fffu + ((u >> 16) & 1u);
  return bf16_t{static_cast<uint16_t>(u >> 16)};
}
template <> inline f16_t from_f32<f16_t>(float x) {
  uint32_t u = f32_to_bits(x);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  u &= 0x7fffffffu;
  if (u >= 0x7f800000u) return f16_t{static_cast<uint16_t>(sign | 0x7c00u | (u > 0x7f800000u ? 0x200u : 0u))};
  if (u >= 0x477ff000u) return f16_t{static_cast<uint16_t>(sign | 0x7c00u)};  // rounds to inf
  if (u < 0x38800000u) {  // below the smallest normal half: a multiple of 2^-24, rounded to even
    const uint32_t q = static_cast<uint32_t>(std::nearbyint(bits_to_f32(u) * 16777216.0f));
    return f16_t{static_cast<uint16_t>(sign | q)};
  }
  const uint32_t odd = (u >> 13) & 1u;
  return f16_t{static_cast<uint16_t>(sign | ((u - (112u << 23) + 0xfffu + odd) >> 13))};
}

}  // namespace pagedinfer::cpu
