// CUDA adapter of paged_attention: checks, workspace, device + stream, launch.
// Index values (query_start_loc, seq_lens, block_tables) live on the GPU: outside CUDA graph
// capture they are copied to the host and checked (the CPU op's checks, same messages); during
// capture the kernels still never read outside the cache (bad block ids are skipped).
// Head sizes 64, 80, 96, 128, 256 run the split kernel; other sizes (<= 512) the reference kernel.
#include <c10/cuda/CUDAGraphsC10Utils.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "kernels/cuda/attention_kernels.cuh"
#include "ops/attention_ops.h"
#include "ops/checks.h"
#include "ops/cuda_impl_select.h"
#include "ops/cuda_ops.h"

namespace pagedinfer::ops {
namespace {

constexpr const char* kOp = "paged_attention";
constexpr int64_t kMaxHeadDim = 512;  // the reference kernel's limit (4 dims per thread)

bool can_sync_for_checks() {
  return c10::cuda::currentStreamCaptureStatusMayInitCtx() == c10::cuda::CaptureStatus::None;
}

cuda::DType to_dtype(at::ScalarType s) {
  return s == at::kFloat ? cuda::DType::kF32 : s == at::kBFloat16 ? cuda::DType::kBF16 : cuda::DType::kF16;
}

}  // namespace

void paged_attention_cuda(const at::Tensor& query_in, const at::Tensor& key_cache,
                          const at::Tensor& value_cache, const at::Tensor& qsl_in,
                          const at::Tensor& seq_lens_in, const at::Tensor& block_tables_in,
                          double scale, int64_t sliding_window, const at::Tensor& out) {
  check_paged_attention_args(query_in, key_cache, value_cache, qsl_in, seq_lens_in, block_tables_in,
                             scale, out);
  check_device_type(query_in, kOp, "query", c10::DeviceType::CUDA);
  const int64_t T = query_in.size(0), B = seq_lens_in.size(0), D = query_in.size(2);
  if (T == 0) return;
  TORCH_CHECK_VALUE(B > 0, kOp, ": T = ", T, " query tokens but no sequences (seq_lens is empty)");
  TORCH_CHECK_VALUE(D <= kMaxHeadDim, kOp, ": head_dim (query.size(2)) must be <= ", kMaxHeadDim,
                    " on CUDA, got ", D);
  const c10::cuda::CUDAGuard guard(query_in.device());
  const at::Tensor qsl = qsl_in.contiguous(), seq_lens = seq_lens_in.contiguous(),
                   block_tables = block_tables_in.contiguous();
  if (can_sync_for_checks()) {  // one device-to-host copy of all the metadata, then the CPU checks
    const at::Tensor host = at::cat({qsl, seq_lens, block_tables.flatten()}).cpu();
    const int32_t* h = host.data_ptr<int32_t>();
    check_paged_attention_indices(h, h + B + 1, h + 2 * B + 1, B, block_tables.size(1), T,
                                  key_cache.size(0), key_cache.size(1), sliding_window);
  }
  // The kernels read query rows in 16-byte vectors: last dim contiguous, rows 16-byte aligned.
  const int64_t elem = query_in.element_size();
  const bool aligned = query_in.stride(2) == 1 && reinterpret_cast<uintptr_t>(query_in.data_ptr()) % 16 == 0 &&
                       (query_in.stride(0) * elem) % 16 == 0 && (query_in.stride(1) * elem) % 16 == 0;
  const at::Tensor query = aligned ? query_in : query_in.contiguous();
  const at::Tensor& dst = out;  // last dim contiguous (checked)

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
  const bool fast_head_dim = D == 64 || D == 80 || D == 96 || D == 128 || D == 256;
  if (impl == cuda::Impl::kFast &&
      (!fast_head_dim ||
       !cuda::paged_attention_fast_supported(a.head_dim, static_cast<int>(query.element_size()), group,
                                             a.plan.partition_size)))
    impl = cuda::Impl::kReference;  // other head sizes, or a GQA group too wide for shared memory
  at::Tensor partial_out, partial_stats;
  if (impl == cuda::Impl::kFast && a.plan.num_partitions > 1) {
    const int64_t slots = T * a.num_heads * a.plan.num_partitions;
    partial_out = at::empty({slots * a.head_dim}, query.options().dtype(at::kFloat));
    partial_stats = at::empty({2 * slots}, query.options().dtype(at::kFloat));
    a.partial_out = partial_out.data_ptr<float>();
    a.partial_max = partial_stats.data_ptr<float>();
    a.partial_sum = a.partial_max + slots;
  }
  at::Tensor tile_start;
  if (impl == cuda::Impl::kFast && T > B) {  // some sequence has several queries: prefill tiles
    tile_start = at::empty({B + 1}, qsl.options());
    a.prefill_tile_start = tile_start.data_ptr<int32_t>();
  }
  const cudaError_t err = cuda::launch_paged_attention(a, to_dtype(query.scalar_type()), impl,
                                                       c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, kOp, ": CUDA launch failed: ", cudaGetErrorString(err));
}

}  // namespace pagedinfer::ops
