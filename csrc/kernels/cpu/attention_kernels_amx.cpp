// AMX-BF16 chunk kernel for paged attention tiles (prefill, chunked prefill, long verification):
// one chunk of up to kKeyChunk keys against rows_pad query rows of one KV head. Compiled with
// AVX-512 and AMX flags; entered only when amx_ready() (CPU has AMX-BF16 and Linux granted the
// tile state to this process).
//
// Tiles (all 16 rows x 64 bytes): 0 and 6 = A, 1 = B, 2..5 = C accumulators.
//   scores  S^T[16 keys][16 rows] += K[16 keys][32 d] x Qp[16 d-pairs][16 rows]   (C: fp32)
//           K rows are gathered contiguous into Kc; Qp[dp][r] = (Q[r][2dp], Q[r][2dp+1]).
//   output  O[16 rows][16 q] += Pt[16 rows][16 key-pairs] x Vp[16 key-pairs][16 q]
//           Vp[jp][q] = (V[2jp][packed_d(q)], V[2jp+1][packed_d(q)]), Pt = P pairs transposed.
// The softmax between the two runs on S^T with 16 rows in the lanes of a vector, as in the
// AVX-512 tile kernel; O is [rows_pad, D] in packed order until fast_finish.
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/cpu/amx_tiles.h"
#include "kernels/cpu/attention_kernels.h"
#include "kernels/cpu/attention_simd_avx512.h"
#include "kernels/cpu/cpu_features.h"

namespace pagedinfer::cpu::avx512_attn {

bool amx_ready() { return amx_tiles_granted(); }

namespace {

// Applies M(tile) to C tiles 2 .. 2 + count - 1 (count <= 4). The tile intrinsics paste their
// tile number into the instruction text, so it must be a literal.
#define PI_AMX_FOR_C(count, M) \
  do {                         \
    if ((count) > 0) M(2);     \
    if ((count) > 1) M(3);     \
    if ((count) > 2) M(4);     \
    if ((count) > 3) M(5);     \
  } while (0)

}  // namespace

void amx_tile_chunk(const BlockRows& br, int rows_pad, const uint32_t* Qp,
                    const uint16_t* const* kp, const uint16_t* const* vp, int64_t k0, int n,
                    float* S, uint32_t* Pp, float* scratch, const uint16_t* zero_row, float* m,
                    float* l, float* O, const NextRows<uint16_t>& next) {
  const int D = br.D;
  const int nrv = rows_pad / 16;
  const int ng = (n + 15) / 16;        // 16-key groups
  const int n2 = (n + 1) / 2;          // key pairs
  const int npg = (n2 + 15) / 16;      // 16-pair groups (32 keys)
  uint16_t* Kc = reinterpret_cast<uint16_t*>(scratch);                  // [ng * 16, D] bf16
  uint32_t* Vp = reinterpret_cast<uint32_t*>(scratch) + kKeyChunk / 2 * D;  // [npg * 16, D]
  uint32_t* Pt = Vp + kKeyChunk / 2 * D;                                // [npg][16][16]
  float* alpha_all = reinterpret_cast<float*>(Pt + 2 * 256);             // [rows_pad]
  (void)zero_row;
  load_full_tile_config();
  prefetch_rows(next);

  // Gather K rows (zero-padded to whole groups) and interleave V rows in key pairs.
  for (int j = 0; j < ng * 16; ++j) {
    uint16_t* dst = Kc + static_cast<int64_t>(j) * D;
    if (j < n) {
      for (int c = 0; c < D; c += 32) _mm512_storeu_si512(dst + c, _mm512_loadu_si512(kp[j] + c));
    } else {
      for (int c = 0; c < D; c += 32) _mm512_storeu_si512(dst + c, _mm512_setzero_si512());
    }
  }
  for (int jp = 0; jp < npg * 16; ++jp) {
    uint32_t* dst = Vp + static_cast<int64_t>(jp) * D;
    const bool has0 = 2 * jp < n, has1 = 2 * jp + 1 < n;
    for (int c = 0; c < D; c += 32) {
      const __m512i a = has0 ? _mm512_loadu_si512(vp[2 * jp] + c) : _mm512_setzero_si512();
      const __m512i b = has1 ? _mm512_loadu_si512(vp[2 * jp + 1] + c) : _mm512_setzero_si512();
      _mm512_storeu_si512(dst + c, _mm512_unpacklo_epi16(a, b));
      _mm512_storeu_si512(dst + c + 16, _mm512_unpackhi_epi16(a, b));
    }
  }

  // 1. scores S^T [j][rows_pad], unscaled. Per 16 rows, up to four 16-key groups accumulate in
  // C tiles 2..5 side by side (independent chains keep the tile unit busy); the A tile alternates
  // between tiles 0 and 6 so that a load need not wait for the previous product.
  const int64_t s_stride = static_cast<int64_t>(rows_pad) * 4;
  for (int rv = 0; rv < nrv; ++rv) {
    for (int g0 = 0; g0 < ng; g0 += 4) {
      const int cnt = ng - g0 < 4 ? ng - g0 : 4;
#define PI_ZERO(t) _tile_zero(t)
#define PI_QK(t)                                                                       \
  do {                                                                                 \
    if ((t) % 2 == 0) {                                                                \
      _tile_loadd(0, Kc + static_cast<int64_t>(g0 + t - 2) * 16 * D + 32 * c, D * 2);  \
      _tile_dpbf16ps(t, 0, 1);                                                         \
    } else {                                                                           \
      _tile_loadd(6, Kc + static_cast<int64_t>(g0 + t - 2) * 16 * D + 32 * c, D * 2);  \
      _tile_dpbf16ps(t, 6, 1);                                                         \
    }                                                                                  \
  } while (0)
#define PI_STORE_S(t) \
  _tile_stored(t, S + static_cast<int64_t>(g0 + t - 2) * 16 * rows_pad + rv * 16, s_stride)
      PI_AMX_FOR_C(cnt, PI_ZERO);
      for (int c = 0; c < D / 32; ++c) {
        _tile_loadd(1, Qp + static_cast<int64_t>(16 * c) * rows_pad + rv * 16, s_stride);
        PI_AMX_FOR_C(cnt, PI_QK);
      }
      PI_AMX_FOR_C(cnt, PI_STORE_S);
    }
  }

  // 2. masked online softmax per 16 rows; P pairs into Pp [jp][rows_pad] (zero past n).
  const __m512 neg_inf = _mm512_set1_ps(-INFINITY);
  const __m512 floor_m = _mm512_set1_ps(-1e30f);
  const __m512 vscale = _mm512_set1_ps(br.scale);
  for (int rv = 0; rv < nrv; ++rv) {
    alignas(64) int32_t pos[16];
    for (int i = 0; i < 16; ++i) {
      const int r = rv * 16 + i;
      pos[i] = r < br.rows ? static_cast<int32_t>(br.first_pos + r / br.group) : -(1 << 30);
    }
    const __m512i posv = _mm512_load_si512(pos);
    const bool windowed = br.window > 0;
    const __m512i lowv = _mm512_sub_epi32(posv, _mm512_set1_epi32(static_cast<int32_t>(windowed ? br.window - 1 : 0)));
    float* s = S + rv * 16;
    __m512 mx = neg_inf;
    for (int j = 0; j < n; ++j) {
      const __m512i kv = _mm512_set1_epi32(static_cast<int32_t>(k0 + j));
      __mmask16 vis = _mm512_cmple_epi32_mask(kv, posv);
      if (windowed) vis &= _mm512_cmpge_epi32_mask(kv, lowv);
      const __m512 v = _mm512_mask_mul_ps(neg_inf, vis, _mm512_loadu_ps(s + j * static_cast<int64_t>(rows_pad)), vscale);
      _mm512_storeu_ps(s + j * static_cast<int64_t>(rows_pad), v);
      mx = _mm512_max_ps(mx, v);
    }
    const __m512 m_old = _mm512_loadu_ps(m + rv * 16);
    const __m512 m_new = _mm512_max_ps(m_old, mx);
    const __m512 m_use = _mm512_max_ps(m_new, floor_m);
    const __m512 alpha = exp512(_mm512_sub_ps(_mm512_max_ps(m_old, floor_m), m_use));
    __m512 lsum = _mm512_mul_ps(_mm512_loadu_ps(l + rv * 16), alpha);
    for (int jp = 0; jp < npg * 16; ++jp) {
      __m512 pr[2];
      for (int k = 0; k < 2; ++k) {
        const int j = 2 * jp + k;
        if (j >= n) { pr[k] = _mm512_setzero_ps(); continue; }
        const __m512 v = _mm512_loadu_ps(s + j * static_cast<int64_t>(rows_pad));
        const __mmask16 live = _mm512_cmp_ps_mask(v, neg_inf, _CMP_NEQ_OQ);
        pr[k] = _mm512_maskz_mov_ps(live, exp512(_mm512_sub_ps(v, m_use)));
        lsum = _mm512_add_ps(lsum, pr[k]);
      }
      _mm512_storeu_si512(Pp + static_cast<int64_t>(jp) * rows_pad + rv * 16, pack_pair(pr[0], pr[1]));
    }
    _mm512_storeu_ps(m + rv * 16, m_new);
    _mm512_storeu_ps(l + rv * 16, lsum);
    _mm512_storeu_ps(alpha_all + rv * 16, alpha);
  }

  // 3. rescale O rows whose max moved, then O += P V per 16 rows.
  for (int r = 0; r < rows_pad; ++r) {
    const float a = alpha_all[r];
    if (a == 1.0f) continue;
    const __m512 va = _mm512_set1_ps(a);
    float* o = O + static_cast<int64_t>(r) * D;
    for (int q = 0; q < D; q += 16) _mm512_storeu_ps(o + q, _mm512_mul_ps(_mm512_loadu_ps(o + q), va));
  }
  const int nqb = D / 16;
  for (int rv = 0; rv < nrv; ++rv) {
    for (int g = 0; g < npg; ++g) {
      __m512i rowsv[16], cols[16];
      for (int k = 0; k < 16; ++k)
        rowsv[k] = _mm512_loadu_si512(Pp + static_cast<int64_t>(16 * g + k) * rows_pad + rv * 16);
      transpose16(rowsv, cols);
      for (int k = 0; k < 16; ++k) _mm512_storeu_si512(Pt + g * 256 + k * 16, cols[k]);
    }
    float* o = O + static_cast<int64_t>(rv) * 16 * D;
    for (int qb0 = 0; qb0 < nqb; qb0 += 4) {
      const int cnt = nqb - qb0 < 4 ? nqb - qb0 : 4;
#define PI_LOAD_O(t) _tile_loadd(t, o + 16 * (qb0 + t - 2), D * 4)
#define PI_PV(t)                                                                         \
  do {                                                                                   \
    _tile_loadd(1, Vp + static_cast<int64_t>(16 * g) * D + 16 * (qb0 + t - 2), D * 4);   \
    _tile_dpbf16ps(t, 0, 1);                                                             \
  } while (0)
#define PI_STORE_O(t) _tile_stored(t, o + 16 * (qb0 + t - 2), D * 4)
      PI_AMX_FOR_C(cnt, PI_LOAD_O);
      for (int g = 0; g < npg; ++g) {
        _tile_loadd(0, Pt + g * 256, 64);
        PI_AMX_FOR_C(cnt, PI_PV);
      }
      PI_AMX_FOR_C(cnt, PI_STORE_O);
    }
  }
}

}  // namespace pagedinfer::cpu::avx512_attn
