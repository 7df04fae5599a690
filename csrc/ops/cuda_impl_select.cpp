#include "ops/cuda_impl_select.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

namespace pagedinfer::ops {
namespace {

std::atomic<bool>& use_reference() {
  static std::atomic<bool> flag{[] {
    const char* env = std::getenv("PAGEDINFER_CUDA_IMPL");
    return env != nullptr && std::strcmp(env, "reference") == 0;
  }()};
  return flag;
}

}  // namespace

bool cuda_use_reference_kernels() { return use_reference().load(std::memory_order_relaxed); }

void set_cuda_impl(const std::string& name) {
  if (name == "fast") use_reference() = false;
  else if (name == "reference") use_reference() = true;
  else throw std::invalid_argument("set_cuda_impl: expected 'fast' or 'reference', got '" + name + "'");
}

std::string cuda_impl() { return cuda_use_reference_kernels() ? "reference" : "fast"; }

}  // namespace pagedinfer::ops
