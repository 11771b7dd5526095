// dot_int8_lowk.cpp: decode dot products of q2_K and q3_K rows as stored in GGUF files
// against int8 activations (Int8Vector), for weights that are not repacked (mapped files,
// --no-repack) on CPUs with AVX-512 VNNI: the arithmetic in dot_int8_rows.h, the VNNI kernel
// and its scalar reference, equal bit for bit (CPUs without VNNI take dot_kquant_sb.h). Legend: NT tokens, R rows of a pass, s super-block, b 32-value
// block of x, l 4-value lane (lanes 0-3 and 4-7: the block's two 16-value sub-blocks).
#include <immintrin.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "core/dtype.h"
#include "kernels/dot_int8_rows.h"
#include "kernels/gemm_x16.h"
#include "kernels/simd.h"

// GCC 12 reports the _mm512_undefined_* sources inside the conversion intrinsics as
// "may be used uninitialized" once they are inlined here; they are fully overwritten.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

namespace smoe::int8dot {

namespace {

constexpr int64_t kBlock = 32;

// x.d[2i] in lanes 0-7 and x.d[2i + 1] in lanes 8-15 of block pair i.
struct alignas(64) ScalePair {
  float v[16];
};

// Byte offsets in the GGUF super-blocks (dtype.h).
constexpr size_t kQ2Qs = 16, kQ2D = 80, kQ2Dmin = 82;
constexpr size_t kQ3Qs = 32, kQ3D = 108;

// d * (sub-block scale) for the 16 sub-blocks of a super-block, and for q2_K dmin * min.
template <bool kQ3>
inline void sub_block_scales(const uint8_t* blk, float d, float dmin, float* dsc, float* dm) {
  for (int k = 0; k < 16; ++k) {
    if constexpr (kQ3) {
      dsc[k] = d * static_cast<float>(q3k_scale(k, blk + kQ3Scales) - 32);
    } else {
      dsc[k] = d * static_cast<float>(blk[k] & 15);
      dm[k] = dmin * static_cast<float>(blk[k] >> 4);
    }
  }
}

float f16_at(const uint8_t* blk, size_t at) {
  uint16_t h;
  std::memcpy(&h, blk + at, 2);
  return f16_to_f32_fast(h);
}

// The same as sub_block_scales, 16 lanes at once (the same products, so the same floats).
template <bool kQ3>
__attribute__((target("avx512f,avx512bw,avx512vl,f16c"), always_inline))
inline void sub_block_scales_avx512(const uint8_t* blk, __m512* dsc, __m512* dm) {
  uint16_t hd, hm = 0;
  std::memcpy(&hd, blk + (kQ3 ? kQ3D : kQ2D), 2);
  if constexpr (kQ3) {
    const __m128i sc = q3k_stored_scales(blk);
    const __m512i s32 = _mm512_sub_epi32(_mm512_cvtepu8_epi32(sc), _mm512_set1_epi32(32));
    *dsc = _mm512_mul_ps(_mm512_set1_ps(_cvtsh_ss(hd)), _mm512_cvtepi32_ps(s32));
  } else {
    std::memcpy(&hm, blk + kQ2Dmin, 2);
    const __m512i s32 = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk)));
    *dsc = _mm512_mul_ps(_mm512_set1_ps(_cvtsh_ss(hd)), _mm512_cvtepi32_ps(_mm512_and_si512(s32, _mm512_set1_epi32(15))));
    *dm = _mm512_mul_ps(_mm512_set1_ps(_cvtsh_ss(hm)), _mm512_cvtepi32_ps(_mm512_srli_epi32(s32, 4)));
  }
}

// Super-block s (at blk) of one row against NT token vectors: acc[t] as dot_int8_rows.h
// says, two blocks of x per 512-bit vector (lanes 0-7 block 2m, 8-15 block 2m + 1 of the
// super-block).
template <bool kQ3, int NT>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c"), always_inline))
inline void lowk_superblock_terms(const uint8_t* blk, const Int8Vector* const* xs, const ScalePair* const* dxp,
                                  int64_t s, __m512* acc) {
  __m512 dsc, dm = _mm512_setzero_ps();
  sub_block_scales_avx512<kQ3>(blk, &dsc, &dm);
  const __m512i m3 = _mm512_set1_epi8(3), one = _mm512_set1_epi8(1);
  [[maybe_unused]] __m512i hmask;
  if constexpr (kQ3) hmask = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk)));
  const uint8_t* qs = blk + (kQ3 ? kQ3Qs : kQ2Qs);
  for (int n = 0; n < 2; ++n) {
    // Values 32 jb + l of blocks jb = 4n .. 4n + 3 sit in bits 2 (jb - 4n) of byte l.
    const __m512i v = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs + 32 * n)));
#pragma GCC unroll 2
    for (int h = 0; h < 2; ++h) {
      const int m = 2 * n + h, jb = 2 * m;  // blocks jb, jb + 1 of the super-block
      const int64_t b = s * 8 + jb;
      const __m512i shift = _mm512_inserti64x4(_mm512_set1_epi16(static_cast<int16_t>(4 * h)),
                                               _mm256_set1_epi16(static_cast<int16_t>(4 * h + 2)), 1);
      __m512i q = _mm512_and_si512(_mm512_srlv_epi16(v, shift), m3);
      if constexpr (kQ3) {  // the high bit of value 32 jb + l is bit jb of hmask[l]
        const __m512i hs = _mm512_inserti64x4(_mm512_set1_epi16(static_cast<int16_t>(jb)),
                                              _mm256_set1_epi16(static_cast<int16_t>(jb + 1)), 1);
        q = _mm512_or_si512(q, _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(hmask, hs), one), 2));
      }
      // Sub-block 2 jb + l / 4 of lane l (0..15, l % 8 within its block): 4m .. 4m + 3.
      const __m512i sub = _mm512_add_epi32(_mm512_set1_epi32(4 * m), _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3));
      const __m512 scp = _mm512_permutexvar_ps(sub, dsc);
      [[maybe_unused]] __m512 mnp;
      if constexpr (!kQ3) mnp = _mm512_permutexvar_ps(sub, dm);
      for (int t = 0; t < NT; ++t) {
        const Int8Vector& x = *xs[t];
        const __m512i xq = _mm512_loadu_si512(&x.q[static_cast<size_t>(b * kBlock)]);
        const __m512i neg8 = _mm512_loadu_si512(&x.neg8_lane_sums[static_cast<size_t>(b * 8)]);
        __m512 tv;
        if constexpr (kQ3) {  // start from -4 s_l: sum (q - 4) x_q
          tv = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_srai_epi32(neg8, 1), q, xq)), scp);
        } else {
          tv = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), q, xq)), scp);
          tv = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_srai_epi32(neg8, 3)), mnp, tv);
        }
        acc[t] = _mm512_fmadd_ps(tv, _mm512_load_ps(dxp[t][b / 2].v), acc[t]);
      }
    }
  }
}

// R rows of w (rb bytes apart) against NT token vectors; y[t * ldy + i] for row i.
template <bool kQ3, int NT, int R>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))
void lowk_pass(const uint8_t* w, size_t rb, const Int8Vector* const* xs, const ScalePair* const* dxp, float* y,
               int64_t ldy) {
  constexpr size_t bb = kQ3 ? sizeof(BlockQ3_K) : sizeof(BlockQ2_K);
  __m512 acc[R][NT];
  for (int i = 0; i < R; ++i)
    for (int t = 0; t < NT; ++t) acc[i][t] = _mm512_setzero_ps();
  for (int64_t s = 0; s < xs[0]->D / 256; ++s)
    for (int i = 0; i < R; ++i) {
      const uint8_t* blk = w + static_cast<size_t>(i) * rb + static_cast<size_t>(s) * bb;
      prefetch_unit(blk + R * rb, bb);
      lowk_superblock_terms<kQ3, NT>(blk, xs, dxp, s, acc[i]);
    }
  for (int i = 0; i < R; ++i)
    for (int t = 0; t < NT; ++t) {  // lanes l and l + 8, then the 8 lanes' fixed order
      alignas(32) float lanes[8];
      _mm256_store_ps(lanes, _mm256_add_ps(_mm512_castps512_ps256(acc[i][t]), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc[i][t]), 1))));
      y[t * ldy + i] = reduce_lanes(lanes);
    }
}

}  // namespace

void dot_lowk_ref_row(DType t, const uint8_t* row, const Int8Vector& x, float* out) {
  const bool q3 = t == DType::Q3_K;
  const size_t bb = q3 ? sizeof(BlockQ3_K) : sizeof(BlockQ2_K);
  float acc[16] = {};  // lane l of even blocks, l + 8 of odd ones
  for (int64_t s = 0; s < x.D / 256; ++s) {
    const uint8_t* blk = row + static_cast<size_t>(s) * bb;
    float dsc[16], dm[16];
    if (q3) sub_block_scales<true>(blk, f16_at(blk, kQ3D), 0.f, dsc, dm);
    else sub_block_scales<false>(blk, f16_at(blk, kQ2D), f16_at(blk, kQ2Dmin), dsc, dm);
    uint8_t q[256];
    kquant_block_values(t, blk, q);  // q2_K 0..3, q3_K low + 4 * high in 0..7
    for (int jb = 0; jb < 8; ++jb) {
      const int64_t b = s * 8 + jb;
      const float dx = x.d[static_cast<size_t>(b)];
      for (int l = 0; l < 8; ++l) {
        const int k = 2 * jb + l / 4;
        const int32_t neg8 = x.neg8_lane_sums[static_cast<size_t>(b * 8 + l)];
        int32_t isum = q3 ? neg8 / 2 : 0;  // q3_K: -4 s_l
        for (int i = 0; i < 4; ++i)
          isum += q[32 * jb + 4 * l + i] * x.q[static_cast<size_t>(b * kBlock + 4 * l + i)];
        float tv = static_cast<float>(isum) * dsc[k];
        if (!q3) tv = std::fma(static_cast<float>(neg8 / 8), dm[k], tv);  // -s_l
        float& a = acc[8 * (jb % 2) + l];
        a = std::fma(tv, dx, a);
      }
    }
  }
  float lanes[8];
  for (int l = 0; l < 8; ++l) lanes[l] = acc[l] + acc[l + 8];
  *out = reduce_lanes(lanes);
}

void dot_lowk_vnni(DType t, const uint8_t* w, int64_t n_rows, const Int8Vector* const* xs, int n_tokens,
                   float* y, int64_t ldy) {
  const size_t rb = row_bytes(t, xs[0]->D);
  const int64_t np = xs[0]->D / 64;
  thread_local std::vector<ScalePair> pairs;  // [n_tokens][D / 64], grow-only
  if (pairs.size() < static_cast<size_t>(n_tokens * np)) pairs.resize(static_cast<size_t>(n_tokens * np));
  for (int i = 0; i < n_tokens; ++i)
    for (int64_t p = 0; p < np; ++p)
      for (int l = 0; l < 16; ++l)
        pairs[static_cast<size_t>(i * np + p)].v[l] = xs[i]->d[static_cast<size_t>(2 * p + l / 8)];
  const ScalePair* dxp[4];
  for_token_groups(n_tokens, [&](auto nt, int t0) {
    for (int i = 0; i < nt(); ++i) dxp[i] = pairs.data() + (t0 + i) * np;  // data(): D may be 0
    for_row_passes(n_rows, [&](auto rows, int64_t r) {
      const uint8_t* wr = w + static_cast<size_t>(r) * rb;
      float* yr = y + t0 * ldy + r;
      if (t == DType::Q3_K) lowk_pass<true, nt(), rows()>(wr, rb, xs + t0, dxp, yr, ldy);
      else lowk_pass<false, nt(), rows()>(wr, rb, xs + t0, dxp, yr, ldy);
    });
  });
}

}  // namespace smoe::int8dot
