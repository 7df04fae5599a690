// What the running CPU can do, read once with CPUID (and XGETBV: the OS must save the wide
// registers too). Kernels with ISA-specific twins choose among them with these flags, so one build
// runs on any x86-64 and the scalar twins serve elsewhere (ARM builds compile no ISA files).
#pragma once

#include <string>

namespace pagedinfer::cpu {

struct CpuFeatures {
  bool avx2 = false;
  bool fma = false;
  bool f16c = false;
  bool avx512f = false;
  bool avx512bw = false;
  bool avx512vl = false;
  bool avx512dq = false;
  bool avx512_vnni = false;
  bool avx512_bf16 = false;
  bool avx512_fp16 = false;
  bool amx_tile = false;  // detected and reported; AMX needs the OS to grant it per process
  bool amx_bf16 = false;
  bool amx_int8 = false;

  // The AVX-512 family the *_avx512.cpp files are compiled for (F, BW, VL, DQ, BF16 and FMA).
  bool has_avx512_kernels() const {
    return avx512f && avx512bw && avx512vl && avx512dq && avx512_vnni && avx512_bf16 && fma;
  }
  std::string describe() const;  // "avx2 fma f16c avx512f ..." for build_info and bench output
};

const CpuFeatures& cpu_features();

// True when the CPU has AMX-BF16 and the OS has granted this process the tile data state (Linux
// asks for it with arch_prctl(ARCH_REQ_XCOMP_PERM); asked once per process). The AMX kernels
// (attention and GEMM) run only after this says yes.
bool amx_tiles_granted();

// The highest ISA both supported here and allowed. PAGEDINFER_CPU_ISA=scalar|avx2|avx512 in the
// environment, or set_isa_cap() at run time, caps it (tests use it to run every twin on one CPU).
enum class Isa { kScalar = 0, kAvx2 = 1, kAvx512 = 2 };
Isa active_isa();
Isa best_supported_isa();
void set_isa_cap(Isa cap);
const char* isa_name(Isa isa);

}  // namespace pagedinfer::cpu
