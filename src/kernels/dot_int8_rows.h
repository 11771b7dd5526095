// dot_int8_rows.h: pieces the int8-activation kernels on GGUF-layout rows share (gemm_int8.cpp
// for q8_0/q4_0 rows, dot_kquant_sb.cpp for the K-quants); included by those files only. Legend: NT tokens of a call, R rows of a pass.
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

// Byte offset of the 12 packed scale bytes in a GGUF q3_K super-block (dtype.h).
constexpr size_t kQ3Scales = 96;

// The 16 stored q3_K scales (6 bits each, before the - 32) of the super-block at blk as
// bytes: sub-block k's low 4 bits are scales[k] & 15 (k < 8) or scales[k - 8] >> 4, its high
// 2 bits bits 2 (k / 4) of scales[8 + k % 4] (q3k_scale).
// The 12 bytes are read with the 2 before them (the last of qs) and shifted down, which stays
// inside the super-block; copying them to the stack first cost a failed store forward per
// super-block (27% of the AVX2 q3_K decode kernel's samples under perf).
__attribute__((target("avx2"), always_inline)) inline __m128i q3k_stored_scales(const uint8_t* blk) {
  const __m128i v = _mm_srli_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + kQ3Scales - 2)), 2);
  const __m128i m4 = _mm_set1_epi8(15);
  const __m128i lo = _mm_unpacklo_epi64(_mm_and_si128(v, m4), _mm_and_si128(_mm_srli_epi16(v, 4), m4));
  const __m128i h = _mm_srlv_epi32(_mm_set1_epi32(_mm_extract_epi32(v, 2)), _mm_setr_epi32(0, 2, 4, 6));
  return _mm_or_si128(lo, _mm_slli_epi16(_mm_and_si128(h, _mm_set1_epi8(3)), 4));
}

// The 8 sub-block scales (bytes 0-7) and 8 mins (bytes 8-15) of the q4_K/q5_K super-block at
// blk, as kquant_scale_min unpacks them: the low 6 bits of q[j] and q[j + 4] for j < 4; for
// j >= 4 a nibble of q[j + 4] below the top 2 bits of q[j - 4] or q[j] (q = blk + 4). The 16
// bytes from blk + 4 stay inside the super-block.
__attribute__((target("avx2"), always_inline)) inline __m128i k45_scales_mins(const uint8_t* blk) {
  const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 4));
  const __m128i a = _mm_shuffle_epi8(q, _mm_setr_epi8(0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 8, 9, 10, 11));
  const __m128i lo = _mm_or_si128(
      _mm_and_si128(a, _mm_setr_epi8(63, 63, 63, 63, 15, 15, 15, 15, 63, 63, 63, 63, 0, 0, 0, 0)),
      _mm_and_si128(_mm_srli_epi16(a, 4), _mm_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 15, 15, 15, 15)));
  const __m128i b = _mm_shuffle_epi8(q, _mm_setr_epi8(-1, -1, -1, -1, 0, 1, 2, 3, -1, -1, -1, -1, 4, 5, 6, 7));
  const __m128i hi = _mm_slli_epi16(_mm_and_si128(_mm_srli_epi16(b, 6), _mm_set1_epi8(3)), 4);
  return _mm_or_si128(lo, hi);
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

}  // namespace smoe::int8dot
