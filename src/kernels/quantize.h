// quantize.h: scalar reference conversion of float32 rows to any stored DType, producing
// GGUF's exact block layouts (the inverse of dequant.h, up to rounding). The q4_K/q5_K/q6_K
// scale search is simpler than llama.cpp's (one pass from each sub-block's range), so
// files are valid GGUF but their error is somewhat larger; quantize_test reports it. q2_K
// and q3_K search each sub-block's least-squares scale (kquant_low_test reports their error).
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/dtype.h"

namespace smoe {

// dst[row_bytes(t, n)] = src[0..n) converted to `t` (n a whole number of blocks).
// dst may be unaligned.
void quantize_row(DType t, const float* src, uint8_t* dst, int64_t n);
// The same, scalar throughout (q2_K/q3_K's scale-search trials otherwise run on AVX-512
// where the CPU has it); equal bit for bit.
void quantize_row_ref(DType t, const float* src, uint8_t* dst, int64_t n);

}  // namespace smoe
