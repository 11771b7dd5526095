// dot_int8_rows.h: pieces the int8-activation decode kernels share (gemm_int8.cpp for
// q8_0/q4_0/q4_K/q5_K/q6_K rows, dot_int8_lowk.cpp for q2_K/q3_K rows, all in the GGUF
// layout); included by those files only. Legend: NT tokens of a call, R rows of a pass.
#pragma once
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "core/dtype.h"
#include "kernels/gemm_int8.h"

namespace smoe::int8dot {

// A row's result from its 8 lane accumulators, in this fixed order.
inline float reduce_lanes(const float* a) {
  return ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]));
}

// The decode kernels take rows in passes of kPassRows (4 independent multiply-add chains per
// token; one row at a time was bound by the chain's latency), unit by unit (a block or
// super-block of each row in turn), and prefetch the same unit of the next pass's rows into
// L2. Each row's arithmetic is the same whatever the pass. On the Xeon (2 threads, the
// 2-layer Mixtral-shaped files, `smoe bench --load memory --no-repack`, builds alternating)
// decode ran q4_0 at 14-18 -> 23-32 tokens/s, q8_0 12-14 -> 21-24, q6_K 11-14 -> 18-22,
// q5_K 13-14 -> 17-24, q4_K 14-17 -> 16-18, and q4_K 22-29 with its scales unpacked by a
// byte shuffle (see the README).
constexpr int kPassRows = 4;

// Prefetches into L2 the cache lines of [p, p + n) (n bytes of a unit of a row).
inline void prefetch_unit(const uint8_t* p, size_t n) {
  for (size_t o = 0; o < n; o += 64) _mm_prefetch(reinterpret_cast<const char*>(p + o), _MM_HINT_T1);
  _mm_prefetch(reinterpret_cast<const char*>(p + n - 1), _MM_HINT_T1);
}

// Calls pass(std::integral_constant<int, R>, r0) for rows [r0, r0 + R) of n_rows: passes of
// kPassRows, the rest one by one.
template <int kRows = kPassRows, class Pass>
void for_row_passes(int64_t n_rows, Pass&& pass) {
  int64_t r = 0;
  for (; r + kRows <= n_rows; r += kRows) pass(std::integral_constant<int, kRows>{}, r);
  for (; r < n_rows; ++r) pass(std::integral_constant<int, 1>{}, r);
}

// Calls kernel(std::integral_constant<int, NT>, t0) for the tokens in groups of up to 4:
// the decode kernels take their token count as a template argument.
template <class Kernel>
void for_token_groups(int nt, Kernel&& kernel) {
  for (int t0 = 0; t0 < nt; t0 += 4) {
    switch (std::min(4, nt - t0)) {
      case 4: kernel(std::integral_constant<int, 4>{}, t0); break;
      case 3: kernel(std::integral_constant<int, 3>{}, t0); break;
      case 2: kernel(std::integral_constant<int, 2>{}, t0); break;
      default: kernel(std::integral_constant<int, 1>{}, t0); break;
    }
  }
}

// q2_K and q3_K rows (dot_int8_lowk.cpp). Per 32-value block b of x (scale dx, lane sums
// s_l of x_q over 4 values, Int8Vector::neg8_lane_sums = -8 s_l) and lane l (lanes 0-3
// sub-block k = 2b % 16, lanes 4-7 sub-block k + 1 of the super-block; dsc_k = d * scale_k
// and, for q2_K, dm_k = dmin * min_k), in block order into acc[l] for even blocks and
// acc[l + 8] for odd ones (the kernel's 16 lanes hold two blocks):
//   q2_K, q in 0..3, scale and min the sub-block's nibbles:
//     isum = sum q * x_q (exact); tv = fma(-s_l, dm_k, isum * dsc_k)
//   q3_K, q = low + 4 * high in 0..7, scale = the stored 6-bit value (q3k_scale) - 32:
//     isum = sum q * x_q - 4 s_l (= sum (q - 4) x_q, exact); tv = isum * dsc_k
//   acc = fma(tv, dx, acc)
// and the result is reduce_lanes of acc[l] + acc[l + 8]. Against the float activations these
// rows took before (2026-12-06, Xeon, 2 threads, `smoe bench --load memory --no-repack` on
// the 2-layer q2_K file, alternating): tg 12-14 -> 32-39 tokens/s (llama.cpp: 22.6).
void dot_lowk_ref_row(DType t, const uint8_t* row, const Int8Vector& x, float* out);
// y[i * ldy + r] for n_tokens (1..4) vectors; AVX-512 VNNI (callers check int8_gemm_fast).
void dot_lowk_vnni(DType t, const uint8_t* w, int64_t n_rows, const Int8Vector* const* xs, int n_tokens,
                   float* y, int64_t ldy);
// The same on AVX2 (CPUs without AVX-512 VNNI; callers check int8_dot_avx2), equal bit for bit.
void dot_lowk_avx2(DType t, const uint8_t* w, int64_t n_rows, const Int8Vector* const* xs, int n_tokens,
                   float* y, int64_t ldy);

}  // namespace smoe::int8dot
