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
// The products, R = query rows per KV head, c = a 32-wide chunk of the head dim:
//   scores  C_s [16 keys][R] fp32  += A_k [16 keys][32 d of c] x B_q [16 d-pairs of c][R]
//           A_k: K rows straight from the cache (stride: one slot);
//           B_q: Qp[dp][r] = (Q[r][2dp], Q[r][2dp + 1]) (fast_prepare)
//   output  C_e [R][16] fp32 (O[r][32c + 2i])     += A_e [R][16 keys] x B_v [16 keys][32 d of c]
//           C_o [R][16] fp32 (O[r][32c + 2i + 1]) += A_o [R][16 keys] x B_v
//           B_v: V rows straight from the cache, row j read as the 16 pairs
//           (V[j][32c + 2i], V[j][32c + 2i + 1]); A_e holds the pairs (P[r][j], 0), which pick
//           the even d of each V pair, A_o the pairs (0, P[r][j]), which pick the odd d.
// Each phase loads its own tile configuration (~50 ns, twice a chunk).
// V is used as stored, at the price of two products per V tile; O rows hold each 32-wide chunk
// as [16 even d | 16 odd d] until fast_finish (unpack_even_odd_row).
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
constexpr float kLazyMax = 5.5452f;  // ln 256
constexpr int64_t kPrefetchMaxBytes = 64 * 1024;

// Scores phase: tiles 0-3 = C_s of groups 0-3 [16 keys][R], 4 and 5 = A_k, 6 = B_q.
void load_scores_tile_config(int R) {
  const auto rb = static_cast<uint16_t>(R * 4);
  const uint8_t rows[8] = {16, 16, 16, 16, 16, 16, 16, 16};
  const uint16_t colsb[8] = {rb, rb, rb, rb, 64, 64, rb, 64};
  load_tile_config(rows, colsb);
}

// Output phase: tiles 0, 1 = C_e, C_o of chunk c and 2, 3 of chunk c + 1 [R][16]; 4, 5 = B_v of
// chunks c and c + 1; 6, 7 = A_e, A_o [R][16 keys].
void load_output_tile_config(int R) {
  const auto r = static_cast<uint8_t>(R);
  const uint8_t rows[8] = {r, r, r, r, 16, 16, r, r};
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

// Online-softmax update of row r of one head from its scores St[g][16 keys][R] (unscaled):
// probabilities into Pe / Po [g][R][16] (tiles 6 and 7), running max m, sum l, O row rescaled.
inline void softmax_row(const BlockRows& br, const float* St, int R, int r, int64_t k0, int n,
                        uint32_t* Pe, uint32_t* Po, float& m, float& l, float* o) {
  const int ng = (n + 15) / 16;
  int jlo, jhi;
  visible_range(br.first_pos + r / br.group, br.window, k0, n, &jlo, &jhi);
  if (jlo >= jhi) {  // nothing visible: zero weights
    for (int g = 0; g < ng; ++g) {
      _mm512_store_si512(Pe + (g * R + r) * 16, _mm512_setzero_si512());
      _mm512_store_si512(Po + (g * R + r) * 16, _mm512_setzero_si512());
    }
    return;
  }
  // Lane i of group g: key 16 g + i, at St[(g * 16 + i) * R + r].
  const __m512i idx = _mm512_add_epi32(
      _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                         _mm512_set1_epi32(R)),
      _mm512_set1_epi32(r));
  const __m512 vscale = _mm512_set1_ps(br.scale);
  __m512 s[kGroups];
  __mmask16 live[kGroups];
  __m512 mx = _mm512_set1_ps(-INFINITY);
  for (int g = 0; g < ng; ++g) {
    const int lo = std::clamp(jlo - 16 * g, 0, 16), hi = std::clamp(jhi - 16 * g, 0, 16);
    live[g] = static_cast<__mmask16>(((1u << hi) - 1) & ~((1u << lo) - 1));
    s[g] = _mm512_mul_ps(_mm512_i32gather_ps(idx, St + g * 16 * R, 4), vscale);
    mx = _mm512_mask_max_ps(mx, live[g], mx, s[g]);
  }
  // The reference max moves only when a score passes it by more than kLazyMax (so p <= 256):
  // each move costs a rescaling pass over the O row, whose stores the next tile load of that
  // row waits for. Past the first chunks it seldom moves.
  const float chunk_max = _mm512_reduce_max_ps(mx);
  const float m_new = m == -INFINITY || chunk_max > m + kLazyMax ? chunk_max : m;
  const __m512 vm = _mm512_set1_ps(m_new);
  __m512 sum = _mm512_setzero_ps();
  for (int g = 0; g < ng; ++g) {
    const __m512 p = _mm512_maskz_mov_ps(live[g], exp512(_mm512_sub_ps(s[g], vm)));
    sum = _mm512_add_ps(sum, p);
    const __m512i pe = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(p));
    _mm512_store_si512(Pe + (g * R + r) * 16, pe);
    _mm512_store_si512(Po + (g * R + r) * 16, _mm512_slli_epi32(pe, 16));
  }
  if (m_new != m && l > 0.0f) {  // (l == 0: nothing in O yet)
    const float alpha = std::exp(m - m_new);
    l *= alpha;
    const __m512 va = _mm512_set1_ps(alpha);
    for (int d = 0; d < br.D; d += 16) _mm512_storeu_ps(o + d, _mm512_mul_ps(_mm512_loadu_ps(o + d), va));
  }
  l += _mm512_reduce_add_ps(sum);
  m = m_new;
}

}  // namespace

// Qp: per KV head gi, [D / 2][rows_pad] query pairs at Qp + gi * rows_pad * D / 2; m, l at
// gi * rows_pad; O rows [rows_pad][D] at gi * rows_pad * D (even / odd chunk order).
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
  const int D = br.D, R = br.rows;
  const int ng = (n + 15) / 16;
  const int nc = D / 32;
  const int64_t ss = br.slot_stride;
  alignas(64) float St[64 * kKeyChunk];     // scores [gi][g][16 keys][R], kvn * R <= 64
  alignas(64) uint32_t Pe[64 * kKeyChunk];  // [gi][g][R][16 keys]
  alignas(64) uint32_t Po[64 * kKeyChunk];
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
  load_scores_tile_config(R);
  for (int gi = 0; gi < kvn; ++gi) {
    const uint32_t* q = Qp + static_cast<int64_t>(gi) * rows_pad * D / 2;
    const int64_t hoff = hoff0 + static_cast<int64_t>(gi) * D;
    float* st = St + static_cast<int64_t>(gi) * kGroups * 16 * R;
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
    _tile_stored(0, st, R * 4);
    if (ng > 1) _tile_stored(1, st + 16 * R, R * 4);
    if (ng > 2) _tile_stored(2, st + 32 * R, R * 4);
    if (ng > 3) _tile_stored(3, st + 48 * R, R * 4);
  }

  // 2. softmax of a head's rows (vector work), issued after the previous head's output products
  // (tile work) so the two can overlap; the P tiles it writes are loaded a head later, not at
  // once (a tile load right after vector stores to its lines waits for them)
  auto softmax_head = [&](int gi) {
    const int64_t so = static_cast<int64_t>(gi) * rows_pad;
    for (int r = 0; r < R; ++r)
      softmax_row(br, St + static_cast<int64_t>(gi) * kGroups * 16 * R, R, r, k0, n,
                  Pe + gi * kGroups * R * 16, Po + gi * kGroups * R * 16, m[so + r], l[so + r],
                  O + (so + r) * D);
  };
  softmax_head(0);

  // 3. O += P V per head, two 32-d chunks at a time (four independent C tiles)
  load_output_tile_config(R);
  for (int gi = 0; gi < kvn; ++gi) {
    const int64_t hoff = hoff0 + static_cast<int64_t>(gi) * D;
    const uint32_t* pe = Pe + gi * kGroups * R * 16;
    const uint32_t* po = Po + gi * kGroups * R * 16;
    float* o = O + static_cast<int64_t>(gi) * rows_pad * D;
    for (int c = 0; c < nc; c += 2) {
      const bool two = c + 1 < nc;
      _tile_loadd(0, o + 32 * c, D * 4);
      _tile_loadd(1, o + 32 * c + 16, D * 4);
      if (two) {
        _tile_loadd(2, o + 32 * c + 32, D * 4);
        _tile_loadd(3, o + 32 * c + 48, D * 4);
      }
      for (int g = 0; g < ng; ++g) {
        if (c == 0) pf.step(pf_keys);
        _tile_loadd(6, pe + g * R * 16, 64);
        _tile_loadd(7, po + g * R * 16, 64);
        PI_V_TILE(4, g, c);
        _tile_dpbf16ps(0, 6, 4);
        _tile_dpbf16ps(1, 7, 4);
        if (two) {
          PI_V_TILE(5, g, c + 1);
          _tile_dpbf16ps(2, 6, 5);
          _tile_dpbf16ps(3, 7, 5);
        }
      }
      _tile_stored(0, o + 32 * c, D * 4);
      _tile_stored(1, o + 32 * c + 16, D * 4);
      if (two) {
        _tile_stored(2, o + 32 * c + 32, D * 4);
        _tile_stored(3, o + 32 * c + 48, D * 4);
      }
    }
    if (gi + 1 < kvn) softmax_head(gi + 1);
  }
  pf.step(pf.next->n);
#undef PI_K_TILE
#undef PI_V_TILE
}

}  // namespace pagedinfer::cpu::avx512_attn
