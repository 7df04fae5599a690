// CUDA adapter of paged_attention: checks, workspace, device + stream, launch.
// Index values (query_start_loc, seq_lens, block_tables) live on the GPU: outside CUDA graph
// capture they are copied to the host and checked so bad metadata raises a clear error; during
// capture the kernels still never read outside the cache (bad block ids are skipped).
#include <c10/cuda/CUDAGraphsC10Utils.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "kernels/cuda/attention_kernels.cuh"
#include "ops/checks.h"
#include "ops/cuda_impl_select.h"
#include "ops/cuda_ops.h"

namespace pagedinfer::ops {
namespace {

constexpr const char* kOp = "paged_attention";

bool can_sync_for_checks() {
  return c10::cuda::currentStreamCaptureStatusMayInitCtx() == c10::cuda::CaptureStatus::None;
}

cuda::DType to_dtype(at::ScalarType s) {
  return s == at::kFloat ? cuda::DType::kF32 : s == at::kBFloat16 ? cuda::DType::kBF16 : cuda::DType::kF16;
}

void check_args(const at::Tensor& query, const at::Tensor& key_cache, const at::Tensor& value_cache,
                const at::Tensor& qsl, const at::Tensor& seq_lens, const at::Tensor& block_tables,
                const at::Tensor& out) {
  check_dim(query, kOp, "query", 3, "[T, Hq, D]");
  check_dtype(query, kOp, "query", {at::kFloat, at::kBFloat16, at::kHalf});
  const int64_t D = query.size(2);
  TORCH_CHECK_VALUE(D == 64 || D == 80 || D == 96 || D == 128 || D == 256, kOp,
                    ": query.size(2) (head_dim) must be one of 64, 80, 96, 128, 256, got ", D);
  check_dim(key_cache, kOp, "key_cache", 4, "[num_blocks, block_size, Hkv, D]");
  check_dim(value_cache, kOp, "value_cache", 4, "[num_blocks, block_size, Hkv, D]");
  TORCH_CHECK_VALUE(value_cache.sizes() == key_cache.sizes(), kOp,
                    ": value_cache must have the shape of key_cache ", shape_str(key_cache),
                    ", got ", shape_str(value_cache));
  check_contiguous(key_cache, kOp, "key_cache");
  check_contiguous(value_cache, kOp, "value_cache");
  check_same_dtype(query, "query", key_cache, "key_cache", kOp);
  check_same_dtype(query, "query", value_cache, "value_cache", kOp);
  check_size(key_cache, kOp, "key_cache", 3, D, "head_dim, from query");
  const int64_t hkv = key_cache.size(2), hq = query.size(1);
  TORCH_CHECK_VALUE(hkv > 0 && hq % hkv == 0, kOp, ": query heads (", hq,
                    ") must be a multiple of key_cache.size(2) (Hkv) = ", hkv);
  check_dim(seq_lens, kOp, "seq_lens", 1, "[B]");
  const int64_t B = seq_lens.size(0);
  check_dim(qsl, kOp, "query_start_loc", 1, "[B + 1]");
  check_size(qsl, kOp, "query_start_loc", 0, B + 1, "B + 1, from seq_lens");
  check_dim(block_tables, kOp, "block_tables", 2, "[B, max_blocks]");
  check_size(block_tables, kOp, "block_tables", 0, B, "B, from seq_lens");
  for (auto [t, name] : {std::pair{&qsl, "query_start_loc"}, {&seq_lens, "seq_lens"},
                         {&block_tables, "block_tables"}})
    check_dtype(*t, kOp, name, {at::kInt});
  check_dim(out, kOp, "out", 3, "[T, Hq, D]");
  TORCH_CHECK_VALUE(out.sizes() == query.sizes(), kOp, ": out must have the shape of query ",
                    shape_str(query), ", got ", shape_str(out));
  check_same_dtype(query, "query", out, "out", kOp);
  check_device_type(query, kOp, "query", c10::DeviceType::CUDA);
  for (auto [t, name] : {std::pair{&key_cache, "key_cache"}, {&value_cache, "value_cache"},
                         {&qsl, "query_start_loc"}, {&seq_lens, "seq_lens"},
                         {&block_tables, "block_tables"}, {&out, "out"}})
    check_same_device(query, "query", *t, name, kOp);
}

// Metadata values, on the host: the flattened layout adds up and every block id a query can
// reach is a block of the cache.
void check_values(const at::Tensor& qsl_d, const at::Tensor& seq_lens_d, const at::Tensor& tables_d,
                  int64_t T, int64_t num_blocks, int64_t block_size) {
  const at::Tensor qsl = qsl_d.cpu().contiguous(), seq_lens = seq_lens_d.cpu().contiguous(),
                   tables = tables_d.cpu().contiguous();
  const int32_t* q = qsl.data_ptr<int32_t>();
  const int32_t* s = seq_lens.data_ptr<int32_t>();
  const int32_t* bt = tables.data_ptr<int32_t>();
  const int64_t B = seq_lens.size(0), max_blocks = tables.size(1);
  TORCH_CHECK_VALUE(q[0] == 0 && q[B] == T, kOp, ": query_start_loc must start at 0 and end at T = ",
                    T, ", got ", q[0], " and ", q[B]);
  for (int64_t i = 0; i < B; ++i) {
    const int64_t q_len = q[i + 1] - q[i];
    TORCH_CHECK_VALUE(q_len >= 0, kOp, ": query_start_loc must be non-decreasing, got [", i, "] = ",
                      q[i], " > [", i + 1, "] = ", q[i + 1]);
    TORCH_CHECK_VALUE(s[i] >= q_len && s[i] <= max_blocks * block_size, kOp, ": seq_lens[", i, "] = ",
                      s[i], " must be >= its query length ", q_len,
                      " and <= max_blocks * block_size = ", max_blocks * block_size);
    for (int64_t b = 0; b < (s[i] + block_size - 1) / block_size; ++b) {
      const int32_t id = bt[i * max_blocks + b];
      TORCH_CHECK_INDEX(id >= 0 && id < num_blocks, kOp, ": block_tables[", i, ", ", b, "] = ", id,
                        " is not a block of the cache [0, ", num_blocks, ")");
    }
  }
}

}  // namespace

void paged_attention_cuda(const at::Tensor& query_in, const at::Tensor& key_cache,
                          const at::Tensor& value_cache, const at::Tensor& qsl_in,
                          const at::Tensor& seq_lens_in, const at::Tensor& block_tables_in,
                          double scale, int64_t sliding_window, const at::Tensor& out) {
  check_args(query_in, key_cache, value_cache, qsl_in, seq_lens_in, block_tables_in, out);
  const int64_t T = query_in.size(0), B = seq_lens_in.size(0);
  if (T == 0) return;
  TORCH_CHECK_VALUE(B > 0, kOp, ": T = ", T, " query tokens but no sequences (seq_lens is empty)");
  const c10::cuda::CUDAGuard guard(query_in.device());
  const at::Tensor qsl = qsl_in.contiguous(), seq_lens = seq_lens_in.contiguous(),
                   block_tables = block_tables_in.contiguous();
  if (can_sync_for_checks())
    check_values(qsl, seq_lens, block_tables, T, key_cache.size(0), key_cache.size(1));
  const at::Tensor query = query_in.stride(2) == 1 ? query_in : query_in.contiguous();
  const bool direct = out.stride(2) == 1;
  const at::Tensor dst = direct ? out : at::empty_like(query, query.options().memory_format(at::MemoryFormat::Contiguous));

  cuda::PagedAttentionArgs a{};
  a.query = query.data_ptr();
  a.query_stride_token = query.stride(0);
  a.query_stride_head = query.stride(1);
  a.key_cache = key_cache.data_ptr();
  a.value_cache = value_cache.data_ptr();
  a.query_start_loc = qsl.data_ptr<int32_t>();
  a.seq_lens = seq_lens.data_ptr<int32_t>();
  a.block_tables = block_tables.data_ptr<int32_t>();
  a.out = dst.data_ptr();
  a.out_stride_token = dst.stride(0);
  a.out_stride_head = dst.stride(1);
  a.num_tokens = T;
  a.num_blocks = key_cache.size(0);
  a.num_seqs = static_cast<int>(B);
  a.max_blocks = static_cast<int>(block_tables.size(1));
  a.num_heads = static_cast<int>(query.size(1));
  a.num_kv_heads = static_cast<int>(key_cache.size(2));
  a.head_dim = static_cast<int>(query.size(2));
  a.block_size = static_cast<int>(key_cache.size(1));
  a.scale = static_cast<float>(scale);
  a.sliding_window = sliding_window;
  const int group = a.num_heads / a.num_kv_heads;
  a.plan = cuda::layout::plan_attention(static_cast<int64_t>(a.max_blocks) * a.block_size,
                                        sliding_window, group);
  cuda::Impl impl = cuda_use_reference_kernels() ? cuda::Impl::kReference : cuda::Impl::kFast;
  if (impl == cuda::Impl::kFast &&
      !cuda::paged_attention_fast_supported(a.head_dim, static_cast<int>(query.element_size()), group,
                                            a.plan.partition_size))
    impl = cuda::Impl::kReference;  // shared memory of a very wide GQA group exceeds the device's
  at::Tensor partial_out, partial_stats;
  if (impl == cuda::Impl::kFast && a.plan.num_partitions > 1) {
    const int64_t slots = T * a.num_heads * a.plan.num_partitions;
    partial_out = at::empty({slots * a.head_dim}, query.options().dtype(at::kFloat));
    partial_stats = at::empty({2 * slots}, query.options().dtype(at::kFloat));
    a.partial_out = partial_out.data_ptr<float>();
    a.partial_max = partial_stats.data_ptr<float>();
    a.partial_sum = a.partial_max + slots;
  }
  const cudaError_t err = cuda::launch_paged_attention(a, to_dtype(query.scalar_type()), impl,
                                                       c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, kOp, ": CUDA launch failed: ", cudaGetErrorString(err));
  if (!direct) out.copy_(dst);
}

}  // namespace pagedinfer::ops
