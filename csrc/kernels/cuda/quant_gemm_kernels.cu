// W4A16 / W8A16 GEMM kernels on quant.py's formats (layout.h).
//  * fast kernel (sm_80+, bf16/fp16): CTA = 4 warps = 64 output columns x (16 * kMTiles) rows,
//    over the 128-k slabs of its split (grid.y = split-K). Each warp owns two n8 tiles; per slab a
//    lane loads its B fragments with one (INT4) or two (INT8) 16-byte loads from its own weight
//    row (the next slab's are prefetched into registers while this one computes), dequantizes in
//    registers (exact int -> float by the 2^23 trick, fma with the group scale/min in fp32, one
//    rounding to bf16/fp16) and issues mma.sync.m16n8k16. x is staged in shared memory in the
//    slab's virtual k order, rows padded by 16 bytes so A-fragment loads hit 32 distinct banks.
//    Splits > 1 write fp32 partials that reduce_kernel sums in a fixed order (deterministic).
//  * reference kernel: one thread per output, fp32 sum over k of x * round_T(w).
//  * dequantize kernel: one thread per weight.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstring>
#include <type_traits>

#include "kernels/cuda/dtype_utils.cuh"
#include "kernels/cuda/mma.cuh"
#include "kernels/cuda/quant_gemm_kernels.cuh"

namespace pagedinfer::cuda {
namespace {

using layout::kGemmKChunk;
using layout::SlabGeom;

constexpr int kThreads = 128;

// Exact float of an unsigned integer < 2^23: OR it into the mantissa of 2^23, subtract 2^23.
__device__ __forceinline__ float uint_to_float_exact(uint32_t v) {
  return __uint_as_float(0x4B000000u | v) - 8388608.f;
}

// The integer at `shift` of word: INT4 q in 0..15; INT8 the int8 byte (two's complement).
template <int kBits>
__device__ __forceinline__ float quant_value(uint32_t word, int shift) {
  if (kBits == 4) return uint_to_float_exact((word >> shift) & 0xFu);
  return uint_to_float_exact(((word >> shift) & 0xFFu) ^ 0x80u) - 128.f;  // offset binary
}

__device__ __forceinline__ float half_bits_to_float(uint16_t h) {
  return __half2float(__ushort_as_half(h));
}

// A lane's weight words of slab c for its two n8 tiles; zeros past the row (or past N).
template <int kBits>
__device__ __forceinline__ void load_slab(uint32_t (&w)[2][SlabGeom<kBits>::kWords],
                                          const QuantGemmArgs& a, const int64_t (&n_lane)[2],
                                          int64_t row_bytes, int64_t row_k, int64_t c, int t) {
  constexpr int kW = SlabGeom<kBits>::kWords;
  const bool inside = c * kGemmKChunk + layout::lane_first_k<kBits>(t) < row_k;
#pragma unroll
  for (int u = 0; u < 2; ++u) {
    if (inside && n_lane[u] < a.n) {
      const uint4* p = reinterpret_cast<const uint4*>(a.qweight + n_lane[u] * row_bytes +
                                                      layout::lane_row_byte<kBits>(c, t));
#pragma unroll
      for (int v = 0; v < kW / 4; ++v) {
        const uint4 q = __ldg(p + v);
        w[u][4 * v] = q.x; w[u][4 * v + 1] = q.y; w[u][4 * v + 2] = q.z; w[u][4 * v + 3] = q.w;
      }
    } else {
#pragma unroll
      for (int v = 0; v < kW; ++v) w[u][v] = 0u;
    }
  }
}

template <typename T, int kBits, int kMTiles>
__global__ void __launch_bounds__(kThreads) gemm_fast_kernel(QuantGemmArgs a, int64_t m0) {
  constexpr int kW = SlabGeom<kBits>::kWords;
  constexpr int kSlots = kBits == 4 ? 2 : 1;
  constexpr int kRows = 16 * kMTiles;
  constexpr int kLd = kGemmKChunk + 8;  // row pitch 272 bytes: A-fragment loads are conflict-free
  __shared__ __align__(16) T xs[kRows * kLd];

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, t = lane % 4;
  const int64_t chunks = layout::ceil_div(a.k, kGemmKChunk);
  const int64_t c_begin = static_cast<int64_t>(blockIdx.y) * a.plan.chunks_per_split;
  const int64_t c_end = c_begin + a.plan.chunks_per_split < chunks ? c_begin + a.plan.chunks_per_split : chunks;
  const int64_t nt0 = static_cast<int64_t>(blockIdx.x) * 8 + warp * 2;  // this warp's n8 tiles
  const int64_t n_lane[2] = {nt0 * 8 + layout::mma_b_n(lane), (nt0 + 1) * 8 + layout::mma_b_n(lane)};
  const int64_t row_bytes = kBits == 4 ? layout::ceil_div(a.k, 64) * 32 : a.k;
  const int64_t row_k = kBits == 4 ? layout::ceil_div(a.k, 64) * 64 : a.k;  // k the row stores
  const int64_t groups = a.k / a.group_size;
  const T* x = static_cast<const T*>(a.x);

  float acc[kMTiles][2][4];
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
    for (int u = 0; u < 2; ++u)
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[mt][u][i] = 0.f;

  uint32_t wcur[2][kW], wnext[2][kW];
  if (c_begin < c_end) load_slab<kBits>(wcur, a, n_lane, row_bytes, row_k, c_begin, t);

  for (int64_t c = c_begin; c < c_end; ++c) {
    if (c + 1 < c_end) load_slab<kBits>(wnext, a, n_lane, row_bytes, row_k, c + 1, t);
    float sc[2][kSlots], mn[2][kSlots];
#pragma unroll
    for (int u = 0; u < 2; ++u)
#pragma unroll
      for (int s = 0; s < kSlots; ++s) {
        const int64_t k0 = c * kGemmKChunk + layout::scale_slot_k<kBits>(t, s);
        sc[u][s] = 0.f;
        mn[u][s] = 0.f;
        if (n_lane[u] < a.n && k0 < a.k) {
          const int64_t idx = n_lane[u] * groups + k0 / a.group_size;
          sc[u][s] = half_bits_to_float(__ldg(a.scales + idx));
          if (kBits == 4) mn[u][s] = half_bits_to_float(__ldg(a.mins + idx));
        }
      }

    __syncthreads();  // every warp has read the previous slab's A fragments
    // Stage x[m0 .. m0 + kRows, slab] in virtual k order: 8 physical k per step, stored as pairs.
    for (int idx = threadIdx.x; idx < kRows * (kGemmKChunk / 8); idx += kThreads) {
      const int row = idx / (kGemmKChunk / 8), p0 = (idx % (kGemmKChunk / 8)) * 8;
      const int64_t gm = m0 + row, gk = c * kGemmKChunk + p0;
      T vals[8];
      if (gm < a.m && a.x_vec16 && gk + 8 <= a.k) {
        const uint4 raw = *reinterpret_cast<const uint4*>(x + gm * a.k + gk);
        memcpy(vals, &raw, 16);
      } else {
#pragma unroll
        for (int e = 0; e < 8; ++e)
          vals[e] = (gm < a.m && gk + e < a.k) ? x[gm * a.k + gk + e] : from_float<T>(0.f);
      }
#pragma unroll
      for (int e2 = 0; e2 < 4; ++e2) {
        uint32_t pair;
        memcpy(&pair, &vals[2 * e2], 4);
        *reinterpret_cast<uint32_t*>(xs + row * kLd + layout::slab_virtual_k<kBits>(p0 + 2 * e2)) = pair;
      }
    }
    __syncthreads();

#pragma unroll
    for (int v = 0; v < kGemmKChunk / 16; ++v) {
      uint32_t af[kMTiles][4];
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
        for (int r = 0; r < 4; ++r)
          af[mt][r] = *reinterpret_cast<const uint32_t*>(
              xs + (mt * 16 + layout::mma_a_row(lane, r)) * kLd + v * 16 + layout::mma_a_col(lane, r, 0));
#pragma unroll
      for (int u = 0; u < 2; ++u) {
        const float scale = sc[u][layout::scale_slot<kBits>(v)];
        const float min = mn[u][layout::scale_slot<kBits>(v)];
        const uint32_t word = wcur[u][layout::fragment_word<kBits>(v)];
        float w[4];
#pragma unroll
        for (int i = 0; i < 4; ++i)  // i = 2h + e: b[h] holds (e = 0 low, e = 1 high)
          w[i] = fmaf(quant_value<kBits>(word, layout::fragment_shift<kBits>(v, i)), scale, min);
        const uint32_t b[2] = {pack2<T>(w[0], w[1]), pack2<T>(w[2], w[3])};
#pragma unroll
        for (int mt = 0; mt < kMTiles; ++mt) mma16816<T>(acc[mt][u], af[mt], b);
      }
    }
#pragma unroll
    for (int u = 0; u < 2; ++u)
#pragma unroll
      for (int i = 0; i < kW; ++i) wcur[u][i] = wnext[u][i];
  }

#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
    for (int u = 0; u < 2; ++u)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int64_t row = m0 + mt * 16 + layout::mma_c_row(lane, i);
        const int64_t col = (nt0 + u) * 8 + layout::mma_c_col(lane, i);
        if (row >= a.m || col >= a.n) continue;
        if (a.plan.splits > 1) {
          a.partial[(static_cast<int64_t>(blockIdx.y) * a.m + row) * a.n + col] = acc[mt][u][i];
        } else {
          const float b = a.bias != nullptr ? a.bias[col] : 0.f;
          static_cast<T*>(a.out)[row * a.n + col] = from_float<T>(acc[mt][u][i] + b);
        }
      }
}

template <typename T>
__global__ void reduce_kernel(QuantGemmArgs a) {
  const int64_t total = a.m * a.n;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float s = a.bias != nullptr ? a.bias[idx % a.n] : 0.f;
    for (int p = 0; p < a.plan.splits; ++p) s += a.partial[p * total + idx];
    static_cast<T*>(a.out)[idx] = from_float<T>(s);
  }
}

// W[n, k] in fp32, from the CPU format (quant.py): q * scale + min with one rounding.
template <int kBits>
__device__ __forceinline__ float weight_at(const uint8_t* qweight, const uint16_t* scales,
                                           const uint16_t* mins, int64_t n, int64_t k,
                                           int64_t k_cols, int group_size) {
  const uint32_t byte = qweight[layout::weight_byte<kBits>(n, k, k_cols)];
  const float q = quant_value<kBits>(byte, layout::weight_shift<kBits>(k));
  const int64_t s = n * (k_cols / group_size) + k / group_size;
  return fmaf(q, half_bits_to_float(scales[s]), kBits == 4 ? half_bits_to_float(mins[s]) : 0.f);
}

template <typename T, int kBits>
__global__ void gemm_reference_kernel(QuantGemmArgs a) {
  const int64_t total = a.m * a.n;
  const T* x = static_cast<const T*>(a.x);
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t m = idx / a.n, n = idx % a.n;
    float s = 0.f;
    for (int64_t k = 0; k < a.k; ++k) {
      // The value the tensor-core kernel multiplies by: w rounded to T.
      const float w = to_float<T>(from_float<T>(weight_at<kBits>(a.qweight, a.scales, a.mins, n, k, a.k, a.group_size)));
      s += to_float<T>(x[m * a.k + k]) * w;
    }
    if (a.bias != nullptr) s += a.bias[n];
    static_cast<T*>(a.out)[idx] = from_float<T>(s);
  }
}

template <typename T, int kBits>
__global__ void dequantize_kernel(const uint8_t* qweight, const uint16_t* scales,
                                  const uint16_t* mins, int64_t n_rows, int64_t k_cols,
                                  int group_size, T* out) {
  const int64_t total = n_rows * k_cols;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[idx] = from_float<T>(weight_at<kBits>(qweight, scales, mins, idx / k_cols, idx % k_cols, k_cols, group_size));
  }
}

unsigned grid_for(int64_t total, int threads) {
  const int64_t blocks = (total + threads - 1) / threads;
  return static_cast<unsigned>(blocks < 65536 ? (blocks > 0 ? blocks : 1) : 65536);
}

template <typename T, int kBits>
cudaError_t launch_fast(const QuantGemmArgs& a, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(layout::ceil_div(a.n, layout::kGemmNPerCta)),
                  static_cast<unsigned>(a.plan.splits));
  for (int64_t m0 = 0; m0 < a.m; m0 += kGemmFastMaxM) {
    const int64_t rows = a.m - m0 < kGemmFastMaxM ? a.m - m0 : kGemmFastMaxM;
    switch ((rows + 15) / 16) {
      case 1: gemm_fast_kernel<T, kBits, 1><<<grid, kThreads, 0, stream>>>(a, m0); break;
      case 2: gemm_fast_kernel<T, kBits, 2><<<grid, kThreads, 0, stream>>>(a, m0); break;
      case 3: gemm_fast_kernel<T, kBits, 3><<<grid, kThreads, 0, stream>>>(a, m0); break;
      default: gemm_fast_kernel<T, kBits, 4><<<grid, kThreads, 0, stream>>>(a, m0); break;
    }
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  if (a.plan.splits > 1) {
    reduce_kernel<T><<<grid_for(a.m * a.n, 256), 256, 0, stream>>>(a);
    return cudaGetLastError();
  }
  return cudaSuccess;
}

template <typename T, int kBits>
cudaError_t launch_typed(const QuantGemmArgs& a, Impl impl, cudaStream_t stream) {
  if (impl == Impl::kReference) {
    gemm_reference_kernel<T, kBits><<<grid_for(a.m * a.n, 128), 128, 0, stream>>>(a);
    return cudaGetLastError();
  }
  if constexpr (std::is_same_v<T, float>) {
    return cudaErrorInvalidValue;  // tensor cores take bf16/fp16; the adapter routes fp32 elsewhere
  } else {
    return launch_fast<T, kBits>(a, stream);
  }
}

template <int kBits>
cudaError_t launch_bits(const QuantGemmArgs& a, DType dtype, Impl impl, cudaStream_t stream) {
  switch (dtype) {
    case DType::kF32: return launch_typed<float, kBits>(a, impl, stream);
    case DType::kBF16: return launch_typed<__nv_bfloat16, kBits>(a, impl, stream);
    case DType::kF16: return launch_typed<__half, kBits>(a, impl, stream);
  }
  return cudaErrorInvalidValue;
}

template <typename T>
cudaError_t launch_dequant_typed(const uint8_t* qweight, const uint16_t* scales, const uint16_t* mins,
                                 int bits, int64_t n, int64_t k, int group_size, void* out,
                                 cudaStream_t stream) {
  const unsigned grid = grid_for(n * k, 256);
  if (bits == 4)
    dequantize_kernel<T, 4><<<grid, 256, 0, stream>>>(qweight, scales, mins, n, k, group_size, static_cast<T*>(out));
  else
    dequantize_kernel<T, 8><<<grid, 256, 0, stream>>>(qweight, scales, mins, n, k, group_size, static_cast<T*>(out));
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_quant_gemm(const QuantGemmArgs& a, int bits, DType dtype, Impl impl,
                              cudaStream_t stream) {
  if (a.m == 0 || a.n == 0) return cudaSuccess;
  if (a.group_size != 32 && a.group_size != 64 && a.group_size != 128) return cudaErrorInvalidValue;
  return bits == 4 ? launch_bits<4>(a, dtype, impl, stream) : launch_bits<8>(a, dtype, impl, stream);
}

cudaError_t launch_dequantize(const uint8_t* qweight, const uint16_t* scales, const uint16_t* mins,
                              int bits, int64_t n, int64_t k, int group_size, void* out, DType dtype,
                              cudaStream_t stream) {
  if (n == 0 || k == 0) return cudaSuccess;
  switch (dtype) {
    case DType::kF32: return launch_dequant_typed<float>(qweight, scales, mins, bits, n, k, group_size, out, stream);
    case DType::kBF16: return launch_dequant_typed<__nv_bfloat16>(qweight, scales, mins, bits, n, k, group_size, out, stream);
    case DType::kF16: return launch_dequant_typed<__half>(qweight, scales, mins, bits, n, k, group_size, out, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace pagedinfer::cuda
