// gemm_amx_kquant.h: batched products of repacked K-quant weights (q2_K..q6_K, gemm_x16.h)
// on Intel AMX-INT8 tiles, for prompts and batches of 16 tokens and more. Legend: T tokens
// (Tpad: padded to 16, TT = Tpad / 16 token tiles), D row length, S = D / 256 super-blocks,
// u 64-value step (4 per super-block), N rows (16 per row group), k sub-block.
//
// The tile product C[16 tokens][16 rows] += A[16 tokens][64 int8] . B[16][16 rows x 4 int8]
// (tdpbssd) sums exactly in int32, and B's rows are the repacked layout's value groups (16 rows
// x 4 values). A super-block's sub-block scales are folded into the weights as exact integers
// n, so a C tile leaves its tile once per super-block (256 values), where the VNNI kernels
// apply a scale per sub-block:
//   q2_K: n = sc * q in 0..45                     one plane
//   q3_K: -n = (sc - 32) * (4 - q) in -128..124   one plane (n itself reaches 128)
//   q4_K: n = sc * q in 0..945                    two planes, n = 64 hi + lo (lo in 0..63)
//   q5_K: n = sc * q in 0..1953                   two planes
//   q6_K: n = sc * (q - 32) in -4096..4064        two planes
// and per super-block, in order: acc = fma(float(C), d * dx, acc) (q3_K: -d), C the exact sum
// of n x_q (64 C_hi + C_lo), then for q2_K/q4_K/q5_K acc = fma(float(M), (-dmin) * dx, acc),
// M = sum over sub-blocks of min_k times the sub-block's sum of x_q (whole numbers below 2^24,
// summed in float in the epilogue: a plane of mins would cost a tile product per step for 8
// or 16 distinct values). Activations are quantized per 256 values (dx = amax / 127, round
// to nearest, as llama.cpp's q8_K) instead of the VNNI kernels' 32: the products are exact,
// and the coarser activation scale gives a somewhat larger rounding error (about 1.3x on
// Gaussian activations), the same as llama.cpp's K-quant path.
#pragma once
#include <cstdint>
#include <vector>

#include "core/dtype.h"

namespace smoe {

class ThreadPool;

// Whether this CPU and OS run AMX-INT8 tiles and they are not switched off (SMOE_AMX=0,
// set_amx_enabled(false); see gemm_amx.h).
bool amx_int8_available();
// Whether gemm_amx_kquant takes repacked [N, D] weights of type t: a K-quant (q2_K..q6_K),
// N % 16 == 0, D % 256 == 0, and amx_int8_available().
bool amx_kquant_supports(DType t, int64_t N, int64_t D);
// From how many tokens matmul takes the tiles for type t: the weights' planes are built once
// per call and pay off only over enough tokens. One thread, 4096 x 4096, against the VNNI
// kernels in the same run (Xeon, Emerald Rapids, 2026-12-06, with the vpmaddubsw plane
// build; two to three runs each): q2_K 1.8x and q3_K 1.5x at 16 tokens; q6_K 0.83-1.03x at
// 16, 1.02-1.13x at 24, 1.25-1.41x at 32; q4_K 0.86-0.98x at 32, 0.88-1.06x at 40,
// 1.06-1.29x at 48, 1.13-1.21x at 64; q5_K 0.91-0.96x at 32, 0.96-0.98x at 40, 1.06-1.23x
// at 48, 1.26-1.32x at 64; q4_K/q5_K 1.3-1.8x at 256-512.
int64_t amx_kquant_min_tokens(DType t);

// x[T, D] quantized per 256-value super-block and laid out as A tiles:
// q[TT][D / 64][16 tokens][64 values] (padding tokens zero), d[TT][S][16 tokens] the scales
// (amax / 127; 0 for padding tokens and all-zero blocks).
struct AmxInt8Activations {
  int64_t T = 0, Tpad = 0, D = 0;
  std::vector<int8_t> q;
  std::vector<float> d;
  std::vector<float> sum16;  // [TT][D / 16][16 tokens]: each 16-value sub-block's sum of q
};
// AVX-512 (equal bit for bit to the scalar reference); tokens split over pool's threads.
void quantize_amx_activations(const float* x, int64_t T, int64_t D, AmxInt8Activations& out,
                              ThreadPool* pool = nullptr);
void quantize_amx_activations_ref(const float* x, int64_t T, int64_t D, AmxInt8Activations& out);

// y[t * ldy + 16 G + i] for the n_groups row groups at w (repacked, row length x.D) and the
// x.T tokens of x, on AMX tiles.
void gemm_amx_kquant(DType t, const uint8_t* w, int64_t n_groups, const AmxInt8Activations& x, float* y,
                     int64_t ldy);
// The scalar reference of the same arithmetic on n GGUF rows (not repacked), equal bit for bit.
// kquant_superblock_ref is one super-block of it: the GGUF super-block at blk against a
// token's 256 values xq (scale dx), returning acc after its one or two multiply-adds (also
// the reference of dot_kquant_sb.h, on the same activations).
float kquant_superblock_ref(DType t, const uint8_t* blk, const int8_t* xq, float dx, float acc);
void gemm_amx_kquant_ref(DType t, const uint8_t* w, int64_t n, const AmxInt8Activations& x, float* y,
                         int64_t ldy);

}  // namespace smoe
