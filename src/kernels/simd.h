// simd.h: SIMD kernels (Highway, dispatched at run time to the best target the CPU has:
// AVX-512, AVX2, SSE4 or portable scalar code). Each has a scalar reference in ops.h /
// dequant.h with the same semantics and is tested against it (kernels_test.cpp).
// Legend: T tokens, D inner dim (row length), N output rows.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "core/dtype.h"

namespace smoe {

// y[r] = dot(row r of w, x) for r in [0, n_rows): w holds n_rows rows of D values of type t
// (each row_bytes(t, D) bytes, any alignment), x[D] float32. xsum32 holds the sums of x
// over each 32-value sub-block (D/32 entries; see sub_block_sums), needed by q4_K/q5_K
// only (null otherwise). Fused: weights are converted in registers, never stored. f32,
// f16 and bf16 rows go to dot_rows_float (dot_float.h).
void dot_rows(DType t, const uint8_t* w, int64_t n_rows, const float* x, const float* xsum32,
              int64_t D, float* y);

// sums[D/32] = sums of x[D] over consecutive 32-value blocks (D a multiple of 32).
void sub_block_sums(const float* x, int64_t D, float* sums);

// Tokens per vector block of gemm_panel (twice the SIMD width); Tpad is a multiple of it
// or of half of it.
int64_t gemm_token_block();

// y[t, j] = x[t, :] · W[j, :] for t < T, j < n, with x given transposed and zero-padded:
// xT[D][Tpad] (Tpad >= T, a multiple of gemm_token_block() / 2). w points at the first of
// the n rows (row_bytes(t, D) apart); ldy: y's row stride. Each weight row is converted
// to float32 once and reused across all tokens (tokens are the vector dimension).
void gemm_panel(DType t, const uint8_t* w, int64_t n, const float* xT, int64_t Tpad, int64_t T,
                int64_t D, float* y, int64_t ldy);

// dequantize_row (dequant.h) with SIMD: the same values, bit for bit.
void dequantize_row_simd(DType t, const uint8_t* src, float* dst, int64_t n);

// out[n] += a * v[n]; dot of a[n] and b[n] (float32; summation order differs from a
// sequential loop, so results agree with it to rounding, not bit for bit).
void axpy(float a, const float* v, float* out, int64_t n);
float dot_f32(const float* a, const float* b, int64_t n);
// g[n] = silu(g[n]) * u[n] (SwiGLU; exp to within a few ulp of std::exp, so results agree
// with ops.h's silu to rounding).
void silu_mul(float* g, const float* u, int64_t n);

// Exact IEEE half -> float for every half value (branch-free; equal to f16_to_f32).
inline float f16_to_f32_fast(uint16_t h) {
  const uint32_t w = static_cast<uint32_t>(h) << 16;
  const uint32_t sign = w & 0x80000000u;
  const uint32_t two_w = w + w;
  uint32_t bits;
  float f;
  if (two_w < (1u << 27)) {  // zero or subnormal: 0.5 + mant * 2^-24 trick
    bits = (two_w >> 17) | (126u << 23);
    std::memcpy(&f, &bits, 4);
    f -= 0.5f;
  } else {  // normal, inf or nan: rebias the exponent by scaling
    bits = (two_w >> 4) + (0xE0u << 23);
    std::memcpy(&f, &bits, 4);
    f *= 0x1.0p-112f;
  }
  std::memcpy(&bits, &f, 4);
  bits |= sign;
  std::memcpy(&f, &bits, 4);
  return f;
}

}  // namespace smoe
