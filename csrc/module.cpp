// pagedinfer._C: loading it registers the ops (torch_bindings.cpp); the module itself exposes
// what this build contains and what the running CPU offers.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>
#include <string>

#include "kernels/cpu/cpu_features.h"

namespace py = pybind11;

namespace pagedinfer::ops {
void register_cuda_layout_selftest(py::module_& m);  // cuda_layout_selftest.cpp
}
using pagedinfer::cpu::Isa;

#ifndef PAGEDINFER_CUDA_ARCHS
#define PAGEDINFER_CUDA_ARCHS ""
#endif

namespace {

py::dict build_info() {
  const auto& f = pagedinfer::cpu::cpu_features();
  py::dict info;
  py::list backends;
  backends.append("cpu");
#ifdef PAGEDINFER_WITH_CUDA
  backends.append("cuda");
#endif
  info["backends"] = backends;
  info["cuda_archs"] = std::string(PAGEDINFER_CUDA_ARCHS);
  info["cpu_isas_compiled"] = std::string(PAGEDINFER_CPU_ISAS);
  info["cpu_features"] = f.describe();
  info["cpu_isa_best"] = pagedinfer::cpu::isa_name(pagedinfer::cpu::best_supported_isa());
  info["cpu_isa_active"] = pagedinfer::cpu::isa_name(pagedinfer::cpu::active_isa());
  return info;
}

void set_cpu_isa(const std::string& name) {
  if (name == "scalar") pagedinfer::cpu::set_isa_cap(Isa::kScalar);
  else if (name == "avx2") pagedinfer::cpu::set_isa_cap(Isa::kAvx2);
  else if (name == "avx512" || name == "best") pagedinfer::cpu::set_isa_cap(Isa::kAvx512);
  else throw std::invalid_argument("set_cpu_isa: expected scalar, avx2, avx512 or best, got '" + name + "'");
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "pagedinfer kernels; the ops are registered as torch.ops.pagedinfer.*";
  m.def("build_info", &build_info, "What this build contains and what the CPU offers");
  m.def("set_cpu_isa", &set_cpu_isa, py::arg("name"),
        "Caps the CPU ISA the kernels use: scalar, avx2, avx512 or best (tests use it)");
  pagedinfer::ops::register_cuda_layout_selftest(m);
  m.def("cpu_isa", [] { return std::string(pagedinfer::cpu::isa_name(pagedinfer::cpu::active_isa())); });
}
