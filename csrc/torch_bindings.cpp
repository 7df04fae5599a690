// The only file that registers: op schemas for torch.ops.pagedinfer, and one implementation per
// dispatch key. Mutated arguments are marked (Tensor(a!)) so functionalization and torch.compile
// know what each op writes. Fake (meta) implementations live in python/pagedinfer/ops.py.
#include <torch/library.h>

#include "ops/attention_ops.h"
#include "ops/cache_ops.h"
#include "ops/cuda_ops.h"
#include "ops/gemm_ops.h"
#include "ops/layer_ops.h"

TORCH_LIBRARY(pagedinfer, m) {
  m.def(
      "reshape_and_cache(Tensor key, Tensor value, Tensor(a!) key_cache, Tensor(b!) value_cache, "
      "Tensor slot_mapping) -> ()");
  m.def("copy_blocks(Tensor(a!)[] key_caches, Tensor(b!)[] value_caches, Tensor block_mapping) -> ()");
  m.def("swap_blocks(Tensor src, Tensor(a!) dst, Tensor block_mapping) -> ()");
  m.def(
      "paged_attention(Tensor query, Tensor key_cache, Tensor value_cache, Tensor query_start_loc, "
      "Tensor seq_lens, Tensor block_tables, float scale, int sliding_window, Tensor(a!) out) -> ()");
  // Weight-only GEMM (csrc/ops/gemm_ops.h): y = x @ W^T + bias, y in x's dtype.
  m.def(
      "int4_linear(Tensor x, Tensor qweight, Tensor scale, Tensor min, int group_size, "
      "Tensor? bias=None) -> Tensor");
  m.def("int8_linear(Tensor x, Tensor qweight, Tensor scale, int group_size, Tensor? bias=None) -> Tensor");
  // Fused per-layer ops (csrc/ops/layer_ops.h).
  m.def("fused_add_rms_norm(Tensor(a!) x, Tensor(b!) residual, Tensor weight, float eps) -> ()");
  m.def("rms_norm(Tensor(a!) out, Tensor x, Tensor weight, float eps) -> ()");
  m.def("silu_and_mul(Tensor(a!) out, Tensor x) -> ()");
  m.def("rotary_embedding(Tensor positions, Tensor(a!) qk, Tensor cos, Tensor sin) -> ()");
  m.def("argmax(Tensor x) -> Tensor");
  // The attention half of a layer on the fused QKV output (csrc/ops/attention_ops.h).
  m.def(
      "rope_cache_attention(Tensor(a!) qkv, Tensor positions, Tensor cos, Tensor sin, "
      "Tensor(b!) key_cache, Tensor(c!) value_cache, Tensor slot_mapping, Tensor query_start_loc, "
      "Tensor seq_lens, Tensor block_tables, int num_heads, float scale, int sliding_window) -> Tensor");
}

TORCH_LIBRARY_IMPL(pagedinfer, CPU, m) {
  m.impl("reshape_and_cache", &pagedinfer::ops::reshape_and_cache_cpu);
  m.impl("copy_blocks", &pagedinfer::ops::copy_blocks_cpu);
  m.impl("swap_blocks", &pagedinfer::ops::swap_blocks_cpu);
  m.impl("paged_attention", &pagedinfer::ops::paged_attention_cpu);
  m.impl("int4_linear", &pagedinfer::ops::int4_linear_cpu);
  m.impl("int8_linear", &pagedinfer::ops::int8_linear_cpu);
  m.impl("fused_add_rms_norm", &pagedinfer::ops::fused_add_rms_norm_cpu);
  m.impl("rms_norm", &pagedinfer::ops::rms_norm_cpu);
  m.impl("silu_and_mul", &pagedinfer::ops::silu_and_mul_cpu);
  m.impl("rotary_embedding", &pagedinfer::ops::rotary_embedding_cpu);
  m.impl("argmax", &pagedinfer::ops::argmax_cpu);
  m.impl("rope_cache_attention", &pagedinfer::ops::rope_cache_attention_cpu);
}

#ifdef PAGEDINFER_WITH_CUDA
TORCH_LIBRARY_IMPL(pagedinfer, CUDA, m) {
  m.impl("reshape_and_cache", &pagedinfer::ops::reshape_and_cache_cuda);
  m.impl("copy_blocks", &pagedinfer::ops::copy_blocks_cuda);
  m.impl("swap_blocks", &pagedinfer::ops::swap_blocks_cuda);
  m.impl("paged_attention", &pagedinfer::ops::paged_attention_cuda);
  m.impl("int4_linear", &pagedinfer::ops::int4_linear_cuda);
  m.impl("int8_linear", &pagedinfer::ops::int8_linear_cuda);
}
#endif
