// dot_kquant_sb.h: K-quant rows (q2_K, q3_K, q4_K, q5_K, q6_K as stored in GGUF files)
// against activations quantized per 256-value super-block: matmul's decode and batch kernels
// for such rows that are not repacked (every CPU without AVX-512 VNNI; mapped files and
// --no-repack with it), on AVX2, with AVX-512 VNNI's vpdpwssd where the CPU has it. Legend: D row length,
// S = D / 256 super-blocks, k 16-value sub-block, NT tokens of a call.
//
// Arithmetic: gemm_amx_kquant.h's, equal bit for bit to gemm_amx_kquant_ref on the same
// activations. Per row, token and super-block an exact int32 sum C of n * x_q, n the weight
// value with its sub-block scale folded in (q2_K/q4_K/q5_K sc * q, q3_K (sc - 32) * (4 - q),
// q6_K sc * (q - 32)), and for the types with mins M = sum_k min_k * (sum of x_q over k);
// then acc = fma(float(C), d * dx, acc) (q3_K: -d) and acc = fma(float(M), (-dmin) * dx, acc),
// in super-block order. The AVX2 kernel sums each 32-value block with vpmaddubsw (weight
// values q, unsigned, times x_q) and vpmaddwd against the sub-block scales as 16-bit
// integers, so the scale costs no instruction of its own; the offsets of q3_K and q6_K become
// one vpmaddwd of the 16 sub-block sums of x_q per super-block: 3 vector instructions per
// 32 multiply-adds and token, where the per-32 kernels these types took before on AVX2 spent
// 6-11 (a float scale per block). On the Xeon capped to AVX2 (2026-12-06, 2 threads, the
// 2-layer Mixtral-shaped files, old and new builds alternating) pp128 went from 44-86 to
// 88-104 tokens/s and tg32 from 22-41 to 36-53 (see the README).
#pragma once
#include <cstdint>
#include <vector>

#include "core/dtype.h"

namespace smoe {

// One token's activations x[D] (D a multiple of 256) quantized per super-block s as
// quantize_amx_activations does: d[s] = amax / 127, q = round(x / d) (round to nearest even,
// 0 where that is not a number), sum16[k] the sum of q over sub-block k.
struct Int8SuperVector {
  int64_t D = 0;
  std::vector<int8_t> q;       // [D]
  std::vector<float> d;        // [S]
  std::vector<int16_t> sum16;  // [D / 16]
};
// AVX2 where allowed (cpu_features.h), equal bit for bit to the scalar reference.
void quantize_vector_sb(const float* x, int64_t D, Int8SuperVector& out);
void quantize_vector_sb_ref(const float* x, int64_t D, Int8SuperVector& out);

// Whether dot_kquant_sb runs type t on its SIMD kernel: a K-quant on a CPU with AVX2, FMA and
// F16C (and not capped below avx2; the VNNI passes where int8_gemm_fast).
bool kquant_sb_avx2(DType t);
// y[i * ldy + r] = row r of the n_rows K-quant rows at w (row_bytes(t, D) apart) . xs[i], for
// n_tokens tokens; the SIMD kernel when kquant_sb_avx2(t), else the reference.
void dot_kquant_sb(DType t, const uint8_t* w, int64_t n_rows, const Int8SuperVector* const* xs, int n_tokens,
                   float* y, int64_t ldy);
void dot_kquant_sb_ref(DType t, const uint8_t* w, int64_t n_rows, const Int8SuperVector* const* xs,
                       int n_tokens, float* y, int64_t ldy);

}  // namespace smoe
