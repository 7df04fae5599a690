// CUDA adapters for the KV-cache ops: check, set the device and stream, launch.
#include <c10/cuda/CUDAGraphsC10Utils.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "kernels/cuda/cache_kernels.cuh"
#include "ops/cache_ops.h"
#include "ops/checks.h"

namespace pagedinfer::ops {
namespace {

void check_launch(cudaError_t err, const char* op) {
  TORCH_CHECK(err == cudaSuccess, op, ": CUDA launch failed: ", cudaGetErrorString(err));
}

// Index values live on the GPU; reading them costs a synchronization, which a CUDA graph capture
// cannot have. Outside capture we check (clear errors); inside, the kernels skip bad slots.
bool can_sync_for_checks() {
  return c10::cuda::currentStreamCaptureStatusMayInitCtx() == c10::cuda::CaptureStatus::None;
}

}  // namespace

void reshape_and_cache_cuda(const at::Tensor& key_in, const at::Tensor& value_in,
                            const at::Tensor& key_cache, const at::Tensor& value_cache,
                            const at::Tensor& slot_mapping_in) {
  const char* op = "reshape_and_cache";
  const int64_t num_slots =
      check_reshape_and_cache_args(key_in, value_in, key_cache, value_cache, slot_mapping_in);
  check_device_type(key_cache, op, "key_cache", c10::DeviceType::CUDA);
  const c10::cuda::CUDAGuard guard(key_cache.device());
  const at::Tensor slot_mapping = slot_mapping_in.contiguous();
  if (can_sync_for_checks() && slot_mapping.numel() > 0) {
    const at::Tensor host = slot_mapping.cpu();
    check_slot_range(host.data_ptr<int64_t>(), host.numel(), num_slots, op);
  }
  const at::Tensor key = key_in.stride(2) == 1 ? key_in : key_in.contiguous();
  const at::Tensor value = value_in.stride(2) == 1 ? value_in : value_in.contiguous();
  const int64_t elem = key.element_size();
  cuda::CacheWriteArgs a;
  a.key = static_cast<const char*>(key.data_ptr());
  a.value = static_cast<const char*>(value.data_ptr());
  a.key_stride_token = key.stride(0) * elem;
  a.key_stride_head = key.stride(1) * elem;
  a.value_stride_token = value.stride(0) * elem;
  a.value_stride_head = value.stride(1) * elem;
  a.key_cache = static_cast<char*>(key_cache.data_ptr());
  a.value_cache = static_cast<char*>(value_cache.data_ptr());
  a.slot_mapping = slot_mapping.data_ptr<int64_t>();
  a.num_slots = num_slots;
  a.num_tokens = key.size(0);
  a.num_kv_heads = key.size(1);
  a.head_bytes = key.size(2) * elem;
  check_launch(cuda::launch_reshape_and_cache(a, c10::cuda::getCurrentCUDAStream()), op);
}

void copy_blocks_cuda(at::TensorList key_caches, at::TensorList value_caches,
                      const at::Tensor& block_mapping_in) {
  const char* op = "copy_blocks";
  check_copy_blocks_args(key_caches, value_caches, block_mapping_in);
  if (key_caches.empty() || block_mapping_in.size(0) == 0) return;
  check_device_type(key_caches[0], op, "key_caches[0]", c10::DeviceType::CUDA);
  const c10::cuda::CUDAGuard guard(key_caches[0].device());
  int64_t num_blocks = key_caches[0].size(0);
  for (const auto& c : key_caches) num_blocks = std::min(num_blocks, c.size(0));
  const at::Tensor mapping_host = block_mapping_in.is_cpu()
                                      ? block_mapping_in.contiguous()
                                      : block_mapping_in.cpu().contiguous();
  if (block_mapping_in.is_cpu() || can_sync_for_checks())
    check_block_mapping_range(mapping_host, num_blocks, num_blocks, op);

  const int64_t num_layers = key_caches.size();
  auto bases = at::empty({2 * num_layers}, at::kLong);
  auto block_bytes = at::empty({num_layers}, at::kLong);
  uint64_t block_bytes_or = 0;
  for (int64_t l = 0; l < num_layers; ++l) {
    bases[2 * l] = reinterpret_cast<int64_t>(key_caches[l].data_ptr());
    bases[2 * l + 1] = reinterpret_cast<int64_t>(value_caches[l].data_ptr());
    const int64_t bytes = key_caches[l].stride(0) * key_caches[l].element_size();
    block_bytes[l] = bytes;
    block_bytes_or |= static_cast<uint64_t>(bytes) |
                      reinterpret_cast<uint64_t>(key_caches[l].data_ptr()) |
                      reinterpret_cast<uint64_t>(value_caches[l].data_ptr());
  }
  const auto device = key_caches[0].device();
  const at::Tensor bases_dev = bases.to(device, /*non_blocking=*/false);
  const at::Tensor bytes_dev = block_bytes.to(device, /*non_blocking=*/false);
  const at::Tensor mapping_dev =
      block_mapping_in.is_cpu() ? mapping_host.to(device) : block_mapping_in.contiguous();
  check_launch(cuda::launch_copy_blocks(reinterpret_cast<char* const*>(bases_dev.data_ptr<int64_t>()),
                                        bytes_dev.data_ptr<int64_t>(), num_layers,
                                        mapping_dev.data_ptr<int64_t>(), mapping_dev.size(0),
                                        block_bytes_or, c10::cuda::getCurrentCUDAStream()),
               op);
}

// Copies blocks between two caches on any pair of devices (GPU <-> pinned CPU for offload,
// GPU <-> GPU). Asynchronous on the current stream; pinned host memory makes it truly async.
void swap_blocks_cuda(const at::Tensor& src, const at::Tensor& dst,
                      const at::Tensor& block_mapping_in) {
  const char* op = "swap_blocks";
  check_swap_blocks_args(src, dst, block_mapping_in);
  const at::Tensor block_mapping = block_mapping_in.contiguous();
  check_block_mapping_range(block_mapping, src.size(0), dst.size(0), op);
  const at::Device device = src.is_cuda() ? src.device() : dst.device();
  TORCH_CHECK_VALUE(src.is_cuda() || src.is_cpu(), op, ": src must be on cpu or cuda, got ", src.device());
  TORCH_CHECK_VALUE(dst.is_cuda() || dst.is_cpu(), op, ": dst must be on cpu or cuda, got ", dst.device());
  const c10::cuda::CUDAGuard guard(device);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int64_t block_bytes = src.stride(0) * src.element_size();
  const char* src_base = static_cast<const char*>(src.data_ptr());
  char* dst_base = static_cast<char*>(dst.data_ptr());
  const int64_t* pairs = block_mapping.data_ptr<int64_t>();
  for (int64_t p = 0; p < block_mapping.size(0); ++p) {
    check_launch(cudaMemcpyAsync(dst_base + pairs[2 * p + 1] * block_bytes,
                                 src_base + pairs[2 * p] * block_bytes, block_bytes,
                                 cudaMemcpyDefault, stream),
                 op);
  }
}

}  // namespace pagedinfer::ops
