// CPU adapter for rope_cache_attention: the attention half of a decoder layer in one call.
//   qkv [T, (Hq + 2 Hkv) * D], the fused QKV projection's output, rows [q heads | k heads | v heads]
//   -> RoPE on its q and k heads (in place), k and v written to the paged cache, then paged
//      attention of the q heads -> out [T, Hq * D] (a new tensor, qkv's dtype).
// The same three kernels as rotary_embedding, reshape_and_cache and paged_attention, on views of
// qkv made here: at batch 1 a decode step is bound by per-op host costs, and from Python these
// were eleven dispatches per layer (three ops, six slices and views, an allocation); now one.
#include <ATen/ATen.h>

#include "ops/attention_ops.h"
#include "ops/cache_ops.h"
#include "ops/checks.h"
#include "ops/layer_ops.h"

namespace pagedinfer::ops {

at::Tensor rope_cache_attention_cpu(const at::Tensor& qkv, const at::Tensor& positions,
                                    const at::Tensor& cos, const at::Tensor& sin,
                                    const at::Tensor& key_cache, const at::Tensor& value_cache,
                                    const at::Tensor& slot_mapping,
                                    const at::Tensor& query_start_loc, const at::Tensor& seq_lens,
                                    const at::Tensor& block_tables, int64_t num_heads, double scale,
                                    int64_t sliding_window) {
  const char* op = "rope_cache_attention";
  check_defined(qkv, op, "qkv");
  check_dim(qkv, op, "qkv", 2, "[T, (num_heads + 2 * Hkv) * D]");
  check_device_type(qkv, op, "qkv", c10::DeviceType::CPU);
  check_dim(key_cache, op, "key_cache", 4, "[num_blocks, block_size, Hkv, D]");
  TORCH_CHECK_VALUE(num_heads > 0, op, ": num_heads must be positive, got ", num_heads);
  const int64_t T = qkv.size(0), Hkv = key_cache.size(2), D = key_cache.size(3);
  const int64_t heads = num_heads + 2 * Hkv;
  check_size(qkv, op, "qkv", 1, heads * D, "(num_heads + 2 * Hkv) * D with Hkv, D from key_cache");
  TORCH_CHECK_VALUE(qkv.stride(1) == 1, op, ": qkv must have a contiguous last dim, got strides ",
                    qkv.strides());

  const at::Tensor qkv3 = qkv.view({T, heads, D});
  const at::Tensor q = qkv3.narrow(1, 0, num_heads);
  const at::Tensor k = qkv3.narrow(1, num_heads, Hkv);
  const at::Tensor v = qkv3.narrow(1, num_heads + Hkv, Hkv);
  at::Tensor out = at::empty({T, num_heads * D}, qkv.options());
  // Every shape check before the first write (the index checks run inside each step).
  check_reshape_and_cache_args(k, v, key_cache, value_cache, slot_mapping);
  check_paged_attention_args(q, key_cache, value_cache, query_start_loc, seq_lens, block_tables,
                             scale, out.view({T, num_heads, D}));

  rotary_embedding_cpu(positions, qkv3.narrow(1, 0, num_heads + Hkv), cos, sin);
  reshape_and_cache_cpu(k, v, key_cache, value_cache, slot_mapping);
  paged_attention_cpu(q, key_cache, value_cache, query_start_loc, seq_lens, block_tables, scale,
                      sliding_window, out.view({T, num_heads, D}));
  return out;
}

}  // namespace pagedinfer::ops
