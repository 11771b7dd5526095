// dequant.h: scalar reference conversion of stored rows (any DType) to float32.
// Bit-exact with GGUF's definitions; SIMD versions are tested against these.
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/dtype.h"

namespace smoe {

// dst[0..n) = values of the n-element row at src (n a whole number of blocks).
// src may be unaligned.
void dequantize_row(DType t, const uint8_t* src, float* dst, int64_t n);

}  // namespace smoe
