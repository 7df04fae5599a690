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

namespace {

// One token's [Hkv, D] rows into its cache slot: one copy when the heads are contiguous.
void copy_token_rows(char* dst, const char* src, int64_t stride_head, int64_t num_kv_heads,
                     int64_t head_bytes, bool streaming) {
  if (stride_head == head_bytes || num_kv_heads == 1) {
    copy_bytes(dst, src, num_kv_heads * head_bytes, streaming);
    return;
  }
  for (int64_t h = 0; h < num_kv_heads; ++h)
    copy_bytes(dst + h * head_bytes, src + h * stride_head, head_bytes, streaming);
}

}  // namespace

void reshape_and_cache(const CacheWriteArgs& a, int64_t token_begin, int64_t token_end) {
  const int64_t row_bytes = a.num_kv_heads * a.head_bytes;
  for (int64_t t = token_begin; t < token_end; ++t) {
    const int64_t slot = a.slot_mapping[t];
    if (slot < 0) continue;  // padding or a token whose KV is not kept
    copy_token_rows(a.key_cache + slot * row_bytes, a.key + t * a.key_stride_token,
                    a.key_stride_head, a.num_kv_heads, a.head_bytes, a.streaming);
    copy_token_rows(a.value_cache + slot * row_bytes, a.value + t * a.value_stride_token,
                    a.value_stride_head, a.num_kv_heads, a.head_bytes, a.streaming);
  }
  if (a.streaming) store_fence();
}

}  // namespace pagedinfer::cpu
