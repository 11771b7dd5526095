// gemm_x16.h: q8_0/q4_0 weights repacked in groups of 16 rows for AVX-512 VNNI, and the
// matmul kernels that read them. Legend: N rows, D row length, nb = D/32 blocks per row,
// G = N/16 row groups, T tokens.
//
// Layout (the tensor keeps its size and row group G starts where row 16G did): for each
// row group, for each block b, 16 block-groups of bytes:
//   scales[16]  f16, the 16 rows' block scales (32 bytes)
//   q8_0: 8 x [16 rows][4 bytes]: values 4g..4g+3 of each row as unsigned w + 128 (512 B)
//   q4_0: 4 x [16 rows][4 bytes]: bytes qs[4g..4g+3] of each row (low nibbles: values
//         4g..4g+3, high nibbles: 16+4g..16+4g+3; nibble = w + 8)          (256 B)
// One 64-byte load then feeds vpdpbusd with 4 values of 16 rows against 4 activation
// values broadcast to every lane: the 16 rows' results land in the 16 lanes of one
// register and need no horizontal sums.
//
// Arithmetic (equal bit for bit to gemm_int8_panel_ref on the unpacked rows): per block an
// exact int32 dot of the row with the token's int8 block, acc = fma(isum, d_x * d_w, acc)
// in block order.
#pragma once
#include <cstdint>

#include "core/dtype.h"
#include "kernels/gemm_int8.h"

namespace smoe {

// Whether a [N, D] tensor of type t can be repacked (q8_0/q4_0, N % 16 == 0, D % 32 == 0)
// and this CPU runs the kernels (AVX-512 VNNI).
bool x16_supports(DType t, int64_t N, int64_t D);
// src: N GGUF rows; dst: the same bytes repacked (must not overlap src).
void repack_x16(DType t, const uint8_t* src, uint8_t* dst, int64_t N, int64_t D);
// Row r of a repacked tensor back as a GGUF row (row_bytes(t, D) bytes).
void unpack_x16_row(DType t, const uint8_t* packed, int64_t D, int64_t r, uint8_t* row);

// y[t * ldy + 16 G + i] for the n_groups row groups at w (repacked, row length x.D) and
// the x.T tokens of x. VNNI kernels; callers check x16_supports first.
void gemm_x16(DType t, const uint8_t* w, int64_t n_groups, const Int8Activations& x, float* y,
              int64_t ldy);

}  // namespace smoe
