// CUDA adapters of the weight-only quantized GEMM (W4A16 / W8A16) and of the dequantization of its
// packed layout. Policy: bf16/fp16 activations with M <= 64 rows run the tensor-core kernel; larger
// M and fp32 activations dequantize once and use cuBLAS (at::matmul), which wins there. The
// reference kernel (set_cuda_impl("reference")) serves every shape, for checking.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "kernels/cuda/quant_gemm_kernels.cuh"
#include "ops/checks.h"
#include "ops/cuda_impl_select.h"
#include "ops/cuda_ops.h"

namespace pagedinfer::ops {
namespace {

cuda::DType to_dtype(at::ScalarType s) {
  return s == at::kFloat ? cuda::DType::kF32 : s == at::kBFloat16 ? cuda::DType::kBF16 : cuda::DType::kF16;
}

void check_launch(cudaError_t err, const char* op) {
  TORCH_CHECK(err == cudaSuccess, op, ": CUDA launch failed: ", cudaGetErrorString(err));
}

at::Tensor dequantize(const char* op, int bits, const at::Tensor& packed, const at::Tensor& scales,
                      const at::Tensor* mins, const PackedShape& s, int64_t k, int64_t group_size,
                      at::ScalarType dtype) {
  TORCH_CHECK_VALUE(dtype == at::kFloat || dtype == at::kBFloat16 || dtype == at::kHalf, op,
                    ": dtype must be float32, bfloat16 or float16, got ", dtype);
  at::Tensor w = at::empty({s.n, k}, packed.options().dtype(dtype));
  check_launch(cuda::launch_dequantize(packed.data_ptr<int32_t>(), scales.data_ptr<float>(),
                                       mins != nullptr ? mins->data_ptr<float>() : nullptr, bits, s.n,
                                       k, s.n_pad, s.k_pad, static_cast<int>(group_size), w.data_ptr(),
                                       to_dtype(dtype), c10::cuda::getCurrentCUDAStream()),
               op);
  return w;
}

at::Tensor quant_gemm(const char* op, int bits, const at::Tensor& x_in, const at::Tensor& packed,
                      const at::Tensor& scales, const at::Tensor* mins, int64_t group_size,
                      const std::optional<at::Tensor>& bias) {
  check_defined(x_in, op, "x");
  TORCH_CHECK_VALUE(x_in.dim() >= 1, op, ": x must be [..., K], got a 0-dim tensor");
  check_dtype(x_in, op, "x", {at::kFloat, at::kBFloat16, at::kHalf});
  const int64_t k = x_in.size(-1);
  const PackedShape s = check_packed(op, bits, packed, scales, mins, k, group_size);
  check_same_device(packed, "packed", x_in, "x", op);
  if (bias.has_value()) {
    check_dim(*bias, op, "bias", 1, "[N]");
    check_size(*bias, op, "bias", 0, s.n, "N, from scales");
    check_same_dtype(x_in, "x", *bias, "bias", op);
    check_same_device(x_in, "x", *bias, "bias", op);
  }
  const c10::cuda::CUDAGuard guard(x_in.device());
  std::vector<int64_t> out_shape(x_in.sizes().begin(), x_in.sizes().end());
  out_shape.back() = s.n;
  const at::Tensor x = x_in.reshape({-1, k}).contiguous();
  const int64_t m = x.size(0);
  const bool reference = cuda_use_reference_kernels();
  if (!reference && (x.scalar_type() == at::kFloat || m > cuda::kGemmFastMaxM)) {
    const at::Tensor w = dequantize(op, bits, packed, scales, mins, s, k, group_size, x.scalar_type());
    at::Tensor out = bias.has_value() ? at::addmm(*bias, x, w.t()) : at::mm(x, w.t());
    return out.view(out_shape);
  }
  at::Tensor out = at::empty({m, s.n}, x.options());
  if (m == 0 || s.n == 0) return out.view(out_shape);
  if (k == 0) {  // nothing to sum: bias or zeros
    if (bias.has_value()) out.copy_(bias->unsqueeze(0).expand({m, s.n}));
    else out.zero_();
    return out.view(out_shape);
  }
  const at::Tensor bias_c = bias.has_value() ? bias->contiguous() : at::Tensor();
  cuda::QuantGemmArgs a{};
  a.x = x.data_ptr();
  a.packed = packed.data_ptr<int32_t>();
  a.scales = scales.data_ptr<float>();
  a.mins = mins != nullptr ? mins->data_ptr<float>() : nullptr;
  a.bias = bias_c.defined() ? bias_c.data_ptr() : nullptr;
  a.out = out.data_ptr();
  a.m = m;
  a.n = s.n;
  a.k = k;
  a.n_pad = s.n_pad;
  a.k_pad = s.k_pad;
  a.group_size = static_cast<int>(group_size);
  a.x_vec16 = k % 8 == 0 && reinterpret_cast<uintptr_t>(x.data_ptr()) % 16 == 0;
  const int num_sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  a.plan = cuda::layout::plan_gemm(s.n_pad, s.k_pad, num_sms);
  at::Tensor partial;
  if (!reference && a.plan.splits > 1) {
    partial = at::empty({a.plan.splits, m, s.n}, x.options().dtype(at::kFloat));
    a.partial = partial.data_ptr<float>();
  }
  check_launch(cuda::launch_quant_gemm(a, bits, to_dtype(x.scalar_type()),
                                       reference ? cuda::Impl::kReference : cuda::Impl::kFast,
                                       c10::cuda::getCurrentCUDAStream()),
               op);
  return out.view(out_shape);
}

}  // namespace

at::Tensor int4_gemm_cuda(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scales,
                          const at::Tensor& mins, int64_t group_size,
                          const std::optional<at::Tensor>& bias) {
  check_defined(mins, "int4_gemm_cuda", "mins");
  return quant_gemm("int4_gemm_cuda", 4, x, packed, scales, &mins, group_size, bias);
}

at::Tensor int8_gemm_cuda(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scales,
                          int64_t group_size, const std::optional<at::Tensor>& bias) {
  return quant_gemm("int8_gemm_cuda", 8, x, packed, scales, nullptr, group_size, bias);
}

at::Tensor dequantize_int4_cuda(const at::Tensor& packed, const at::Tensor& scales,
                                const at::Tensor& mins, int64_t k, int64_t group_size,
                                at::ScalarType dtype) {
  const char* op = "dequantize_int4_cuda";
  check_defined(mins, op, "mins");
  const PackedShape s = check_packed(op, 4, packed, scales, &mins, k, group_size);
  const c10::cuda::CUDAGuard guard(packed.device());
  return dequantize(op, 4, packed, scales, &mins, s, k, group_size, dtype);
}

at::Tensor dequantize_int8_cuda(const at::Tensor& packed, const at::Tensor& scales, int64_t k,
                                int64_t group_size, at::ScalarType dtype) {
  const char* op = "dequantize_int8_cuda";
  const PackedShape s = check_packed(op, 8, packed, scales, nullptr, k, group_size);
  const c10::cuda::CUDAGuard guard(packed.device());
  return dequantize(op, 8, packed, scales, nullptr, s, k, group_size, dtype);
}

}  // namespace pagedinfer::ops
