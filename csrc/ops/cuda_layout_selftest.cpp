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

#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cuda/layout.h"
#include "ops/cuda_impl_select.h"
#include "ops/cuda_ops.h"

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
at::Tensor emulate(const at::Tensor& x_in, const at::Tensor& packed, const at::Tensor& scales,
                   const at::Tensor* mins, int64_t group_size, const std::string& dtype, int num_sms) {
  constexpr int kW = L::PackedGeom<kBits>::kWords;
  const at::Tensor x = x_in.to(at::kFloat).contiguous();
  const int64_t M = x.size(0), K = x.size(1);
  const PackedShape s = check_packed("emulate_fast_gemm", kBits, packed, scales, mins, K, group_size);
  const int64_t N = s.n, chunks = s.k_pad / L::kGemmKChunk;
  const L::GemmPlan plan = L::plan_gemm(s.n_pad, s.k_pad, num_sms);
  const float* xp = x.data_ptr<float>();
  const int32_t* pk = packed.data_ptr<int32_t>();
  const float* sc = scales.data_ptr<float>();
  const float* mn = mins != nullptr ? mins->data_ptr<float>() : nullptr;
  std::vector<float> partial(static_cast<size_t>(plan.splits) * M * N, 0.f);
  const int G = static_cast<int>(group_size);

  for (int64_t m0 = 0; m0 < M; m0 += 64) {
    const int mtiles = static_cast<int>(std::min<int64_t>(64, M - m0) + 15) / 16;
    for (int split = 0; split < plan.splits; ++split) {
      const int64_t c_begin = static_cast<int64_t>(split) * plan.chunks_per_split;
      const int64_t c_end = std::min(chunks, c_begin + plan.chunks_per_split);
      for (int64_t nb = 0; nb < s.n_pad / L::kGemmNPad; ++nb)
        for (int warp = 0; warp < 4; ++warp) {
          const int64_t nt0 = nb * 8 + warp * 2;
          std::vector<float> acc(32 * 4 * 2 * 4, 0.f);  // [lane][mt][u][i]
          auto A = [&](int lane, int mt, int u, int i) -> float& { return acc[((lane * 4 + mt) * 2 + u) * 4 + i]; };
          for (int64_t c = c_begin; c < c_end; ++c) {
            for (int kt = 0; kt < L::kGemmKChunk / 16; ++kt) {
              for (int u = 0; u < 2; ++u) {
                float b[16][8];
                int b_hits[16][8] = {};
                for (int lane = 0; lane < 32; ++lane) {
                  const int64_t n = (nt0 + u) * 8 + L::mma_b_n(lane);
                  const int gi = kt * 16 / G;
                  float scale = 0.f, mnv = 0.f;
                  if (n < N) {
                    const int64_t si = (c * (L::kGemmKChunk / G) + gi) * N + n;
                    scale = sc[si];
                    mnv = mn != nullptr ? mn[si] : 0.f;
                  }
                  const int32_t* words = pk + (((nt0 + u) * chunks + c) * 32 + lane) * kW;
                  for (int i = 0; i < 4; ++i) {
                    const uint32_t word = static_cast<uint32_t>(words[L::fragment_word<kBits>(kt)]);
                    const uint32_t raw = (word >> L::fragment_shift<kBits>(kt, i)) & ((1u << kBits) - 1);
                    const float q = static_cast<float>(raw) - (kBits == 8 ? 128.f : 0.f);
                    const int kk = L::mma_b_k(lane, i >> 1, i & 1), nn = L::mma_b_n(lane);
                    b[kk][nn] = round_to(q * scale + mnv, dtype);
                    ++b_hits[kk][nn];
                  }
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
                        const int row = mt * 16 + L::mma_a_row(lane, r);
                        const int col = kt * 16 + L::mma_a_col(lane, r, 0) + e;
                        const int64_t gm = m0 + row, gk = c * L::kGemmKChunk + col;
                        const float v = (gm < M && gk < K) ? xp[gm * K + gk] : 0.f;
                        a[L::mma_a_row(lane, r)][L::mma_a_col(lane, r, e)] = v;
                        ++a_hits[L::mma_a_row(lane, r)][L::mma_a_col(lane, r, e)];
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
                      A(lane, mt, u, i) += sum;
                    }
                  for (auto& row : c_hits)
                    for (int h : row)
                      if (h != 1) throw std::runtime_error("C fragment map does not cover the 16x8 tile once");
                }
              }
            }
          }
          for (int lane = 0; lane < 32; ++lane)
            for (int mt = 0; mt < mtiles; ++mt)
              for (int u = 0; u < 2; ++u)
                for (int i = 0; i < 4; ++i) {
                  const int64_t row = m0 + mt * 16 + L::mma_c_row(lane, i);
                  const int64_t col = (nt0 + u) * 8 + L::mma_c_col(lane, i);
                  if (row < M && col < N) partial[(split * M + row) * N + col] = A(lane, mt, u, i);
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
  m.def("packed_pos", [](int bits, int64_t n, int64_t k, int64_t k_pad) {
    const auto p = bits == 4 ? L::packed_pos<4>(n, k, k_pad) : L::packed_pos<8>(n, k, k_pad);
    return std::pair{p.word, p.shift};
  });
  m.def("packed_fragment_nk", [](int bits, int lane, int w, int j) {
    int n = 0, k = 0;
    if (bits == 4) L::packed_fragment_nk<4>(lane, w, j, &n, &k);
    else L::packed_fragment_nk<8>(lane, w, j, &n, &k);
    return std::pair{n, k};
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
  m.def("emulate_fast_gemm",
        [](const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scales,
           const std::optional<at::Tensor>& mins, int bits, int64_t group_size,
           const std::string& dtype, int num_sms) {
          TORCH_CHECK_VALUE(x.dim() == 2 && x.is_cpu() && packed.is_cpu(),
                            "emulate_fast_gemm: x must be a 2-dim CPU tensor [M, K], packed on the CPU");
          return bits == 4 ? emulate<4>(x, packed, scales, mins ? &*mins : nullptr, group_size, dtype, num_sms)
                           : emulate<8>(x, packed, scales, nullptr, group_size, dtype, num_sms);
        },
        py::arg("x"), py::arg("packed"), py::arg("scales"), py::arg("mins"), py::arg("bits"),
        py::arg("group_size"), py::arg("dtype"), py::arg("num_sms") = 132,
        "The tensor-core GEMM's loops with mma.sync emulated on the host; returns fp32 [M, N] "
        "(without bias). dtype: the activation dtype the weights are rounded to.");
}

}  // namespace pagedinfer::ops
