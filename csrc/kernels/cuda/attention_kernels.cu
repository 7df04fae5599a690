// Paged attention kernels (varlen: decode, prefill, chunked prefill, verification in one op).
//  * split kernel: one CTA (4 warps) per (query token, KV head, context partition of P keys),
//    covering the whole GQA group so each K/V row is read once per group. K rows are read in
//    16-byte vectors by TPK lanes per row (warp-shuffle dot products); probabilities of the group
//    stay in shared memory; V is accumulated per lane for up to 8 heads at once, then reduced
//    across key slots in shared memory. With more than one partition, each CTA writes a partial
//    (max, sum, normalized output) and merge_kernel combines them with a log-sum-exp.
//  * reference kernel: one CTA per (token, query head), keys one at a time, online softmax.
#include <cfloat>
#include <type_traits>

#include "kernels/cuda/attention_device.cuh"
#include "kernels/cuda/attention_kernels.cuh"
#include "kernels/cuda/dtype_utils.cuh"

namespace pagedinfer::cuda {
namespace {

using layout::find_sequence;
using layout::key_range;
using layout::kv_offset;

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int kHeadTile = 8;  // query heads whose V sums one thread keeps in registers

template <typename T, int D>
__global__ void __launch_bounds__(kThreads)
    split_kernel(PagedAttentionArgs a) {
  constexpr int kChunks = D * static_cast<int>(sizeof(T)) / 16;  // 16-byte chunks per row
  constexpr int kVec = 16 / static_cast<int>(sizeof(T));
  constexpr int kTpk = kChunks > 16 ? 32 : kChunks > 8 ? 16 : kChunks > 4 ? 8 : 4;
  constexpr int kCpt = (kChunks + kTpk - 1) / kTpk;  // chunks per thread
  constexpr int kKeysPerWarp = 32 / kTpk;
  constexpr int kSlots = kThreads / kTpk;  // key slots of the V pass
  // K/V rows a lane loads before it uses them (2 for D = 256 keeps it within 128 registers).
  constexpr int kUnroll = D >= 256 ? 2 : 4;
  static_assert(kChunks * 16 == D * static_cast<int>(sizeof(T)), "row must be whole 16-byte chunks");

  const int64_t t = blockIdx.x;
  const int kvh = blockIdx.y, part = blockIdx.z;
  const int G = a.num_heads / a.num_kv_heads;
  const int P = a.plan.partition_size, NP = a.plan.num_partitions;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;

  extern __shared__ float smem[];
  float* qs = smem;                        // [G, D] query * scale
  float* probs = qs + G * D;               // [G, P] logits, then exp(logit - max)
  float* red = probs + G * P;              // [kSlots, kHeadTile, D]
  float* stat_max = red + kSlots * kHeadTile * D;  // [G]
  float* stat_sum = stat_max + G;                  // [G]

  const int i = find_sequence(a.query_start_loc, a.num_seqs, t);
  const int64_t q0 = a.query_start_loc[i], q_len = a.query_start_loc[i + 1] - q0;
  if (a.multi_query_elsewhere && q_len > 1) return;  // the prefill kernel writes these rows
  const layout::KeyRange range = key_range(a.seq_lens[i], q_len, t - q0, a.sliding_window);
  const int64_t kb = range.begin + static_cast<int64_t>(part) * P;
  const int64_t ke = range.end < kb + P ? range.end : kb + P;
  const int n = ke > kb ? static_cast<int>(ke - kb) : 0;
  const T* q = static_cast<const T*>(a.query) + t * a.query_stride_token;

  if (n == 0) {  // partition past the context: an empty partial (or zeros for an empty context)
    if (NP > 1) {
      for (int g = tid; g < G; g += kThreads) {
        const int64_t s = (t * a.num_heads + kvh * G + g) * NP + part;
        a.partial_max[s] = -FLT_MAX;
        a.partial_sum[s] = 0.f;
      }
    } else {
      T* o = static_cast<T*>(a.out) + t * a.out_stride_token;
      for (int idx = tid; idx < G * D; idx += kThreads)
        o[(kvh * G + idx / D) * a.out_stride_head + idx % D] = from_float<T>(0.f);
    }
    return;
  }

  for (int idx = tid; idx < G * D; idx += kThreads)
    qs[idx] = to_float<T>(q[(kvh * G + idx / D) * a.query_stride_head + idx % D]) * a.scale;
  __syncthreads();

  const int32_t* table = a.block_tables + static_cast<int64_t>(i) * a.max_blocks;
  const T* kcache = static_cast<const T*>(a.key_cache);
  const T* vcache = static_cast<const T*>(a.value_cache);

  // Logits: lanes [kTpk * s, kTpk * (s + 1)) of a warp share a key row. Each step a warp loads
  // kUnroll rows per lane group before reducing, so several 16-byte loads are in flight per lane.
  {
    const int sub = lane % kTpk, slot = lane / kTpk;
    constexpr int kStride = kWarps * kKeysPerWarp;  // keys between a warp's consecutive rows
    for (int base = warp * kKeysPerWarp; base < n; base += kUnroll * kStride) {  // warp-uniform
      float kf[kUnroll][kCpt][kVec];
      int64_t blk[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int kk = base + u * kStride + slot;
        blk[u] = kk < n ? block_of(table, kb + kk, a.block_size, a.num_blocks) : -1;
#pragma unroll
        for (int j = 0; j < kCpt; ++j) {
          const int c = sub + j * kTpk;
          if (blk[u] >= 0 && c < kChunks) {
            load16_as_float(kcache + kv_offset(blk[u], kb + kk, a.block_size, a.num_kv_heads, D, kvh) + c * kVec,
                            kf[u][j]);
          } else {
#pragma unroll
            for (int e = 0; e < kVec; ++e) kf[u][j][e] = 0.f;
          }
        }
      }
      for (int g = 0; g < G; ++g) {
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
          const int kk = base + u * kStride + slot;
          float s = 0.f;
#pragma unroll
          for (int j = 0; j < kCpt; ++j) {
            const int c = sub + j * kTpk;
            if (c < kChunks) {
#pragma unroll
              for (int e = 0; e < kVec; ++e) s += qs[g * D + c * kVec + e] * kf[u][j][e];
            }
          }
#pragma unroll
          for (int off = kTpk / 2; off >= 1; off /= 2) s += __shfl_xor_sync(0xffffffffu, s, off);
          if (sub == 0 && kk < n) probs[g * P + kk] = blk[u] >= 0 ? s : -INFINITY;
        }
      }
    }
  }
  __syncthreads();

  // Softmax statistics of the partition, one warp per head.
  for (int g = warp; g < G; g += kWarps) {
    float m = -INFINITY;
    for (int kk = lane; kk < n; kk += 32) m = fmaxf(m, probs[g * P + kk]);
#pragma unroll
    for (int off = 16; off >= 1; off /= 2) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, off));
    float sum = 0.f;
    for (int kk = lane; kk < n; kk += 32) {
      const float e = m == -INFINITY ? 0.f : __expf(probs[g * P + kk] - m);
      probs[g * P + kk] = e;
      sum += e;
    }
#pragma unroll
    for (int off = 16; off >= 1; off /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, off);
    if (lane == 0) {
      stat_max[g] = m == -INFINITY ? -FLT_MAX : m;
      stat_sum[g] = sum;
    }
  }
  __syncthreads();

  // P @ V, kHeadTile heads at a time; thread (slot, sub) sums keys slot, slot + kSlots, ...
  const int sub = tid % kTpk, slot = tid / kTpk;
  for (int g0 = 0; g0 < G; g0 += kHeadTile) {
    float acc[kHeadTile][kCpt][kVec];
#pragma unroll
    for (int gg = 0; gg < kHeadTile; ++gg)
#pragma unroll
      for (int j = 0; j < kCpt; ++j)
#pragma unroll
        for (int e = 0; e < kVec; ++e) acc[gg][j][e] = 0.f;
    for (int kk0 = slot; kk0 < n; kk0 += kUnroll * kSlots) {
      // Issue kUnroll rows' loads before using any (memory-level parallelism).
      float vf[kUnroll][kCpt][kVec];
      bool ok[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int kk = kk0 + u * kSlots;
        const int64_t blk = kk < n ? block_of(table, kb + kk, a.block_size, a.num_blocks) : -1;
        ok[u] = blk >= 0;
        const T* vrow = vcache + (ok[u] ? kv_offset(blk, kb + kk, a.block_size, a.num_kv_heads, D, kvh) : 0);
#pragma unroll
        for (int j = 0; j < kCpt; ++j) {
          const int c = sub + j * kTpk;
          if (ok[u] && c < kChunks) {
            load16_as_float(vrow + c * kVec, vf[u][j]);
          } else {
#pragma unroll
            for (int e = 0; e < kVec; ++e) vf[u][j][e] = 0.f;
          }
        }
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        if (!ok[u]) continue;
        const int kk = kk0 + u * kSlots;
#pragma unroll
        for (int gg = 0; gg < kHeadTile; ++gg) {
          if (g0 + gg < G) {
            const float p = probs[(g0 + gg) * P + kk];
#pragma unroll
            for (int j = 0; j < kCpt; ++j)
#pragma unroll
              for (int e = 0; e < kVec; ++e) acc[gg][j][e] += p * vf[u][j][e];
          }
        }
      }
    }
#pragma unroll
    for (int gg = 0; gg < kHeadTile; ++gg)
#pragma unroll
      for (int j = 0; j < kCpt; ++j) {
        const int c = sub + j * kTpk;
        if (c < kChunks) {
#pragma unroll
          for (int e = 0; e < kVec; ++e) red[(slot * kHeadTile + gg) * D + c * kVec + e] = acc[gg][j][e];
        }
      }
    __syncthreads();
    for (int idx = tid; idx < kHeadTile * D; idx += kThreads) {
      const int gg = idx / D, d = idx % D, g = g0 + gg;
      if (g >= G) continue;
      float o = 0.f;
      for (int s = 0; s < kSlots; ++s) o += red[(s * kHeadTile + gg) * D + d];
      const float sum = stat_sum[g];
      o = sum > 0.f ? o / sum : 0.f;
      const int h = kvh * G + g;
      if (NP > 1) {
        const int64_t s = (t * a.num_heads + h) * NP + part;
        a.partial_out[s * D + d] = o;
        if (d == 0) {
          a.partial_max[s] = stat_max[g];
          a.partial_sum[s] = sum;
        }
      } else {
        static_cast<T*>(a.out)[t * a.out_stride_token + h * a.out_stride_head + d] = from_float<T>(o);
      }
    }
    __syncthreads();  // red is reused by the next head tile
  }
}

// Combines the partitions of one (token, head): out = sum_p w_p o_p / sum_p w_p with
// w_p = sum_p * exp(max_p - max). Empty partitions have sum 0. blockDim.x = D.
template <typename T>
__global__ void merge_kernel(PagedAttentionArgs a) {
  const int64_t t = blockIdx.x;
  const int h = blockIdx.y, d = threadIdx.x, D = a.head_dim, NP = a.plan.num_partitions;
  if (a.multi_query_elsewhere) {
    const int i = find_sequence(a.query_start_loc, a.num_seqs, t);
    if (a.query_start_loc[i + 1] - a.query_start_loc[i] > 1) return;
  }
  const int64_t base = (t * a.num_heads + h) * NP;
  float m = -FLT_MAX;
  for (int p = 0; p < NP; ++p)
    if (a.partial_sum[base + p] > 0.f) m = fmaxf(m, a.partial_max[base + p]);
  float num = 0.f, den = 0.f;
  for (int p = 0; p < NP; ++p) {
    const float s = a.partial_sum[base + p];
    if (s > 0.f) {
      const float w = s * __expf(a.partial_max[base + p] - m);
      den += w;
      num += w * a.partial_out[(base + p) * D + d];
    }
  }
  static_cast<T*>(a.out)[t * a.out_stride_token + h * a.out_stride_head + d] =
      from_float<T>(den > 0.f ? num / den : 0.f);
}

// One CTA per (token, query head); kThreads threads cover D (<= 4 * kThreads) dims.
template <typename T>
__global__ void __launch_bounds__(kThreads) reference_kernel(PagedAttentionArgs a) {
  const int64_t t = blockIdx.x;
  const int h = blockIdx.y, tid = threadIdx.x, D = a.head_dim;
  const int kvh = h / (a.num_heads / a.num_kv_heads);
  __shared__ float qs[4 * kThreads];
  __shared__ float red[kThreads];
  const T* q = static_cast<const T*>(a.query) + t * a.query_stride_token + h * a.query_stride_head;
  for (int d = tid; d < D; d += kThreads) qs[d] = to_float<T>(q[d]) * a.scale;
  const int i = find_sequence(a.query_start_loc, a.num_seqs, t);
  const int64_t q0 = a.query_start_loc[i];
  const layout::KeyRange range =
      key_range(a.seq_lens[i], a.query_start_loc[i + 1] - q0, t - q0, a.sliding_window);
  const int32_t* table = a.block_tables + static_cast<int64_t>(i) * a.max_blocks;
  float m = -INFINITY, sum = 0.f, acc[4] = {0.f, 0.f, 0.f, 0.f};
  __syncthreads();
  for (int64_t p = range.begin; p < range.end; ++p) {
    const int64_t blk = block_of(table, p, a.block_size, a.num_blocks);
    if (blk < 0) continue;  // uniform across the CTA
    const int64_t off = kv_offset(blk, p, a.block_size, a.num_kv_heads, D, kvh);
    const T* k = static_cast<const T*>(a.key_cache) + off;
    const T* v = static_cast<const T*>(a.value_cache) + off;
    float partial = 0.f;
    for (int d = tid; d < D; d += kThreads) partial += qs[d] * to_float<T>(k[d]);
    red[tid] = partial;
    __syncthreads();
    for (int s = kThreads / 2; s > 0; s /= 2) {
      if (tid < s) red[tid] += red[tid + s];
      __syncthreads();
    }
    const float logit = red[0];
    __syncthreads();  // everyone has read red[0] before the next key overwrites it
    const float m_new = fmaxf(m, logit);
    const float corr = m == -INFINITY ? 0.f : expf(m - m_new);
    const float e = expf(logit - m_new);
    sum = sum * corr + e;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int d = tid + j * kThreads;
      if (d < D) acc[j] = acc[j] * corr + e * to_float<T>(v[d]);
    }
    m = m_new;
  }
  T* o = static_cast<T*>(a.out) + t * a.out_stride_token + h * a.out_stride_head;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const int d = tid + j * kThreads;
    if (d < D) o[d] = from_float<T>(sum > 0.f ? acc[j] / sum : 0.f);
  }
}

int max_optin_smem_bytes() {
  int dev = 0, bytes = 48 * 1024;
  if (cudaGetDevice(&dev) != cudaSuccess) return bytes;
  if (cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess)
    bytes = 48 * 1024;
  return bytes;
}

template <typename T, int D>
cudaError_t launch_split(const PagedAttentionArgs& a, cudaStream_t stream) {
  const int group = a.num_heads / a.num_kv_heads;
  const size_t smem = sizeof(float) * layout::attention_split_smem_floats(
                                          D, sizeof(T), group, a.plan.partition_size);
  cudaError_t err = cudaFuncSetAttribute(split_kernel<T, D>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(smem));
  if (err != cudaSuccess) return err;
  const dim3 grid(static_cast<unsigned>(a.num_tokens), static_cast<unsigned>(a.num_kv_heads),
                  static_cast<unsigned>(a.plan.num_partitions));
  split_kernel<T, D><<<grid, kThreads, smem, stream>>>(a);
  err = cudaGetLastError();
  if (err != cudaSuccess || a.plan.num_partitions == 1) return err;
  merge_kernel<T><<<dim3(static_cast<unsigned>(a.num_tokens), static_cast<unsigned>(a.num_heads)),
                    D, 0, stream>>>(a);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_typed(const PagedAttentionArgs& a_in, Impl impl, cudaStream_t stream) {
  PagedAttentionArgs a = a_in;
  // Sequences with several queries (prefill, chunked prefill, verification) go to the tensor-core
  // kernel when it serves this dtype and head size; single-query ones stay with the split kernel.
  a.multi_query_elsewhere = impl == Impl::kFast && a.num_tokens > a.num_seqs &&
                            a.prefill_tile_start != nullptr &&
                            paged_attention_prefill_supported(a.head_dim, sizeof(T));
  if (a.multi_query_elsewhere) {
    const cudaError_t err = launch_paged_attention_prefill(
        a, std::is_same_v<T, __half> ? DType::kF16 : DType::kBF16, stream);
    if (err != cudaSuccess) return err;
  }
  if (impl == Impl::kReference) {
    if (a.head_dim > 4 * kThreads) return cudaErrorInvalidValue;
    reference_kernel<T><<<dim3(static_cast<unsigned>(a.num_tokens), static_cast<unsigned>(a.num_heads)),
                          kThreads, 0, stream>>>(a);
    return cudaGetLastError();
  }
  switch (a.head_dim) {  // the adapter refuses other sizes with a clear error first
    case 64: return launch_split<T, 64>(a, stream);
    case 80: return launch_split<T, 80>(a, stream);
    case 96: return launch_split<T, 96>(a, stream);
    case 128: return launch_split<T, 128>(a, stream);
    case 256: return launch_split<T, 256>(a, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace

bool paged_attention_fast_supported(int head_dim, int elem_bytes, int group, int partition_size) {
  const int64_t bytes =
      4 * layout::attention_split_smem_floats(head_dim, elem_bytes, group, partition_size);
  return bytes <= max_optin_smem_bytes();
}

cudaError_t launch_paged_attention(const PagedAttentionArgs& a, DType dtype, Impl impl,
                                   cudaStream_t stream) {
  if (a.num_tokens == 0) return cudaSuccess;
  switch (dtype) {
    case DType::kF32: return launch_typed<float>(a, impl, stream);
    case DType::kBF16: return launch_typed<__nv_bfloat16>(a, impl, stream);
    case DType::kF16: return launch_typed<__half>(a, impl, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace pagedinfer::cuda
