// CPU adapters for the fused layer ops: check, then split rows over threads (only when a call
// has enough rows: at batch 1 a thread hand-off costs more than the op).
#include <ATen/Parallel.h>

#include <algorithm>

#include "kernels/cpu/layer_kernels.h"
#include "ops/checks.h"
#include "ops/layer_ops.h"

namespace pagedinfer::ops {
namespace {

constexpr int64_t kGrainElems = 256 * 1024;  // below this a thread hand-off costs more than it saves

cpu::LayerDtype layer_dtype(const at::Tensor& t, const char* op, const char* name) {
  check_dtype(t, op, name, {at::kFloat, at::kBFloat16, at::kHalf});
  switch (t.scalar_type()) {
    case at::kBFloat16: return cpu::LayerDtype::kBF16;
    case at::kHalf: return cpu::LayerDtype::kF16;
    default: return cpu::LayerDtype::kF32;
  }
}

// A [R, H] operand: 2 dims, last dim contiguous, same dtype and device as `ref`.
void check_rows(const at::Tensor& t, const char* op, const char* name, const at::Tensor& ref,
                const char* ref_name) {
  check_dim(t, op, name, 2, "[rows, hidden]");
  check_same_dtype(t, name, ref, ref_name, op);
  check_device_type(t, op, name, c10::DeviceType::CPU);
  TORCH_CHECK_VALUE(t.size(1) <= 1 || t.stride(1) == 1, op, ": ", name,
                    " must have a contiguous last dim, got strides ", t.strides());
}

void check_weight(const at::Tensor& weight, int64_t hidden, const char* op, const at::Tensor& x) {
  check_dim(weight, op, "weight", 1, "[hidden]");
  check_size(weight, op, "weight", 0, hidden, "hidden");
  check_same_dtype(weight, "weight", x, "x", op);
  check_contiguous(weight, op, "weight");
}

int64_t grain(int64_t elems_per_row) {
  return std::max<int64_t>(1, kGrainElems / std::max<int64_t>(1, elems_per_row));
}

}  // namespace

void fused_add_rms_norm_cpu(const at::Tensor& x, const at::Tensor& residual,
                            const at::Tensor& weight, double eps) {
  const char* op = "fused_add_rms_norm";
  const auto dtype = layer_dtype(x, op, "x");
  check_rows(x, op, "x", x, "x");
  check_rows(residual, op, "residual", x, "x");
  TORCH_CHECK_VALUE(residual.sizes() == x.sizes(), op, ": residual must have x's shape ",
                    shape_str(x), ", got ", shape_str(residual));
  check_weight(weight, x.size(1), op, x);
  const int64_t H = x.size(1);
  at::parallel_for(0, x.size(0), grain(H), [&](int64_t b, int64_t e) {
    cpu::fused_add_rms_norm(dtype, x.data_ptr(), x.stride(0), residual.data_ptr(),
                            residual.stride(0), weight.data_ptr(), H, static_cast<float>(eps), b, e);
  });
}

void rms_norm_cpu(const at::Tensor& out, const at::Tensor& x, const at::Tensor& weight, double eps) {
  const char* op = "rms_norm";
  const auto dtype = layer_dtype(x, op, "x");
  check_rows(x, op, "x", x, "x");
  check_rows(out, op, "out", x, "x");
  TORCH_CHECK_VALUE(out.sizes() == x.sizes(), op, ": out must have x's shape ", shape_str(x),
                    ", got ", shape_str(out));
  check_weight(weight, x.size(1), op, x);
  const int64_t H = x.size(1);
  at::parallel_for(0, x.size(0), grain(H), [&](int64_t b, int64_t e) {
    cpu::rms_norm(dtype, out.data_ptr(), out.stride(0), x.data_ptr(), x.stride(0),
                  weight.data_ptr(), H, static_cast<float>(eps), b, e);
  });
}

void silu_and_mul_cpu(const at::Tensor& out, const at::Tensor& x) {
  const char* op = "silu_and_mul";
  const auto dtype = layer_dtype(x, op, "x");
  check_rows(x, op, "x", x, "x");
  check_rows(out, op, "out", x, "x");
  TORCH_CHECK_VALUE(x.size(1) % 2 == 0, op, ": x.size(1) (2d) must be even, got ", x.size(1));
  const int64_t d = x.size(1) / 2;
  TORCH_CHECK_VALUE(out.size(0) == x.size(0) && out.size(1) == d, op, ": out must be [",
                    x.size(0), ", ", d, "], got ", shape_str(out));
  at::parallel_for(0, x.size(0), grain(3 * d), [&](int64_t b, int64_t e) {
    cpu::silu_and_mul(dtype, out.data_ptr(), out.stride(0), x.data_ptr(), x.stride(0), d, b, e);
  });
}

void rotary_embedding_cpu(const at::Tensor& positions_in, const at::Tensor& qk,
                          const at::Tensor& cos, const at::Tensor& sin) {
  const char* op = "rotary_embedding";
  const auto dtype = layer_dtype(qk, op, "qk");
  check_dim(qk, op, "qk", 3, "[T, H, D]");
  check_device_type(qk, op, "qk", c10::DeviceType::CPU);
  TORCH_CHECK_VALUE(qk.size(2) <= 1 || qk.stride(2) == 1, op,
                    ": qk must have a contiguous last dim, got strides ", qk.strides());
  const int64_t T = qk.size(0), D = qk.size(2);
  TORCH_CHECK_VALUE(D % 2 == 0, op, ": qk.size(2) (head_dim) must be even, got ", D);
  check_dim(positions_in, op, "positions", 1, "[T]");
  check_dtype(positions_in, op, "positions", {at::kLong});
  check_size(positions_in, op, "positions", 0, T, "T");
  for (const auto* t : {&cos, &sin}) {
    const char* name = t == &cos ? "cos" : "sin";
    check_dim(*t, op, name, 2, "[max_positions, D]");
    check_dtype(*t, op, name, {at::kFloat});
    check_size(*t, op, name, 1, D, "head_dim");
    check_contiguous(*t, op, name);
    check_device_type(*t, op, name, c10::DeviceType::CPU);
  }
  check_size(sin, op, "sin", 0, cos.size(0), "max_positions");
  const at::Tensor positions = positions_in.contiguous();
  const int64_t* pos = positions.data_ptr<int64_t>();
  const int64_t max_pos = cos.size(0);
  for (int64_t t = 0; t < T; ++t) {
    TORCH_CHECK_INDEX(pos[t] >= 0 && pos[t] < max_pos, op, ": positions[", t, "] = ", pos[t],
                      " is outside the tables [0, ", max_pos, ")");
  }
  at::parallel_for(0, T, grain(qk.size(1) * D), [&](int64_t b, int64_t e) {
    cpu::rotary_embedding(dtype, qk.data_ptr(), qk.stride(0), qk.stride(1), qk.size(1), D, pos,
                          cos.data_ptr<float>(), sin.data_ptr<float>(), b, e);
  });
}

at::Tensor argmax_cpu(const at::Tensor& x) {
  const char* op = "argmax";
  const auto dtype = layer_dtype(x, op, "x");
  check_rows(x, op, "x", x, "x");
  TORCH_CHECK_VALUE(x.size(1) > 0, op, ": x must have at least one column, got shape ",
                    shape_str(x));
  at::Tensor out = at::empty({x.size(0)}, x.options().dtype(at::kLong));
  const int64_t n = x.size(1);
  at::parallel_for(0, x.size(0), grain(n), [&](int64_t b, int64_t e) {
    cpu::argmax_rows(dtype, x.data_ptr(), x.stride(0), n, out.data_ptr<int64_t>(), b, e);
  });
  return out;
}

}  // namespace pagedinfer::ops
