// CUDA kernels for the paged KV cache: raw pointers + sizes + stream in, cudaError_t out.
// Layouts as in csrc/kernels/cpu/cache_kernels.h; these kernels only move bytes.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace pagedinfer::cuda {

struct CacheWriteArgs {
  const char* key;
  const char* value;
  int64_t key_stride_token, key_stride_head;  // bytes
  int64_t value_stride_token, value_stride_head;
  char* key_cache;
  char* value_cache;
  const int64_t* slot_mapping;  // device, [T]; -1 = skip; slots >= num_slots are skipped too
  int64_t num_slots;
  int64_t num_tokens;
  int64_t num_kv_heads;
  int64_t head_bytes;
};

// Byte offset of a slot's row in a cache [num_blocks, block_size, Hkv, D]. Shared with the host so
// CPU tests can check the arithmetic.
__host__ __device__ inline int64_t slot_row_offset(int64_t slot, int64_t num_kv_heads,
                                                   int64_t head_bytes) {
  return slot * num_kv_heads * head_bytes;
}

// The widest copy unit (16, 8, 4, 2 or 1 bytes) that divides every given value.
__host__ __device__ inline int copy_unit_bytes(uint64_t aligned_bits) {
  if ((aligned_bits & 15) == 0) return 16;
  if ((aligned_bits & 7) == 0) return 8;
  if ((aligned_bits & 3) == 0) return 4;
  if ((aligned_bits & 1) == 0) return 2;
  return 1;
}

cudaError_t launch_reshape_and_cache(const CacheWriteArgs& args, cudaStream_t stream);

// layer_bases [2 * L] device pointers (key, value per layer), layer_block_bytes [L] on device,
// block_mapping [P, 2] device int64 (checked by the caller).
cudaError_t launch_copy_blocks(char* const* layer_bases, const int64_t* layer_block_bytes,
                               int64_t num_layers, const int64_t* block_mapping, int64_t num_pairs,
                               uint64_t block_bytes_or, cudaStream_t stream);

}  // namespace pagedinfer::cuda
