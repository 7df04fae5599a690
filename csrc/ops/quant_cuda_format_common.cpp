// Shape checks of the CUDA-format packed quantized weights (layout.h), shared by the CUDA adapters
// and the CPU implementation of the same ops (which dequantizes with the same index functions).
#include "kernels/cuda/layout.h"
#include "ops/checks.h"
#include "ops/cuda_ops.h"

namespace pagedinfer::ops {

// packed [N_pad / 8, K_pad / 128, 32, words] int32, scales (and mins) fp32 [K_pad / G, N].
PackedShape check_packed(const char* op, int bits, const at::Tensor& packed, const at::Tensor& scales,
                         const at::Tensor* mins, int64_t k, int64_t group_size) {
  const int words = bits == 4 ? 4 : 8;
  TORCH_CHECK_VALUE(group_size == 32 || group_size == 64 || group_size == 128, op,
                    ": group_size must be 32, 64 or 128, got ", group_size);
  check_dim(packed, op, "packed", 4, bits == 4 ? "[N_pad / 8, K_pad / 128, 32, 4]" : "[N_pad / 8, K_pad / 128, 32, 8]");
  check_dtype(packed, op, "packed", {at::kInt});
  check_size(packed, op, "packed", 2, 32, "lanes");
  check_size(packed, op, "packed", 3, words, "int32 words per lane");
  check_contiguous(packed, op, "packed");
  const int64_t n_pad = packed.size(0) * 8, k_pad = packed.size(1) * 128;
  TORCH_CHECK_VALUE(n_pad % cuda::layout::kGemmNPad == 0, op, ": packed.size(0) * 8 (N_pad) must be a multiple of ",
                    cuda::layout::kGemmNPad, ", got ", n_pad, " (pack with pagedinfer.quant_cuda)");
  TORCH_CHECK_VALUE(k > k_pad - 128 && k <= k_pad, op, ": K = ", k, " does not match packed.size(1) = ",
                    packed.size(1), " slabs of 128 (expected ", (k + 127) / 128, ")");
  check_dim(scales, op, "scales", 2, "[K_pad / G, N]");
  check_dtype(scales, op, "scales", {at::kFloat});
  check_contiguous(scales, op, "scales");
  check_size(scales, op, "scales", 0, k_pad / group_size, "K_pad / group_size");
  const int64_t n = scales.size(1);
  TORCH_CHECK_VALUE(n > n_pad - cuda::layout::kGemmNPad && n <= n_pad, op, ": scales.size(1) (N) = ", n,
                    " does not match packed.size(0) * 8 = ", n_pad);
  check_same_device(packed, "packed", scales, "scales", op);
  if (mins != nullptr) {
    check_dtype(*mins, op, "mins", {at::kFloat});
    TORCH_CHECK_VALUE(mins->sizes() == scales.sizes(), op, ": mins must have the shape of scales ",
                      shape_str(scales), ", got ", shape_str(*mins));
    check_contiguous(*mins, op, "mins");
    check_same_device(packed, "packed", *mins, "mins", op);
  }
  return {n, n_pad, k_pad};
}

}  // namespace pagedinfer::ops
