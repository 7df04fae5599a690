// AVX-512 twins of cache_kernels.cpp. Compiled with AVX-512 flags; entered only when
// active_isa() says the CPU has them.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "kernels/cpu/cache_kernels.h"

namespace pagedinfer::cpu {

void copy_bytes_avx512_stream(void* dst, const void* src, size_t n) {
  char* d = static_cast<char*>(dst);
  const char* s = static_cast<const char*>(src);
  // Head up to a 64-byte boundary of dst with ordinary stores: streaming stores need alignment.
  const size_t misalign = reinterpret_cast<uintptr_t>(d) & 63;
  if (misalign != 0) {
    const size_t head = 64 - misalign < n ? 64 - misalign : n;
    std::memcpy(d, s, head);
    d += head;
    s += head;
    n -= head;
  }
  size_t i = 0;
  for (; i + 256 <= n; i += 256) {
    const __m512i v0 = _mm512_loadu_si512(s + i);
    const __m512i v1 = _mm512_loadu_si512(s + i + 64);
    const __m512i v2 = _mm512_loadu_si512(s + i + 128);
    const __m512i v3 = _mm512_loadu_si512(s + i + 192);
    _mm512_stream_si512(reinterpret_cast<__m512i*>(d + i), v0);
    _mm512_stream_si512(reinterpret_cast<__m512i*>(d + i + 64), v1);
    _mm512_stream_si512(reinterpret_cast<__m512i*>(d + i + 128), v2);
    _mm512_stream_si512(reinterpret_cast<__m512i*>(d + i + 192), v3);
  }
  for (; i + 64 <= n; i += 64)
    _mm512_stream_si512(reinterpret_cast<__m512i*>(d + i), _mm512_loadu_si512(s + i));
  if (i < n) std::memcpy(d + i, s + i, n - i);  // tail
}

void store_fence_avx512() { _mm_sfence(); }

}  // namespace pagedinfer::cpu
