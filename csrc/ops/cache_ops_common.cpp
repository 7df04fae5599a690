// Checks for the KV-cache ops, shared by the CPU and CUDA adapters.
#include "ops/cache_ops.h"
#include "ops/checks.h"

namespace pagedinfer::ops {
namespace {

constexpr auto kF32 = at::kFloat;
constexpr auto kBF16 = at::kBFloat16;
constexpr auto kF16 = at::kHalf;

void check_cache_tensor(const at::Tensor& cache, const char* op, const char* name) {
  check_dim(cache, op, name, 4, "[num_blocks, block_size, Hkv, D]");
  check_dtype(cache, op, name, {kF32, kBF16, kF16});
  check_contiguous(cache, op, name);
}

void check_block_mapping_shape(const at::Tensor& block_mapping, const char* op) {
  check_dim(block_mapping, op, "block_mapping", 2, "[P, 2] (src, dst)");
  check_size(block_mapping, op, "block_mapping", 1, 2, "a (src, dst) pair");
  check_dtype(block_mapping, op, "block_mapping", {at::kLong});
}

}  // namespace

int64_t check_reshape_and_cache_args(const at::Tensor& key, const at::Tensor& value,
                                     const at::Tensor& key_cache, const at::Tensor& value_cache,
                                     const at::Tensor& slot_mapping) {
  const char* op = "reshape_and_cache";
  check_dim(key, op, "key", 3, "[T, Hkv, D]");
  check_dim(value, op, "value", 3, "[T, Hkv, D]");
  TORCH_CHECK_VALUE(value.sizes() == key.sizes(), op, ": value must have the shape of key ",
                    shape_str(key), ", got ", shape_str(value));
  check_cache_tensor(key_cache, op, "key_cache");
  check_cache_tensor(value_cache, op, "value_cache");
  TORCH_CHECK_VALUE(value_cache.sizes() == key_cache.sizes(), op,
                    ": value_cache must have the shape of key_cache ", shape_str(key_cache),
                    ", got ", shape_str(value_cache));
  check_size(key_cache, op, "key_cache", 2, key.size(1), "Hkv, from key");
  check_size(key_cache, op, "key_cache", 3, key.size(2), "head_dim, from key");
  check_dtype(key, op, "key", {kF32, kBF16, kF16});
  check_same_dtype(key, "key", value, "value", op);
  check_same_dtype(key, "key", key_cache, "key_cache", op);
  check_same_dtype(key, "key", value_cache, "value_cache", op);
  check_dim(slot_mapping, op, "slot_mapping", 1, "[T]");
  check_size(slot_mapping, op, "slot_mapping", 0, key.size(0), "T, from key");
  check_dtype(slot_mapping, op, "slot_mapping", {at::kLong});
  check_same_device(key, "key", value, "value", op);
  check_same_device(key, "key", key_cache, "key_cache", op);
  check_same_device(key, "key", value_cache, "value_cache", op);
  check_same_device(key, "key", slot_mapping, "slot_mapping", op);
  return key_cache.size(0) * key_cache.size(1);
}

void check_slot_range(const int64_t* slots, int64_t count, int64_t num_slots, const char* op) {
  for (int64_t t = 0; t < count; ++t) {
    const int64_t s = slots[t];
    TORCH_CHECK_INDEX(s >= -1 && s < num_slots, op, ": slot_mapping[", t, "] = ", s,
                      " is out of range; expected -1 (skip) or 0 <= slot < num_blocks * block_size = ",
                      num_slots);
  }
}

void check_copy_blocks_args(at::TensorList key_caches, at::TensorList value_caches,
                            const at::Tensor& block_mapping) {
  const char* op = "copy_blocks";
  TORCH_CHECK_VALUE(key_caches.size() == value_caches.size(), op,
                    ": key_caches and value_caches must have one tensor per layer each, got ",
                    key_caches.size(), " and ", value_caches.size());
  check_block_mapping_shape(block_mapping, op);
  for (size_t i = 0; i < key_caches.size(); ++i) {
    const std::string k_name = "key_caches[" + std::to_string(i) + "]";
    const std::string v_name = "value_caches[" + std::to_string(i) + "]";
    check_cache_tensor(key_caches[i], op, k_name.c_str());
    check_cache_tensor(value_caches[i], op, v_name.c_str());
    TORCH_CHECK_VALUE(value_caches[i].sizes() == key_caches[i].sizes(), op, ": ", v_name,
                      " must have the shape of ", k_name, " ", shape_str(key_caches[i]), ", got ",
                      shape_str(value_caches[i]));
    check_same_dtype(key_caches[i], k_name.c_str(), value_caches[i], v_name.c_str(), op);
    check_same_device(key_caches[0], "key_caches[0]", key_caches[i], k_name.c_str(), op);
    check_same_device(key_caches[0], "key_caches[0]", value_caches[i], v_name.c_str(), op);
  }
  if (!key_caches.empty() && !block_mapping.is_cpu())
    check_same_device(key_caches[0], "key_caches[0]", block_mapping, "block_mapping", op);
}

void check_swap_blocks_args(const at::Tensor& src, const at::Tensor& dst,
                            const at::Tensor& block_mapping) {
  const char* op = "swap_blocks";
  check_defined(src, op, "src");
  check_defined(dst, op, "dst");
  TORCH_CHECK_VALUE(src.dim() >= 2, op, ": src must be [num_blocks, ...] with at least 2 dims, got ",
                    shape_str(src));
  TORCH_CHECK_VALUE(dst.dim() == src.dim() && src.sizes().slice(1) == dst.sizes().slice(1), op,
                    ": dst must have the block shape of src (all dims but the first), got src ",
                    shape_str(src), " and dst ", shape_str(dst));
  check_same_dtype(src, "src", dst, "dst", op);
  check_contiguous(src, op, "src");
  check_contiguous(dst, op, "dst");
  check_block_mapping_shape(block_mapping, op);
  check_device_type(block_mapping, op, "block_mapping", c10::DeviceType::CPU);
}

void check_block_mapping_range(const at::Tensor& block_mapping, int64_t num_src, int64_t num_dst,
                               const char* op) {
  const auto m = block_mapping.contiguous();
  const int64_t* pairs = m.data_ptr<int64_t>();
  for (int64_t p = 0; p < m.size(0); ++p) {
    TORCH_CHECK_INDEX(pairs[2 * p] >= 0 && pairs[2 * p] < num_src, op, ": block_mapping[", p,
                      ", 0] = ", pairs[2 * p], " is not a source block id in [0, ", num_src, ")");
    TORCH_CHECK_INDEX(pairs[2 * p + 1] >= 0 && pairs[2 * p + 1] < num_dst, op, ": block_mapping[",
                      p, ", 1] = ", pairs[2 * p + 1], " is not a destination block id in [0, ",
                      num_dst, ")");
  }
}

}  // namespace pagedinfer::ops
