// KV-cache ops: argument checks shared by every backend, and the per-backend entry points that
// torch_bindings.cpp registers.
//
//   reshape_and_cache(key [T, Hkv, D], value [T, Hkv, D],
//                     key_cache [num_blocks, block_size, Hkv, D] (mutated), value_cache (same),
//                     slot_mapping [T] int64: block_id * block_size + offset, or -1 = skip)
//   copy_blocks(key_caches: list of [num_blocks, block_size, Hkv, D] (mutated), value_caches (same),
//               block_mapping [P, 2] int64: (src, dst) block ids, same in every layer)
//   swap_blocks(src [num_blocks_src, ...], dst [num_blocks_dst, ...] (mutated),
//               block_mapping [P, 2] int64 on the CPU: (src block, dst block))
#pragma once

#include <ATen/ATen.h>

namespace pagedinfer::ops {

// Shape, dtype and device checks (everything but index values). Returns the number of slots.
int64_t check_reshape_and_cache_args(const at::Tensor& key, const at::Tensor& value,
                                     const at::Tensor& key_cache, const at::Tensor& value_cache,
                                     const at::Tensor& slot_mapping);
// Raises unless every slot is -1 or in [0, num_slots). slot_mapping must be on the CPU.
void check_slot_range(const int64_t* slots, int64_t count, int64_t num_slots, const char* op);

void check_copy_blocks_args(at::TensorList key_caches, at::TensorList value_caches,
                            const at::Tensor& block_mapping);
void check_swap_blocks_args(const at::Tensor& src, const at::Tensor& dst,
                            const at::Tensor& block_mapping);
// Raises unless block_mapping [P, 2] (CPU, int64) holds src ids < num_src, dst ids < num_dst.
void check_block_mapping_range(const at::Tensor& block_mapping, int64_t num_src, int64_t num_dst,
                               const char* op);

void reshape_and_cache_cpu(const at::Tensor& key, const at::Tensor& value,
                           const at::Tensor& key_cache, const at::Tensor& value_cache,
                           const at::Tensor& slot_mapping);
void copy_blocks_cpu(at::TensorList key_caches, at::TensorList value_caches,
                     const at::Tensor& block_mapping);
void swap_blocks_cpu(const at::Tensor& src, const at::Tensor& dst, const at::Tensor& block_mapping);

#ifdef PAGEDINFER_WITH_CUDA
void reshape_and_cache_cuda(const at::Tensor& key, const at::Tensor& value,
                            const at::Tensor& key_cache, const at::Tensor& value_cache,
                            const at::Tensor& slot_mapping);
void copy_blocks_cuda(at::TensorList key_caches, at::TensorList value_caches,
                      const at::Tensor& block_mapping);
void swap_blocks_cuda(const at::Tensor& src, const at::Tensor& dst, const at::Tensor& block_mapping);
#endif

}  // namespace pagedinfer::ops
