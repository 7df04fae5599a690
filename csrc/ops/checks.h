// Argument checks shared by every op adapter. Each failure raises a RuntimeError (ValueError in
// Python for TORCH_CHECK_VALUE) whose text names the op, the argument, what was expected and what
// was given, e.g. "reshape_and_cache: key_cache must have 4 dims [num_blocks, block_size, Hkv, D],
// got 3 dims [8, 16, 64]".
#pragma once

#include <ATen/ATen.h>

#include <initializer_list>
#include <sstream>
#include <string>

namespace pagedinfer::ops {

inline std::string shape_str(const at::Tensor& t) {
  std::ostringstream os;
  os << t.sizes();
  return os.str();
}

inline void check_defined(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK_VALUE(t.defined(), op, ": ", name, " must be a tensor, got None");
}

// layout names the dims, e.g. "[T, Hkv, D]", for the message.
inline void check_dim(const at::Tensor& t, const char* op, const char* name, int64_t dim,
                      const char* layout) {
  check_defined(t, op, name);
  TORCH_CHECK_VALUE(t.dim() == dim, op, ": ", name, " must have ", dim, " dims ", layout, ", got ",
                    t.dim(), " dims ", shape_str(t));
}

inline void check_size(const at::Tensor& t, const char* op, const char* name, int64_t dim,
                       int64_t expected, const char* what) {
  TORCH_CHECK_VALUE(t.size(dim) == expected, op, ": ", name, ".size(", dim, ") (", what,
                    ") must be ", expected, ", got ", t.size(dim), " (shape ", shape_str(t), ")");
}

inline void check_dtype(const at::Tensor& t, const char* op, const char* name,
                        std::initializer_list<at::ScalarType> allowed) {
  for (auto s : allowed)
    if (t.scalar_type() == s) return;
  std::ostringstream os;
  bool first = true;
  for (auto s : allowed) {
    os << (first ? "" : " or ") << c10::toString(s);
    first = false;
  }
  TORCH_CHECK_VALUE(false, op, ": ", name, " must have dtype ", os.str(), ", got ", t.scalar_type());
}

inline void check_same_dtype(const at::Tensor& a, const char* a_name, const at::Tensor& b,
                             const char* b_name, const char* op) {
  TORCH_CHECK_VALUE(a.scalar_type() == b.scalar_type(), op, ": ", a_name, " and ", b_name,
                    " must have the same dtype, got ", a.scalar_type(), " and ", b.scalar_type());
}

inline void check_same_device(const at::Tensor& a, const char* a_name, const at::Tensor& b,
                              const char* b_name, const char* op) {
  TORCH_CHECK_VALUE(a.device() == b.device(), op, ": ", a_name, " and ", b_name,
                    " must be on the same device, got ", a.device(), " and ", b.device());
}

inline void check_device_type(const at::Tensor& t, const char* op, const char* name,
                              c10::DeviceType type) {
  TORCH_CHECK_VALUE(t.device().type() == type, op, ": ", name, " must be on ",
                    c10::DeviceTypeName(type, /*lower_case=*/true), ", got ", t.device());
}

inline void check_contiguous(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK_VALUE(t.is_contiguous(), op, ": ", name,
                    " must be contiguous (the kernels address it by its layout), got strides ",
                    t.strides(), " for shape ", shape_str(t));
}

}  // namespace pagedinfer::ops
