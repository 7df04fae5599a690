// W4A16 / W8A16 GEMM kernels.
//  * fast kernel (sm_80+, bf16/fp16): CTA = 4 warps = 64 output columns x (16 * kMTiles) rows,
//    over the k slabs of its split (grid.y = split-K). Each warp owns two n8 tiles; per 128-k slab
//    a lane loads its B fragments with one (INT4) or two (INT8) 16-byte loads from the packed
//    layout (the next slab's are prefetched into registers while this one computes), dequantizes
//    them in registers (exact int -> float by the 2^23 trick, fma with the fp32 group scale/min,
//    one rounding to bf16/fp16) and issues mma.sync.m16n8k16. x rows are staged in shared memory
//    with a 16-byte row pad so the A-fragment loads hit 32 distinct banks.
//    Splits > 1 write fp32 partials, summed in a fixed order by reduce_kernel (deterministic).
//  * reference kernel: one thread per output, fp32 sum over k of x * round_T(w).
//  * dequantize kernel: one thread per weight.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <type_traits>

#include "kernels/cuda/dtype_utils.cuh"
#include "kernels/cuda/quant_gemm_kernels.cuh"

namespace pagedinfer::cuda {
namespace {

using layout::kGemmKChunk;
using layout::PackedGeom;

constexpr int kThreads = 128;

// Exact float of an unsigned integer < 2^23: OR it into the mantissa of 2^23, subtract 2^23.
__device__ __forceinline__ float uint_to_float_exact(uint32_t v) {
  return __uint_as_float(0x4B000000u | v) - 8388608.f;
}

template <int kBits>
__host__ __device__ __forceinline__ float packed_value(uint32_t word, int shift) {
  const uint32_t raw = (word >> shift) & ((1u << kBits) - 1);
  // INT8 stores q + 128.
#ifdef __CUDA_ARCH__
  return uint_to_float_exact(raw) - (kBits == 8 ? 128.f : 0.f);
#else
  return static_cast<float>(raw) - (kBits == 8 ? 128.f : 0.f);
#endif
}

// a[i] for a run-time i in 0..3 without dynamic register indexing (which would go to local memory).
__device__ __forceinline__ float pick4(const float (&a)[4], int i) {
  return i == 0 ? a[0] : i == 1 ? a[1] : i == 2 ? a[2] : a[3];
}

template <typename T> __device__ __forceinline__ uint32_t pack2(float lo, float hi);
template <> __device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);  // .x (low 16 bits) = lo
  return *reinterpret_cast<const uint32_t*>(&v);
}
template <> __device__ __forceinline__ uint32_t pack2<__half>(float lo, float hi) {
  const __half2 v = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

template <typename T> __device__ __forceinline__ void mma16816(float* c, const uint32_t* a, const uint32_t* b);
template <> __device__ __forceinline__ void mma16816<__nv_bfloat16>(float* c, const uint32_t* a, const uint32_t* b) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}
template <> __device__ __forceinline__ void mma16816<__half>(float* c, const uint32_t* a, const uint32_t* b) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}

template <int kBits>
__device__ __forceinline__ void load_slab(uint32_t (&w)[2][PackedGeom<kBits>::kWords],
                                          const int32_t* packed, int64_t nt0, int64_t chunks,
                                          int64_t c, int lane) {
  constexpr int kW = PackedGeom<kBits>::kWords;
#pragma unroll
  for (int u = 0; u < 2; ++u) {
    const uint4* p = reinterpret_cast<const uint4*>(packed + (((nt0 + u) * chunks + c) * 32 + lane) * kW);
#pragma unroll
    for (int v = 0; v < kW / 4; ++v) {
      const uint4 q = __ldg(p + v);
      w[u][4 * v] = q.x; w[u][4 * v + 1] = q.y; w[u][4 * v + 2] = q.z; w[u][4 * v + 3] = q.w;
    }
  }
}

template <typename T, int kBits, int kMTiles>
__global__ void __launch_bounds__(kThreads) gemm_fast_kernel(QuantGemmArgs a, int64_t m0) {
  constexpr int kW = PackedGeom<kBits>::kWords;
  constexpr int kRows = 16 * kMTiles;
  constexpr int kLd = kGemmKChunk + 8;  // row pitch 272 bytes: A-fragment loads are conflict-free
  __shared__ __align__(16) T xs[kRows * kLd];

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t chunks = a.k_pad / kGemmKChunk;
  const int64_t c_begin = static_cast<int64_t>(blockIdx.y) * a.plan.chunks_per_split;
  const int64_t c_end = c_begin + a.plan.chunks_per_split < chunks ? c_begin + a.plan.chunks_per_split : chunks;
  const int64_t nt0 = static_cast<int64_t>(blockIdx.x) * 8 + warp * 2;  // this warp's n8 tiles
  const int64_t n_lane[2] = {nt0 * 8 + layout::mma_b_n(lane), (nt0 + 1) * 8 + layout::mma_b_n(lane)};
  const int groups_per_slab = kGemmKChunk / a.group_size;  // 1, 2 or 4
  const T* x = static_cast<const T*>(a.x);

  float acc[kMTiles][2][4];
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
    for (int u = 0; u < 2; ++u)
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[mt][u][i] = 0.f;

  uint32_t wcur[2][kW], wnext[2][kW];
  if (c_begin < c_end) load_slab<kBits>(wcur, a.packed, nt0, chunks, c_begin, lane);

  for (int64_t c = c_begin; c < c_end; ++c) {
    if (c + 1 < c_end) load_slab<kBits>(wnext, a.packed, nt0, chunks, c + 1, lane);
    float sc[2][4], mn[2][4];
#pragma unroll
    for (int u = 0; u < 2; ++u)
#pragma unroll
      for (int gi = 0; gi < 4; ++gi) {
        sc[u][gi] = 0.f;
        mn[u][gi] = 0.f;
        if (gi < groups_per_slab && n_lane[u] < a.n) {
          const int64_t s = (c * groups_per_slab + gi) * a.n + n_lane[u];
          sc[u][gi] = __ldg(a.scales + s);
          mn[u][gi] = kBits == 4 ? __ldg(a.mins + s) : 0.f;
        }
      }

    __syncthreads();  // the previous slab's A fragments have been read
    for (int idx = threadIdx.x; idx < kRows * (kGemmKChunk / 8); idx += kThreads) {
      const int row = idx / (kGemmKChunk / 8), col = (idx % (kGemmKChunk / 8)) * 8;
      const int64_t gm = m0 + row, gk = c * kGemmKChunk + col;
      T* dst = xs + row * kLd + col;
      if (gm < a.m && a.x_vec16 && gk + 8 <= a.k) {
        *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(x + gm * a.k + gk);
      } else {
#pragma unroll
        for (int e = 0; e < 8; ++e)
          dst[e] = (gm < a.m && gk + e < a.k) ? x[gm * a.k + gk + e] : from_float<T>(0.f);
      }
    }
    __syncthreads();

#pragma unroll
    for (int kt = 0; kt < kGemmKChunk / 16; ++kt) {
      uint32_t af[kMTiles][4];
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
        for (int r = 0; r < 4; ++r)
          af[mt][r] = *reinterpret_cast<const uint32_t*>(
              xs + (mt * 16 + layout::mma_a_row(lane, r)) * kLd + kt * 16 + layout::mma_a_col(lane, r, 0));
      const int gi = kt * 16 / a.group_size;
#pragma unroll
      for (int u = 0; u < 2; ++u) {
        const float scale = pick4(sc[u], gi), min = pick4(mn[u], gi);
        float v[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const uint32_t word = wcur[u][layout::fragment_word<kBits>(kt)];
          v[i] = fmaf(packed_value<kBits>(word, layout::fragment_shift<kBits>(kt, i)), scale, min);
        }
        const uint32_t b[2] = {pack2<T>(v[0], v[1]), pack2<T>(v[2], v[3])};
#pragma unroll
        for (int mt = 0; mt < kMTiles; ++mt) mma16816<T>(acc[mt][u], af[mt], b);
      }
    }
#pragma unroll
    for (int u = 0; u < 2; ++u)
#pragma unroll
      for (int w = 0; w < kW; ++w) wcur[u][w] = wnext[u][w];
  }

  const T* bias = static_cast<const T*>(a.bias);
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
          const float b = bias != nullptr ? to_float<T>(bias[col]) : 0.f;
          static_cast<T*>(a.out)[row * a.n + col] = from_float<T>(acc[mt][u][i] + b);
        }
      }
}

template <typename T>
__global__ void reduce_kernel(QuantGemmArgs a) {
  const int64_t total = a.m * a.n;
  const T* bias = static_cast<const T*>(a.bias);
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float s = bias != nullptr ? to_float<T>(bias[idx % a.n]) : 0.f;
    for (int p = 0; p < a.plan.splits; ++p) s += a.partial[p * total + idx];
    static_cast<T*>(a.out)[idx] = from_float<T>(s);
  }
}

template <typename T, int kBits>
__device__ __forceinline__ float weight_at(const int32_t* packed, const float* scales,
                                           const float* mins, int64_t n, int64_t k, int64_t n_rows,
                                           int64_t k_pad, int group_size) {
  const layout::PackedPos pos = layout::packed_pos<kBits>(n, k, k_pad);
  const int64_t s = layout::scale_index(n, k, group_size, n_rows);
  const float w = packed_value<kBits>(static_cast<uint32_t>(packed[pos.word]), pos.shift) * scales[s] +
                  (kBits == 4 ? mins[s] : 0.f);
  return to_float<T>(from_float<T>(w));  // the value the tensor-core kernel multiplies by
}

template <typename T, int kBits>
__global__ void gemm_reference_kernel(QuantGemmArgs a) {
  const int64_t total = a.m * a.n;
  const T* x = static_cast<const T*>(a.x);
  const T* bias = static_cast<const T*>(a.bias);
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t m = idx / a.n, n = idx % a.n;
    float s = 0.f;
    for (int64_t k = 0; k < a.k; ++k)
      s += to_float<T>(x[m * a.k + k]) *
           weight_at<T, kBits>(a.packed, a.scales, a.mins, n, k, a.n, a.k_pad, a.group_size);
    if (bias != nullptr) s += to_float<T>(bias[n]);
    static_cast<T*>(a.out)[idx] = from_float<T>(s);
  }
}

template <typename T, int kBits>
__global__ void dequantize_kernel(const int32_t* packed, const float* scales, const float* mins,
                                  int64_t n_rows, int64_t k_cols, int64_t n_pad, int64_t k_pad,
                                  int group_size, T* out) {
  const int64_t total = n_rows * k_cols;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t n = idx / k_cols, k = idx % k_cols;
    out[idx] = from_float<T>(weight_at<T, kBits>(packed, scales, mins, n, k, n_rows, k_pad, group_size));
  }
}

unsigned grid_for(int64_t total, int threads) {
  const int64_t blocks = (total + threads - 1) / threads;
  return static_cast<unsigned>(blocks < 65536 ? (blocks > 0 ? blocks : 1) : 65536);
}

template <typename T, int kBits>
cudaError_t launch_fast(const QuantGemmArgs& a, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(a.n_pad / layout::kGemmNPad), static_cast<unsigned>(a.plan.splits));
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
cudaError_t launch_dequant_typed(const int32_t* packed, const float* scales, const float* mins,
                                 int bits, int64_t n, int64_t k, int64_t n_pad, int64_t k_pad,
                                 int group_size, void* out, cudaStream_t stream) {
  const unsigned grid = grid_for(n * k, 256);
  if (bits == 4)
    dequantize_kernel<T, 4><<<grid, 256, 0, stream>>>(packed, scales, mins, n, k, n_pad, k_pad, group_size, static_cast<T*>(out));
  else
    dequantize_kernel<T, 8><<<grid, 256, 0, stream>>>(packed, scales, mins, n, k, n_pad, k_pad, group_size, static_cast<T*>(out));
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_quant_gemm(const QuantGemmArgs& a, int bits, DType dtype, Impl impl,
                              cudaStream_t stream) {
  if (a.m == 0 || a.n == 0) return cudaSuccess;
  if (a.group_size != 32 && a.group_size != 64 && a.group_size != 128) return cudaErrorInvalidValue;
  return bits == 4 ? launch_bits<4>(a, dtype, impl, stream) : launch_bits<8>(a, dtype, impl, stream);
}

cudaError_t launch_dequantize(const int32_t* packed, const float* scales, const float* mins,
                              int bits, int64_t n, int64_t k, int64_t n_pad, int64_t k_pad,
                              int group_size, void* out, DType dtype, cudaStream_t stream) {
  if (n == 0 || k == 0) return cudaSuccess;
  switch (dtype) {
    case DType::kF32: return launch_dequant_typed<float>(packed, scales, mins, bits, n, k, n_pad, k_pad, group_size, out, stream);
    case DType::kBF16: return launch_dequant_typed<__nv_bfloat16>(packed, scales, mins, bits, n, k, n_pad, k_pad, group_size, out, stream);
    case DType::kF16: return launch_dequant_typed<__half>(packed, scales, mins, bits, n, k, n_pad, k_pad, group_size, out, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace pagedinfer::cuda
