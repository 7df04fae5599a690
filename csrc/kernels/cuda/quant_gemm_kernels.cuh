// Weight-only quantized GEMM on CUDA (W4A16 / W8A16): out[M, N] = x[M, K] @ W[N, K]^T (+ bias),
// W in the formats of python/pagedinfer/quant.py (layout.h states them and the kernel's walk).
// Raw pointers + sizes + stream in, cudaError_t out.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/attention_kernels.cuh"  // DType, Impl
#include "kernels/cuda/layout.h"

namespace pagedinfer::cuda {

struct QuantGemmArgs {
  const void* x;           // [M, K] contiguous, dtype T
  const uint8_t* qweight;  // INT4 [N, ceil(K/64)*32] / INT8 [N, K]; 16-byte aligned
  const uint16_t* scales;  // fp16 bits [N, K/G]
  const uint16_t* mins;    // fp16 bits [N, K/G]; INT4 only (nullptr for INT8)
  const float* bias;       // [N] fp32, or nullptr
  void* out;               // [M, N] contiguous, dtype T
  float* partial;          // [splits, M, N] fp32 when plan.splits > 1
  int64_t m, n, k;
  int group_size;
  bool x_vec16;  // x is 16-byte aligned and K % 8 == 0 (vector loads of x rows)
  layout::GemmPlan plan;
};

// The fast kernel serves bf16/fp16 activations; it runs rows in slices of up to 64.
constexpr int64_t kGemmFastMaxM = 64;

// kFast: tensor-core kernel (bf16 / fp16, sm_80+). kReference: one thread per output, any dtype.
cudaError_t launch_quant_gemm(const QuantGemmArgs& args, int bits, DType dtype, Impl impl,
                              cudaStream_t stream);

// W [N, K] in dtype: q * scale + min computed in fp32 (as quant.py's dequantize), then rounded.
cudaError_t launch_dequantize(const uint8_t* qweight, const uint16_t* scales, const uint16_t* mins,
                              int bits, int64_t n, int64_t k, int group_size, void* out, DType dtype,
                              cudaStream_t stream);

}  // namespace pagedinfer::cuda
