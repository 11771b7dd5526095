// gemm_x16.cpp: repacking q8_0/q4_0 rows into 16-row groups and the AVX-512 VNNI matmul
// over them (layout and arithmetic in gemm_x16.h).
#include "kernels/gemm_x16.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "kernels/gemm_x16_simd.h"

// GCC 12 reports the _mm512_undefined_* sources inside the conversion intrinsics as
// "may be used uninitialized" once they are inlined here; they are fully overwritten.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace smoe {

namespace {

constexpr int64_t kGroup = 16;  // rows per group (one 512-bit register of int32 lanes)
constexpr int64_t kBlock = 32;

// Bytes of one block of a row group: 16 scales, then 16 rows' values.
constexpr size_t group_block_bytes(bool q8) { return kGroup * (q8 ? sizeof(BlockQ8_0) : sizeof(BlockQ4_0)); }

// NG consecutive row groups (wg, stride bytes apart) against tokens t0 .. t0 + NT - 1 of
// x, over all blocks. Each activation broadcast feeds the NG groups' vpdpbusd; each
// group's arithmetic is the same whatever NG is.
template <bool kQ8, int NT, int NG>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c")))
void x16_group(const uint8_t* wg, size_t stride, const Int8Activations& x, int64_t t0, float* y, int64_t ldy) {
  constexpr size_t gb = group_block_bytes(kQ8);
  const int64_t Tpad = x.Tpad, nb = x.D / kBlock;
  const int32_t* corr = (kQ8 ? x.corr8.data() : x.corr4.data()) + t0;
  const float* dx = x.d.data() + t0;
  const int8_t* xq = x.q.data() + 4 * t0;  // [nb][8][Tpad] groups of 4 values
  const __m512i m4 = _mm512_set1_epi8(15);
  __m512 acc[NG][NT];
  for (int gi = 0; gi < NG; ++gi)
    for (int t = 0; t < NT; ++t) acc[gi][t] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const int8_t* xb = xq + 4 * b * 8 * Tpad;
    const uint8_t* blk[NG];
    for (int gi = 0; gi < NG; ++gi) {
      blk[gi] = wg + gi * stride + static_cast<size_t>(b) * gb;
      x16::prefetch_ahead<NT>(blk[gi], gb);
    }
    // One vpdpbusd chain per token and group; a single token of a single group gets two
    // (value groups 0-3 and 4-7), halving the dependent latency that more chains hide anyway.
    constexpr int kChains = NT * NG == 1 ? 2 : 1;
    __m512i s[NG][kChains][NT];
    for (int t = 0; t < NT; ++t) {
      const __m512i c = _mm512_set1_epi32(corr[b * Tpad + t]);
      for (int gi = 0; gi < NG; ++gi) {
        s[gi][0][t] = c;
        if constexpr (kChains == 2) s[gi][kChains - 1][t] = _mm512_setzero_si512();
      }
    }
    if constexpr (kQ8) {
#pragma GCC unroll 8
      for (int g = 0; g < 8; ++g) {
        __m512i w[NG];
        for (int gi = 0; gi < NG; ++gi) w[gi] = _mm512_loadu_si512(blk[gi] + 32 + 64 * g);
        for (int t = 0; t < NT; ++t) {
          const __m512i xv = x16::bcast4(xb + 4 * (g * Tpad + t));
          for (int gi = 0; gi < NG; ++gi)
            s[gi][g / 4 % kChains][t] = _mm512_dpbusd_epi32(s[gi][g / 4 % kChains][t], w[gi], xv);
        }
      }
    } else {
#pragma GCC unroll 4
      for (int g = 0; g < 4; ++g) {
        __m512i lo[NG], hi[NG];
        for (int gi = 0; gi < NG; ++gi) {
          const __m512i v = x16::load_once(blk[gi] + 32 + 64 * g);
          lo[gi] = _mm512_and_si512(v, m4);
          // A lone chain pair takes the high nibbles in place (16 x their value): no shift.
          hi[gi] = kChains == 2 ? _mm512_andnot_si512(m4, v) : _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
        }
        x16::dot_nibble_planes<NT, NG, kChains>(s, 0, kChains - 1, lo, hi, xb, g, Tpad);
      }
    }
    for (int gi = 0; gi < NG; ++gi) {
      if constexpr (kChains == 2)
        s[gi][0][0] = _mm512_add_epi32(s[gi][0][0], kQ8 ? s[gi][1][0] : _mm512_srai_epi32(s[gi][1][0], 4));
      const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk[gi])));
      for (int t = 0; t < NT; ++t) {
        const __m512 scale = _mm512_mul_ps(_mm512_set1_ps(dx[b * Tpad + t]), dw);
        acc[gi][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[gi][0][t]), scale, acc[gi][t]);
      }
    }
  }
  for (int gi = 0; gi < NG; ++gi)
    for (int t = 0; t < NT; ++t) _mm512_storeu_ps(y + (t0 + t) * ldy + gi * kGroup, acc[gi][t]);
}

template <bool kQ8>
void x16_groups(const uint8_t* w, int64_t n_groups, const Int8Activations& x, float* y, int64_t ldy) {
  const size_t stride = static_cast<size_t>(x.D / kBlock) * group_block_bytes(kQ8);
  x16_for_each_pass<2>(n_groups, x.T, [&](auto nt, auto ng, int64_t g, int64_t t0) {
    x16_group<kQ8, decltype(nt)::value, decltype(ng)::value>(w + static_cast<size_t>(g) * stride, stride, x, t0,
                                                             y + g * kGroup, ldy);
  });
}

void check_type(DType t) {
  SMOE_CHECK(t == DType::Q8_0 || t == DType::Q4_0, "x16 repacking: unsupported weight type ",
             dtype_name(t), " (expected q8_0, q4_0, q2_K, q3_K, q4_K, q5_K or q6_K)");
}

}  // namespace

bool x16_supports(DType t, int64_t N, int64_t D) {
  const int64_t per = x16_kquant(t) ? 256 : kBlock;
  return (t == DType::Q8_0 || t == DType::Q4_0 || x16_kquant(t)) && N > 0 && N % kGroup == 0 &&
         D > 0 && D % per == 0 && int8_gemm_fast();
}

void repack_x16(DType t, const uint8_t* src, uint8_t* dst, int64_t N, int64_t D) {
  if (x16_kquant(t)) return repack_x16_kquant(t, src, dst, N, D);
  check_type(t);
  SMOE_CHECK(N % kGroup == 0 && D % kBlock == 0, "x16 repacking: shape [", N, ", ", D,
             "] is not a multiple of [16, 32]");
  const bool q8 = t == DType::Q8_0;
  const size_t bb = q8 ? sizeof(BlockQ8_0) : sizeof(BlockQ4_0), gb = group_block_bytes(q8);
  const int64_t nb = D / kBlock, n_val_groups = q8 ? 8 : 4;
  const size_t rb = static_cast<size_t>(nb) * bb;
  for (int64_t g = 0; g < N / kGroup; ++g)
    for (int64_t b = 0; b < nb; ++b) {
      uint8_t* out = dst + static_cast<size_t>(g * nb + b) * gb;
      for (int64_t i = 0; i < kGroup; ++i) {
        const uint8_t* blk = src + static_cast<size_t>(g * kGroup + i) * rb + static_cast<size_t>(b) * bb;
        std::memcpy(out + 2 * i, blk, 2);
        for (int64_t vg = 0; vg < n_val_groups; ++vg)
          for (int j = 0; j < 4; ++j) {
            const uint8_t v = blk[2 + 4 * vg + j];
            out[32 + (vg * kGroup + i) * 4 + j] = q8 ? static_cast<uint8_t>(v ^ 0x80) : v;
          }
      }
    }
}

void unpack_x16_row(DType t, const uint8_t* packed, int64_t D, int64_t r, uint8_t* row) {
  if (x16_kquant(t)) return unpack_x16_kquant_row(t, packed, D, r, row);
  check_type(t);
  const bool q8 = t == DType::Q8_0;
  const size_t bb = q8 ? sizeof(BlockQ8_0) : sizeof(BlockQ4_0), gb = group_block_bytes(q8);
  const int64_t nb = D / kBlock, n_val_groups = q8 ? 8 : 4, g = r / kGroup, i = r % kGroup;
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* in = packed + static_cast<size_t>(g * nb + b) * gb;
    uint8_t* blk = row + static_cast<size_t>(b) * bb;
    std::memcpy(blk, in + 2 * i, 2);
    for (int64_t vg = 0; vg < n_val_groups; ++vg)
      for (int j = 0; j < 4; ++j) {
        const uint8_t v = in[32 + (vg * kGroup + i) * 4 + j];
        blk[2 + 4 * vg + j] = q8 ? static_cast<uint8_t>(v ^ 0x80) : v;
      }
  }
}

void gemm_x16(DType t, const uint8_t* w, int64_t n_groups, const Int8Activations& x, float* y,
              int64_t ldy) {
  if (x16_kquant(t)) return gemm_x16_kquant(t, w, n_groups, x, y, ldy);
  check_type(t);
  SMOE_CHECK(int8_gemm_fast(), "x16 kernels need AVX-512 VNNI");
  if (t == DType::Q8_0) x16_groups<true>(w, n_groups, x, y, ldy);
  else x16_groups<false>(w, n_groups, x, y, ldy);
}

}  // namespace smoe
