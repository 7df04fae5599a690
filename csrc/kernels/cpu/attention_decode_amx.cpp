// AMX-BF16 decode kernel: one chunk of up to kKeyChunk keys for all the KV heads of a decode
// item (3 to kDecodeRows query rows per KV head: decode with GQA groups of 3 or more, short
// verification; use_amx_decode). Compiled with AVX-512 and AMX flags; entered only when
// amx_ready().
//
// Why tiles for so few rows: a vdpbf16ps takes two cycles on this CPU family, so the AVX-512
// decode kernel spent ~45 ns per key and KV head (D = 128, 4 rows) on its products, about as long
// as DRAM takes to deliver that key's 512 bytes, and the two did not overlap. A tile product
// takes ~17 cycles whatever the number of rows, and its operands load straight from the cache.
//
// The products, R = query rows per KV head (Rp = R rounded up to 4 or 8), c = a 32-wide chunk
// of the head dim:
//   scores  C_s [16 keys][Rp] fp32  += A_k [16 keys][32 d of c] x B_q [16 d-pairs of c][Rp]
//           A_k: K rows straight from the cache (stride: one slot);
//           B_q: Qp[dp][r] = (Q[r][2dp], Q[r][2dp + 1]) (fast_prepare; rows past R are zero)
//   output  C_c [2R][16] fp32 += A_p [2R][16 keys] x B_v [16 keys][32 d of c]
//           B_v: V rows straight from the cache, row j read as the 16 pairs
//           (V[j][32c + 2i], V[j][32c + 2i + 1]); row r of A_p holds the pairs (P[r][j], 0),
//           which pick the even d of each V pair, row R + r the pairs (0, P[r][j]), which pick
//           the odd d: C_c row r gets O[r][32c + 2i], row R + r gets O[r][32c + 2i + 1].
// V is used as stored: stacking the even and odd halves in one A tile keeps that at one product
// per V tile (a tile product costs the same for 8 rows as for 4; two products of R rows each
// per V tile, with twice the C tiles to load and store, were 4-7 % slower from DRAM). O stays
// [D / 32][2R][16] until fast_finish (unstack_even_odd).
// Each phase loads its own tile configuration (~70 ns, twice a chunk).
// A 16-key group that is not 16 consecutive cache slots (block size < 16, a block boundary
// inside the group, the chunk's tail) is copied to a small buffer first, zero past n: the tiles
// never read outside the keys' own slots, and zero V rows keep 0 * garbage out of O.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kernels/cpu/amx_tiles.h"
#include "kernels/cpu/attention_kernels.h"
#include "kernels/cpu/attention_simd_avx512.h"

namespace pagedinfer::cpu::avx512_attn {
namespace {

constexpr int kGroups = kKeyChunk / 16;
constexpr int64_t kPrefetchMaxBytes = 64 * 1024;

// Scores phase: tiles 0-3 = C_s of groups 0-3 [16 keys][Rp], 4 and 5 = A_k, 6 = B_q.
void load_scores_tile_config(int Rp) {
  const auto rb = static_cast<uint16_t>(Rp * 4);
  const uint8_t rows[8] = {16, 16, 16, 16, 16, 16, 16, 16};
  const uint16_t colsb[8] = {rb, rb, rb, rb, 64, 64, rb, 64};
  load_tile_config(rows, colsb);
}

// Output phase: tiles 0-3 = C of four 32-d chunks [2R][16]; 4, 5 = B_v; 6 = A [2R][16 keys].
void load_output_tile_config(int R) {
  const auto r2 = static_cast<uint8_t>(2 * R);
  const uint8_t rows[8] = {r2, r2, r2, r2, 16, 16, r2, 16};
  const uint16_t colsb[8] = {64, 64, 64, 64, 64, 64, 64, 64};
  load_tile_config(rows, colsb);
}

// The 16 keys of group g (rows[16 g ...]) at element offset `off`, 32 elements each, as a tile
// source: the cache itself when they are 16 consecutive slots, else a copy in buf (zero rows
// past n). Returns the pointer; *stride_bytes gets the row stride.
inline const uint16_t* tile_rows(const uint16_t* const* rows, int g, int n, int64_t off,
                                 int64_t slot_stride, bool direct, uint16_t* buf,
                                 int64_t* stride_bytes) {
  const int j0 = 16 * g;
  if (direct) {
    *stride_bytes = slot_stride * 2;
    return rows[j0] + off;
  }
  for (int i = 0; i < 16; ++i)
    _mm512_store_si512(buf + 32 * i, j0 + i < n ? _mm512_loadu_si512(rows[j0 + i] + off)
                                                : _mm512_setzero_si512());
  *stride_bytes = 64;
  return buf;
}

// 2^x for x <= 8 (degree-4 polynomial on [-1/2, 1/2], relative error 3e-6: the
// probabilities are rounded to bf16 for the products), zero where `live` is clear.
inline __m512 exp2_live(__mmask16 live, __m512 x) {
  const __m512 k = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_sub_ps(x, k);
  __m512 y = _mm512_set1_ps(0.009560510f);
  y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(0.05591704f));
  y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(0.24024981f));
  y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(0.69312197f));
  y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(0.99999919f));
  return _mm512_maskz_scalef_ps(live, y, k);
}

// Lane i of the result: the reduction (max or add) of lanes j == i (mod Rp) of v.
template <int Rp, typename Op>
inline __m512 reduce_rows(__m512 v, Op op) {
  v = op(v, _mm512_shuffle_f32x4(v, v, 0x4E));  // swap 256-bit halves
  if constexpr (Rp == 4) v = op(v, _mm512_shuffle_f32x4(v, v, 0xB1));  // swap 128-bit pairs
  return v;
}

// The query rows' view of a chunk, the same for every KV head: the keys [lo, hi) each row sees
// (lanes i % Rp), and whether every row sees all kKeyChunk keys (plain decode past the first
// keys, no window): then the softmax needs no masks.
struct ChunkView {
  alignas(64) int32_t lo[16];
  alignas(64) int32_t hi[16];
  bool all;
};

template <int Rp>
ChunkView chunk_view(const BlockRows& br, int64_t k0, int n) {
  ChunkView v;
  v.all = n == kKeyChunk;
  for (int i = 0; i < Rp; ++i) {  // (rows past br.rows: padding, nothing visible)
    v.lo[i] = v.hi[i] = 0;
    if (i >= br.rows) continue;
    visible_range(br.first_pos + i / br.group, br.window, k0, n, &v.lo[i], &v.hi[i]);
    v.all = v.all && v.lo[i] == 0 && v.hi[i] == n;
  }
  for (int i = Rp; i < 16; ++i) { v.lo[i] = v.lo[i % Rp]; v.hi[i] = v.hi[i % Rp]; }
  return v;
}

// Online-softmax update of the R rows of one head from their scores St[g][16 keys][Rp]
// (unscaled; Rp = R rounded up to 4 or 8, columns past R unused), all rows at once: lane i of
// score vector z holds key (16 / Rp) z + i / Rp of row i % Rp, so no row is gathered, and the
// rows' exponentials are independent chains (one row at a time, with gathers, was 3-8 % slower:
// 32 x 2,048 keys from DRAM 12.4-13.2 vs 12.1-12.6 ms, the K / V in L2 29-32 vs 28-30 us).
// Probabilities go to the A tiles P[g][2R][16 keys] (row r: pairs (p, 0), row R + r: (0, p));
// running max m (natural log units), sum l; O rows ([D / 32][2R][16]) rescaled when m moves.
// Its instruction count matters more than its latency: between tile loads that wait on DRAM,
// every instruction takes a reorder-buffer entry, and a long run of them keeps the next loads
// from issuing. (In a copy of the kernel's tile loads and products from DRAM, a chain of 80
// dependent FMAs a head, 320 cycles, cost nothing; 400 independent ones, ~200 cycles, 8-10 %;
// wherever this softmax went in the chunk, it cost the same.) So the common case (all keys
// visible, scale > 0) runs without masks, the scale folded into the exponent's first FMA.
template <int Rp>
void softmax_head(const BlockRows& br, const ChunkView& view, const float* St, int R, int n,
                  uint32_t* P, float* m, float* l, float* O) {
  constexpr int KZ = 16 / Rp;  // keys per vector
  constexpr float kLog2e = 1.44269504088896341f;
  const int nz = (n + 15) / 16 * Rp;
  const float c = br.scale * kLog2e;
  alignas(64) float m2[16];
  for (int i = 0; i < Rp; ++i) m2[i] = i < R ? m[i] * kLog2e : -INFINITY;
  for (int i = Rp; i < 16; ++i) m2[i] = m2[i % Rp];
  const __m512 vm_old = _mm512_load_ps(m2);
  __m512 t[4 * Rp];
  __m512 mx;
  const bool plain = view.all && c > 0.0f;
  if (plain) {  // raw scores; max(s c) = max(s) c
    for (int z = 0; z < 4 * Rp; ++z) t[z] = _mm512_load_ps(St + 16 * z);
    __m512 a = _mm512_max_ps(t[0], t[1]), b = _mm512_max_ps(t[2], t[3]);
    for (int z = 4; z < 4 * Rp; z += 4) {
      a = _mm512_max_ps(a, _mm512_max_ps(t[z], t[z + 1]));
      b = _mm512_max_ps(b, _mm512_max_ps(t[z + 2], t[z + 3]));
    }
    mx = _mm512_mul_ps(reduce_rows<Rp>(_mm512_max_ps(a, b),
                                       [](__m512 x, __m512 y) { return _mm512_max_ps(x, y); }),
                       _mm512_set1_ps(c));
  } else {  // scores in log2 units, masked
    const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    const __m512i lane_key = _mm512_srli_epi32(lane, Rp == 4 ? 2 : 3);
    const __m512i vlo = _mm512_load_si512(view.lo), vhi = _mm512_load_si512(view.hi);
    const __m512 vc = _mm512_set1_ps(c);
    mx = _mm512_set1_ps(-INFINITY);
    for (int z = 0; z < nz; ++z) {
      const __m512i key = _mm512_add_epi32(lane_key, _mm512_set1_epi32(KZ * z));
      const __mmask16 live = _mm512_mask_cmplt_epi32_mask(_mm512_cmpge_epi32_mask(key, vlo), key, vhi);
      // -inf where not visible: exp2 gives 0 there
      t[z] = _mm512_mask_mul_ps(_mm512_set1_ps(-INFINITY), live, _mm512_load_ps(St + 16 * z), vc);
      mx = _mm512_max_ps(mx, t[z]);
    }
    mx = reduce_rows<Rp>(mx, [](__m512 x, __m512 y) { return _mm512_max_ps(x, y); });
  }
  // The reference max moves only when a score passes it by more than 8 (so p <= 256): each move
  // costs a rescaling pass over the O row. Past the first chunks it seldom moves.
  const __mmask16 move =
      _mm512_cmp_ps_mask(vm_old, _mm512_set1_ps(-INFINITY), _CMP_EQ_OQ) |
      _mm512_cmp_ps_mask(mx, _mm512_add_ps(vm_old, _mm512_set1_ps(8.0f)), _CMP_GT_OQ);
  const __m512 vm = _mm512_mask_blend_ps(move, vm_old, mx);
  // Rows that have seen nothing yet keep m = -inf: their lanes are zeroed.
  const __mmask16 finite = _mm512_cmp_ps_mask(vm, _mm512_set1_ps(-INFINITY), _CMP_NEQ_OQ);
  const __mmask16 rows = static_cast<__mmask16>((1u << R) - 1);  // lane r: row r
  const __mmask16 moved = _mm512_mask_cmp_ps_mask(rows, vm, vm_old, _CMP_NEQ_UQ);
  if (moved) {  // l and the O rows to the new reference (rare past the first chunk)
    alignas(64) float m2_new[16];
    _mm512_store_ps(m2_new, vm);
    for (int r = 0; r < R; ++r) {
      if (!((moved >> r) & 1)) continue;
      if (l[r] > 0.0f) {  // (l == 0: nothing in O yet)
        const float alpha = std::exp2(m2[r] - m2_new[r]);
        l[r] *= alpha;
        const __m512 va = _mm512_set1_ps(alpha);
        for (int cc = 0; cc < br.D / 32; ++cc) {
          float* e = O + (cc * 2 * R + r) * 16;
          float* o = e + R * 16;
          _mm512_store_ps(e, _mm512_mul_ps(_mm512_load_ps(e), va));
          _mm512_store_ps(o, _mm512_mul_ps(_mm512_load_ps(o), va));
        }
      }
      m[r] = m2_new[r] / kLog2e;
    }
  }
  // Per group: the probabilities, then to bf16 and transposed into rows of 16 keys (word 2k of
  // row r, k = key, from the pair; even / odd words zeroed for the (p, 0) / (0, p) rows).
  const __m512i word_key = _mm512_srli_epi16(
      _mm512_set_epi16(31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14,
                       13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0), 1);
  constexpr __mmask32 kEven = 0x55555555u, kOdd = 0xAAAAAAAAu;
  const __m512 vc = _mm512_set1_ps(c), nvm = _mm512_sub_ps(_mm512_setzero_ps(), vm);
  __m512 sum = _mm512_setzero_ps();
  for (int g = 0; g < nz / Rp; ++g) {
    __m512 p[Rp];
    for (int i = 0; i < Rp; ++i) {
      const int z = g * Rp + i;
      p[i] = plain ? exp2_live(finite, _mm512_fmadd_ps(t[z], vc, nvm))
                   // (-inf - m clamped: 2^-200 is 0 in fp32)
                   : exp2_live(finite, _mm512_max_ps(_mm512_sub_ps(t[z], vm), _mm512_set1_ps(-200.0f)));
      sum = _mm512_add_ps(sum, p[i]);
    }
    uint32_t* pg = P + g * 2 * R * 16;
    if constexpr (Rp == 4) {
      // a, b: words 4k + r = key k, row r (keys 0-7 in a, 8-15 in b)
      const __m512i a = (__m512i)_mm512_cvtne2ps_pbh(p[1], p[0]);
      const __m512i b = (__m512i)_mm512_cvtne2ps_pbh(p[3], p[2]);
      const __m512i src = _mm512_slli_epi16(word_key, 2);  // 4k
      for (int r = 0; r < R; ++r) {
        const __m512i idx = _mm512_add_epi16(src, _mm512_set1_epi16(static_cast<int16_t>(r)));
        _mm512_store_si512(pg + r * 16, _mm512_maskz_permutex2var_epi16(kEven, a, idx, b));
        _mm512_store_si512(pg + (R + r) * 16, _mm512_maskz_permutex2var_epi16(kOdd, a, idx, b));
      }
    } else {
      // c0..c3: words 8k + r = key 4i + k, row r; then lo / hi: rows 0-3 / 4-7, words 8r + k
      // (keys 0-7 from c0 and c1 in lo0 / hi0, 8-15 from c2 and c3 in lo1 / hi1)
      const __m512i c0 = (__m512i)_mm512_cvtne2ps_pbh(p[1], p[0]);
      const __m512i c1 = (__m512i)_mm512_cvtne2ps_pbh(p[3], p[2]);
      const __m512i c2 = (__m512i)_mm512_cvtne2ps_pbh(p[5], p[4]);
      const __m512i c3 = (__m512i)_mm512_cvtne2ps_pbh(p[7], p[6]);
      const __m512i w = _mm512_set_epi16(31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18,
                                         17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2,
                                         1, 0);
      // word 8r + k of the result <- word 8k + r (+ 4 rows for hi)
      const __m512i tr = _mm512_or_si512(_mm512_slli_epi16(_mm512_and_si512(w, _mm512_set1_epi16(7)), 3),
                                         _mm512_srli_epi16(w, 3));
      const __m512i tr_hi = _mm512_add_epi16(tr, _mm512_set1_epi16(4));
      const __m512i lo0 = _mm512_permutex2var_epi16(c0, tr, c1);
      const __m512i hi0 = _mm512_permutex2var_epi16(c0, tr_hi, c1);
      const __m512i lo1 = _mm512_permutex2var_epi16(c2, tr, c3);
      const __m512i hi1 = _mm512_permutex2var_epi16(c2, tr_hi, c3);
      // row r: key k < 8 at word 8 (r % 4) + k of lo0 / hi0, k >= 8 at 32 + 8 (r % 4) + k - 8
      const __m512i k = word_key;
      const __m512i src = _mm512_add_epi16(k, _mm512_mask_blend_epi16(
          _mm512_cmpge_epi16_mask(k, _mm512_set1_epi16(8)), _mm512_setzero_si512(),
          _mm512_set1_epi16(24)));
      for (int r = 0; r < R; ++r) {
        const __m512i idx = _mm512_add_epi16(src, _mm512_set1_epi16(static_cast<int16_t>(8 * (r % 4))));
        const __m512i x = r < 4 ? lo0 : hi0, y = r < 4 ? lo1 : hi1;
        _mm512_store_si512(pg + r * 16, _mm512_maskz_permutex2var_epi16(kEven, x, idx, y));
        _mm512_store_si512(pg + (R + r) * 16, _mm512_maskz_permutex2var_epi16(kOdd, x, idx, y));
      }
    }
  }
  sum = reduce_rows<Rp>(sum, [](__m512 a, __m512 b) { return _mm512_add_ps(a, b); });
  _mm512_mask_storeu_ps(l, rows, _mm512_add_ps(_mm512_maskz_loadu_ps(rows, l), sum));
}

}  // namespace

// Qp: per KV head gi, [D / 2][rows_pad] query pairs at Qp + gi * rows_pad * D / 2; m, l at
// gi * rows_pad; O at gi * rows_pad * D as [D / 32][2R][16] (see the products above).
// next: the next chunk's rows (prefetched when small, see below).
void amx_decode_chunk(const BlockRows& br, int kvn, int rows_pad, const uint32_t* Qp,
                      const uint16_t* const* krow, const uint16_t* const* vrow, int64_t hoff0,
                      int64_t k0, int n, float* m, float* l, float* O,
                      const NextRows<uint16_t>& next) {
  // The next chunk's rows are prefetched, spread over this chunk's work, only when the two
  // chunks fit in L1 together (D = 64 with 3 KV heads: 48 KiB a chunk); measured there, 64
  // sequences x 176 keys from DRAM: 514-540 vs 620-644 us without. A chunk of D = 128 with 8
  // KV heads (256 KiB) would evict the current one: 15 % slower; the hardware prefetchers
  // follow its 2 KiB cache rows.
  const NextRows<uint16_t> none{nullptr, nullptr, 0, 0, 0};
  PrefetchCursor pf{2 * next.n * next.bytes <= kPrefetchMaxBytes ? &next : &none};
  const int pf_steps = 2 * kvn * ((n + 15) / 16);
  const int pf_keys = (pf.next->n + pf_steps - 1) / pf_steps;
  const int D = br.D, R = br.rows, Rp = R <= 4 ? 4 : 8;
  const int ng = (n + 15) / 16;
  const int nc = D / 32;
  const int64_t ss = br.slot_stride;
  alignas(64) float St[128 * kKeyChunk];    // scores [gi][g][16 keys][Rp]; kvn * R <= 64,
                                            // so kvn * Rp <= 64 * 8 / 5
  alignas(64) uint32_t P[2 * 64 * kKeyChunk];  // [gi][g][2R][16 keys]
  alignas(64) uint16_t buf[16 * 32];        // a gathered 16-key x 32-d tile
  bool direct[kGroups];
  for (int g = 0; g < ng; ++g) {
    const int j0 = 16 * g;
    bool d = j0 + 16 <= n;
    for (int i = 1; d && i < 16; ++i) d = krow[j0 + i] == krow[j0] + i * ss;
    direct[g] = d;
  }
  int64_t stride;
#define PI_K_TILE(t, g, c) \
  _tile_loadd(t, tile_rows(krow, g, n, hoff + 32 * (c), ss, direct[g], buf, &stride), stride)
#define PI_V_TILE(t, g, c) \
  _tile_loadd(t, tile_rows(vrow, g, n, hoff + 32 * (c), ss, direct[g], buf, &stride), stride)

  // 1. scores: per head, the groups' C_s tiles accumulate side by side (independent chains keep
  // the tile unit busy), the query tile loaded once per 32 d
  load_scores_tile_config(Rp);
  for (int gi = 0; gi < kvn; ++gi) {
    const uint32_t* q = Qp + static_cast<int64_t>(gi) * rows_pad * D / 2;
    const int64_t hoff = hoff0 + static_cast<int64_t>(gi) * D;
    float* st = St + static_cast<int64_t>(gi) * kGroups * 16 * Rp;
    _tile_zero(0);
    if (ng > 1) _tile_zero(1);
    if (ng > 2) _tile_zero(2);
    if (ng > 3) _tile_zero(3);
    for (int c = 0; c < nc; ++c) {
      _tile_loadd(6, q + static_cast<int64_t>(16 * c) * rows_pad, rows_pad * 4);
      if (c == 0) for (int g = 0; g < ng; ++g) pf.step(pf_keys);
      PI_K_TILE(4, 0, c);
      _tile_dpbf16ps(0, 4, 6);
      if (ng > 1) { PI_K_TILE(5, 1, c); _tile_dpbf16ps(1, 5, 6); }
      if (ng > 2) { PI_K_TILE(4, 2, c); _tile_dpbf16ps(2, 4, 6); }
      if (ng > 3) { PI_K_TILE(5, 3, c); _tile_dpbf16ps(3, 5, 6); }
    }
    _tile_stored(0, st, Rp * 4);
    if (ng > 1) _tile_stored(1, st + 16 * Rp, Rp * 4);
    if (ng > 2) _tile_stored(2, st + 32 * Rp, Rp * 4);
    if (ng > 3) _tile_stored(3, st + 48 * Rp, Rp * 4);
  }

  // 2. softmax of a head's rows (vector work), issued after the previous head's output products.
  // Other places measured the same: all heads' softmax before the output products, each head's
  // in the scores phase one head behind, or two heads ahead of its products.
  const ChunkView view = Rp == 4 ? chunk_view<4>(br, k0, n) : chunk_view<8>(br, k0, n);
  auto softmax = [&](int gi) {
    const int64_t so = static_cast<int64_t>(gi) * rows_pad;
    const float* st = St + static_cast<int64_t>(gi) * kGroups * 16 * Rp;
    uint32_t* p = P + gi * kGroups * 2 * R * 16;
    if (Rp == 4)
      softmax_head<4>(br, view, st, R, n, p, m + so, l + so, O + so * D);
    else
      softmax_head<8>(br, view, st, R, n, p, m + so, l + so, O + so * D);
  };
  softmax(0);

  // 3. O += P V per head, four 32-d chunks at a time (four independent C tiles), each group's
  // P tile loaded once for them
  load_output_tile_config(R);
  for (int gi = 0; gi < kvn; ++gi) {
    const int64_t hoff = hoff0 + static_cast<int64_t>(gi) * D;
    const uint32_t* pg = P + gi * kGroups * 2 * R * 16;
    float* o = O + static_cast<int64_t>(gi) * rows_pad * D;
    for (int c0 = 0; c0 < nc; c0 += 4) {
      const int nct = std::min(4, nc - c0);
      float* oc = o + c0 * 2 * R * 16;
      _tile_loadd(0, oc, 64);
      if (nct > 1) _tile_loadd(1, oc + 2 * R * 16, 64);
      if (nct > 2) _tile_loadd(2, oc + 4 * R * 16, 64);
      if (nct > 3) _tile_loadd(3, oc + 6 * R * 16, 64);
      for (int g = 0; g < ng; ++g) {
        if (c0 == 0) pf.step(pf_keys);
        _tile_loadd(6, pg + g * 2 * R * 16, 64);
        PI_V_TILE(4, g, c0);
        _tile_dpbf16ps(0, 6, 4);
        if (nct > 1) { PI_V_TILE(5, g, c0 + 1); _tile_dpbf16ps(1, 6, 5); }
        if (nct > 2) { PI_V_TILE(4, g, c0 + 2); _tile_dpbf16ps(2, 6, 4); }
        if (nct > 3) { PI_V_TILE(5, g, c0 + 3); _tile_dpbf16ps(3, 6, 5); }
      }
      _tile_stored(0, oc, 64);
      if (nct > 1) _tile_stored(1, oc + 2 * R * 16, 64);
      if (nct > 2) _tile_stored(2, oc + 4 * R * 16, 64);
      if (nct > 3) _tile_stored(3, oc + 6 * R * 16, 64);
    }
    if (gi + 1 < kvn) softmax(gi + 1);
  }
  pf.step(pf.next->n);
#undef PI_K_TILE
#undef PI_V_TILE
}

}  // namespace pagedinfer::cpu::avx512_attn
