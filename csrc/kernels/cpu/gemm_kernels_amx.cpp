// AMX-BF16 kernels for weight-only GEMM with bf16 activations and many rows (prefill, big
// batches). Compiled with AMX flags; entered only when the CPU reports AMX-BF16 and the OS grants
// the tile data state to this process (amx_available()).
//
// C^T = W x^T: the weight is the A operand, so a dequantized block of 32 W rows, [32, K] bf16
// row-major, is used as tiles straight away (16 rows x 32 K each); x is packed once per call into
// the VNNI form of the B operand (x_vnni[mb][K/2][16][2]: pairs of K for 16 rows of x). Each
// 32-row block of W is dequantized once (AVX-512, into L1/L2) and reused for all M rows;
// 4 C tiles (2 W blocks x 2 x blocks) accumulate in fp32, then go out transposed with the bias.
#pragma GCC diagnostic ignored "-Wuninitialized"  // (-Wmaybe-uninitialized: cmake/utils.cmake)
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/cpu/amx_tiles.h"
#include "kernels/cpu/attention_simd_avx512.h"  // transpose16
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/gemm_kernels.h"

namespace pagedinfer::cpu {
namespace {

// Writes the 16 x 16 fp32 tile `c` (rows: W rows n0 + i; columns: x rows m0 + j) to out[m][n].
// Transposed in registers (48 shuffles; 16 gathers cost ~5x more, a third of the tile products'
// time at M = 64).
inline void store_tile_transposed(const float* c, int64_t n0, int64_t n_valid, int64_t m0,
                                  int64_t m_valid, const float* bias, void* out, DType dt,
                                  int64_t ldo) {
  __m512i rows[16], columns[16];
  for (int i = 0; i < 16; ++i) rows[i] = _mm512_load_si512(c + 16 * i);
  avx512_attn::transpose16(rows, columns);
  const __mmask16 mask = static_cast<__mmask16>(n_valid >= 16 ? 0xFFFF : (1u << n_valid) - 1);
  const __m512 b = bias != nullptr ? _mm512_maskz_loadu_ps(mask, bias + n0) : _mm512_setzero_ps();
  for (int64_t j = 0; j < m_valid; ++j) {
    const __m512 v = _mm512_add_ps(_mm512_castsi512_ps(columns[j]), b);
    const int64_t at = (m0 + j) * ldo + n0;
    if (dt == DType::kF32) {
      _mm512_mask_storeu_ps(static_cast<float*>(out) + at, mask, v);
    } else {  // bf16 (the only other dtype that reaches AMX)
      _mm256_mask_storeu_epi16(static_cast<uint16_t*>(out) + at, mask, (__m256i)_mm512_cvtneps_pbh(v));
    }
  }
}

template <bool kTwoX>
inline void tiles_zero() {
  _tile_zero(0);
  _tile_zero(1);
  if constexpr (kTwoX) {
    _tile_zero(2);
    _tile_zero(3);
  }
}

// C += A B over nkk steps of 32 K: A = 32 W rows (two tiles, row stride lda elements), B = one or
// two 16-row blocks of x_vnni (512 bf16 per step).
template <bool kTwoX>
inline void tiles_accumulate(const uint16_t* a, int64_t lda, const uint16_t* b0, const uint16_t* b1,
                             int64_t nkk) {
  const int64_t a_stride = lda * 2;
  for (int64_t kk = 0; kk < nkk; ++kk) {
    _tile_loadd(4, a + 32 * kk, a_stride);
    _tile_loadd(5, a + 16 * lda + 32 * kk, a_stride);
    _tile_loadd(6, b0 + kk * 512, 64);
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 5, 6);
    if constexpr (kTwoX) {
      _tile_loadd(7, b1 + kk * 512, 64);
      _tile_dpbf16ps(2, 4, 7);
      _tile_dpbf16ps(3, 5, 7);
    }
  }
}

template <bool kTwoX>
inline void tiles_store(float* cbuf) {
  _tile_stored(0, cbuf, 64);
  _tile_stored(1, cbuf + 256, 64);
  if constexpr (kTwoX) {
    _tile_stored(2, cbuf + 512, 64);
    _tile_stored(3, cbuf + 768, 64);
  }
}

void store_tiles(const float* cbuf, bool two, int64_t mb, int64_t M, int64_t n0, int64_t n_end,
                 const float* bias, void* out, DType dt, int64_t ldo) {
  for (int xb = 0; xb < (two ? 2 : 1); ++xb) {
    const int64_t m0 = (mb + xb) * 16, m_valid = std::min<int64_t>(16, M - m0);
    for (int wb = 0; wb < 2; ++wb) {
      const int64_t nb = n0 + 16 * wb, n_valid = std::min<int64_t>(16, n_end - nb);
      if (n_valid <= 0) continue;
      store_tile_transposed(cbuf + (xb * 2 + wb) * 256, nb, n_valid, m0, m_valid, bias, out, dt, ldo);
    }
  }
}

// Up to 32 rows of x: the C tiles stay in registers across K, so W is dequantized in K blocks
// whose 32 rows (32 x 256 bf16 = 16 KiB) stay in L1, next to the x tiles, until read.
constexpr int64_t kKBlock = 256;
// More rows: x is taken in equal chunks of at most kChunkBytes (at least kMinChunkRows rows),
// each W block being dequantized once per chunk. One pass over all of x per W block streamed x
// from L3 once it outgrew L2: 3072 x 576 at M = 2048 took 2.6x dense bf16's time (5.5-5.9 vs
// 2.0 ms), at M = 512 1.1x; in chunks 3.2-4.8 ms (from run to run, with any chunk size from 256
// to 768 KiB), 576 x 1536 2.1-2.3 vs 2.9-3.9 ms. Each further chunk costs a dequantization of W
// (~25 / rows of the tile work): M = 512 split 448 + 64 was 8-15 % slower than whole.
constexpr int64_t kChunkBytes = int64_t{768} << 10;
constexpr int64_t kMinChunkRows = 256;

template <class Dequant>
void gemm_amx(Dequant dequant, int64_t K, const uint16_t* x_vnni, int64_t M, const float* bias,
              void* out, DType dt, int64_t ldo, int64_t n_begin, int64_t n_end) {
  const int64_t mblocks = (M + 15) / 16;
  const bool few = mblocks <= 2;
  // Row stride of the dequantized block: its width plus one cache line, so the 16 rows a tile
  // load touches do not all fall in one L1 set.
  const int64_t width = few ? std::min(K, kKBlock) : K;
  const int64_t lda = width + 32;
  thread_local std::vector<uint16_t> a_storage;
  a_storage.resize(static_cast<size_t>(32 * lda + 32));
  // 64-byte aligned: every dequantized 32-weight run is then one whole cache line.
  uint16_t* a = reinterpret_cast<uint16_t*>((reinterpret_cast<uintptr_t>(a_storage.data()) + 63) & ~uintptr_t{63});
  alignas(64) float cbuf[4 * 256];
  // Tiles 0-3: C (16 x 16 fp32); 4, 5: A (16 W rows x 32 bf16); 6, 7: B (16 K pairs x 16 x rows).
  load_full_tile_config();
  if (few) {
    const bool two = mblocks == 2;
    const uint16_t* b0 = x_vnni;
    const uint16_t* b1 = x_vnni + (K / 2) * 32;
    for (int64_t n0 = n_begin; n0 < n_end; n0 += 32) {
      const int64_t rows = std::min<int64_t>(32, n_end - n0);
      if (rows < 32) std::memset(a + rows * lda, 0, static_cast<size_t>((32 - rows) * lda * 2));
      two ? tiles_zero<true>() : tiles_zero<false>();
      for (int64_t kb = 0; kb < K; kb += kKBlock) {
        const int64_t kn = std::min(kKBlock, K - kb);
        dequant(n0, n0 + rows, kb, kb + kn, a, lda);
        const int64_t off = (kb / 32) * 512;
        two ? tiles_accumulate<true>(a, lda, b0 + off, b1 + off, kn / 32)
            : tiles_accumulate<false>(a, lda, b0 + off, nullptr, kn / 32);
      }
      two ? tiles_store<true>(cbuf) : tiles_store<false>(cbuf);
      store_tiles(cbuf, two, 0, M, n0, n_end, bias, out, dt, ldo);
    }
    _tile_release();
    return;
  }
  // Many rows of x: x in chunks that stay in L2 (kChunkBytes), and within a chunk each [32, K]
  // block of W dequantized once (L2) and run on every x block of the chunk.
  const int64_t chunks = (M * K * 2 + kChunkBytes - 1) / kChunkBytes;
  int64_t chunk_blocks = std::max((mblocks + chunks - 1) / chunks, kMinChunkRows / 16);
  chunk_blocks += chunk_blocks % 2;  // even: x blocks go in pairs
  for (int64_t mc = 0; mc < mblocks; mc += chunk_blocks) {
    const int64_t mc_end = std::min(mblocks, mc + chunk_blocks);
    for (int64_t n0 = n_begin; n0 < n_end; n0 += 32) {
      const int64_t rows = std::min<int64_t>(32, n_end - n0);
      if (rows < 32) std::memset(a + rows * lda, 0, static_cast<size_t>((32 - rows) * lda * 2));
      dequant(n0, n0 + rows, 0, K, a, lda);
      for (int64_t mb = mc; mb < mc_end; mb += 2) {
        const uint16_t* b0 = x_vnni + mb * (K / 2) * 32;
        const bool two = mb + 1 < mblocks;
        if (two) {
          tiles_zero<true>();
          tiles_accumulate<true>(a, lda, b0, b0 + (K / 2) * 32, K / 32);
          tiles_store<true>(cbuf);
        } else {
          tiles_zero<false>();
          tiles_accumulate<false>(a, lda, b0, nullptr, K / 32);
          tiles_store<false>(cbuf);
        }
        store_tiles(cbuf, two, mb, M, n0, n_end, bias, out, dt, ldo);
      }
    }
  }
  _tile_release();
}

}  // namespace

bool amx_available() { return amx_tiles_granted(); }

void pack_x_vnni(const uint16_t* x, int64_t ldx, int64_t M, int64_t K, int64_t mb_begin,
                 int64_t mb_end, uint16_t* dst) {
  // 16 rows x 16 K pairs (dwords) at a time: load the rows, transpose in registers, store one
  // vector per pair (6x faster than one gather per pair). Rows past M and pairs past K are zeros.
  const int64_t pairs = K / 2;
  for (int64_t mb = mb_begin; mb < mb_end; ++mb) {
    const int64_t valid = std::min<int64_t>(16, M - mb * 16);
    int* d = reinterpret_cast<int*>(dst) + mb * pairs * 16;
    for (int64_t p0 = 0; p0 < pairs; p0 += 16) {
      const int64_t np = std::min<int64_t>(16, pairs - p0);
      const __mmask16 mask = static_cast<__mmask16>(np >= 16 ? 0xFFFF : (1u << np) - 1);
      __m512i rows[16], columns[16];
      for (int i = 0; i < 16; ++i)
        rows[i] = i < valid ? _mm512_maskz_loadu_epi32(mask, x + (mb * 16 + i) * ldx + 2 * p0)
                            : _mm512_setzero_si512();
      avx512_attn::transpose16(rows, columns);
      for (int64_t j = 0; j < np; ++j) _mm512_storeu_si512(d + (p0 + j) * 16, columns[j]);
    }
  }
}

void int4_gemm_amx(const Int4Args& w, const uint16_t* x_vnni, int64_t M, const float* bias,
                   void* out, DType dt, int64_t ldo, int64_t n_begin, int64_t n_end) {
  // Scales and mins of the current 32-row block, widened once for all its K blocks.
  thread_local std::vector<float> sm;
  const int64_t groups = w.K / w.group_size;
  sm.resize(static_cast<size_t>(2 * 32 * groups));
  int64_t widened = -1;
  gemm_amx([&](int64_t n0, int64_t n1, int64_t k0, int64_t k1, uint16_t* dst, int64_t ldd) {
             if (widened != n0) {
               int4_scales_to_floats_avx512(w, n0, n1, sm.data(), sm.data() + 32 * groups);
               widened = n0;
             }
             int4_dequant_bf16_avx512(w, n0, n1, k0, k1, dst, ldd, sm.data(), sm.data() + 32 * groups);
           },
           w.K, x_vnni, M, bias, out, dt, ldo, n_begin, n_end);
}

void int8_gemm_amx(const Int8Args& w, const uint16_t* x_vnni, int64_t M, const float* bias,
                   void* out, DType dt, int64_t ldo, int64_t n_begin, int64_t n_end) {
  gemm_amx([&](int64_t n0, int64_t n1, int64_t k0, int64_t k1, uint16_t* dst, int64_t ldd) {
             int8_dequant_bf16_avx512(w, n0, n1, k0, k1, dst, ldd);
           },
           w.K, x_vnni, M, bias, out, dt, ldo, n_begin, n_end);
}

}  // namespace pagedinfer::cpu
