// CPU implementations of int4_gemm_cuda / int8_gemm_cuda / dequantize_*_cuda: decode the CUDA
// packed layout with layout.h's packed_pos / scale_index (the functions the GPU reference and
// dequantize kernels use), round each weight to the activation dtype as the tensor-core kernel
// does, then multiply in fp32. Slow and simple: the format's executable specification.
#include "kernels/cuda/layout.h"
#include "ops/checks.h"
#include "ops/cuda_ops.h"

namespace pagedinfer::ops {
namespace {

template <int kBits>
at::Tensor dequantize_fp32(const at::Tensor& packed, const at::Tensor& scales, const at::Tensor* mins,
                           const PackedShape& s, int64_t k, int64_t group_size) {
  at::Tensor w = at::empty({s.n, k}, at::kFloat);
  const int32_t* p = packed.data_ptr<int32_t>();
  const float* sc = scales.data_ptr<float>();
  const float* mn = mins != nullptr ? mins->data_ptr<float>() : nullptr;
  float* out = w.data_ptr<float>();
  at::parallel_for(0, s.n, 16, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n)
      for (int64_t kk = 0; kk < k; ++kk) {
        const auto pos = cuda::layout::packed_pos<kBits>(n, kk, s.k_pad);
        const uint32_t raw = (static_cast<uint32_t>(p[pos.word]) >> pos.shift) & ((1u << kBits) - 1);
        const float q = static_cast<float>(raw) - (kBits == 8 ? 128.f : 0.f);
        const int64_t si = cuda::layout::scale_index(n, kk, static_cast<int>(group_size), s.n);
        out[n * k + kk] = q * sc[si] + (mn != nullptr ? mn[si] : 0.f);
      }
  });
  return w;
}

at::Tensor dequantize_cpu(const char* op, int bits, const at::Tensor& packed, const at::Tensor& scales,
                          const at::Tensor* mins, int64_t k, int64_t group_size, at::ScalarType dtype) {
  TORCH_CHECK_VALUE(dtype == at::kFloat || dtype == at::kBFloat16 || dtype == at::kHalf, op,
                    ": dtype must be float32, bfloat16 or float16, got ", dtype);
  const PackedShape s = check_packed(op, bits, packed, scales, mins, k, group_size);
  const at::Tensor w = bits == 4 ? dequantize_fp32<4>(packed, scales, mins, s, k, group_size)
                                 : dequantize_fp32<8>(packed, scales, mins, s, k, group_size);
  return w.to(dtype);
}

at::Tensor gemm_cpu(const char* op, int bits, const at::Tensor& x, const at::Tensor& packed,
                    const at::Tensor& scales, const at::Tensor* mins, int64_t group_size,
                    const std::optional<at::Tensor>& bias) {
  check_defined(x, op, "x");
  TORCH_CHECK_VALUE(x.dim() >= 1, op, ": x must be [..., K], got a 0-dim tensor");
  check_dtype(x, op, "x", {at::kFloat, at::kBFloat16, at::kHalf});
  check_same_device(packed, "packed", x, "x", op);
  const int64_t k = x.size(-1);
  const at::Tensor w = dequantize_cpu(op, bits, packed, scales, mins, k, group_size, x.scalar_type());
  if (bias.has_value()) {
    check_dim(*bias, op, "bias", 1, "[N]");
    check_size(*bias, op, "bias", 0, w.size(0), "N, from scales");
    check_same_dtype(x, "x", *bias, "bias", op);
  }
  at::Tensor out = at::matmul(x.to(at::kFloat), w.to(at::kFloat).t());
  if (bias.has_value()) out = out + bias->to(at::kFloat);
  return out.to(x.scalar_type());
}

}  // namespace

at::Tensor int4_gemm_cuda_format_cpu(const at::Tensor& x, const at::Tensor& packed,
                                     const at::Tensor& scales, const at::Tensor& mins,
                                     int64_t group_size, const std::optional<at::Tensor>& bias) {
  check_defined(mins, "int4_gemm_cuda", "mins");
  return gemm_cpu("int4_gemm_cuda", 4, x, packed, scales, &mins, group_size, bias);
}

at::Tensor int8_gemm_cuda_format_cpu(const at::Tensor& x, const at::Tensor& packed,
                                     const at::Tensor& scales, int64_t group_size,
                                     const std::optional<at::Tensor>& bias) {
  return gemm_cpu("int8_gemm_cuda", 8, x, packed, scales, nullptr, group_size, bias);
}

at::Tensor dequantize_int4_cuda_format_cpu(const at::Tensor& packed, const at::Tensor& scales,
                                           const at::Tensor& mins, int64_t k, int64_t group_size,
                                           at::ScalarType dtype) {
  check_defined(mins, "dequantize_int4_cuda", "mins");
  return dequantize_cpu("dequantize_int4_cuda", 4, packed, scales, &mins, k, group_size, dtype);
}

at::Tensor dequantize_int8_cuda_format_cpu(const at::Tensor& packed, const at::Tensor& scales,
                                           int64_t k, int64_t group_size, at::ScalarType dtype) {
  return dequantize_cpu("dequantize_int8_cuda", 8, packed, scales, nullptr, k, group_size, dtype);
}

}  // namespace pagedinfer::ops
