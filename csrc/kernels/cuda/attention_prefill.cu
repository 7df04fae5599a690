// Tensor-core paged attention for sequences with several queries (prefill, chunked prefill,
// speculative verification), FlashAttention-2 style, bf16 / fp16 with fp32 accumulation (sm_80+).
// CTA = 4 warps = a tile of 64 queries of one sequence and one query head; warp w owns rows
// 16w .. 16w + 15. Keys go by in tiles of 64 (from the first row's window start to the last row's
// position), gathered through the block table into shared memory (zeros for keys past the end or
// behind a bad block id, which are also masked). Per tile: S = Q K^T with mma.sync.m16n8k16, scale
// and causal / sliding-window mask in fp32, online softmax on the accumulator fragments (row max
// and sum reduced over the 4 lanes of a quad), then O += P V with P re-packed from the S
// accumulators straight into A fragments. Shared memory rows are padded by 16 bytes so fragment
// loads are bank-conflict free. Grid = (a host-side bound on the tiles, Hq); tile_map_kernel first
// writes each sequence's first tile on the GPU, and CTAs past the last tile exit at once.
#include <cfloat>

#include "kernels/cuda/attention_device.cuh"
#include "kernels/cuda/attention_kernels.cuh"
#include "kernels/cuda/dtype_utils.cuh"
#include "kernels/cuda/layout.h"
#include "kernels/cuda/mma.cuh"

namespace pagedinfer::cuda {
namespace {

constexpr int kBM = layout::kPrefillTileRows;  // queries per CTA
constexpr int kBN = 64;  // keys per tile
constexpr int kThreads = 128;

template <int D> constexpr int pitch() { return D + 8; }  // smem row pitch in elements

template <int D> constexpr size_t smem_bytes(int elem) {
  return static_cast<size_t>(kBM + 2 * kBN) * pitch<D>() * elem + kBN * sizeof(int);
}

__device__ __forceinline__ uint32_t ld32(const void* p) { return *reinterpret_cast<const uint32_t*>(p); }

template <typename T>
__device__ __forceinline__ uint32_t pack_halves(T lo, T hi) {
  uint16_t l, h;
  memcpy(&l, &lo, 2);
  memcpy(&h, &hi, 2);
  return static_cast<uint32_t>(l) | (static_cast<uint32_t>(h) << 16);
}

// tile_start[i] = first prefill tile of sequence i (exclusive prefix sum of prefill_tiles_of over
// the sequences), tile_start[B] = total. One CTA of 1024 threads: each sums a run of sequences,
// then a Hillis-Steele scan over the runs in shared memory.
__global__ void __launch_bounds__(1024) tile_map_kernel(const int32_t* qsl, int num_seqs, int32_t* tile_start) {
  __shared__ int32_t part[1024];
  const int tid = threadIdx.x, per = (num_seqs + 1023) / 1024;
  const int s0 = min(num_seqs, tid * per), s1 = min(num_seqs, s0 + per);
  int32_t sum = 0;
  for (int s = s0; s < s1; ++s) sum += layout::prefill_tiles_of(qsl[s + 1] - qsl[s]);
  part[tid] = sum;
  __syncthreads();
  for (int off = 1; off < 1024; off *= 2) {
    const int32_t v = tid >= off ? part[tid - off] : 0;
    __syncthreads();
    part[tid] += v;
    __syncthreads();
  }
  int32_t run = part[tid] - sum;
  for (int s = s0; s < s1; ++s) {
    tile_start[s] = run;
    run += layout::prefill_tiles_of(qsl[s + 1] - qsl[s]);
  }
  if (tid == 1023) tile_start[num_seqs] = part[1023];
}

template <typename T, int D>
__global__ void __launch_bounds__(kThreads) prefill_kernel(PagedAttentionArgs a) {
  constexpr int kLd = pitch<D>();
  constexpr int kChunks = D / 8;  // 16-byte chunks per row
  const int64_t x = blockIdx.x;
  if (x >= a.prefill_tile_start[a.num_seqs]) return;  // the grid is an upper bound
  const int i = layout::find_sequence(a.prefill_tile_start, a.num_seqs, x);
  const int tile = static_cast<int>(x - a.prefill_tile_start[i]);
  const int h = blockIdx.y;
  const int64_t q0 = a.query_start_loc[i];
  const int64_t q_len = a.query_start_loc[i + 1] - q0;
  if (q_len <= 1 || static_cast<int64_t>(tile) * kBM >= q_len) return;  // q_len 1: the split kernel's
  const int rows = static_cast<int>(q_len - static_cast<int64_t>(tile) * kBM < kBM ? q_len - static_cast<int64_t>(tile) * kBM : kBM);
  const int64_t first_token = q0 + static_cast<int64_t>(tile) * kBM;
  const int64_t pos0 = a.seq_lens[i] - q_len + static_cast<int64_t>(tile) * kBM;  // row 0's position
  const int kvh = h / (a.num_heads / a.num_kv_heads);
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  T* out = static_cast<T*>(a.out);
  if (pos0 < 0) {  // invalid metadata (seq_len < q_len), refused on the host outside graph capture
    for (int idx = tid; idx < rows * D; idx += kThreads)
      out[(first_token + idx / D) * a.out_stride_token + h * a.out_stride_head + idx % D] = from_float<T>(0.f);
    return;
  }
  const int64_t key_end = pos0 + rows;  // the last row's position + 1
  int64_t key_begin = 0;
  if (a.sliding_window > 0 && pos0 - a.sliding_window + 1 > 0) key_begin = pos0 - a.sliding_window + 1;

  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* qs = reinterpret_cast<T*>(smem_raw);  // [kBM, kLd]
  T* ks = qs + kBM * kLd;                  // [kBN, kLd]
  T* vs = ks + kBN * kLd;                  // [kBN, kLd]
  int* key_ok = reinterpret_cast<int*>(vs + kBN * kLd);  // [kBN]

  const T* query = static_cast<const T*>(a.query);
  for (int idx = tid; idx < kBM * kChunks; idx += kThreads) {
    const int r = idx / kChunks, c = idx % kChunks;
    uint4 v = make_uint4(0, 0, 0, 0);
    if (r < rows)
      v = *reinterpret_cast<const uint4*>(query + (first_token + r) * a.query_stride_token +
                                          h * a.query_stride_head + c * 8);
    *reinterpret_cast<uint4*>(qs + r * kLd + c * 8) = v;
  }

  const int g = lane / 4;
  int64_t row_pos[2];
  bool row_ok[2];
  for (int hh = 0; hh < 2; ++hh) {
    const int r = warp * 16 + g + 8 * hh;
    row_pos[hh] = pos0 + r;
    row_ok[hh] = r < rows;
  }
  const bool warp_active = warp * 16 < rows;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  float o[D / 8][4];
#pragma unroll
  for (int nt = 0; nt < D / 8; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) o[nt][e] = 0.f;

  const int32_t* table = a.block_tables + static_cast<int64_t>(i) * a.max_blocks;
  const T* kcache = static_cast<const T*>(a.key_cache);
  const T* vcache = static_cast<const T*>(a.value_cache);

  for (int64_t kt0 = key_begin; kt0 < key_end; kt0 += kBN) {
    __syncthreads();  // the previous tile's K/V have been consumed (and Q is stored, first time)
    for (int idx = tid; idx < kBN * kChunks; idx += kThreads) {
      const int r = idx / kChunks, c = idx % kChunks;
      const int64_t p = kt0 + r;
      const int64_t blk = p < key_end ? block_of(table, p, a.block_size, a.num_blocks) : -1;
      uint4 kv = make_uint4(0, 0, 0, 0), vv = make_uint4(0, 0, 0, 0);
      if (blk >= 0) {
        const int64_t off = layout::kv_offset(blk, p, a.block_size, a.num_kv_heads, D, kvh) + c * 8;
        kv = *reinterpret_cast<const uint4*>(kcache + off);
        vv = *reinterpret_cast<const uint4*>(vcache + off);
      }
      *reinterpret_cast<uint4*>(ks + r * kLd + c * 8) = kv;
      *reinterpret_cast<uint4*>(vs + r * kLd + c * 8) = vv;
      if (c == 0) key_ok[r] = blk >= 0;
    }
    __syncthreads();
    if (!warp_active) continue;

    float s[kBN / 8][4];
#pragma unroll
    for (int nt = 0; nt < kBN / 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[nt][e] = 0.f;
#pragma unroll
    for (int kd = 0; kd < D / 16; ++kd) {
      uint32_t af[4];
#pragma unroll
      for (int r = 0; r < 4; ++r)
        af[r] = ld32(qs + (warp * 16 + layout::mma_a_row(lane, r)) * kLd + kd * 16 + layout::mma_a_col(lane, r, 0));
#pragma unroll
      for (int nt = 0; nt < kBN / 8; ++nt) {
        const T* krow = ks + (nt * 8 + layout::mma_b_n(lane)) * kLd + kd * 16;
        const uint32_t bf[2] = {ld32(krow + layout::mma_b_k(lane, 0, 0)), ld32(krow + layout::mma_b_k(lane, 1, 0))};
        mma16816<T>(s[nt], af, bf);
      }
    }

    // Scale and mask; row maxima over the quad (lanes 4g .. 4g + 3 hold one row's 64 columns).
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nt = 0; nt < kBN / 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int hh = e >> 1, col = nt * 8 + layout::mma_c_col(lane, e);
        const int64_t p = kt0 + col;
        const int64_t lo = a.sliding_window > 0 ? row_pos[hh] - a.sliding_window + 1 : 0;
        const bool ok = row_ok[hh] && key_ok[col] && p <= row_pos[hh] && p >= lo;
        s[nt][e] = ok ? s[nt][e] * a.scale : -INFINITY;
        mx[hh] = fmaxf(mx[hh], s[nt][e]);
      }
    float corr[2], m_use[2], sum[2] = {0.f, 0.f};
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      mx[hh] = fmaxf(mx[hh], __shfl_xor_sync(0xffffffffu, mx[hh], 1));
      mx[hh] = fmaxf(mx[hh], __shfl_xor_sync(0xffffffffu, mx[hh], 2));
      const float m_new = fmaxf(m[hh], mx[hh]);
      m_use[hh] = m_new == -INFINITY ? 0.f : m_new;  // a row with nothing visible yet stays at 0
      corr[hh] = __expf(m[hh] - m_use[hh]);
      m[hh] = m_new;
    }
#pragma unroll
    for (int nt = 0; nt < kBN / 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        s[nt][e] = __expf(s[nt][e] - m_use[e >> 1]);
        sum[e >> 1] += s[nt][e];
      }
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      sum[hh] += __shfl_xor_sync(0xffffffffu, sum[hh], 1);
      sum[hh] += __shfl_xor_sync(0xffffffffu, sum[hh], 2);
      l[hh] = l[hh] * corr[hh] + sum[hh];
    }
#pragma unroll
    for (int nt = 0; nt < D / 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) o[nt][e] *= corr[e >> 1];

    // O += P V: the S accumulators of n tiles 2kk, 2kk + 1 are the A fragment of key step kk.
#pragma unroll
    for (int kk = 0; kk < kBN / 16; ++kk) {
      uint32_t pf[4];
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const float* src = s[2 * kk + layout::p_from_s_tile(r)];
        pf[r] = pack2<T>(src[layout::p_from_s_elem(r, 0)], src[layout::p_from_s_elem(r, 1)]);
      }
#pragma unroll
      for (int nt = 0; nt < D / 8; ++nt) {
        uint32_t bf[2];
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const T* col = vs + nt * 8 + layout::mma_b_n(lane);
          bf[r] = pack_halves(col[(kk * 16 + layout::mma_b_k(lane, r, 0)) * kLd],
                              col[(kk * 16 + layout::mma_b_k(lane, r, 1)) * kLd]);
        }
        mma16816<T>(o[nt], pf, bf);
      }
    }
  }

  if (!warp_active) return;
#pragma unroll
  for (int nt = 0; nt < D / 8; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int hh = e >> 1;
      if (!row_ok[hh]) continue;
      const int r = warp * 16 + layout::mma_c_row(lane, e);
      const int d = nt * 8 + layout::mma_c_col(lane, e);
      out[(first_token + r) * a.out_stride_token + h * a.out_stride_head + d] =
          from_float<T>(l[hh] > 0.f ? o[nt][e] / l[hh] : 0.f);
    }
}

template <typename T, int D>
cudaError_t launch_d(const PagedAttentionArgs& a, cudaStream_t stream) {
  const size_t smem = smem_bytes<D>(sizeof(T));
  cudaError_t err = cudaFuncSetAttribute(prefill_kernel<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(smem));
  if (err != cudaSuccess) return err;
  tile_map_kernel<<<1, 1024, 0, stream>>>(a.query_start_loc, a.num_seqs, a.prefill_tile_start);
  err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  const dim3 grid(static_cast<unsigned>(layout::prefill_tile_bound(a.num_tokens, a.num_seqs)),
                  static_cast<unsigned>(a.num_heads));
  prefill_kernel<T, D><<<grid, kThreads, smem, stream>>>(a);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_t(const PagedAttentionArgs& a, cudaStream_t stream) {
  switch (a.head_dim) {
    case 64: return launch_d<T, 64>(a, stream);
    case 80: return launch_d<T, 80>(a, stream);
    case 96: return launch_d<T, 96>(a, stream);
    case 128: return launch_d<T, 128>(a, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace

bool paged_attention_prefill_supported(int head_dim, int elem_bytes) {
  if (elem_bytes != 2) return false;  // fp32 has no m16n8k16 mma; the split kernel serves it
  if (head_dim != 64 && head_dim != 80 && head_dim != 96 && head_dim != 128) return false;
  int dev = 0, major = 0;
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess)
    return false;
  return major >= 8;
}

cudaError_t launch_paged_attention_prefill(const PagedAttentionArgs& a, DType dtype,
                                           cudaStream_t stream) {
  if (a.num_tokens == 0) return cudaSuccess;
  if (dtype == DType::kF16) return launch_t<__half>(a, stream);
  if (dtype == DType::kBF16) return launch_t<__nv_bfloat16>(a, stream);
  return cudaErrorInvalidValue;
}

}  // namespace pagedinfer::cuda
