// gemm_int8.h: matmul with int8 activations for q8_0/q4_0 weights, batched and as decode dot
// products: each token's activations are quantized per 32-value block (as q8_0: scale
// amax/127, round to nearest), and blocks are multiplied in integers (AVX-512 VNNI vpdpbusd
// where the CPU has it, AVX2 for the dot products; a scalar reference with the same
// arithmetic otherwise and in tests). Also the activations of the repacked K-quant kernels
// (gemm_x16.h).
// Legend: T tokens, Tpad tokens padded to a multiple of 16, D row length, n rows.
#pragma once
#include <cstdint>
#include <vector>

#include "core/dtype.h"

namespace smoe {

class ThreadPool;

// x[T, D] quantized per 32-value block, transposed for the kernel:
// q[D/32][8][Tpad][4]: the 4 values k = 32b + 4g .. 32b + 4g + 3 of token t (signed);
// d[D/32][Tpad]: the block scales (0 for padding tokens); corr8 / corr4 [D/32][Tpad]: -128
// and -8 times the block's sum of q. The kernel multiplies x with the weights as unsigned
// bytes (q8_0: w + 128, q4_0: the nibble, w + 8) and starts each block's sum from these,
// so the weights are used straight from their GGUF blocks, never repacked.
// For the repacked K-quant kernels (gemm_x16.h) also: dsum[D/32][Tpad] = d * float(block's
// sum of q) (the q4_K/q5_K min terms), corr6[D/32][2][Tpad] = -32 times the sum of q over
// each 16-value half (q6_K's offset of 32, one per 16-value sub-block; q3_K takes corr6 / 8
// for its offset of 4), dsum16[D/32][2][Tpad] = d * float(sum of q over each 16-value half)
// (q2_K's min terms).
// With superblocks (D a multiple of 256; the repacked q2_K/q3_K/q4_K kernels, gemm_x16.h) x is
// also quantized per 256-value super-block (scale amax/127, round to nearest, as llama.cpp's
// q8_K and the AMX K-quant activations): q256 laid out as q, d256[D/256][Tpad] the scales,
// sum16[D/16][Tpad] the sum of q256 over each 16-value sub-block, sum32[D/32][Tpad] over
// each 32-value block and corr32 = -8 * sum32 (q4_K's offset of 8).
struct Int8Activations {
  int64_t T = 0, Tpad = 0, D = 0;
  std::vector<int8_t> q;
  std::vector<float> d, dsum, dsum16;
  std::vector<int32_t> corr8, corr4, corr6;
  bool superblocks = false;
  std::vector<int8_t> q256;
  std::vector<float> d256;
  std::vector<int32_t> sum16, sum32, corr32;
};
// Tpad = T rounded up to a multiple of pad_to (the tile kernel needs 16; the x16 kernels
// read no padding and take 1). Tokens are split over pool's threads when one is given;
// AVX-512 where the CPU has it, equal bit for bit to the scalar quantize_activations_ref.
void quantize_activations(const float* x, int64_t T, int64_t D, Int8Activations& out, int64_t pad_to = 16,
                          ThreadPool* pool = nullptr, bool superblocks = false);
void quantize_activations_ref(const float* x, int64_t T, int64_t D, Int8Activations& out, int64_t pad_to = 16,
                              bool superblocks = false);

// Whether this CPU runs the VNNI kernel, and whether `t` has an int8 path at all.
bool int8_gemm_fast();
bool int8_gemm_supports(DType t);
// Types with an int8-activation decode dot product (dot_rows_int8*): the same, q8_0 and q4_0
// (K-quant rows in the GGUF layout take dot_kquant_sb.h).
bool int8_dot_supports(DType t);
// Whether dot_rows_int8 runs t on AVX2 kernels when VNNI is missing (or capped off,
// cpu_features.h): int8_dot_supports types, on CPUs with AVX2, FMA and F16C.
bool int8_dot_avx2(DType t);

// y[t * ldy + j] = sum over blocks b of d_w[j,b] * d_x[t,b] * (q_w[j,b] . q_x[t,b]) for
// t < T, j < n: w points at the first of n rows (row_bytes(t, D) apart). Uses VNNI when
// available, else the reference.
void gemm_int8_panel(DType t, const uint8_t* w, int64_t n, const Int8Activations& x, float* y,
                     int64_t ldy);
// The scalar reference (same per-block integer sums; the float sum over blocks in the same
// order, with fused multiply-adds, so results are equal bit for bit).
void gemm_int8_panel_ref(DType t, const uint8_t* w, int64_t n, const Int8Activations& x, float* y,
                         int64_t ldy);

// ---- decode (one token against many rows) ----
// x[D] quantized per 32-value block: q[D] int8 (round(x / d)), d[D/32], and per block and
// 32-bit lane of the kernel ([D/32][8]) the sum s of 4 consecutive q, stored as -8 s (the
// offset the q4_0 kernels undo).
struct Int8Vector {
  int64_t D = 0;
  std::vector<int8_t> q;
  std::vector<float> d;
  std::vector<int32_t> neg8_lane_sums;  // -8 s: q4_0's nibble offset, undone
};
void quantize_vector(const float* x, int64_t D, Int8Vector& out);

// y[r] = dot(row r of w, x) for q8_0/q4_0 rows with int8 activations: per block and
// 4-value lane an exact integer sum, lane accumulators acc[l] = fma(isum, d_w * d_x, acc[l])
// in block order, then ((a0+a4)+(a2+a6))+((a1+a5)+(a3+a7)). VNNI when available, else AVX2
// (int8_dot_avx2), else the reference; all follow exactly this arithmetic (equal bit for bit).
void dot_rows_int8(DType t, const uint8_t* w, int64_t n_rows, const Int8Vector& x, float* y);
void dot_rows_int8_ref(DType t, const uint8_t* w, int64_t n_rows, const Int8Vector& x, float* y);
// The same for n_tokens vectors at once (each weight block loaded once for all of them):
// y[i * ldy + r] = dot(row r, xs[i]), equal bit for bit to dot_rows_int8 on each.
void dot_rows_int8_tokens(DType t, const uint8_t* w, int64_t n_rows, const Int8Vector* const* xs,
                          int n_tokens, float* y, int64_t ldy);

// ---- batches on AVX2 (gemm_int8_avx2.cpp) ----
// x[T, D] quantized per 32-value block (as quantize_vector) and laid out in quads of 4 tokens
// (the last padded with zero tokens), per quad and block b: q[quad][b][pair][half][32] (the
// pair's two tokens' 16 values of the half side by side), and in the kernel's (row, token)
// lane order dx[quad][b][8] the tokens' scales and corr[quad][b][8] -8 x their block sums of
// x_q (q4_0's offset).
struct Int8QuadActivations {
  int64_t T = 0, D = 0, quads = 0;
  std::vector<int8_t> q;
  std::vector<float> dx;
  std::vector<int32_t> corr;
};
void quantize_quads(const float* x, int64_t T, int64_t D, Int8QuadActivations& out);
// y[t * ldy + r] for the n_rows q8_0/q4_0 rows at w (GGUF layout) and x's tokens, on AVX2
// (callers check int8_dot_avx2): equal bit for bit to gemm_int8_panel_ref on the same
// activations.
void gemm_int8_rows_avx2(DType t, const uint8_t* w, int64_t n_rows, const Int8QuadActivations& x, float* y,
                         int64_t ldy);

}  // namespace smoe
