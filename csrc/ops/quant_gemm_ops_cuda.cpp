// CUDA adapters of int4_linear / int8_linear on quant.py's formats (the CPU ops' own). Policy:
// bf16/fp16 activations with M <= 64 rows run the tensor-core kernel; larger M and fp32
// activations dequantize W once on the GPU and use cuBLAS (at::mm), which wins there. The
// reference kernel (pagedinfer._C.set_cuda_impl("reference")) serves every shape, for checking.
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

// SMs of the current device (ATen/cuda/CUDAContext.h would need the cuSPARSE/cuBLAS headers).
int num_sms() {
  int dev = 0, sms = 0;
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
    return 1;
  return sms;
}

void check_launch(cudaError_t err, const char* op) {
  TORCH_CHECK(err == cudaSuccess, op, ": CUDA launch failed: ", cudaGetErrorString(err));
}

void check_scale(const at::Tensor& t, const char* op, const char* name, int64_t n, const at::Tensor& qweight) {
  check_dim(t, op, name, 2, "[N, K / group_size]");
  check_dtype(t, op, name, {at::kHalf});
  check_contiguous(t, op, name);
  check_size(t, op, name, 0, n, "N, out_features");
  check_same_device(qweight, "qweight", t, name, op);
}

at::Tensor linear(const char* op, int bits, const at::Tensor& x_in, const at::Tensor& qweight,
                  const at::Tensor& scale, const at::Tensor* min, int64_t group_size,
                  const std::optional<at::Tensor>& bias_in) {
  TORCH_CHECK_VALUE(group_size == 32 || group_size == 64 || group_size == 128, op,
                    ": group_size must be 32, 64 or 128, got ", group_size);
  check_dim(qweight, op, "qweight", 2, bits == 4 ? "[N, ceil(K / 64) * 32]" : "[N, K]");
  check_dtype(qweight, op, "qweight", {bits == 4 ? at::kByte : at::kChar});
  check_contiguous(qweight, op, "qweight");
  const int64_t n = qweight.size(0);
  check_scale(scale, op, "scale", n, qweight);
  if (min != nullptr) {
    check_scale(*min, op, "min", n, qweight);
    check_size(*min, op, "min", 1, scale.size(1), "K / group_size, as scale");
  }
  const int64_t k = scale.size(1) * group_size;
  check_size(qweight, op, "qweight", 1, bits == 4 ? (k + 63) / 64 * 32 : k,
             bits == 4 ? "ceil(K / 64) * 32 packed bytes" : "K = scale.size(1) * group_size");
  check_defined(x_in, op, "x");
  check_dtype(x_in, op, "x", {at::kFloat, at::kBFloat16, at::kHalf});
  TORCH_CHECK_VALUE(x_in.dim() >= 1, op, ": x must have at least 1 dim [..., K], got a scalar");
  TORCH_CHECK_VALUE(x_in.size(-1) == k, op, ": x.size(-1) (K, in_features) must be ", k,
                    " (scale.size(1) * group_size), got ", x_in.size(-1), " (shape ", shape_str(x_in), ")");
  check_same_device(qweight, "qweight", x_in, "x", op);
  const bool has_bias = bias_in.has_value() && bias_in->defined();
  if (has_bias) {
    check_dtype(*bias_in, op, "bias", {at::kFloat, at::kBFloat16, at::kHalf});
    check_dim(*bias_in, op, "bias", 1, "[N]");
    check_size(*bias_in, op, "bias", 0, n, "N, out_features");
    check_same_device(x_in, "x", *bias_in, "bias", op);
  }

  const c10::cuda::CUDAGuard guard(x_in.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  auto out_sizes = x_in.sizes().vec();
  out_sizes.back() = n;
  const at::Tensor x = x_in.reshape({-1, k}).contiguous();
  const int64_t m = x.size(0);
  if (m == 0 || n == 0) return at::zeros(out_sizes, x_in.options());
  const at::Tensor bias = has_bias ? bias_in->to(at::kFloat).contiguous() : at::Tensor();
  const auto* scales = static_cast<const uint16_t*>(scale.data_ptr());
  const auto* mins = min != nullptr ? static_cast<const uint16_t*>(min->data_ptr()) : nullptr;
  const auto* qw = static_cast<const uint8_t*>(qweight.data_ptr());
  const bool reference = cuda_use_reference_kernels();
  const bool aligned = reinterpret_cast<uintptr_t>(qw) % 16 == 0;
  if (!reference && (x.scalar_type() == at::kFloat || m > cuda::kGemmFastMaxM || !aligned)) {
    // Dequantize once (in fp32 for fp32 x, else x's dtype) and let cuBLAS multiply.
    at::Tensor w = at::empty({n, k}, x.options());
    check_launch(cuda::launch_dequantize(qw, scales, mins, bits, n, k, static_cast<int>(group_size),
                                         w.data_ptr(), to_dtype(x.scalar_type()), stream),
                 op);
    at::Tensor out = at::mm(x, w.t());
    if (has_bias) out = (out.to(at::kFloat) + bias).to(x.scalar_type());
    return out.view(out_sizes);
  }
  at::Tensor out = at::empty({m, n}, x.options());
  cuda::QuantGemmArgs a{};
  a.x = x.data_ptr();
  a.qweight = qw;
  a.scales = scales;
  a.mins = mins;
  a.bias = has_bias ? bias.data_ptr<float>() : nullptr;
  a.out = out.data_ptr();
  a.m = m;
  a.n = n;
  a.k = k;
  a.group_size = static_cast<int>(group_size);
  a.x_vec16 = k % 8 == 0 && reinterpret_cast<uintptr_t>(x.data_ptr()) % 16 == 0;
  a.plan = cuda::layout::plan_gemm(n, k, num_sms());
  at::Tensor partial;
  if (!reference && a.plan.splits > 1) {
    partial = at::empty({a.plan.splits, m, n}, x.options().dtype(at::kFloat));
    a.partial = partial.data_ptr<float>();
  }
  check_launch(cuda::launch_quant_gemm(a, bits, to_dtype(x.scalar_type()),
                                       reference ? cuda::Impl::kReference : cuda::Impl::kFast, stream),
               op);
  return out.view(out_sizes);
}

}  // namespace

at::Tensor int4_linear_cuda(const at::Tensor& x, const at::Tensor& qweight, const at::Tensor& scale,
                            const at::Tensor& min, int64_t group_size,
                            const std::optional<at::Tensor>& bias) {
  check_defined(min, "int4_linear", "min");
  return linear("int4_linear", 4, x, qweight, scale, &min, group_size, bias);
}

at::Tensor int8_linear_cuda(const at::Tensor& x, const at::Tensor& qweight, const at::Tensor& scale,
                            int64_t group_size, const std::optional<at::Tensor>& bias) {
  return linear("int8_linear", 8, x, qweight, scale, nullptr, group_size, bias);
}

}  // namespace pagedinfer::ops
