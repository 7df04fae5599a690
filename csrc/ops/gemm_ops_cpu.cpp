// CPU adapters for int4_linear / int8_linear: checks, then one of three strategies.
//
// Small M (decode, M <= 4): the GEMV kernels stream the packed weights once, dequantizing in
// registers; rows of W are split over threads so every core streams.
// Larger M with bf16 activations on a CPU with AMX: compute-bound, and AMX multiplies bf16 far
// faster than any AVX-512 FMA loop (oneDNN's dense bf16 GEMM reaches ~2,280 GFLOP/s here). Our own
// AMX kernel (gemm_kernels_amx.cpp) dequantizes 32-row blocks of W into bf16 tiles in L1/L2 and
// reuses each block for all M rows, so the weights are read and dequantized once per call. We
// first tried choice (b), dequantizing panels and calling at::mm on each: oneDNN's per-call cost
// (~40 us for a 64 x 4096 panel, single thread) made it slower than dense bf16 at M = 16.
// Otherwise (fp32 / fp16 activations, no AMX, or the ISA capped): each thread dequantizes a panel
// of W rows into an L2-sized fp32 / bf16 buffer and multiplies all rows of x by it with at::mm
// (dequantize once, reuse across M; fp32 keeps fp32 accuracy).
#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>

#include <algorithm>
#include <vector>

#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/gemm_kernels.h"
#include "ops/checks.h"
#include "ops/gemm_ops.h"

namespace pagedinfer::ops {
namespace {

// At or below this many rows of x, the GEMV kernels win: over dequantize + AMX (bf16 x; AMX costs
// about the same for any M <= 16), and over the dequantized panels + at::mm (fp32 / fp16 x, or no
// AMX). From DRAM, 2 threads, bf16 x, G = 32, GEMV vs AMX: INT4 4096 x 4096 M = 4 0.71-0.80 vs
// ~1.0 ms, M = 6 1.21 vs 1.01 ms (so AMX from 5 rows on); INT8 M = 4 0.76-0.79 vs 0.97-0.99 ms,
// the default model's LM head (49152 x 576) 1.54-1.69 vs 2.35-2.38 ms.
constexpr int64_t kGemvMaxM = 4;
// Weight bytes per GEMV task at M = 1 (~10 us of streaming), so small layers are not split into
// tasks dearer than their work: waking the second thread costs microseconds, more on a busy
// machine. Each further x row adds about as much arithmetic, so the grain shrinks with M.
constexpr int64_t kGemvGrainBytes = int64_t{128} << 10;
// x with at most this many elements (512 KiB of bf16) is packed for AMX by every thread for
// itself, inside the parallel region. Packed once on the calling thread, the other thread
// waited for it, then loaded its tiles of x from the other core's cache: 2 threads, INT4, M = 64,
// the default model's 120 GEMMs of a step 12.1-12.4 vs 13.1-13.5 ms, 4096 x 4096 1.34-1.43 vs
// 1.45-1.56 ms; M = 16 0.86-0.89 vs 0.89-0.94 ms.
constexpr int64_t kOwnPackElems = int64_t{64} * 4096;
// Dequantized panel size: fits L2 next to the activations and oneDNN's packing buffers.
constexpr int64_t kPanelBytes = int64_t{512} << 10;
// From this many rows of bf16 x (prefill) the product is compute-bound and the dequantization a
// small share of it: W is dequantized to bf16 once and one at::mm (oneDNN, on AMX here) runs
// over all of x, faster than the AMX kernel's tiles there (which pay for their own dequantization
// of each W block and reach ~2/3 of oneDNN's rate). 2 threads, INT4, this path vs the AMX kernel
// (dense bf16 alone): 3072 x 576 at M = 2,048 2.23-2.28 vs 3.4-4.0 ms (2.05-2.29), M = 1,024
// 1.25-1.27 vs 1.59-1.70 ms, M = 512 0.81 vs 0.80 ms; 960 x 576 at M = 1,024 0.44-0.46 vs
// 0.51 ms, at M = 512 0.29 vs 0.24-0.25 ms. The default model, 64 requests of 128 + 128
// tokens (prefill steps of 2,048 rows): 1,192-1,236 vs 1,132-1,146 tok/s.
constexpr int64_t kDenseMinRows = 1024;
// W rows dequantized per at::mm of that path (bounds its buffer, which is kept across calls).
constexpr int64_t kDensePanelBytes = int64_t{16} << 20;

cpu::DType dtype_of(at::ScalarType s) {
  switch (s) {
    case at::kBFloat16: return cpu::DType::kBF16;
    case at::kHalf: return cpu::DType::kF16;
    default: return cpu::DType::kF32;
  }
}

void check_group_size(int64_t g, const char* op) {
  TORCH_CHECK_VALUE(g == 32 || g == 64 || g == 128, op, ": group_size must be 32, 64 or 128, got ", g);
}

// Shared checks of x and bias.
void check_x_bias(const at::Tensor& x, const std::optional<at::Tensor>& bias, int64_t N, int64_t K,
                  const char* op) {
  check_defined(x, op, "x");
  check_device_type(x, op, "x", c10::DeviceType::CPU);
  check_dtype(x, op, "x", {at::kFloat, at::kBFloat16, at::kHalf});
  TORCH_CHECK_VALUE(x.dim() >= 1, op, ": x must have at least 1 dim [..., K], got a scalar");
  TORCH_CHECK_VALUE(x.size(-1) == K, op, ": x.size(-1) (K, in_features) must be ", K,
                    " (scale.size(1) * group_size), got ", x.size(-1), " (shape ", shape_str(x), ")");
  if (bias.has_value() && bias->defined()) {
    check_device_type(*bias, op, "bias", c10::DeviceType::CPU);
    check_dtype(*bias, op, "bias", {at::kFloat, at::kBFloat16, at::kHalf});
    check_dim(*bias, op, "bias", 1, "[N]");
    check_size(*bias, op, "bias", 0, N, "N, out_features");
  }
}

void check_scale(const at::Tensor& t, const char* op, const char* name, int64_t N) {
  check_dim(t, op, name, 2, "[N, K / group_size]");
  check_device_type(t, op, name, c10::DeviceType::CPU);
  check_dtype(t, op, name, {at::kHalf});
  check_contiguous(t, op, name);
  check_size(t, op, name, 0, N, "N, out_features");
}

#ifdef PAGEDINFER_HAVE_AMX
constexpr auto amx_pack = cpu::pack_x_vnni;
#else
void amx_pack(const uint16_t*, int64_t, int64_t, int64_t, int64_t, int64_t, uint16_t*) {}
#endif

// x packed for AMX into this thread's own buffer (kept across calls, 64-byte aligned).
const uint16_t* pack_x_on_this_thread(const uint16_t* x, int64_t ldx, int64_t M, int64_t K) {
  thread_local std::vector<uint16_t> own;
  const int64_t mblocks = (M + 15) / 16;
  const auto need = static_cast<size_t>(mblocks * 16 * K + 32);
  if (own.size() < need) own.resize(need);
  auto* xv = reinterpret_cast<uint16_t*>((reinterpret_cast<uintptr_t>(own.data()) + 63) & ~uintptr_t{63});
  amx_pack(x, ldx, M, K, 0, mblocks, xv);
  return xv;
}

bool use_amx() {
#ifdef PAGEDINFER_HAVE_AMX
  const auto& f = cpu::cpu_features();
  return cpu::active_isa() == cpu::Isa::kAvx512 && f.amx_tile && f.amx_bf16 && cpu::amx_available();
#else
  return false;
#endif
}

template <class Gemv, class Dequant, class Amx>
at::Tensor linear_impl(const at::Tensor& x_in, int64_t N, int64_t K, int64_t group_size,
                       int64_t weight_row_bytes, const std::optional<at::Tensor>& bias_in, Gemv gemv,
                       Dequant dequant, Amx amx) {
  auto out_sizes = x_in.sizes().vec();
  out_sizes.back() = N;
  // (2-D x is used as it is: a reshape and a view of the output are tensor allocations, a few
  // hundred ns of a decode layer's call)
  at::Tensor x = x_in.dim() == 2 ? x_in : x_in.reshape({-1, K});
  const int64_t M = x.size(0);
  if (M == 0 || N == 0) return at::zeros(out_sizes, x_in.options());
  at::Tensor bias;
  if (bias_in.has_value() && bias_in->defined()) bias = bias_in->to(at::kFloat).contiguous();

  if (M <= kGemvMaxM) {
    if (x.stride(1) != 1) x = x.contiguous();
    const int64_t groups = K / group_size;
    // Prepared activations in a per-thread scratch kept across calls (decode calls are small
    // and frequent; four allocations each were a measurable share of a 576 x 576 layer).
    thread_local std::vector<float> scratch;
    // x32 [M, K] | x_hi, x_lo bf16 [M, K] each (fp32 x) or x_q int16 [M, x_q_stride] (16-bit x) |
    // x_qscale [M, groups] | x_sum [M, groups]
    const bool fp32 = x.scalar_type() == at::kFloat;
    const int64_t x_q_stride = cpu::x_q_stride_for(K, group_size);
    const int64_t x16_floats = fp32 ? M * K : (M * x_q_stride + 1) / 2;
    const int64_t floats = M * K + x16_floats + 2 * M * groups;
    if (static_cast<int64_t>(scratch.size()) < floats) scratch.resize(floats);
    float* x32 = scratch.data();
    auto* x16 = reinterpret_cast<uint16_t*>(x32 + M * K);
    float* x_qscale = x32 + M * K + x16_floats;
    float* x_sum = x_qscale + M * groups;
    cpu::PreparedX px{x32, fp32 ? x16 : nullptr, fp32 ? x16 + M * K : nullptr,
                      fp32 ? nullptr : reinterpret_cast<int16_t*>(x16), x_qscale, x_sum, M, K, group_size,
                      x_q_stride};
    cpu::prepare_x(x.data_ptr(), dtype_of(x.scalar_type()), x.stride(0) * x.element_size(), px);
    at::Tensor out = at::empty({M, N}, x.options());
    const float* b = bias.defined() ? bias.data_ptr<float>() : nullptr;
    const int64_t grain = std::max<int64_t>(2, kGemvGrainBytes / std::max<int64_t>(1, weight_row_bytes * M));
    at::parallel_for(0, N, grain, [&](int64_t n0, int64_t n1) {
      gemv(px, b, out.data_ptr(), dtype_of(out.scalar_type()), N, n0, n1);
    });
    return x_in.dim() == 2 ? out : out.view(out_sizes);
  }

  if (x.scalar_type() == at::kBFloat16 && M >= kDenseMinRows) {
    // One bf16 copy of W (panels of kDensePanelBytes), dequantized by all threads, then one
    // at::mm per panel, itself parallel.
    const int64_t panel = std::min(N, std::max<int64_t>(16, kDensePanelBytes / (K * 2)));
    // The caller's buffer, which the workers fill through wbuf (a lambda naming the
    // thread_local itself would get each worker's own).
    thread_local std::vector<uint16_t> storage;
    storage.resize(static_cast<size_t>(panel * K));
    uint16_t* wbuf = storage.data();
    at::Tensor buf = at::from_blob(wbuf, {panel, K}, x.options());
    at::Tensor out = at::empty({M, N}, x.options());
    for (int64_t n0 = 0; n0 < N; n0 += panel) {
      const int64_t rows = std::min(panel, N - n0);
      at::parallel_for(0, rows, 16, [&](int64_t r0, int64_t r1) {
        dequant(n0 + r0, n0 + r1, wbuf + r0 * K, cpu::DType::kBF16);
      });
      at::Tensor w = buf.narrow(0, 0, rows);
      if (rows == N) at::mm_out(out, x, w.t());
      else out.narrow(1, n0, rows).copy_(at::mm(x, w.t()));
    }
    if (bias.defined()) out.add_(bias);
    return out.view(out_sizes);
  }

  if (x.scalar_type() == at::kBFloat16 && use_amx()) {
    // AMX: x packed as VNNI pairs of K for 16-row blocks (a small x by every thread for itself,
    // kOwnPackElems; a large one once, by all threads), then 32-row blocks of W per task.
    // The packer reads K pairs as dwords: rows must start at even elements.
    if (x.stride(1) != 1 || x.stride(0) % 2 != 0 || x.stride(0) > (int64_t{1} << 26)) x = x.contiguous();
    const int64_t mblocks = (M + 15) / 16;
    const auto* xp = static_cast<const uint16_t*>(x.data_ptr());
    at::Tensor out = at::empty({M, N}, x.options());
    const float* b = bias.defined() ? bias.data_ptr<float>() : nullptr;
    const bool own_pack = M * K <= kOwnPackElems;
    at::Tensor x_vnni;  // a large x, packed once
    if (!own_pack) {
      x_vnni = at::empty({mblocks * 16 * K}, x.options());
      auto* xv = static_cast<uint16_t*>(x_vnni.data_ptr());
      at::parallel_for(0, mblocks, 1, [&](int64_t b0, int64_t b1) { amx_pack(xp, x.stride(0), M, K, b0, b1, xv); });
    }
    at::parallel_for(0, (N + 31) / 32, 1, [&](int64_t nb0, int64_t nb1) {
      const uint16_t* xv = own_pack ? pack_x_on_this_thread(xp, x.stride(0), M, K)
                                    : static_cast<const uint16_t*>(x_vnni.data_ptr());
      amx(xv, M, b, out.data_ptr(), cpu::DType::kBF16, N, nb0 * 32, std::min(nb1 * 32, N));
    });
    return out.view(out_sizes);
  }

  const at::ScalarType compute = x.scalar_type() == at::kBFloat16 ? at::kBFloat16 : at::kFloat;
  const at::Tensor xc = x.to(compute).contiguous();
  at::Tensor out = at::empty({M, N}, xc.options());
  const int64_t elem = at::elementSize(compute);
  int64_t panel = std::max<int64_t>(16, kPanelBytes / (K * elem) / 16 * 16);
  panel = std::min(panel, N);
  const int64_t num_panels = (N + panel - 1) / panel;
  // The worker threads run ATen ops (from_blob, mm_out): they need the caller's thread-local
  // state, e.g. inference mode, or writing into an inference tensor raises.
  const at::ThreadLocalState caller_state;
  at::parallel_for(0, num_panels, 1, [&](int64_t p0, int64_t p1) {
    const at::ThreadLocalStateGuard state_guard(caller_state);
    // One panel buffer per thread, kept across calls: a fresh 512 KiB allocation is a fresh
    // mmap whose pages the kernel must zero on first touch, which cost more than the GEMM.
    thread_local std::vector<char> storage;
    storage.resize(static_cast<size_t>(panel * K * elem));
    at::Tensor buf = at::from_blob(storage.data(), {panel, K}, xc.options());
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t n0 = p * panel, rows = std::min(panel, N - n0);
      dequant(n0, n0 + rows, buf.data_ptr(), dtype_of(compute));
      at::Tensor dst = out.narrow(1, n0, rows);
      at::mm_out(dst, xc, buf.narrow(0, 0, rows).t());
    }
  });
  if (bias.defined()) out.add_(bias);
  return out.to(x_in.scalar_type()).view(out_sizes);
}

}  // namespace

at::Tensor int4_linear_cpu(const at::Tensor& x, const at::Tensor& qweight, const at::Tensor& scale,
                           const at::Tensor& min, int64_t group_size,
                           const std::optional<at::Tensor>& bias) {
  const char* op = "int4_linear";
  check_group_size(group_size, op);
  check_dim(qweight, op, "qweight", 2, "[N, ceil(K / 64) * 32]");
  check_device_type(qweight, op, "qweight", c10::DeviceType::CPU);
  check_dtype(qweight, op, "qweight", {at::kByte});
  check_contiguous(qweight, op, "qweight");
  const int64_t N = qweight.size(0);
  check_scale(scale, op, "scale", N);
  check_scale(min, op, "min", N);
  check_size(min, op, "min", 1, scale.size(1), "K / group_size, as scale");
  const int64_t K = scale.size(1) * group_size;
  check_size(qweight, op, "qweight", 1, cpu::int4_row_bytes(K), "ceil(K / 64) * 32 packed bytes");
  check_x_bias(x, bias, N, K, op);

  cpu::Int4Args w{qweight.data_ptr<uint8_t>(), static_cast<const uint16_t*>(scale.data_ptr()),
                  static_cast<const uint16_t*>(min.data_ptr()), N, K, group_size};
  return linear_impl(
      x, N, K, group_size, cpu::int4_row_bytes(K), bias,
      [&](const cpu::PreparedX& px, const float* b, void* out, cpu::DType dt, int64_t ldo,
          int64_t n0, int64_t n1) { cpu::int4_gemv(w, px, b, out, dt, ldo, n0, n1); },
      [&](int64_t n0, int64_t n1, void* dst, cpu::DType dt) { cpu::int4_dequant(w, n0, n1, dst, dt); },
      [&](const uint16_t* xv, int64_t M, const float* b, void* out, cpu::DType dt, int64_t ldo,
          int64_t n0, int64_t n1) {
#ifdef PAGEDINFER_HAVE_AMX
        cpu::int4_gemm_amx(w, xv, M, b, out, dt, ldo, n0, n1);
#endif
      });
}

at::Tensor int8_linear_cpu(const at::Tensor& x, const at::Tensor& qweight, const at::Tensor& scale,
                           int64_t group_size, const std::optional<at::Tensor>& bias) {
  const char* op = "int8_linear";
  check_group_size(group_size, op);
  check_dim(qweight, op, "qweight", 2, "[N, K]");
  check_device_type(qweight, op, "qweight", c10::DeviceType::CPU);
  check_dtype(qweight, op, "qweight", {at::kChar});
  check_contiguous(qweight, op, "qweight");
  const int64_t N = qweight.size(0);
  check_scale(scale, op, "scale", N);
  const int64_t K = scale.size(1) * group_size;
  check_size(qweight, op, "qweight", 1, K, "K = scale.size(1) * group_size");
  check_x_bias(x, bias, N, K, op);

  cpu::Int8Args w{qweight.data_ptr<int8_t>(), static_cast<const uint16_t*>(scale.data_ptr()), N, K,
                  group_size};
  return linear_impl(
      x, N, K, group_size, K, bias,
      [&](const cpu::PreparedX& px, const float* b, void* out, cpu::DType dt, int64_t ldo,
          int64_t n0, int64_t n1) { cpu::int8_gemv(w, px, b, out, dt, ldo, n0, n1); },
      [&](int64_t n0, int64_t n1, void* dst, cpu::DType dt) { cpu::int8_dequant(w, n0, n1, dst, dt); },
      [&](const uint16_t* xv, int64_t M, const float* b, void* out, cpu::DType dt, int64_t ldo,
          int64_t n0, int64_t n1) {
#ifdef PAGEDINFER_HAVE_AMX
        cpu::int8_gemm_amx(w, xv, M, b, out, dt, ldo, n0, n1);
#endif
      });
}

}  // namespace pagedinfer::ops
