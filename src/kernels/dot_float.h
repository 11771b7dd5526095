// dot_float.h: decode products for float weights (f32, f16, bf16 rows as stored in the
// file): a few tokens against many rows, reading every weight once for all of them. Larger
// batches use gemm_panel (simd.h). Legend: T tokens, D row length.
#pragma once
#include <cstdint>

#include "core/dtype.h"

namespace smoe {

constexpr int kMaxFloatDotTokens = 3;

// Whether dot_rows_float takes weights of type t (F32, F16, BF16).
bool dot_rows_float_supports(DType t);

// y[t * ldy + r] = dot(row r of w, x[t * D .. t * D + D)) for r < n_rows, t < T
// (1 <= T <= kMaxFloatDotTokens): w holds n_rows rows of D values of type t, any alignment.
// Summation order differs from a sequential loop (SIMD lanes, then a tree): results agree
// with matmul_ref to float32 rounding, not bit for bit.
void dot_rows_float(DType t, const uint8_t* w, int64_t n_rows, const float* x, int T, int64_t D,
                    float* y, int64_t ldy);

}  // namespace smoe
