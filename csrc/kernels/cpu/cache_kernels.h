// CPU kernels for the paged KV cache. Raw pointers and sizes only; the caller (csrc/ops) checks
// every shape and index and splits the work across threads.
//
// Cache layout (DESIGN.md): key_cache / value_cache are [num_blocks, block_size, Hkv, D]
// contiguous, so slot s = block_id * block_size + offset starts at byte s * row_bytes with
// row_bytes = Hkv * D * elem_size, and a whole block is block_size * row_bytes contiguous bytes.
// These kernels only move bytes: they are the same for every dtype.
#pragma once

#include <cstddef>
#include <cstdint>

namespace pagedinfer::cpu {

// One layer's new tokens. key/value are [T, Hkv, D] with the last dim contiguous; strides in bytes.
struct CacheWriteArgs {
  const char* key;
  const char* value;
  int64_t key_stride_token, key_stride_head;
  int64_t value_stride_token, value_stride_head;
  char* key_cache;
  char* value_cache;
  const int64_t* slot_mapping;  // [T]; -1 = do not store; otherwise checked < num_slots by caller
  int64_t num_kv_heads;
  int64_t head_bytes;  // D * elem_size
  bool streaming;      // write with non-temporal stores (large calls whose rows are not read soon)
};

// Stores tokens [token_begin, token_end) of `args`.
void reshape_and_cache(const CacheWriteArgs& args, int64_t token_begin, int64_t token_end);

// Copies n bytes; with `streaming`, large aligned spans use non-temporal stores, which skip the
// read-for-ownership of the destination and so move a third fewer bytes over the memory bus.
// Call store_fence() once after a batch of streaming copies, before other threads read them.
void copy_bytes(void* dst, const void* src, size_t n, bool streaming);
void store_fence();

#ifdef PAGEDINFER_HAVE_AVX512
void copy_bytes_avx512_stream(void* dst, const void* src, size_t n);
void store_fence_avx512();
#endif

}  // namespace pagedinfer::cpu
