// CPU adapter for paged attention: check, plan the work items, run them on at::parallel_for
// threads (each thread pulls the next item, largest first), then merge split-K partials.
#include <ATen/Parallel.h>

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "kernels/cpu/attention_kernels.h"
#include "ops/attention_ops.h"
#include "ops/checks.h"

namespace pagedinfer::ops {
namespace {

// Runs fn(i) for i in [0, n) on every thread, handing out indices in order (dynamic schedule:
// items have very different costs, e.g. causal prefill tiles).
template <typename Fn>
void parallel_dynamic(int64_t n, const Fn& fn) {
  if (n == 0) return;
  const int64_t threads = std::min<int64_t>(at::get_num_threads(), n);
  std::atomic<int64_t> next{0};
  at::parallel_for(0, threads, 1, [&](int64_t, int64_t) {
    for (int64_t i = next.fetch_add(1); i < n; i = next.fetch_add(1)) fn(i);
  });
}

}  // namespace

void paged_attention_cpu(const at::Tensor& query_in, const at::Tensor& key_cache,
                         const at::Tensor& value_cache, const at::Tensor& query_start_loc_in,
                         const at::Tensor& seq_lens_in, const at::Tensor& block_tables_in,
                         double scale, int64_t sliding_window, const at::Tensor& out) {
  const char* op = "paged_attention";
  check_paged_attention_args(query_in, key_cache, value_cache, query_start_loc_in, seq_lens_in,
                             block_tables_in, scale, out);
  check_device_type(query_in, op, "query", c10::DeviceType::CPU);
  const at::Tensor qsl = query_start_loc_in.contiguous();
  const at::Tensor seq_lens = seq_lens_in.contiguous();
  const at::Tensor block_tables = block_tables_in.contiguous();
  const int64_t B = seq_lens.size(0);
  const int64_t T = query_in.size(0);
  check_paged_attention_indices(qsl.data_ptr<int32_t>(), seq_lens.data_ptr<int32_t>(),
                                block_tables.data_ptr<int32_t>(), B, block_tables.size(1), T,
                                key_cache.size(0), key_cache.size(1), sliding_window);
  if (T == 0) return;
  const at::Tensor query = query_in.stride(2) == 1 ? query_in : query_in.contiguous();

  cpu::PagedAttentionParams p;
  p.query = query.data_ptr();
  p.q_stride_token = query.stride(0);
  p.q_stride_head = query.stride(1);
  p.key_cache = key_cache.data_ptr();
  p.value_cache = value_cache.data_ptr();
  p.out = out.data_ptr();
  p.o_stride_token = out.stride(0);
  p.o_stride_head = out.stride(1);
  p.query_start_loc = qsl.data_ptr<int32_t>();
  p.seq_lens = seq_lens.data_ptr<int32_t>();
  p.block_tables = block_tables.data_ptr<int32_t>();
  p.num_seqs = B;
  p.max_blocks = block_tables.size(1);
  p.block_size = key_cache.size(1);
  p.num_heads = query.size(1);
  p.num_kv_heads = key_cache.size(2);
  p.head_dim = query.size(2);
  p.scale = static_cast<float>(scale);
  p.sliding_window = sliding_window;
  // PAGEDINFER_ATTN_AMX=0 keeps prefill tiles on the AVX-512 kernel (tests run both paths).
  const char* amx_env = std::getenv("PAGEDINFER_ATTN_AMX");
  p.allow_amx = amx_env == nullptr || std::strcmp(amx_env, "0") != 0;
  switch (query.scalar_type()) {
    case at::kFloat: p.dtype = cpu::AttnDtype::kF32; break;
    case at::kBFloat16: p.dtype = cpu::AttnDtype::kBF16; break;
    default: p.dtype = cpu::AttnDtype::kF16; break;
  }

  const cpu::AttentionPlan plan = cpu::plan_paged_attention(p, at::get_num_threads());
  at::Tensor partials;
  float* part_o = nullptr;
  float* part_lse = nullptr;
  if (plan.partial_floats > 0) {
    partials = at::empty({plan.partial_floats + plan.partial_floats / p.head_dim},
                         query.options().dtype(at::kFloat));
    part_o = partials.data_ptr<float>();
    part_lse = part_o + plan.partial_floats;
  }
  // Each thread takes the next unclaimed item, and prefetches the first chunk of keys of the
  // item after it (no chunk before that one in its own item prefetches it). It looks at that
  // item without claiming it: a thread that claimed two items at once could leave the other
  // threads idle at the end (with one item per thread, as when one long sequence is split in
  // two, it took both: 16 vs 8 ms for 32,768 keys on 2 threads).
  // Only behind a short item: behind one that reads more than L2 holds, the prefetched rows
  // are evicted before they are used, and the burst holds up the item's own first reads
  // (32 x 2,048 keys, D = 128, 8 MiB an item: 12.7-13.0 vs 12.9-14.6 ms with the burst; the
  // default model's 64 x 176 keys, 135 KiB an item: 610-625 vs 647-650 us without it).
  constexpr int64_t kPrefetchBehindMaxBytes = 1 << 20;
  const int64_t n_items = static_cast<int64_t>(plan.items.size());
  const int64_t threads = std::min<int64_t>(at::get_num_threads(), n_items);
  std::atomic<int64_t> next_item{0};
  if (n_items > 0)
    at::parallel_for(0, threads, 1, [&](int64_t, int64_t) {
      for (int64_t i = next_item.fetch_add(1); i < n_items; i = next_item.fetch_add(1)) {
        const int64_t j = next_item.load(std::memory_order_relaxed);
        if (j < n_items && cpu::attention_item_bytes(p, plan.items[i]) <= kPrefetchBehindMaxBytes)
          cpu::prefetch_attention_item(p, plan.items[j], cpu::kKeyChunk);
        cpu::run_attention_item(p, plan.items[i], part_o, part_lse);
      }
    });
  parallel_dynamic(static_cast<int64_t>(plan.merges.size()), [&](int64_t i) {
    cpu::merge_attention_partials(p, plan.merges[i], part_o, part_lse);
  });
}

}  // namespace pagedinfer::ops
