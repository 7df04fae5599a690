// Weight-only quantized GEMM on CUDA (W4A16 / W8A16): out[M, N] = x[M, K] @ W[N, K]^T (+ bias),
// W dequantized from the packed layout of layout.h (python/pagedinfer/quant_cuda.py writes it).
// Raw pointers + sizes + stream in, cudaError_t out.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/attention_kernels.cuh"  // DType, Impl
#include "kernels/cuda/layout.h"

namespace pagedinfer::cuda {

struct QuantGemmArgs {
  const void* x;          // [M, K] contiguous, dtype T
  const int32_t* packed;  // [N_pad / 8, K_pad / 128, 32, words] (layout.h)
  const float* scales;    // [K_pad / G, N]
  const float* mins;      // [K_pad / G, N]; INT4 only (nullptr for INT8)
  const void* bias;       // [N] dtype T, or nullptr
  void* out;              // [M, N] contiguous, dtype T
  float* partial;         // [splits, M, N] fp32 when plan.splits > 1
  int64_t m, n, k, n_pad, k_pad;
  int group_size;
  bool x_vec16;  // x is 16-byte aligned and K % 8 == 0 (vector loads of x rows)
  layout::GemmPlan plan;
};

// The fast kernel serves bf16/fp16 activations; rows are handled in slices of up to 64.
constexpr int64_t kGemmFastMaxM = 64;

// kFast: tensor-core kernel (bf16 / fp16 only). kReference: one thread per output, any dtype.
cudaError_t launch_quant_gemm(const QuantGemmArgs& args, int bits, DType dtype, Impl impl,
                              cudaStream_t stream);

// W [N, K] (dtype) from the packed form: exactly the values the kernels multiply by.
cudaError_t launch_dequantize(const int32_t* packed, const float* scales, const float* mins,
                              int bits, int64_t n, int64_t k, int64_t n_pad, int64_t k_pad,
                              int group_size, void* out, DType dtype, cudaStream_t stream);

}  // namespace pagedinfer::cuda
