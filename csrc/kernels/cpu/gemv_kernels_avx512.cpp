// AVX-512 GEMV twins of gemm_kernels.cpp (the small-M path: decode). Compiled with AVX-512
// flags; entered only when active_isa() says the CPU has them. Layouts: gemm_kernels.h.
//
// The GEMV streams each weight once, so it must unpack and multiply faster than memory delivers:
// about 36 G weights/s (2 cores) at 80 % of this machine's 28 GB/s for INT4. The unpacking and
// multiplying cost is what limits it, so each path below is counted in vector instructions.
//
// bf16 / fp16 activations (the default): integer dot products. prepare_x quantizes x to int16
// with one power-of-two scale per weight group, chosen so the group's largest |x| lands in
// [2^14, 2^15): a bf16 (fp16) value within 2^7 (2^4) of the group's largest is held exactly, a
// smaller one to 2^-16 of the largest, i.e. finer than bf16 itself resolves it. The int16 dot
// products (vpmaddwd / vpdpwssd, 32 multiplies each) give exact int32 sums; each group's sum is
// converted and multiplied into an fp32 accumulator by scale[n, g] * x_qscale[m, g]. With G = 32
// a convert and an fma per group would be as many instructions as the dot products, so the
// kernels take 128 weights (4 groups) a step, reordered so that each int32 lane holds one group
// (the quad order: to_quad_order; x_q is stored in it): per step and x row 4 dot products, 1
// convert, 1 fma, where one group at a time took 4, 4, 4. INT4, one core, L2-resident rows, 4096
// wide: 11 -> 15.5 G weights/s at 4 x rows, 35 -> 39 at 1; from DRAM, 4096 x 4096 at M = 4
// 0.86-1.04 -> 1.20-1.39x PyTorch's INT4 op; INT8 at M = 3 0.93-1.00 -> 0.72-0.85 ms.
// G = 64 and 128 sum whole groups in int32 instead. The min term is sum_g min[n, g] *
// x_sum[m, g], 16 groups per fma. INT8 weights are widened with sign extension.
//
// fp32 activations keep fp32-level accuracy: x is split into bf16 x_hi + x_lo (x_hi + x_lo holds
// x to ~2^-17) and the nibbles become exact bf16 through vpermw on a 32-entry table, multiplied
// with vdpbf16ps against both.
//
// Two weight rows per pass share the activation loads; each (row, x row) keeps two accumulators
// so the fma chains do not limit throughput.
// GCC 12 flags its own intrinsics headers (_mm512_reduce_add_ps, _mm512_setzero_*) as reading
// uninitialized values; the warning is spurious.
#pragma GCC diagnostic ignored "-Wuninitialized"  // (-Wmaybe-uninitialized: cmake/utils.cmake)
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cpu/attention_simd_avx512.h"  // reduce16
#include "kernels/cpu/gemm_kernels.h"
#include "kernels/cpu/gemm_simd_avx512.h"

namespace pagedinfer::cpu {
namespace {

using avx512_gemm::halves_to_floats;
using avx512_gemm::log2_of;
using avx512_gemm::prefetch_bytes;

// Software prefetch (the hardware prefetchers alone left the loop waiting on DRAM, 14 vs 22 GB/s
// for a 4096-wide layer with 2 threads). The 16-bit-activation loops prefetch each of their NR
// row streams kStreamPrefetchBytes ahead of its own read point (prefetch_streams); the fp32 ones
// make one run through the rows' bytes kPrefetchBytes ahead of the first row, one line per chunk
// of work (2-4 KiB beat 1 KiB by 6 % and 8-32 KiB by 12-20 % on a 335 MB INT4 matrix and the
// default model's K = 576: lines prefetched far ahead, in other pages, likely stay in flight
// longer and hold the line-fill buffers that bound one core's memory traffic). Scales and mins
// are prefetched kScalePrefetchRows rows ahead, whole (row_factors reads them all at a row's
// start).
constexpr int64_t kStreamPrefetchBytes = 4096;
constexpr int64_t kPrefetchBytes = 2048;
constexpr int64_t kScalePrefetchRows = 8;

inline __m512i nibble_table() {
  const __m512 iota = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  return (__m512i)_mm512_cvtne2ps_pbh(iota, iota);
}

// A vector whose lanes sum to sum_i a[i] * b[i].
inline __m512 dot_lanes(const float* a, const float* b, int64_t count) {
  __m512 acc = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= count; i += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc);
  if (i < count) {
    const __mmask16 mask = static_cast<__mmask16>((1u << (count - i)) - 1);
    acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, a + i), _mm512_maskz_loadu_ps(mask, b + i), acc);
  }
  return acc;
}

inline __m512 load16(const void* row, DType dt, int64_t k) {
  switch (dt) {
    case DType::kBF16:
      return _mm512_castsi512_ps(_mm512_slli_epi32(
          _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)(static_cast<const uint16_t*>(row) + k))), 16));
    case DType::kF16:
      return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)(static_cast<const uint16_t*>(row) + k)));
    default:
      return _mm512_loadu_ps(static_cast<const float*>(row) + k);
  }
}

// The int16 image of one group of x (G values in x32) and its scale (file comment). A group
// holding inf or NaN gets a NaN scale, so the outputs it feeds are NaN, as x @ W's would be.
inline void quantize_group(const float* x32, int64_t G, int16_t* xq, float* qscale) {
  __m512 mx = _mm512_setzero_ps();
  __mmask16 non_finite = 0;  // (max_ps drops NaNs, so they are looked for separately)
  for (int64_t k = 0; k < G; k += 16) {
    const __m512 v = _mm512_loadu_ps(x32 + k);
    mx = _mm512_max_ps(mx, _mm512_abs_ps(v));
    non_finite |= _mm512_fpclass_ps_mask(v, 0x99);  // QNaN | SNaN | +inf | -inf
  }
  if (non_finite != 0) {
    std::memset(xq, 0, G * sizeof(int16_t));
    *qscale = NAN;
    return;
  }
  const float maxabs = _mm512_reduce_max_ps(mx);
  uint32_t bits;
  std::memcpy(&bits, &maxabs, 4);
  const int biased = static_cast<int>(bits >> 23);  // maxabs in [2^(biased - 127), 2^(biased - 126))
  const int e = std::min(141 - biased, 127);  // maxabs * 2^e in [2^14, 2^15)
  const __m512 up = _mm512_set1_ps(std::ldexp(1.0f, e));
  for (int64_t k = 0; k < G; k += 16)  // round to nearest; saturation never triggers (exact max)
    _mm256_storeu_si256((__m256i*)(xq + k),
                        _mm512_cvtsepi32_epi16(_mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x32 + k), up))));
  *qscale = std::ldexp(1.0f, -e);
}

// The quad order of a 128-wide chunk (groups a, b, c, d of 32 words, one per vector) that the
// G = 32 kernels multiply in: four runs of 32 words, run s holding elements 8s ... 8s + 7 of each
// group, as dword lanes 4L + grp = (element 8s + 2L, 8s + 2L + 1) of group grp, for L = 0 ... 3
// and grp = a, b, c, d. So every int32 lane of a dot product of two runs sums one group.
inline void to_quad_order(__m512i a, __m512i b, __m512i c, __m512i d, __m512i* runs) {
  // word w of run 0 comes from element 2L + e (L = w / 8, e = w % 2) of group (w / 2) % 4; the
  // index's bit 5 picks the second source (b of a, b; d of c, d)
  static constexpr auto kIndex = [] {
    std::array<int16_t, 32> index{};
    for (int w = 0; w < 32; ++w) index[w] = static_cast<int16_t>((w / 2) % 2 * 32 + 2 * (w / 8) + w % 2);
    return index;
  }();
  constexpr __mmask32 from_cd = 0xF0F0F0F0;  // words of dword lanes 4L + 2, 4L + 3 (groups c, d)
  const __m512i idx0 = _mm512_loadu_si512(kIndex.data());
#pragma GCC unroll 4
  for (int run = 0; run < 4; ++run) {
    const __m512i idx = _mm512_add_epi16(idx0, _mm512_set1_epi16(static_cast<int16_t>(8 * run)));
    runs[run] = _mm512_mask_blend_epi16(from_cd, _mm512_permutex2var_epi16(a, idx, b),
                                        _mm512_permutex2var_epi16(c, idx, d));
  }
}

// One 128-wide chunk of an x_q row, in place, into the quad order.
inline void x_quad_order(int16_t* chunk) {
  __m512i runs[4];
  to_quad_order(_mm512_loadu_si512(chunk), _mm512_loadu_si512(chunk + 32), _mm512_loadu_si512(chunk + 64),
                _mm512_loadu_si512(chunk + 96), runs);
  for (int run = 0; run < 4; ++run) _mm512_storeu_si512(chunk + 32 * run, runs[run]);
}

// The 128 INT8 weights of one G = 32 step of a row (valid of them inside the row, a multiple of
// 32; the rest zero) sign-extended, in the quad order: 4 widens, 8 word permutes, 4 blends.
inline void int8_quad_weights(const int8_t* step, int64_t valid, __m512i* wq) {
  __m512i g[4];
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i)
    g[i] = 32 * i < valid ? _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i*)(step + 32 * i)))
                          : _mm512_setzero_si512();
  to_quad_order(g[0], g[1], g[2], g[3], wq);
}

// The 128 INT4 weights of one G = 32 step of a row (two 32-byte chunks: groups a, b, then c, d)
// as four word vectors in the quad order (to_quad_order), built by byte shuffles of the packed
// nibbles rather than word permutes. The high-nibble groups b, d are masked, not shifted, so they
// come out 16 times too large; row_factors divides the factors of odd groups by 16. Without the
// second chunk (has_cd false: the row ends) c and d are zero.
// Each run: a 16-byte broadcast load of either chunk, one qword interleave, one byte shuffle
// (in 128-bit lanes, so the pieces are broadcast first) and one and.
__attribute__((always_inline)) inline void int4_quad_weights(const uint8_t* chunks, bool has_cd,
                                                             __m512i* wq) {
  static constexpr auto kShuffle = [] {  // byte p of lane L: word p / 2 = (dword grp, element e)
    std::array<int8_t, 64> shuffle{};
    for (int L = 0; L < 4; ++L)
      for (int p = 0; p < 16; ++p) {
        const int grp = p / 4, e = (p / 2) % 2;
        shuffle[16 * L + p] = p % 2 == 1 ? -1 : static_cast<int8_t>((grp >= 2 ? 8 : 0) + 2 * L + e);
      }
    return shuffle;
  }();
  const __m512i shuffle = _mm512_loadu_si512(kShuffle.data());
  const __m512i nibbles = _mm512_set1_epi64(0x00F000F0000F000FLL);  // dwords: low, high, low, high
#pragma GCC unroll 2
  for (int h = 0; h < 2; ++h) {  // runs 2h (qword 0 of each 16 bytes) and 2h + 1 (qword 1)
    const __m128i* piece = reinterpret_cast<const __m128i*>(chunks + 16 * h);
    const __m512i ab = _mm512_broadcast_i32x4(_mm_loadu_si128(piece));
    const __m512i cd = has_cd ? _mm512_broadcast_i32x4(_mm_loadu_si128(piece + 2)) : _mm512_setzero_si512();
    wq[2 * h] = _mm512_and_si512(_mm512_shuffle_epi8(_mm512_unpacklo_epi64(ab, cd), shuffle), nibbles);
    wq[2 * h + 1] = _mm512_and_si512(_mm512_shuffle_epi8(_mm512_unpackhi_epi64(ab, cd), shuffle), nibbles);
  }
}

// ---------------------------------------------------------------------------------------------
// 16-bit activations: int16 dot products.

// f[(r * MB + m) * gpad + g] = scale[n + r, g] * x_qscale[m0 + m, g] for every group of the NR
// rows (gpad = groups rounded up to 16; the padding is written as zeros), and their min terms
// added to acc[(r * MB + m) * 2]: done once per row, before the weights stream. Whole-vector
// stores, because the streaming loop reads f back at once: a load cannot take its value from an
// earlier masked store still in flight, and waits for it.
template <int MB, int NR, bool kOddSixteenth = false>
__attribute__((always_inline)) inline void row_factors(const uint16_t* scale, const uint16_t* min,
                                                       const PreparedX& x, int64_t m0, int64_t n,
                                                       int64_t groups, int64_t gpad, float* f,
                                                       __m512* acc) {
  const float* x_qscale = x.x_qscale;
  const float* x_sum = x.x_sum;
  for (int64_t g0 = 0; g0 < groups; g0 += 16) {
    const __mmask16 gm = groups - g0 >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << (groups - g0)) - 1);
#pragma GCC unroll 4
    for (int r = 0; r < NR; ++r) {
      const int64_t so = (n + r) * groups + g0;
      __m512 s = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(gm, scale + so));
      if (kOddSixteenth)
        s = _mm512_mul_ps(s, _mm512_setr_ps(1, 0.0625f, 1, 0.0625f, 1, 0.0625f, 1, 0.0625f, 1, 0.0625f, 1,
                                            0.0625f, 1, 0.0625f, 1, 0.0625f));
#pragma GCC unroll 4
      for (int m = 0; m < MB; ++m)
        _mm512_store_ps(f + (r * MB + m) * gpad + g0,
                        _mm512_mul_ps(s, _mm512_maskz_loadu_ps(gm, x_qscale + (m0 + m) * groups + g0)));
      if (min == nullptr) continue;
      const __m512 mn = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(gm, min + so));
#pragma GCC unroll 4
      for (int m = 0; m < MB; ++m)
        acc[(r * MB + m) * 2] =
            _mm512_fmadd_ps(mn, _mm512_maskz_loadu_ps(gm, x_sum + (m0 + m) * groups + g0), acc[(r * MB + m) * 2]);
    }
  }
}

// Prefetches one line of one of the NR row streams q[r] (the streams take turns), per 32 bytes
// read from each row at byte `offset`: kStreamPrefetchBytes ahead of that stream's read point,
// running past its row's end on into the same row of the next NR rows. One run through the
// row pair's bytes, kPrefetchBytes ahead of the first row, was only just ahead of the second
// row's reads early in each pass (INT4, 2 KiB rows) or behind them for half of it (INT8, 4 KiB):
// 4096 x 4096 at M = 1, A/B rounds, INT4 0.46-0.56 vs 0.53-0.59 ms, INT8 0.78-0.88 vs 0.89-1.01;
// the default model's 120 INT4 layers unchanged.
template <int NR, class T>
inline void prefetch_streams(const T* const* q, int64_t row_bytes, int64_t offset) {
  if (NR == 1 && (offset & 32)) return;
  const int r = NR == 2 ? static_cast<int>((offset >> 5) & 1) : 0;
  const int64_t o = (offset & ~int64_t{63}) + kStreamPrefetchBytes;
  const int64_t at = o < row_bytes ? o : o - row_bytes + NR * row_bytes;
  _mm_prefetch(reinterpret_cast<const char*>(q[r]) + at, _MM_HINT_T0);
}

// Group g's int32 sums ia[i] of the N (row, x row) pairs, scaled by f[i * gpad + g] into
// acc[2 i + (g & 1)]: consecutive groups alternate accumulators, so their fmas do not chain.
template <int N>
__attribute__((always_inline)) inline void add_group(const __m512i* ia, const float* f, int64_t gpad,
                                                     int64_t g, __m512* acc) {
#pragma GCC unroll 16
  for (int i = 0; i < N; ++i)
    acc[i * 2 + (g & 1)] =
        _mm512_fmadd_ps(_mm512_cvtepi32_ps(ia[i]), _mm512_set1_ps(f[i * gpad + g]), acc[i * 2 + (g & 1)]);
}

// lanes[i] = acc[2 i] + acc[2 i + 1], for the N (row, x row) pairs: the sum of its lanes is the
// result, taken later for 16 rows at once (gemv_rows).
template <int N>
__attribute__((always_inline)) inline void add_pairs(const __m512* acc, __m512* lanes) {
#pragma GCC unroll 16
  for (int i = 0; i < N; ++i) lanes[i] = _mm512_add_ps(acc[2 * i], acc[2 * i + 1]);
}

// One G = 32 step at k of the NR weight rows wq (quad order) against x rows xq, xq + stride, ...:
// per x row 4 int16 dot products, 1 convert, 1 fma by the 4 groups' factors f[j ... j + 3].
template <int MB, int NR>
__attribute__((always_inline)) inline void quad_step(const __m512i (*wq)[4], const int16_t* xq,
                                                     int64_t stride, int64_t k, const float* f,
                                                     int64_t gpad, __m512* acc) {
  const int64_t j = k / 32;
#pragma GCC unroll 4
  for (int m = 0; m < MB; ++m) {
    const int16_t* xm = xq + m * stride + k;
    const __m512i x0 = _mm512_loadu_si512(xm), x1 = _mm512_loadu_si512(xm + 32);
    const __m512i x2 = _mm512_loadu_si512(xm + 64), x3 = _mm512_loadu_si512(xm + 96);
#pragma GCC unroll 4
    for (int r = 0; r < NR; ++r) {
      __m512i ia = _mm512_madd_epi16(wq[r][0], x0);
      ia = _mm512_dpwssd_epi32(ia, wq[r][1], x1);
      ia = _mm512_dpwssd_epi32(ia, wq[r][2], x2);
      ia = _mm512_dpwssd_epi32(ia, wq[r][3], x3);
      const __m512 factors = _mm512_broadcast_f32x4(_mm_load_ps(f + (r * MB + m) * gpad + j));
      __m512& a = acc[(r * MB + m) * 2];
      a = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ia), factors, a);
    }
  }
}

// The lanes of lanes[r * MB + m] sum to sum_k w[n + r, k] * x[m0 + m, k] (scale and min
// applied).
// f: 64-byte aligned scratch of 2 * MB * gpad floats.
template <int MB, int NR, int G>
void int4_rows_q16(const Int4Args& w, const PreparedX& x, int64_t m0, int64_t n, float* f,
                   __m512* lanes) {
  const int64_t K = w.K, groups = K / G, gpad = (groups + 15) / 16 * 16, rb = int4_row_bytes(K);
  const uint8_t* q[NR];
  for (int r = 0; r < NR; ++r) q[r] = w.qweight + (n + r) * rb;
  const int16_t* xq = x.x_q + m0 * x.x_q_stride;
  // Scales and mins kScalePrefetchRows rows ahead, whole rows: row_factors reads them at once.
  prefetch_bytes(w.scale + (n + kScalePrefetchRows) * groups, NR * groups * 2);
  prefetch_bytes(w.min + (n + kScalePrefetchRows) * groups, NR * groups * 2);
  __m512 acc[NR * MB * 2];  // one flat array, so GCC keeps it in registers
#pragma GCC unroll 16
  for (int i = 0; i < NR * MB * 2; ++i) acc[i] = _mm512_setzero_ps();
  row_factors<MB, NR, G == 32>(w.scale, w.min, x, m0, n, groups, gpad, f, acc);
  if constexpr (G == 32) {  // 128 weights a step, 4 groups of 32: see the comment above
    for (int64_t k = 0; k < K; k += kQuadK) {
      prefetch_streams<NR>(q, rb, k / 2);
      prefetch_streams<NR>(q, rb, k / 2 + 32);
      const bool has_cd = K - k > 64;  // a row's last chunk of 64 may end it
      __m512i wq[NR][4];
#pragma GCC unroll 4
      for (int r = 0; r < NR; ++r) int4_quad_weights(q[r] + k / 2, has_cd, wq[r]);
      quad_step<MB, NR>(wq, xq, x.x_q_stride, k, f, gpad, acc);
    }
  } else {  // G = 64 or 128 (K % 64 == 0): int32 sums over the group, exact (< 15 * 2^15 * 8 < 2^24)
    const __m512i low4 = _mm512_set1_epi16(0x0F);
    for (int64_t g = 0; g < groups; ++g) {
      __m512i ia[NR * MB];
#pragma GCC unroll 16
      for (int i = 0; i < NR * MB; ++i) ia[i] = _mm512_setzero_si512();
#pragma GCC unroll 2
      for (int64_t k = g * G; k < (g + 1) * G; k += 64) {
        prefetch_streams<NR>(q, rb, k / 2);
        __m512i lo[NR], hi[NR];  // low nibbles (k ... k + 31), high ones (k + 32 ... k + 63)
#pragma GCC unroll 4
        for (int r = 0; r < NR; ++r) {
          const __m512i wd = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i*)(q[r] + k / 2)));
          lo[r] = _mm512_and_si512(wd, low4);
          hi[r] = _mm512_srli_epi16(wd, 4);
        }
#pragma GCC unroll 4
        for (int m = 0; m < MB; ++m) {
          const __m512i xa = _mm512_loadu_si512(xq + m * x.x_q_stride + k);
          const __m512i xb = _mm512_loadu_si512(xq + m * x.x_q_stride + k + 32);
#pragma GCC unroll 4
          for (int r = 0; r < NR; ++r)
            ia[r * MB + m] = _mm512_dpwssd_epi32(_mm512_dpwssd_epi32(ia[r * MB + m], lo[r], xa), hi[r], xb);
        }
      }
      add_group<NR * MB>(ia, f, gpad, g, acc);
    }
  }
  add_pairs<NR * MB>(acc, lanes);
}

// The same for INT8 weights: 32 weights sign-extended to words per vpdpwssd.
template <int MB, int NR, int G>
void int8_rows_q16(const Int8Args& w, const PreparedX& x, int64_t m0, int64_t n, float* f,
                   __m512* lanes) {
  const int64_t K = w.K, groups = K / G, gpad = (groups + 15) / 16 * 16;
  const int8_t* q[NR];
  for (int r = 0; r < NR; ++r) q[r] = w.qweight + (n + r) * K;
  const int16_t* xq = x.x_q + m0 * x.x_q_stride;
  prefetch_bytes(w.scale + (n + kScalePrefetchRows) * groups, NR * groups * 2);
  __m512 acc[NR * MB * 2];
#pragma GCC unroll 16
  for (int i = 0; i < NR * MB * 2; ++i) acc[i] = _mm512_setzero_ps();
  row_factors<MB, NR>(w.scale, nullptr, x, m0, n, groups, gpad, f, acc);
  if constexpr (G == 32) {  // as the INT4 kernel: one convert and fma per 4 groups
    for (int64_t k = 0; k < K; k += kQuadK) {
#pragma GCC unroll 4
      for (int64_t o = 0; o < kQuadK; o += 32) prefetch_streams<NR>(q, K, k + o);
      __m512i wq[NR][4];
#pragma GCC unroll 4
      for (int r = 0; r < NR; ++r) int8_quad_weights(q[r] + k, K - k, wq[r]);
      quad_step<MB, NR>(wq, xq, x.x_q_stride, k, f, gpad, acc);
    }
  } else {
    for (int64_t g = 0; g < groups; ++g) {
      // |sum| <= 2^7 * 2^15 * G / 16 <= 2^25: exact in int32, rounded once by the convert
      __m512i ia[NR * MB];
#pragma GCC unroll 16
      for (int i = 0; i < NR * MB; ++i) ia[i] = _mm512_setzero_si512();
#pragma GCC unroll 4
      for (int64_t k = g * G; k < (g + 1) * G; k += 32) {
        prefetch_streams<NR>(q, K, k);
        __m512i wv[NR];
#pragma GCC unroll 4
        for (int r = 0; r < NR; ++r) wv[r] = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i*)(q[r] + k)));
#pragma GCC unroll 4
        for (int m = 0; m < MB; ++m) {
          const __m512i xa = _mm512_loadu_si512(xq + m * x.x_q_stride + k);
#pragma GCC unroll 4
          for (int r = 0; r < NR; ++r) ia[r * MB + m] = _mm512_dpwssd_epi32(ia[r * MB + m], wv[r], xa);
        }
      }
      add_group<NR * MB>(ia, f, gpad, g, acc);
    }
  }
  add_pairs<NR * MB>(acc, lanes);
}

// ---------------------------------------------------------------------------------------------
// fp32 activations: bf16 hi + lo dot products.

// The lanes of lanes[r * MB + m] sum to sum_k q-part of rows n + r, x rows m0 + m (scale
// applied, min not yet).
template <int MB, int NR>
void int4_rows_f32(const Int4Args& w, const PreparedX& x, int64_t m0, int64_t n, const float* sc,
                   __m512* lanes) {
  const int64_t K = w.K, groups = K / w.group_size, rb = int4_row_bytes(K), full = K / 64;
  const int shift = log2_of(w.group_size);
  const __m512i table = nibble_table();
  const uint8_t* q[NR];
  for (int r = 0; r < NR; ++r) q[r] = w.qweight + (n + r) * rb;
  const uint16_t* xh = x.x_hi + m0 * K;
  const uint16_t* xl = x.x_lo + m0 * K;
  __m512 acc[NR * MB * 2];
#pragma GCC unroll 16
  for (int i = 0; i < NR * MB * 2; ++i) acc[i] = _mm512_setzero_ps();
  const char* next = reinterpret_cast<const char*>(q[0]) + kPrefetchBytes;
  for (int64_t c = 0; c < full; ++c) {
    _mm_prefetch(next + 64 * c, _MM_HINT_T0);
    __m512bh wl[NR], wh[NR];
#pragma GCC unroll 4
    for (int r = 0; r < NR; ++r) {
      const __m512i wd = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i*)(q[r] + 32 * c)));
      wl[r] = (__m512bh)_mm512_permutexvar_epi16(wd, table);
      wh[r] = (__m512bh)_mm512_permutexvar_epi16(_mm512_srli_epi16(wd, 4), table);
    }
    const int64_t klo = 64 * c, khi = klo + 32, gl = klo >> shift, gh = khi >> shift;
#pragma GCC unroll 4
    for (int m = 0; m < MB; ++m) {
      const __m512bh xa = (__m512bh)_mm512_loadu_si512(xh + m * K + klo);
      const __m512bh xb = (__m512bh)_mm512_loadu_si512(xh + m * K + khi);
      const __m512bh la = (__m512bh)_mm512_loadu_si512(xl + m * K + klo);
      const __m512bh lb = (__m512bh)_mm512_loadu_si512(xl + m * K + khi);
#pragma GCC unroll 4
      for (int r = 0; r < NR; ++r) {
        const __m512 pl = _mm512_dpbf16_ps(_mm512_dpbf16_ps(_mm512_setzero_ps(), wl[r], xa), wl[r], la);
        const __m512 ph = _mm512_dpbf16_ps(_mm512_dpbf16_ps(_mm512_setzero_ps(), wh[r], xb), wh[r], lb);
        acc[(r * MB + m) * 2] = _mm512_fmadd_ps(pl, _mm512_set1_ps(sc[r * groups + gl]), acc[(r * MB + m) * 2]);
        acc[(r * MB + m) * 2 + 1] =
            _mm512_fmadd_ps(ph, _mm512_set1_ps(sc[r * groups + gh]), acc[(r * MB + m) * 2 + 1]);
      }
    }
  }
  if (K % 64 != 0) {  // a last half chunk: its 32 low nibbles, in group (64 * full) / G
    const int64_t klo = 64 * full, gl = klo >> shift;
#pragma GCC unroll 4
    for (int r = 0; r < NR; ++r) {
      const __m512i wd = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i*)(q[r] + 32 * full)));
      const __m512bh wl = (__m512bh)_mm512_permutexvar_epi16(wd, table);
      for (int m = 0; m < MB; ++m) {
        __m512 pl = _mm512_dpbf16_ps(_mm512_setzero_ps(), wl, (__m512bh)_mm512_loadu_si512(xh + m * K + klo));
        pl = _mm512_dpbf16_ps(pl, wl, (__m512bh)_mm512_loadu_si512(xl + m * K + klo));
        acc[(r * MB + m) * 2] = _mm512_fmadd_ps(pl, _mm512_set1_ps(sc[r * groups + gl]), acc[(r * MB + m) * 2]);
      }
    }
  }
  add_pairs<NR * MB>(acc, lanes);
}

// Same shape for INT8 with fp32 activations: w = cvt(q), fma with x32, per-group scale.
template <int MB, int NR>
void int8_rows_f32(const Int8Args& w, const PreparedX& x, int64_t m0, int64_t n, const float* sc,
                   __m512* lanes) {
  const int64_t K = w.K, G = w.group_size, groups = K / G;
  const int8_t* q[NR];
  for (int r = 0; r < NR; ++r) q[r] = w.qweight + (n + r) * K;
  const float* xr = x.x32 + m0 * K;
  __m512 acc[NR][MB][2];
  for (int r = 0; r < NR; ++r)
    for (int m = 0; m < MB; ++m) acc[r][m][0] = acc[r][m][1] = _mm512_setzero_ps();
  const char* next = reinterpret_cast<const char*>(q[0]) + kPrefetchBytes;
  for (int64_t g = 0; g < groups; ++g) {
    for (int64_t off = 0; off < NR * G; off += 64) _mm_prefetch(next + g * NR * G + off, _MM_HINT_T0);
    __m512 p[NR][MB][2];
    for (int r = 0; r < NR; ++r)
      for (int m = 0; m < MB; ++m) p[r][m][0] = p[r][m][1] = _mm512_setzero_ps();
    for (int64_t v = 0; v < G; v += 32) {
      const int64_t k = g * G + v;
      __m512 w0[NR], w1[NR];
      for (int r = 0; r < NR; ++r) {
        w0[r] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)(q[r] + k))));
        w1[r] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)(q[r] + k + 16))));
      }
      for (int m = 0; m < MB; ++m) {
        const __m512 x0 = _mm512_loadu_ps(xr + m * K + k), x1 = _mm512_loadu_ps(xr + m * K + k + 16);
        for (int r = 0; r < NR; ++r) {
          p[r][m][0] = _mm512_fmadd_ps(w0[r], x0, p[r][m][0]);
          p[r][m][1] = _mm512_fmadd_ps(w1[r], x1, p[r][m][1]);
        }
      }
    }
    for (int r = 0; r < NR; ++r) {
      const __m512 s = _mm512_set1_ps(sc[r * groups + g]);
      for (int m = 0; m < MB; ++m) {
        acc[r][m][0] = _mm512_fmadd_ps(p[r][m][0], s, acc[r][m][0]);
        acc[r][m][1] = _mm512_fmadd_ps(p[r][m][1], s, acc[r][m][1]);
      }
    }
  }
  add_pairs<NR * MB>(&acc[0][0][0], lanes);
}

// ---------------------------------------------------------------------------------------------
// The row loops.

// fn.template operator()<MB>() for the runtime mb (1 ... 4).
template <class Fn>
void with_mb(int mb, const Fn& fn) {
  switch (mb) {
    case 1: return fn.template operator()<1>();
    case 2: return fn.template operator()<2>();
    case 3: return fn.template operator()<3>();
    default: return fn.template operator()<4>();
  }
}

// fn.template operator()<MB, G>() for the runtime mb and group size.
template <class Fn>
void with_mb_g(int mb, int64_t G, const Fn& fn) {
  with_mb(mb, [&]<int MB>() {
    if (G == 32) fn.template operator()<MB, 32>();
    else if (G == 64) fn.template operator()<MB, 64>();
    else fn.template operator()<MB, 128>();
  });
}

// out[at ... at + count) = v[0 ... count) + bias[0 ... count) (bias may be null), converted to
// out's dtype with round-to-nearest-even, 16 at a time. (A scalar store per element, through
// store_value, cost ~30 us of a 4096 x 4096 GEMV's ~500.)
inline void store_outputs(void* out, DType dt, int64_t at, const float* v, const float* bias, int count) {
  for (int i = 0; i < count; i += 16) {
    const __mmask16 mask = static_cast<__mmask16>(count - i >= 16 ? 0xFFFF : (1u << (count - i)) - 1);
    __m512 y = _mm512_maskz_loadu_ps(mask, v + i);
    if (bias != nullptr) y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(mask, bias + i));
    if (dt == DType::kF32) {
      _mm512_mask_storeu_ps(static_cast<float*>(out) + at + i, mask, y);
    } else if (dt == DType::kBF16) {
      _mm256_mask_storeu_epi16(static_cast<uint16_t*>(out) + at + i, mask, (__m256i)_mm512_cvtneps_pbh(y));
    } else {
      _mm256_mask_storeu_epi16(static_cast<uint16_t*>(out) + at + i, mask,
                               _mm512_cvtps_ph(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
  }
}

// Rows [n_begin, n_end) of W against x rows m0 ... m0 + MB - 1, two rows at a time:
// rows.template operator()<NR>(n, lanes) fills lanes[r * MB + m], whose lanes sum to the result.
// The sums of 16 rows are taken together by one transpose-and-add (reduce16: 30 instructions
// where 16 separate reductions take ~100; 576 x 576 and 3072 x 576, one thread, L2-resident:
// 1-5 % faster), and the results of 32 rows are stored together, with the bias.
template <int MB, class Rows>
void gemv_rows(int64_t m0, const float* bias, void* out, DType out_dt, int64_t ldo, int64_t n_begin,
               int64_t n_end, const Rows& rows) {
  constexpr int64_t kStoreRows = 32;
  alignas(64) float buf[MB][kStoreRows];
  __m512 lanes[2 * MB];
  __m512 pending[MB][16];  // lanes of the rows nb + 16 h ... (their sums not taken yet)
  for (int64_t nb = n_begin; nb < n_end; nb += kStoreRows) {
    const int64_t ne = std::min(n_end, nb + kStoreRows);
    for (int64_t h = 0; h < ne - nb; h += 16) {
      const int64_t hn = std::min<int64_t>(16, ne - nb - h);
      for (int64_t i = 0; i < hn; i += 2) {
        const int nr = i + 2 <= hn ? 2 : 1;
        if (nr == 2) rows.template operator()<2>(nb + h + i, lanes);
        else rows.template operator()<1>(nb + h + i, lanes);
        for (int r = 0; r < nr; ++r)
          for (int m = 0; m < MB; ++m) pending[m][i + r] = lanes[r * MB + m];
      }
      for (int m = 0; m < MB; ++m) {
        for (int64_t i = hn; i < 16; ++i) pending[m][i] = _mm512_setzero_ps();
        _mm512_store_ps(buf[m] + h, avx512_attn::reduce16(pending[m]));
      }
    }
    for (int m = 0; m < MB; ++m)
      store_outputs(out, out_dt, (m0 + m) * ldo + nb, buf[m], bias != nullptr ? bias + nb : nullptr,
                    static_cast<int>(ne - nb));
  }
}

// 64-byte aligned scratch of at least `floats` floats, kept per thread.
inline float* aligned_scratch(int64_t floats) {
  thread_local std::vector<float> buf;
  if (static_cast<int64_t>(buf.size()) < floats + 16) buf.resize(floats + 16);
  const auto addr = reinterpret_cast<uintptr_t>(buf.data());
  return reinterpret_cast<float*>((addr + 63) & ~uintptr_t{63});
}

// The 16-bit-activation GEMV of rows [n_begin, n_end): for every block of up to 4 x rows and
// pair of W rows, rows_q16.template operator()<MB, NR, G>(m0, n, f, lanes), f being the
// row_factors scratch.
template <class RowsQ16>
void gemv_q16(const PreparedX& x, int64_t group_size, const float* bias, void* out, DType out_dt,
              int64_t ldo, int64_t n_begin, int64_t n_end, const RowsQ16& rows_q16) {
  const int64_t groups = x.K / group_size;
  float* f = aligned_scratch(2 * 4 * ((groups + 15) / 16 * 16));
  for (int64_t m0 = 0; m0 < x.M; m0 += 4)
    with_mb_g(static_cast<int>(std::min<int64_t>(4, x.M - m0)), group_size, [&]<int MB, int G>() {
      gemv_rows<MB>(m0, bias, out, out_dt, ldo, n_begin, n_end, [&]<int NR>(int64_t n, __m512* res) {
        rows_q16.template operator()<MB, NR, G>(m0, n, f, res);
      });
    });
}

// The fp32-activation GEMV of rows [n_begin, n_end): the rows' fp16 scales (and mins, where
// `min` is not null) widened 32 rows at a time, one contiguous run each; then for every block of
// up to 4 x rows and pair of W rows rows_f32.template operator()<MB, NR>(m0, n, sc, mn, lanes),
// sc and mn pointing at row n's widened groups.
template <class RowsF32>
void gemv_f32(const PreparedX& x, int64_t group_size, const uint16_t* scale, const uint16_t* min,
              const float* bias, void* out, DType out_dt, int64_t ldo, int64_t n_begin,
              int64_t n_end, const RowsF32& rows_f32) {
  const int64_t groups = x.K / group_size;
  constexpr int64_t kRowBlock = 32;
  float* sc_block = aligned_scratch(2 * kRowBlock * groups);
  float* mn_block = sc_block + kRowBlock * groups;
  for (int64_t nb = n_begin; nb < n_end; nb += kRowBlock) {
    const int64_t rows = std::min(kRowBlock, n_end - nb);
    halves_to_floats(scale + nb * groups, rows * groups, sc_block);
    if (min != nullptr) halves_to_floats(min + nb * groups, rows * groups, mn_block);
    for (int64_t m0 = 0; m0 < x.M; m0 += 4)
      with_mb(static_cast<int>(std::min<int64_t>(4, x.M - m0)), [&]<int MB>() {
        gemv_rows<MB>(m0, bias, out, out_dt, ldo, nb, nb + rows, [&]<int NR>(int64_t n, __m512* res) {
          const int64_t at = (n - nb) * groups;
          rows_f32.template operator()<MB, NR>(m0, n, sc_block + at, mn_block + at, res);
        });
      });
  }
}

}  // namespace

void prepare_x_avx512(const void* x, DType dt, int64_t ldx_bytes, PreparedX& p) {
  const int64_t G = p.group_size, groups = p.K / G;
  for (int64_t m = 0; m < p.M; ++m) {
    const void* row = static_cast<const char*>(x) + m * ldx_bytes;
    float* x32 = p.x32 + m * p.K;
    for (int64_t g = 0; g < groups; ++g) {
      __m512 sum = _mm512_setzero_ps();
      for (int64_t k = g * G; k < (g + 1) * G; k += 16) {
        const __m512 v = load16(row, dt, k);
        _mm512_storeu_ps(x32 + k, v);
        if (p.x_hi != nullptr) {
          const __m256i hi = (__m256i)_mm512_cvtneps_pbh(v);
          _mm256_storeu_si256((__m256i*)(p.x_hi + m * p.K + k), hi);
          const __m512 hi32 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(hi), 16));
          _mm256_storeu_si256((__m256i*)(p.x_lo + m * p.K + k),
                              (__m256i)_mm512_cvtneps_pbh(_mm512_sub_ps(v, hi32)));
        }
        sum = _mm512_add_ps(sum, v);
      }
      p.x_sum[m * groups + g] = _mm512_reduce_add_ps(sum);
      if (p.x_q != nullptr)
        quantize_group(x32 + g * G, G, p.x_q + m * p.x_q_stride + g * G, p.x_qscale + m * groups + g);
    }
    if (p.x_q != nullptr && G == 32) {  // the quad order (PreparedX)
      int16_t* xq = p.x_q + m * p.x_q_stride;
      std::fill(xq + p.K, xq + p.x_q_stride, int16_t{0});
      for (int64_t k = 0; k < p.K; k += kQuadK) x_quad_order(xq + k);
    }
  }
}

void int4_gemv_avx512(const Int4Args& w, const PreparedX& x, const float* bias, void* out,
                      DType out_dt, int64_t ldo, int64_t n_begin, int64_t n_end) {
  if (x.x_q != nullptr)
    return gemv_q16(x, w.group_size, bias, out, out_dt, ldo, n_begin, n_end,
                    [&]<int MB, int NR, int G>(int64_t m0, int64_t n, float* f, __m512* res) {
                      int4_rows_q16<MB, NR, G>(w, x, m0, n, f, res);
                    });
  const int64_t groups = w.K / w.group_size;
  gemv_f32(x, w.group_size, w.scale, w.min, bias, out, out_dt, ldo, n_begin, n_end,
           [&]<int MB, int NR>(int64_t m0, int64_t n, const float* sc, const float* mn, __m512* res) {
             int4_rows_f32<MB, NR>(w, x, m0, n, sc, res);
             for (int r = 0; r < NR; ++r)
               for (int m = 0; m < MB; ++m)
                 res[r * MB + m] = _mm512_add_ps(
                     res[r * MB + m], dot_lanes(mn + r * groups, x.x_sum + (m0 + m) * groups, groups));
           });
}

void int8_gemv_avx512(const Int8Args& w, const PreparedX& x, const float* bias, void* out,
                      DType out_dt, int64_t ldo, int64_t n_begin, int64_t n_end) {
  if (x.x_q != nullptr)
    return gemv_q16(x, w.group_size, bias, out, out_dt, ldo, n_begin, n_end,
                    [&]<int MB, int NR, int G>(int64_t m0, int64_t n, float* f, __m512* res) {
                      int8_rows_q16<MB, NR, G>(w, x, m0, n, f, res);
                    });
  gemv_f32(x, w.group_size, w.scale, nullptr, bias, out, out_dt, ldo, n_begin, n_end,
           [&]<int MB, int NR>(int64_t m0, int64_t n, const float* sc, const float*, __m512* res) {
             int8_rows_f32<MB, NR>(w, x, m0, n, sc, res);
           });
}

}  // namespace pagedinfer::cpu
