// pagedinfer._C.cuda_layout: the CUDA kernels' index arithmetic (kernels/cuda/layout.h) run on the
// host, so tests on a machine without a GPU check it (tests/test_cuda_layout.py). Compiled in every
// build (plain C++). emulate_fast_gemm walks the tensor-core GEMM's loops exactly -- grid, warps,
// split-K, slabs, k tiles, per-lane B fragments from the packed words, A fragments from the staged
// x tile -- and replaces each mma.sync by the matrix product of the fragments placed with the PTX
// fragment maps, asserting that every fragment map covers its tile exactly once.
#include <ATen/ATen.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/csrc/utils/pybind.h>

#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cuda/layout.h"
#include "ops/cuda_impl_select.h"

namespace py = pybind11;
namespace L = pagedinfer::cuda::layout;

namespace pagedinfer::ops {
namespace {

float round_to(float v, const std::string& dtype) {
  if (dtype == "bfloat16") return static_cast<float>(c10::BFloat16(v));
  if (dtype == "float16") return static_cast<float>(c10::Half(v));
  return v;
}

template <int kBits>
float quant_value_host(uint32_t word, int shift) {
  const uint32_t raw = (word >> shift) & ((1u << kBits) - 1);
  return kBits == 4 ? static_cast<float>(raw) : static_cast<float>(static_cast<int8_t>(raw));
}

float half_bits(const at::Tensor& t, int64_t idx) {
  return static_cast<float>(t.data_ptr<at::Half>()[idx]);
}

// x fp32 [M, K] (already in the activation dtype's values), qweight / scale / min as quant.py.
template <int kBits>
at::Tensor emulate(const at::Tensor& x_in, const at::Tensor& qweight, const at::Tensor& scale,
                   const at::Tensor* min, int64_t group_size, const std::string& dtype, int num_sms) {
  constexpr int kW = L::SlabGeom<kBits>::kWords;
  const at::Tensor x = x_in.to(at::kFloat).contiguous();
  const int64_t M = x.size(0), N = qweight.size(0), K = scale.size(1) * group_size;
  TORCH_CHECK_VALUE(x.size(1) == K, "emulate_fast_gemm: x.size(1) must be K = ", K);
  const int G = static_cast<int>(group_size);
  const int64_t chunks = L::ceil_div(K, L::kGemmKChunk), groups = K / G;
  const int64_t row_bytes = kBits == 4 ? L::ceil_div(K, 64) * 32 : K;
  const int64_t row_k = kBits == 4 ? L::ceil_div(K, 64) * 64 : K;
  TORCH_CHECK_VALUE(qweight.numel() == N * row_bytes, "emulate_fast_gemm: qweight has the wrong size");
  const L::GemmPlan plan = L::plan_gemm(N, K, num_sms);
  const float* xp = x.data_ptr<float>();
  const auto* qw = static_cast<const uint8_t*>(qweight.data_ptr());
  std::vector<float> partial(static_cast<size_t>(plan.splits) * M * N, 0.f);

  for (int64_t m0 = 0; m0 < M; m0 += 64) {
    const int mtiles = static_cast<int>((std::min<int64_t>(64, M - m0) + 15) / 16);
    for (int split = 0; split < plan.splits; ++split) {
      const int64_t c_begin = static_cast<int64_t>(split) * plan.chunks_per_split;
      const int64_t c_end = std::min(chunks, c_begin + plan.chunks_per_split);
      for (int64_t nb = 0; nb < L::ceil_div(N, L::kGemmNPerCta); ++nb)
        for (int warp = 0; warp < 4; ++warp) {
          const int64_t nt0 = nb * 8 + warp * 2;
          std::vector<float> acc(32 * 4 * 2 * 4, 0.f);  // [lane][mt][u][i]
          auto ACC = [&](int lane, int mt, int u, int i) -> float& { return acc[((lane * 4 + mt) * 2 + u) * 4 + i]; };
          for (int64_t c = c_begin; c < c_end; ++c) {
            // Each lane's words, scales and mins, as load_slab and the scale loop read them.
            uint32_t words[32][2][kW];
            float sc[32][2][2], mn[32][2][2];
            for (int lane = 0; lane < 32; ++lane) {
              const int t = lane % 4;
              for (int u = 0; u < 2; ++u) {
                const int64_t n = (nt0 + u) * 8 + L::mma_b_n(lane);
                const bool inside = c * L::kGemmKChunk + L::lane_first_k<kBits>(t) < row_k && n < N;
                for (int w = 0; w < kW; ++w) {
                  words[lane][u][w] = 0;
                  if (inside) std::memcpy(&words[lane][u][w], qw + n * row_bytes + L::lane_row_byte<kBits>(c, t) + 4 * w, 4);
                }
                for (int slot = 0; slot < 2; ++slot) {
                  const int64_t k0 = c * L::kGemmKChunk + L::scale_slot_k<kBits>(t, slot);
                  sc[lane][u][slot] = mn[lane][u][slot] = 0.f;
                  if (n < N && k0 < K && (kBits == 4 || slot == 0)) {
                    sc[lane][u][slot] = half_bits(scale, n * groups + k0 / G);
                    if (min != nullptr) mn[lane][u][slot] = half_bits(*min, n * groups + k0 / G);
                  }
                }
              }
            }
            // x staged in virtual order, pairs of physical k as the kernel stores them.
            std::vector<float> xs(64 * 128, std::nanf(""));
            std::vector<int> xs_hits(64 * 128, 0);
            for (int row = 0; row < 16 * mtiles; ++row)
              for (int p = 0; p < L::kGemmKChunk; p += 2) {
                const int vpos = L::slab_virtual_k<kBits>(p);
                for (int e = 0; e < 2; ++e) {
                  const int64_t gm = m0 + row, gk = c * L::kGemmKChunk + p + e;
                  xs[row * 128 + vpos + e] = (gm < M && gk < K) ? xp[gm * K + gk] : 0.f;
                  ++xs_hits[row * 128 + vpos + e];
                }
              }
            for (int row = 0; row < 16 * mtiles; ++row)
              for (int q = 0; q < 128; ++q)
                if (xs_hits[row * 128 + q] != 1) throw std::runtime_error("slab_virtual_k is not a pairwise bijection");
            for (int v = 0; v < L::kGemmKChunk / 16; ++v)
              for (int u = 0; u < 2; ++u) {
                float b[16][8];
                int b_hits[16][8] = {};
                for (int lane = 0; lane < 32; ++lane)
                  for (int i = 0; i < 4; ++i) {
                    const int slot = L::scale_slot<kBits>(v);
                    const float q = quant_value_host<kBits>(words[lane][u][L::fragment_word<kBits>(v)],
                                                            L::fragment_shift<kBits>(v, i));
                    const int kk = L::mma_b_k(lane, i >> 1, i & 1), nn = L::mma_b_n(lane);
                    b[kk][nn] = round_to(std::fma(q, sc[lane][u][slot], mn[lane][u][slot]), dtype);
                    ++b_hits[kk][nn];
                  }
                for (auto& row : b_hits)
                  for (int h : row)
                    if (h != 1) throw std::runtime_error("B fragment map does not cover the 16x8 tile once");
                for (int mt = 0; mt < mtiles; ++mt) {
                  float a[16][16];
                  int a_hits[16][16] = {};
                  for (int lane = 0; lane < 32; ++lane)
                    for (int r = 0; r < 4; ++r)
                      for (int e = 0; e < 2; ++e) {
                        // The kernel loads both halves of register r as one 32-bit word at col(e=0).
                        const int row = L::mma_a_row(lane, r), col = L::mma_a_col(lane, r, e);
                        a[row][col] = xs[(mt * 16 + row) * 128 + v * 16 + L::mma_a_col(lane, r, 0) + e];
                        ++a_hits[row][col];
                      }
                  for (auto& row : a_hits)
                    for (int h : row)
                      if (h != 1) throw std::runtime_error("A fragment map does not cover the 16x16 tile once");
                  int c_hits[16][8] = {};
                  for (int lane = 0; lane < 32; ++lane)
                    for (int i = 0; i < 4; ++i) {
                      const int row = L::mma_c_row(lane, i), col = L::mma_c_col(lane, i);
                      ++c_hits[row][col];
                      float sum = 0.f;
                      for (int kk = 0; kk < 16; ++kk) sum += a[row][kk] * b[kk][col];
                      ACC(lane, mt, u, i) += sum;
                    }
                  for (auto& row : c_hits)
                    for (int h : row)
                      if (h != 1) throw std::runtime_error("C fragment map does not cover the 16x8 tile once");
                }
              }
          }
          for (int lane = 0; lane < 32; ++lane)
            for (int mt = 0; mt < mtiles; ++mt)
              for (int u = 0; u < 2; ++u)
                for (int i = 0; i < 4; ++i) {
                  const int64_t row = m0 + mt * 16 + L::mma_c_row(lane, i);
                  const int64_t col = (nt0 + u) * 8 + L::mma_c_col(lane, i);
                  if (row < M && col < N) partial[(split * M + row) * N + col] = ACC(lane, mt, u, i);
                }
        }
    }
  }
  at::Tensor out = at::zeros({M, N}, at::kFloat);
  float* o = out.data_ptr<float>();
  for (int split = 0; split < plan.splits; ++split)
    for (int64_t idx = 0; idx < M * N; ++idx) o[idx] += partial[split * M * N + idx];
  return out;
}

}  // namespace

void register_cuda_layout_selftest(py::module_& parent) {
  parent.def("set_cuda_impl", &set_cuda_impl, py::arg("name"),
             "CUDA kernels to run: 'fast' (default) or 'reference' (the simple twins, for checks)");
  parent.def("cuda_impl", &cuda_impl);
  auto m = parent.def_submodule("cuda_layout", "Host runs of the CUDA kernels' index arithmetic");
  m.def("find_sequence", [](const std::vector<int32_t>& qsl, int64_t t) {
    return L::find_sequence(qsl.data(), static_cast<int>(qsl.size()) - 1, t);
  });
  m.def("key_range", [](int64_t seq_len, int64_t q_len, int64_t j, int64_t window) {
    const auto r = L::key_range(seq_len, q_len, j, window);
    return std::pair{r.begin, r.end};
  });
  m.def("kv_offset", &L::kv_offset);
  m.def("plan_attention", [](int64_t max_context, int64_t window, int group) {
    const auto p = L::plan_attention(max_context, window, group);
    return std::pair{p.partition_size, p.num_partitions};
  });
  m.def("attention_threads_per_key", &L::attention_threads_per_key);
  m.def("attention_split_smem_floats", &L::attention_split_smem_floats);
  m.def("plan_gemm", [](int64_t n_pad, int64_t k_pad, int num_sms) {
    const auto p = L::plan_gemm(n_pad, k_pad, num_sms);
    return std::pair{p.splits, p.chunks_per_split};
  });
  m.def("slab_phys_k", [](int bits, int v, int vk) {
    return bits == 4 ? L::slab_phys_k<4>(v, vk) : L::slab_phys_k<8>(v, vk);
  });
  m.def("slab_virtual_k", [](int bits, int p) {
    return bits == 4 ? L::slab_virtual_k<4>(p) : L::slab_virtual_k<8>(p);
  });
  m.def("lane_fragment_phys_k", [](int bits, int lane, int v, int i) {
    // Physical k (in the slab) of the value the fast kernel decodes for lane, tile v, i = 2h + e:
    // from the byte/nibble it reads, per quant.py's format.
    const int t = lane % 4;
    if (bits == 4) {
      const int word = L::fragment_word<4>(v), shift = L::fragment_shift<4>(v, i);
      const int byte = 4 * word + shift / 8, nib = (shift % 8) / 4;
      const int first = L::lane_first_k<4>(t);  // 64 (t/2) + 16 (t%2): byte 0 of the load
      return first + byte + 32 * nib;
    }
    const int word = L::fragment_word<8>(v), shift = L::fragment_shift<8>(v, i);
    return L::lane_first_k<8>(t) + 4 * word + shift / 8;
  });
  m.def("weight_byte", [](int bits, int64_t n, int64_t k, int64_t k_cols) {
    return bits == 4 ? std::pair{L::weight_byte<4>(n, k, k_cols), L::weight_shift<4>(k)}
                     : std::pair{L::weight_byte<8>(n, k, k_cols), L::weight_shift<8>(k)};
  });
  m.def("mma_fragments", [] {
    // (lane, reg, half) -> (row, col) of A; (lane, reg, half) -> (k, n) of B; (lane, i) -> C.
    std::vector<std::tuple<int, int, int, int, int>> a, b;
    std::vector<std::tuple<int, int, int, int>> c;
    for (int lane = 0; lane < 32; ++lane) {
      for (int r = 0; r < 4; ++r)
        for (int e = 0; e < 2; ++e) a.emplace_back(lane, r, e, L::mma_a_row(lane, r), L::mma_a_col(lane, r, e));
      for (int r = 0; r < 2; ++r)
        for (int e = 0; e < 2; ++e) b.emplace_back(lane, r, e, L::mma_b_k(lane, r, e), L::mma_b_n(lane));
      for (int i = 0; i < 4; ++i) c.emplace_back(lane, i, L::mma_c_row(lane, i), L::mma_c_col(lane, i));
    }
    return py::make_tuple(a, b, c);
  });
  m.def("prefill_tiles_of", &L::prefill_tiles_of);
  m.def("prefill_tile_bound", &L::prefill_tile_bound);
  m.def("p_from_s", [](int r, int e) { return std::pair{L::p_from_s_tile(r), L::p_from_s_elem(r, e)}; });
  m.def("emulate_fast_gemm",
        [](const at::Tensor& x, const at::Tensor& qweight, const at::Tensor& scale,
           const std::optional<at::Tensor>& min, int bits, int64_t group_size,
           const std::string& dtype, int num_sms) {
          TORCH_CHECK_VALUE(x.dim() == 2 && x.is_cpu() && qweight.is_cpu() && qweight.is_contiguous() &&
                                scale.scalar_type() == at::kHalf && scale.is_contiguous(),
                            "emulate_fast_gemm: x [M, K], contiguous qweight and fp16 scale on the CPU");
          return bits == 4 ? emulate<4>(x, qweight, scale, min ? &*min : nullptr, group_size, dtype, num_sms)
                           : emulate<8>(x, qweight, scale, nullptr, group_size, dtype, num_sms);
        },
        py::arg("x"), py::arg("qweight"), py::arg("scale"), py::arg("min"), py::arg("bits"),
        py::arg("group_size"), py::arg("dtype"), py::arg("num_sms") = 132,
        "The tensor-core GEMM's loops with mma.sync emulated on the host; returns fp32 [M, N] "
        "(without bias). dtype: the activation dtype the weights are rounded to.");
}

}  // namespace pagedinfer::ops
