#include "kernels/cpu/cpu_features.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#define PAGEDINFER_X86 1
#endif
#if defined(PAGEDINFER_X86) && defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace pagedinfer::cpu {
namespace {

#ifdef PAGEDINFER_X86
unsigned long long read_xcr0() {
  unsigned int eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<unsigned long long>(edx) << 32) | eax;
}

CpuFeatures detect() {
  CpuFeatures f;
  unsigned int eax, ebx, ecx, edx;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return f;
  const bool osxsave = ecx & (1u << 27);
  const bool fma = ecx & (1u << 12);
  const bool f16c = ecx & (1u << 29);
  const bool avx = ecx & (1u << 28);
  if (!osxsave || !avx) return f;
  const unsigned long long xcr0 = read_xcr0();
  const bool os_ymm = (xcr0 & 0x6) == 0x6;      // SSE + AVX state
  const bool os_zmm = (xcr0 & 0xe6) == 0xe6;    // + opmask, ZMM_Hi256, Hi16_ZMM
  const bool os_amx = (xcr0 & 0x60000) == 0x60000;  // XTILECFG + XTILEDATA
  if (!os_ymm) return f;
  f.fma = fma;
  f.f16c = f16c;
  __cpuid_count(7, 0, eax, ebx, ecx, edx);
  f.avx2 = ebx & (1u << 5);
  if (os_zmm) {
    f.avx512f = ebx & (1u << 16);
    f.avx512dq = ebx & (1u << 17);
    f.avx512bw = ebx & (1u << 30);
    f.avx512vl = ebx & (1u << 31);
    f.avx512_vnni = ecx & (1u << 11);
    f.avx512_fp16 = edx & (1u << 23);
  }
  if (os_amx) {
    f.amx_bf16 = edx & (1u << 22);
    f.amx_tile = edx & (1u << 24);
    f.amx_int8 = edx & (1u << 25);
  }
  unsigned int eax1, ebx1, ecx1, edx1;
  __cpuid_count(7, 1, eax1, ebx1, ecx1, edx1);
  if (os_zmm) f.avx512_bf16 = eax1 & (1u << 5);
  return f;
}
#else
CpuFeatures detect() { return CpuFeatures{}; }
#endif

Isa detect_best_isa() {
  const CpuFeatures& f = cpu_features();
  Isa best = Isa::kScalar;
#ifdef PAGEDINFER_X86
  if (f.avx2 && f.fma && f.f16c) best = Isa::kAvx2;
#ifdef PAGEDINFER_HAVE_AVX512
  if (f.has_avx512_kernels()) best = Isa::kAvx512;
#endif
#endif
  return best;
}

Isa isa_cap_from_env() {
  const char* cap = std::getenv("PAGEDINFER_CPU_ISA");
  if (cap == nullptr) return Isa::kAvx512;
  if (std::strcmp(cap, "scalar") == 0) return Isa::kScalar;
  if (std::strcmp(cap, "avx2") == 0) return Isa::kAvx2;
  return Isa::kAvx512;
}

std::atomic<int> g_isa_cap{static_cast<int>(isa_cap_from_env())};

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures features = detect();
  return features;
}

bool amx_tiles_granted() {
  static const bool granted = [] {
    const CpuFeatures& f = cpu_features();
    if (!f.amx_tile || !f.amx_bf16) return false;
#if defined(PAGEDINFER_X86) && defined(__linux__)
    constexpr long kArchReqXcompPerm = 0x1023;
    constexpr long kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#else
    return false;
#endif
  }();
  return granted;
}

Isa best_supported_isa() {
  static const Isa isa = detect_best_isa();
  return isa;
}

Isa active_isa() {
  const int cap = g_isa_cap.load(std::memory_order_relaxed);
  const int best = static_cast<int>(best_supported_isa());
  return static_cast<Isa>(cap < best ? cap : best);
}

void set_isa_cap(Isa cap) { g_isa_cap.store(static_cast<int>(cap), std::memory_order_relaxed); }

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx2: return "avx2";
    default: return "scalar";
  }
}

std::string CpuFeatures::describe() const {
  std::string s;
  auto add = [&](bool on, const char* name) {
    if (!on) return;
    if (!s.empty()) s += ' ';
    s += name;
  };
  add(avx2, "avx2"); add(fma, "fma"); add(f16c, "f16c");
  add(avx512f, "avx512f"); add(avx512bw, "avx512bw"); add(avx512vl, "avx512vl");
  add(avx512dq, "avx512dq"); add(avx512_vnni, "avx512_vnni"); add(avx512_bf16, "avx512_bf16");
  add(avx512_fp16, "avx512_fp16"); add(amx_tile, "amx_tile"); add(amx_bf16, "amx_bf16");
  add(amx_int8, "amx_int8");
  return s;
}

}  // namespace pagedinfer::cpu
