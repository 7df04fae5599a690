// Which CUDA kernel variant the ops run: the optimized kernels (default) or the straightforward
// reference kernels kept next to them, to check the fast ones on a GPU
// (pagedinfer._C.set_cuda_impl("reference" | "fast"), or PAGEDINFER_CUDA_IMPL=reference at import).
// Plain C++: compiled in every build so the Python switch exists with or without CUDA.
#pragma once

#include <string>

namespace pagedinfer::ops {

bool cuda_use_reference_kernels();
void set_cuda_impl(const std::string& name);  // "fast" | "reference"; anything else throws
std::string cuda_impl();

}  // namespace pagedinfer::ops
