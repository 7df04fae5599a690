// CPU kernels for weight-only INT4 / INT8 GEMM (y = x @ W^T). Raw pointers and sizes only; the
// caller (csrc/ops/gemm_ops_cpu.cpp) checks shapes and splits rows of W over threads.
//
// Packed layouts (the one place they are stated; python/pagedinfer/quant.py writes them):
//   INT4, W [N, K], group size G in {32, 64, 128}, w = q * scale[n, k / G] + min[n, k / G]:
//     qweight: row n is ceil(K / 64) Int4Chunk's; chunk c covers k = 64c .. 64c + 63 and
//              qs[j] = q[64c + j] | q[64c + 32 + j] << 4 (past K: zero). One 32-byte load gives
//              32 "low" weights (k = 64c + j) and 32 "high" ones (k = 64c + 32 + j), each run of 32
//              inside one group, which is what a bf16 dot product of 32 lanes wants.
//     scale, min: fp16 bits [N, K / G].
//   INT8, w = q * scale[n, k / G]: qweight int8 [N, K]; scale fp16 bits [N, K / G].
#pragma once

#include <cstdint>

namespace pagedinfer::cpu {

struct Int4Chunk {
  uint8_t qs[32];  // qs[j]: low nibble = q[64c + j], high nibble = q[64c + 32 + j]
};
static_assert(sizeof(Int4Chunk) == 32, "Int4Chunk must be 32 bytes: 64 nibbles, no padding");
constexpr int64_t kInt4ChunkK = 64;

inline int64_t int4_row_bytes(int64_t K) { return (K + kInt4ChunkK - 1) / kInt4ChunkK * 32; }

struct Int4Args {
  const uint8_t* qweight;  // [N, int4_row_bytes(K)]
  const uint16_t* scale;   // fp16 [N, K / G]
  const uint16_t* min;     // fp16 [N, K / G]
  int64_t N, K, group_size;
};

struct Int8Args {
  const int8_t* qweight;  // [N, K]
  const uint16_t* scale;  // fp16 [N, K / G]
  int64_t N, K, group_size;
};

enum class DType { kF32 = 0, kBF16 = 1, kF16 = 2 };

// Activations prepared once per call for the small-M kernels (rows of x, K contiguous):
//   x32 fp32 [M, K]; x_sum fp32 [M, K / G] = per-group sums of x (the `min` term:
//   sum_k min * x_k); the AVX-512 kernels also take one of two images of x:
//   - fp32 x: x_hi bf16 [M, K] = bf16(x), x_lo bf16 [M, K] = bf16(x - x_hi) (x_hi + x_lo holds x
//     to ~2^-17, so bf16 dot products keep fp32-level accuracy); x_q = nullptr;
//   - bf16 / fp16 x: x_q int16 [M, x_q_stride] and x_qscale fp32 [M, K / G], x = x_q * x_qscale,
//     the scale a power of two per group (gemv_kernels_avx512.cpp says how exact); x_hi = x_lo =
//     nullptr. x_q_stride = x_q_stride_for(K, G). With G = 32 each 128-wide chunk of a row is
//     stored in the order the G = 32 kernels multiply it in (to_quad_order in
//     gemv_kernels_avx512.cpp), and rows are padded with zeros to a multiple of 128.
//   The scalar twins read x32 only.
struct PreparedX {
  float* x32;
  uint16_t* x_hi;
  uint16_t* x_lo;
  int16_t* x_q;
  float* x_qscale;
  float* x_sum;
  int64_t M, K, group_size;
  int64_t x_q_stride;
};
constexpr int64_t kQuadK = 128;  // the G = 32 kernels' step: 4 groups
inline int64_t x_q_stride_for(int64_t K, int64_t G) {
  return G == 32 ? (K + kQuadK - 1) / kQuadK * kQuadK : K;
}
// x: [M, K] rows at byte stride ldx_bytes, elements contiguous, dtype `dt`.
void prepare_x(const void* x, DType dt, int64_t ldx_bytes, PreparedX& p);

// out[m, n] (dtype out_dt, row stride ldo elements) = sum_k x[m, k] w[n, k] (+ bias[n], fp32),
// for n in [n_begin, n_end).
void int4_gemv(const Int4Args& w, const PreparedX& x, const float* bias, void* out, DType out_dt,
               int64_t ldo, int64_t n_begin, int64_t n_end);
void int8_gemv(const Int8Args& w, const PreparedX& x, const float* bias, void* out, DType out_dt,
               int64_t ldo, int64_t n_begin, int64_t n_end);

// Writes rows [n_begin, n_end) of W, dequantized, to dst [n_end - n_begin, K] (dtype bf16 or fp32),
// bf16 values being the rounded fp32 ones. For the large-M path (dequantize a panel, then GEMM).
void int4_dequant(const Int4Args& w, int64_t n_begin, int64_t n_end, void* dst, DType dst_dt);
void int8_dequant(const Int8Args& w, int64_t n_begin, int64_t n_end, void* dst, DType dst_dt);

// Scalar conversions shared by the twins.
float fp16_to_float(uint16_t h);
float bf16_to_float(uint16_t b);
uint16_t float_to_bf16(float f);  // round to nearest even
uint16_t float_to_fp16(float f);  // round to nearest even
void store_value(void* out, DType dt, int64_t index, float v);

#ifdef PAGEDINFER_HAVE_AVX512
void prepare_x_avx512(const void* x, DType dt, int64_t ldx_bytes, PreparedX& p);
void int4_gemv_avx512(const Int4Args& w, const PreparedX& x, const float* bias, void* out,
                      DType out_dt, int64_t ldo, int64_t n_begin, int64_t n_end);
void int8_gemv_avx512(const Int8Args& w, const PreparedX& x, const float* bias, void* out,
                      DType out_dt, int64_t ldo, int64_t n_begin, int64_t n_end);
void int4_dequant_avx512(const Int4Args& w, int64_t n_begin, int64_t n_end, void* dst, DType dst_dt);
// bf16 rows [n_begin, n_end), columns [k_begin, k_end) to dst with row stride ldd elements (the
// AMX path's A operand). k_begin a multiple of 64; k_end a multiple of 64 or K.
// sc_rows / mn_rows: the rows' scales and mins already widened to fp32 ([n_end - n_begin, K / G],
// from int4_scales_to_floats_avx512), or nullptr to widen them here.
void int4_dequant_bf16_avx512(const Int4Args& w, int64_t n_begin, int64_t n_end, int64_t k_begin,
                              int64_t k_end, uint16_t* dst, int64_t ldd, const float* sc_rows,
                              const float* mn_rows);
void int4_scales_to_floats_avx512(const Int4Args& w, int64_t n_begin, int64_t n_end, float* sc,
                                  float* mn);
void int8_dequant_bf16_avx512(const Int8Args& w, int64_t n_begin, int64_t n_end, int64_t k_begin,
                              int64_t k_end, uint16_t* dst, int64_t ldd);
void int8_dequant_avx512(const Int8Args& w, int64_t n_begin, int64_t n_end, void* dst, DType dst_dt);
#endif

#ifdef PAGEDINFER_HAVE_AMX
// AMX-BF16 path for bf16 activations and many rows (gemm_kernels_amx.cpp).
// amx_available(): the CPU has AMX-BF16 and the OS granted the tile state (amx_tiles_granted()).
bool amx_available();
// x bf16 [M, K] (row stride ldx) -> x_vnni bf16 [ceil(M/16)][K/2][16][2] (rows past M zero), for
// 16-row blocks [mb_begin, mb_end).
void pack_x_vnni(const uint16_t* x, int64_t ldx, int64_t M, int64_t K, int64_t mb_begin,
                 int64_t mb_end, uint16_t* x_vnni);
// out[m, n] (fp32 or bf16, row stride ldo) = x W^T + bias for n in [n_begin, n_end); n_begin a
// multiple of 32 for full tiles (any value is correct).
void int4_gemm_amx(const Int4Args& w, const uint16_t* x_vnni, int64_t M, const float* bias,
                   void* out, DType out_dt, int64_t ldo, int64_t n_begin, int64_t n_end);
void int8_gemm_amx(const Int8Args& w, const uint16_t* x_vnni, int64_t M, const float* bias,
                   void* out, DType out_dt, int64_t ldo, int64_t n_begin, int64_t n_end);
#endif

}  // namespace pagedinfer::cpu
