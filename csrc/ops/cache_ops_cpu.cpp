// CPU adapters for the KV-cache ops: check, then split the copies over threads.
#include <ATen/Parallel.h>

#include <algorithm>

#include "kernels/cpu/cache_kernels.h"
#include "ops/cache_ops.h"
#include "ops/checks.h"

namespace pagedinfer::ops {
namespace {

// Calls at or above this many bytes stream their stores past the caches: the destination is far
// larger than any cache and is not read back before it would be evicted anyway.
constexpr int64_t kStreamingBytes = int64_t{4} << 20;
// Smallest amount of copying worth handing to another thread.
constexpr int64_t kGrainBytes = int64_t{64} << 10;

int64_t grain_for(int64_t bytes_per_item) {
  return std::max<int64_t>(1, kGrainBytes / std::max<int64_t>(1, bytes_per_item));
}

}  // namespace

void reshape_and_cache_cpu(const at::Tensor& key_in, const at::Tensor& value_in,
                           const at::Tensor& key_cache, const at::Tensor& value_cache,
                           const at::Tensor& slot_mapping_in) {
  const char* op = "reshape_and_cache";
  const int64_t num_slots =
      check_reshape_and_cache_args(key_in, value_in, key_cache, value_cache, slot_mapping_in);
  const at::Tensor slot_mapping = slot_mapping_in.contiguous();
  const int64_t T = key_in.size(0);
  check_slot_range(slot_mapping.data_ptr<int64_t>(), T, num_slots, op);
  if (T == 0) return;
  // The kernel needs each head's D values contiguous; any token and head strides are fine.
  const at::Tensor key = key_in.stride(2) == 1 ? key_in : key_in.contiguous();
  const at::Tensor value = value_in.stride(2) == 1 ? value_in : value_in.contiguous();

  const int64_t elem = key.element_size();
  cpu::CacheWriteArgs args;
  args.key = static_cast<const char*>(key.data_ptr());
  args.value = static_cast<const char*>(value.data_ptr());
  args.key_stride_token = key.stride(0) * elem;
  args.key_stride_head = key.stride(1) * elem;
  args.value_stride_token = value.stride(0) * elem;
  args.value_stride_head = value.stride(1) * elem;
  args.key_cache = static_cast<char*>(key_cache.data_ptr());
  args.value_cache = static_cast<char*>(value_cache.data_ptr());
  args.slot_mapping = slot_mapping.data_ptr<int64_t>();
  args.num_kv_heads = key.size(1);
  args.head_bytes = key.size(2) * elem;
  const int64_t bytes_per_token = 2 * args.num_kv_heads * args.head_bytes;
  args.streaming = T * bytes_per_token >= kStreamingBytes;
  at::parallel_for(0, T, grain_for(bytes_per_token), [&](int64_t begin, int64_t end) {
    cpu::reshape_and_cache(args, begin, end);
  });
}

void copy_blocks_cpu(at::TensorList key_caches, at::TensorList value_caches,
                     const at::Tensor& block_mapping_in) {
  const char* op = "copy_blocks";
  check_copy_blocks_args(key_caches, value_caches, block_mapping_in);
  if (key_caches.empty() || block_mapping_in.size(0) == 0) return;
  check_device_type(key_caches[0], op, "key_caches[0]", c10::DeviceType::CPU);
  const at::Tensor block_mapping = block_mapping_in.contiguous();
  int64_t num_blocks = key_caches[0].size(0);
  for (const auto& c : key_caches) num_blocks = std::min(num_blocks, c.size(0));
  check_block_mapping_range(block_mapping, num_blocks, num_blocks, op);

  // Work item = (layer, pair, key or value): one contiguous block of block_size * Hkv * D values.
  const int64_t num_layers = key_caches.size();
  const int64_t num_pairs = block_mapping.size(0);
  const int64_t* pairs = block_mapping.data_ptr<int64_t>();
  std::vector<char*> bases(2 * num_layers);
  std::vector<int64_t> block_bytes(num_layers);
  int64_t total_bytes = 0;
  for (int64_t l = 0; l < num_layers; ++l) {
    bases[2 * l] = static_cast<char*>(key_caches[l].data_ptr());
    bases[2 * l + 1] = static_cast<char*>(value_caches[l].data_ptr());
    block_bytes[l] = key_caches[l].stride(0) * key_caches[l].element_size();
    total_bytes += 2 * num_pairs * block_bytes[l];
  }
  const bool streaming = total_bytes >= kStreamingBytes;
  const int64_t num_items = num_layers * num_pairs * 2;
  at::parallel_for(0, num_items, grain_for(block_bytes[0]), [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t l = item / (2 * num_pairs);
      const int64_t p = (item / 2) % num_pairs;
      const int64_t kv = item % 2;
      const int64_t src = pairs[2 * p], dst = pairs[2 * p + 1];
      if (src == dst) continue;
      char* base = bases[2 * l + kv];
      cpu::copy_bytes(base + dst * block_bytes[l], base + src * block_bytes[l], block_bytes[l],
                      streaming);
    }
    if (streaming) cpu::store_fence();
  });
}

void swap_blocks_cpu(const at::Tensor& src, const at::Tensor& dst,
                     const at::Tensor& block_mapping_in) {
  const char* op = "swap_blocks";
  check_swap_blocks_args(src, dst, block_mapping_in);
  check_device_type(src, op, "src", c10::DeviceType::CPU);
  check_device_type(dst, op, "dst", c10::DeviceType::CPU);
  const at::Tensor block_mapping = block_mapping_in.contiguous();
  check_block_mapping_range(block_mapping, src.size(0), dst.size(0), op);
  const int64_t num_pairs = block_mapping.size(0);
  if (num_pairs == 0) return;
  const int64_t* pairs = block_mapping.data_ptr<int64_t>();
  const int64_t block_bytes = src.stride(0) * src.element_size();
  const char* src_base = static_cast<const char*>(src.data_ptr());
  char* dst_base = static_cast<char*>(dst.data_ptr());
  const bool streaming = num_pairs * block_bytes >= kStreamingBytes;
  at::parallel_for(0, num_pairs, grain_for(block_bytes), [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p)
      cpu::copy_bytes(dst_base + pairs[2 * p + 1] * block_bytes, src_base + pairs[2 * p] * block_bytes,
                      block_bytes, streaming);
    if (streaming) cpu::store_fence();
  });
}

}  // namespace pagedinfer::ops
