#include "kernels/cpu/cache_kernels.h"

#include <cstring>

#include "kernels/cpu/cpu_features.h"

namespace pagedinfer::cpu {

void copy_bytes(void* dst, const void* src, size_t n, bool streaming) {
#ifdef PAGEDINFER_HAVE_AVX512
  if (streaming && active_isa() == Isa::kAvx512) {
    copy_bytes_avx512_stream(dst, src, n);
    return;
  }
#endif
  (void)streaming;
  std::memcpy(dst, src, n);
}

void store_fence() {
#ifdef PAGEDINFER_HAVE_AVX512
  if (active_isa() == Isa::kAvx512) store_fence_avx512();
#endif
}

void reshape_and_cache(const CacheWriteArgs& a, int64_t token_begin, int64_t token_end) {
  const int64_t row_bytes = a.num_kv_heads * a.head_bytes;
  const bool key_rows_contiguous = a.key_stride_head == a.head_bytes || a.num_kv_heads == 1;
  const bool value_rows_contiguous = a.value_stride_head == a.head_bytes || a.num_kv_heads == 1;
  for (int64_t t = token_begin; t < token_end; ++t) {
    const int64_t slot = a.slot_mapping[t];
    if (slot < 0) continue;  // padding or a token whose KV is not kept
    char* key_dst = a.key_cache + slot * row_bytes;
    char* value_dst = a.value_cache + slot * row_bytes;
    const char* key_src = a.key + t * a.key_stride_token;
    const char* value_src = a.value + t * a.value_stride_token;
    if (key_rows_contiguous) {
      copy_bytes(key_dst, key_src, row_bytes, a.streaming);
    } else {
      for (int64_t h = 0; h < a.num_kv_heads; ++h)
        copy_bytes(key_dst + h * a.head_bytes, key_src + h * a.key_stride_head, a.head_bytes,
                   a.streaming);
    }
    if (value_rows_contiguous) {
      copy_bytes(value_dst, value_src, row_bytes, a.streaming);
    } else {
      for (int64_t h = 0; h < a.num_kv_heads; ++h)
        copy_bytes(value_dst + h * a.head_bytes, value_src + h * a.value_stride_head, a.head_bytes,
                   a.streaming);
    }
  }
  if (a.streaming) store_fence();
}

}  // namespace pagedinfer::cpu
