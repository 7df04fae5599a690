// Vector helpers shared by the AVX-512 GEMV and dequantize files (both compiled with AVX-512
// flags).
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace pagedinfer::cpu::avx512_gemm {

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

inline void prefetch_bytes(const void* p, int64_t bytes) {
  for (int64_t off = 0; off < bytes; off += 64) _mm_prefetch(static_cast<const char*>(p) + off, _MM_HINT_T0);
}

inline int log2_of(int64_t g) { return g == 32 ? 5 : g == 64 ? 6 : 7; }

}  // namespace pagedinfer::cpu::avx512_gemm
