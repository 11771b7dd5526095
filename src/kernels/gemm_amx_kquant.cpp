// gemm_amx_kquant.cpp: repacked q2_K/q6_K weights times int8 activations on AMX-INT8 tiles,
// and the scalar reference of the same arithmetic (see gemm_amx_kquant.h).
#include "kernels/gemm_amx_kquant.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>

#include "core/error.h"
#include "core/thread_pool.h"
#include "kernels/gemm_amx.h"
#include "kernels/gemm_x16.h"
#include "kernels/gemm_x16_simd.h"

// GCC 12 reports the _mm512_undefined_* sources inside the conversion intrinsics as "may be
// used uninitialized" once they are inlined; they are fully overwritten.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

namespace smoe {

namespace {

constexpr int64_t kGroup = 16, kTile = 16, kSuper = 256, kStep = 64;  // rows, tokens, values, values
constexpr int64_t kStepsPerSuper = kSuper / kStep;
constexpr size_t kTileBytes = 1024;
// Token tiles per pass over a row group's weights: their activations (TT x D bytes, 1 MB at
// D = 4096) stay in L2 while every row group of a call passes over them.
constexpr int64_t kTokenTiles = 16;

// ---- activations ----

// Token t's scale for super-block s and where its value k goes.
size_t act_scale_index(int64_t S, int64_t t, int64_t s) { return static_cast<size_t>(((t / kTile) * S + s) * kTile + t % kTile); }
// Token t's sum of q over 16-value sub-block k.
size_t act_sum_index(int64_t D, int64_t t, int64_t k) {
  return static_cast<size_t>(((t / kTile) * (D / 16) + k) * kTile + t % kTile);
}
size_t act_value_index(int64_t D, int64_t t, int64_t k) {
  return static_cast<size_t>((((t / kTile) * (D / kStep) + k / kStep) * kTile + t % kTile) * kStep + k % kStep);
}

void size_activations(int64_t T, int64_t D, AmxInt8Activations& out) {
  SMOE_CHECK(T > 0 && D > 0 && D % kSuper == 0, "AMX int8 activations: [", T, ", ", D,
             "] (expected tokens and a row length that is a multiple of 256)");
  out.T = T;
  out.D = D;
  out.Tpad = (T + kTile - 1) / kTile * kTile;
  const size_t nq = static_cast<size_t>(out.Tpad * D), nd = static_cast<size_t>(out.Tpad * (D / kSuper));
  if (out.q.size() < nq) out.q.resize(nq);
  if (out.d.size() < nd) out.d.resize(nd);
  if (out.sum16.size() < nq / 16) out.sum16.resize(nq / 16);
  // Padding tokens: zero values and scales.
  for (int64_t t = T; t < out.Tpad; ++t)
    for (int64_t s = 0; s < D / kSuper; ++s) {
      out.d[act_scale_index(D / kSuper, t, s)] = 0.f;
      for (int64_t k = s * 16; k < (s + 1) * 16; ++k) out.sum16[act_sum_index(D, t, k)] = 0.f;
      for (int64_t k = s * kSuper; k < (s + 1) * kSuper; k += kStep) std::memset(&out.q[act_value_index(D, t, k)], 0, kStep);
    }
}

// round(v) as int8 where it is in range (NaN, from inf * 0, gives 0, as the SIMD path's
// truncating conversion of 0x80000000 does).
int8_t round_int8(float v) {
  const float r = std::nearbyint(v);
  return r >= -128.f && r <= 127.f ? static_cast<int8_t>(r) : 0;
}

__attribute__((target("avx512f,avx512bw"))) void quantize_token(const float* x, int64_t D, int64_t t,
                                                                 AmxInt8Activations& out) {
  const int64_t S = D / kSuper;
  for (int64_t s = 0; s < S; ++s) {
    const float* xs = x + s * kSuper;
    __m512 m = _mm512_setzero_ps();
    for (int64_t i = 0; i < kSuper; i += 16) m = _mm512_max_ps(m, _mm512_abs_ps(_mm512_loadu_ps(xs + i)));
    const float d = _mm512_reduce_max_ps(m) / 127.f, id = d != 0.f ? 1.f / d : 0.f;
    out.d[act_scale_index(S, t, s)] = d;
    const __m512 iv = _mm512_set1_ps(id);
    for (int64_t i = 0; i < kSuper; i += 16) {
      const __m128i q = _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(xs + i), iv)));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(&out.q[act_value_index(D, t, s * kSuper + i)]), q);
      out.sum16[act_sum_index(D, t, (s * kSuper + i) / 16)] =
          static_cast<float>(_mm512_reduce_add_epi32(_mm512_cvtepi8_epi32(q)));
    }
  }
}

// ---- weights: the B tiles of one super-block of a row group ----

// Planes per type (see gemm_amx_kquant.h) and token tiles per chunk: a chunk's tiles are one
// A tile, P B tiles and NJ x P C tiles.
constexpr int planes(DType t) { return t == DType::Q2_K || t == DType::Q3_K ? 1 : 2; }
constexpr int max_chunk(DType t) { return planes(t) == 1 ? 4 : 2; }
static_assert(1 + planes(DType::Q3_K) * (1 + max_chunk(DType::Q3_K)) <= 8);
static_assert(1 + planes(DType::Q6_K) * (1 + max_chunk(DType::Q6_K)) <= 8);
// Types with mins, and their sub-blocks per super-block (each min's values).
constexpr bool has_mins(DType t) { return t == DType::Q2_K || t == DType::Q4_K || t == DType::Q5_K; }
constexpr int min_blocks(DType t) { return t == DType::Q2_K ? 16 : 8; }

#define SMOE_SIMD_LAMBDA __attribute__((target("avx512f,avx512bw"), always_inline))

// 16 bytes (one per row) at p, each repeated over its row's 4 bytes.
__attribute__((target("avx512f,avx512bw"), always_inline)) inline __m512i row_bytes4(const uint8_t* p) {
  const __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm512_shuffle_epi8(v, _mm512_set4_epi32(0x0C0C0C0C, 0x08080808, 0x04040404, 0x00000000));
}

// A sub-block's scale for B rows: sc, one signed byte per row repeated over the row's 4 bytes,
// kept in the even bytes of `even` and the odd bytes of `odd` (zeros elsewhere: vpmaddubsw
// then multiplies each value by it without adding neighbours), and off = k sc as words.
struct RowScale {
  __m512i even, odd, off;
};
__attribute__((target("avx512f,avx512bw"), always_inline)) inline RowScale row_scale(const void* p, int k) {
  const __m512i sc = row_bytes4(static_cast<const uint8_t*>(p)), lo = _mm512_set1_epi16(0x00FF);
  const __m512i words = _mm512_srai_epi16(_mm512_slli_epi16(sc, 8), 8);  // sc sign-extended
  return {_mm512_and_si512(sc, lo), _mm512_andnot_si512(lo, sc), _mm512_mullo_epi16(words, _mm512_set1_epi16(static_cast<short>(k)))};
}

// n = q sc - off (kNegate: off - q sc) for one B row (16 rows x 4 values; q unsigned bytes
// below 128, sc as above), written as one plane (n fits a byte) or as hi = n >> 6 and
// lo = n & 63. The products of even and odd bytes come as two vectors of words and go back
// to their bytes without crossing lanes.
template <bool kNegate = false>
__attribute__((target("avx512f,avx512bw"), always_inline)) inline void scaled_row(__m512i q, const RowScale& sc,
                                                                                 uint8_t* hi, uint8_t* lo) {
  __m512i e = _mm512_maddubs_epi16(q, sc.even), o = _mm512_maddubs_epi16(q, sc.odd);
  e = kNegate ? _mm512_sub_epi16(sc.off, e) : _mm512_sub_epi16(e, sc.off);
  o = kNegate ? _mm512_sub_epi16(sc.off, o) : _mm512_sub_epi16(o, sc.off);
  const __m512i low_bytes = _mm512_set1_epi16(0x00FF);
  // (e & 0x00FF) | (o << 8)
  auto bytes = [&](__m512i ev, __m512i od) SMOE_SIMD_LAMBDA {
    return _mm512_ternarylogic_epi64(ev, _mm512_slli_epi16(od, 8), low_bytes, 0xEC);  // (a & c) | b
  };
  if (!lo) return _mm512_store_si512(hi, bytes(e, o));
  const __m512i m6 = _mm512_set1_epi16(63);
  _mm512_store_si512(hi, bytes(_mm512_srai_epi16(e, 6), _mm512_srai_epi16(o, 6)));
  _mm512_store_si512(lo, _mm512_or_si512(_mm512_and_si512(e, m6), _mm512_slli_epi16(_mm512_and_si512(o, m6), 8)));
}

// The super-block at sb as out[u][plane][16 B rows][64 bytes] (u = 64-value step, P KB each):
// B row p of step u holds values 4 (p % 8) .. + 3 of 32-value block 2u + p / 8 for the 16 rows
// (value group G = p % 8 of the repacked block); q2_K/q4_K/q5_K also mins[k][16 rows], the
// mins of the super-block's sub-blocks as floats. noipa: GCC 12 dropped the call of one
// instance as if it had no effect (its stores are read only by tile loads).
template <DType kT>
__attribute__((target("avx512f,avx512bw,avx512vl"), noipa)) void prepare_weights(const uint8_t* sb, uint8_t* out,
                                                                                  float* mins) {
  constexpr int P = planes(kT);
  constexpr size_t L = x16::layout(kT).values, B = x16::layout(kT).block;
  const __m512i m4 = _mm512_set1_epi8(15);
  // Row (block jb, group G) of plane k.
  auto row = [&](int jb, int G, int k) { return out + ((jb / 2) * P + k) * kTileBytes + ((jb % 2) * 8 + G) * 64; };
  if constexpr (kT == DType::Q6_K) {  // per block: 4 nibble vectors, 2 high-bit vectors
    for (int jb = 0; jb < 8; ++jb) {
      const uint8_t* qb = sb + L + B * jb;
      const __m512i h0 = _mm512_loadu_si512(qb + 256), h1 = _mm512_loadu_si512(qb + 320);
      const RowScale sa = row_scale(sb + 32 + 16 * (2 * jb), 32), sbw = row_scale(sb + 32 + 16 * (2 * jb + 1), 32);
      for (int g = 0; g < 4; ++g) {
        const __m512i v = _mm512_loadu_si512(qb + 64 * g);
        const __m512i lo = _mm512_or_si512(_mm512_and_si512(v, m4), x16::high2(h0, g));
        const __m512i hi = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(v, 4), m4), x16::high2(h1, g));
        scaled_row(lo, sa, row(jb, g, 0), row(jb, g, 1));  // sc q - 32 sc
        scaled_row(hi, sbw, row(jb, 4 + g, 0), row(jb, 4 + g, 1));
      }
    }
  } else if constexpr (kT == DType::Q4_K || kT == DType::Q5_K) {  // per block: 4 nibble vectors (+ fifth bits)
    alignas(64) uint8_t sc[128], mn[128];
    x16::kquant_scales_mins(sb, sc, mn);
    for (int jb = 0; jb < 8; ++jb) {
      const uint8_t* qb = sb + L + B * jb;
      const RowScale sw = row_scale(sc + 16 * jb, 0);
      for (int g = 0; g < 4; ++g) {
        const __m512i v = _mm512_loadu_si512(qb + 64 * g);
        __m512i lo = _mm512_and_si512(v, m4), hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
        if constexpr (kT == DType::Q5_K) {
          lo = x16::add_masked(lo, qb + 256 + 8 * g, _mm512_set1_epi8(16));
          hi = x16::add_masked(hi, qb + 256 + 8 * (g + 4), _mm512_set1_epi8(16));
        }
        scaled_row(lo, sw, row(jb, g, 0), row(jb, g, 1));
        scaled_row(hi, sw, row(jb, 4 + g, 0), row(jb, 4 + g, 1));
      }
      _mm512_store_ps(mins + 16 * jb, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_load_si128(reinterpret_cast<const __m128i*>(mn + 16 * jb)))));
    }
  } else if constexpr (kT == DType::Q3_K) {  // per block: 2 two-bit plane vectors, 8 high-bit masks
    alignas(64) int8_t sc3[256];
    x16::q3k_scales(sb, sc3);
    const __m512i m3 = _mm512_set1_epi8(3), four = _mm512_set1_epi8(4);
    for (int jb = 0; jb < 8; ++jb) {
      const uint8_t* qb = sb + L + B * jb;
      for (int h = 0; h < 2; ++h) {
        const RowScale sw = row_scale(sc3 + 16 * (2 * jb + h), 4);  // s = sc - 32
        const __m512i v = _mm512_loadu_si512(qb + 64 * h);
        for (int p = 0; p < 4; ++p) {
          // The plane holds -n = (sc - 32)(4 - q) = 4 s - s q, in -128..124 (n itself
          // reaches 128), with q = low + 4 high.
          const __m512i q = x16::add_masked(_mm512_and_si512(_mm512_srli_epi16(v, 2 * p), m3), qb + 128 + 8 * (4 * h + p), four);
          scaled_row<true>(q, sw, row(jb, 4 * h + p, 0), nullptr);
        }
      }
    }
  } else {  // q2_K: per block 2 plane vectors (sub-blocks 2jb, 2jb + 1), value group 4h + p at bits 2p
    const __m512i one = _mm512_set1_epi8(1), two = _mm512_set1_epi8(2);
    for (int jb = 0; jb < 8; ++jb) {
      const uint8_t* qb = sb + L + B * jb;
      for (int h = 0; h < 2; ++h) {
        const uint8_t* sm8 = sb + 64 + 16 * (2 * jb + h);
        const __m512i sm = row_bytes4(sm8);
        const __m512i sc = _mm512_and_si512(sm, m4), sc2 = _mm512_add_epi8(sc, sc);
        const __m512i v = _mm512_loadu_si512(qb + 64 * h);
        _mm512_store_ps(mins + 16 * (2 * jb + h),
                        _mm512_cvtepi32_ps(_mm512_srli_epi32(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sm8))), 4)));
        for (int p = 0; p < 4; ++p) {  // n = sc q for q in 0..3, without a multiply
          const __m512i q = _mm512_srli_epi16(v, 2 * p);
          __m512i n = _mm512_maskz_mov_epi8(_mm512_test_epi8_mask(q, one), sc);
          n = _mm512_mask_add_epi8(n, _mm512_test_epi8_mask(q, two), n, sc2);
          _mm512_store_si512(row(jb, 4 * h + p, 0), n);
        }
      }
    }
  }
}

// ---- the tile kernel ----

// Tile instructions name their registers in the assembly text, so tile numbers must be
// literal: these pick the instruction for compile-time numbers.
#define SMOE_TILE_SWITCH(n, op)        \
  if constexpr (n == 0) {              \
    op(0);                             \
  } else if constexpr (n == 1) {       \
    op(1);                             \
  } else if constexpr (n == 2) {       \
    op(2);                             \
  } else if constexpr (n == 3) {       \
    op(3);                             \
  } else if constexpr (n == 4) {       \
    op(4);                             \
  } else if constexpr (n == 5) {       \
    op(5);                             \
  } else if constexpr (n == 6) {       \
    op(6);                             \
  } else {                             \
    op(7);                             \
  }
template <int C>
__attribute__((target("amx-tile"), always_inline)) inline void tile_zero() {
#define SMOE_OP(c) _tile_zero(c)
  SMOE_TILE_SWITCH(C, SMOE_OP)
#undef SMOE_OP
}
template <int C>
__attribute__((target("amx-tile"), always_inline)) inline void tile_store(int32_t* p) {
#define SMOE_OP(c) _tile_stored(c, p, 64)
  SMOE_TILE_SWITCH(C, SMOE_OP)
#undef SMOE_OP
}
template <int R>
__attribute__((target("amx-tile"), always_inline)) inline void tile_load(const void* p) {
#define SMOE_OP(r) _tile_loadd(r, p, 64)
  SMOE_TILE_SWITCH(R, SMOE_OP)
#undef SMOE_OP
}
// C += tmm0 . Bt (Bt tmm1 or tmm2, C tmm2..tmm7).
template <int C, int Bt>
__attribute__((target("amx-tile,amx-int8"), always_inline)) inline void tile_dp() {
#define SMOE_OP(c)               \
  if constexpr (Bt == 1) {       \
    _tile_dpbssd(c, 0, 1);       \
  } else {                       \
    _tile_dpbssd(c, 0, 2);       \
  }
  static_assert(C >= 2 && (Bt == 1 || Bt == 2) && C != Bt);
  SMOE_TILE_SWITCH(C, SMOE_OP)
#undef SMOE_OP
}
#undef SMOE_TILE_SWITCH

// The bodies passed to static_for: inlined, with the tile instructions enabled.
#define SMOE_TILE_LAMBDA __attribute__((target("amx-tile,amx-int8"), always_inline))

// f(std::integral_constant<int, i>) for i in 0..N-1.
template <int N, class F>
SMOE_TILE_LAMBDA inline void static_for(F&& f) {
  [&]<int... I>(std::integer_sequence<int, I...>) SMOE_TILE_LAMBDA {
    (f(std::integral_constant<int, I>{}), ...);
  }(std::make_integer_sequence<int, N>{});
}

// NJ token tiles from j0 against one super-block s of a row group (its B tiles at b, mins and
// header at sb): the products, then the super-block's terms added to acc[j][16 tokens][16 rows]
// (cb: [NJ][P][16][16] int32, the C tiles stored).
template <DType kT, int NJ>
__attribute__((target("amx-tile,amx-int8,avx512f,avx512bw,avx512dq,f16c"))) void chunk(
    const uint8_t* b, const float* mins, const uint8_t* sb, const AmxInt8Activations& x, int64_t j0, int64_t s,
    float* acc, int32_t* cb) {
  constexpr int P = planes(kT);
  const int64_t nu = x.D / kStep, S = x.D / kSuper;
  amx_memory_barrier(b);  // b, written by plain stores, before the tile loads
  // Tiles: A in tmm0, B plane k in tmm<1 + k>, C plane k of token tile jj in tmm<1 + P + jj P + k>.
  // (A in tmm0 and tmm1 by turns, so that a load need not wait for the product reading the
  // other, made no difference: on the Xeon a tile load took about 21 ns and a product 15 ns,
  // one after the other.)
  constexpr int kC = 1 + P;
  static_for<NJ * P>([&](auto c) SMOE_TILE_LAMBDA { tile_zero<kC + decltype(c)::value>(); });
  const int8_t* a = x.q.data() + static_cast<size_t>(j0 * nu + s * kStepsPerSuper) * kTileBytes;
  static_for<kStepsPerSuper>([&](auto u) SMOE_TILE_LAMBDA {
    constexpr int U = decltype(u)::value;
    static_for<P>([&](auto k) SMOE_TILE_LAMBDA { tile_load<1 + decltype(k)::value>(b + (U * P + decltype(k)::value) * kTileBytes); });
    static_for<NJ>([&](auto jj) SMOE_TILE_LAMBDA {
      constexpr int J = decltype(jj)::value;
      tile_load<0>(a + (J * nu + U) * kTileBytes);
      static_for<P>([&](auto k) SMOE_TILE_LAMBDA { tile_dp<kC + J * P + decltype(k)::value, 1 + decltype(k)::value>(); });
    });
  });
  static_for<NJ * P>([&](auto c) SMOE_TILE_LAMBDA { tile_store<kC + decltype(c)::value>(cb + decltype(c)::value * 256); });
  amx_memory_barrier(cb);  // cb, written by tile stores, before plain loads
  // d (q3_K: -d, its plane holding -n) and -dmin of the 16 rows.
  const __m512 sign = _mm512_set1_ps(-0.f);
  __m512 dv = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(sb)));
  if constexpr (kT == DType::Q3_K) dv = _mm512_xor_ps(sign, dv);
  [[maybe_unused]] __m512 ndmin;
  if constexpr (has_mins(kT))
    ndmin = _mm512_xor_ps(sign, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(sb + 32))));
  for (int jj = 0; jj < NJ; ++jj) {
    const int64_t j = j0 + jj;
    const float* dx = x.d.data() + act_scale_index(S, j * kTile, s);
    // The 16 tokens' sums of q over each 16-value sub-block of super-block s.
    const float* xs = x.sum16.data() + static_cast<size_t>((j * (x.D / 16) + s * 16) * kTile);
    float* at = acc + j * 256;
    const int32_t* c = cb + jj * P * 256;
    // Min terms, sum over sub-blocks k of min_k times the token's q-sum of k: whole numbers
    // below 2^24, so exact in float. One chain per token (a chain per token over k would wait
    // on each multiply-add).
    [[maybe_unused]] __m512 mt[kTile];
    if constexpr (has_mins(kT)) {
      alignas(64) float sk[16][kTile];  // [sub-block][token]
      for (int k = 0; k < min_blocks(kT); ++k) {
        __m512 v = _mm512_loadu_ps(xs + (min_blocks(kT) == 16 ? k : 2 * k) * kTile);
        if constexpr (min_blocks(kT) == 8) v = _mm512_add_ps(v, _mm512_loadu_ps(xs + (2 * k + 1) * kTile));
        _mm512_store_ps(sk[k], v);
      }
      for (int t = 0; t < kTile; ++t) mt[t] = _mm512_setzero_ps();
      for (int k = 0; k < min_blocks(kT); ++k) {
        const __m512 mk = _mm512_load_ps(mins + 16 * k);
        for (int t = 0; t < kTile; ++t) mt[t] = _mm512_fmadd_ps(mk, _mm512_set1_ps(sk[k][t]), mt[t]);
      }
    }
    for (int t = 0; t < kTile; ++t) {
      const __m512 dxt = _mm512_set1_ps(dx[t]);
      __m512 r = _mm512_load_ps(at + 16 * t);
      __m512i n = _mm512_load_si512(c + 16 * t);
      if constexpr (P == 2)  // hi and lo planes
        n = _mm512_add_epi32(_mm512_slli_epi32(n, 6), _mm512_load_si512(c + 256 + 16 * t));
      r = _mm512_fmadd_ps(_mm512_cvtepi32_ps(n), _mm512_mul_ps(dv, dxt), r);
      if constexpr (has_mins(kT)) r = _mm512_fmadd_ps(mt[t], _mm512_mul_ps(ndmin, dxt), r);
      _mm512_store_ps(at + 16 * t, r);
    }
  }
}


template <DType kT>
void amx_kquant_groups(const uint8_t* w, int64_t n_groups, const AmxInt8Activations& x, float* y, int64_t ldy) {
  load_amx_tile_config();
  const int64_t TT = x.Tpad / kTile, S = x.D / kSuper;
  constexpr size_t sb_bytes = x16::layout(kT).bytes;
  constexpr int P = planes(kT), NJ = max_chunk(kT);
  thread_local std::vector<float> acc_buf;    // [kTokenTiles][16 tokens][16 rows]
  thread_local std::vector<uint8_t> b_buf;    // [4 steps][P planes][1 KB]
  thread_local std::vector<int32_t> c_buf;    // [NJ token tiles][P planes][16][16]
  thread_local std::vector<float> m_buf;      // [16 sub-blocks][16 rows]
  float* acc = aligned64(acc_buf, static_cast<size_t>(kTokenTiles * 256));
  uint8_t* b = aligned64(b_buf, kStepsPerSuper * P * kTileBytes);
  int32_t* cb = aligned64(c_buf, static_cast<size_t>(NJ * P * 256));
  float* mins = aligned64(m_buf, 256);
  for (int64_t j0 = 0; j0 < TT; j0 += kTokenTiles) {
    const int64_t j1 = std::min(TT, j0 + kTokenTiles);
    for (int64_t g = 0; g < n_groups; ++g) {
      std::fill(acc, acc + (j1 - j0) * 256, 0.f);
      for (int64_t s = 0; s < S; ++s) {
        const uint8_t* sb = w + static_cast<size_t>(g * S + s) * sb_bytes;
        prepare_weights<kT>(sb, b, mins);
        amx_memory_barrier(b);
        int64_t j = j0;
        for (; j + NJ <= j1; j += NJ) chunk<kT, NJ>(b, mins, sb, x, j, s, acc - j0 * 256, cb);
        if constexpr (NJ > 1)
          for (; j < j1; ++j) chunk<kT, 1>(b, mins, sb, x, j, s, acc - j0 * 256, cb);
      }
      for (int64_t t = j0 * kTile; t < std::min(x.T, j1 * kTile); ++t)
        std::memcpy(y + t * ldy + g * kGroup, acc + (t - j0 * kTile) * kGroup, kGroup * sizeof(float));
    }
  }
}

}  // namespace

bool amx_kquant_supports(DType t, int64_t N, int64_t D) {
  return x16_kquant(t) && N > 0 && N % kGroup == 0 && D > 0 && D % kSuper == 0 && amx_int8_available();
}

int64_t amx_kquant_min_tokens(DType t) {
  return t == DType::Q2_K || t == DType::Q3_K ? 16 : t == DType::Q6_K ? 32 : 48;
}

void quantize_amx_activations(const float* x, int64_t T, int64_t D, AmxInt8Activations& out, ThreadPool* pool) {
  SMOE_CHECK(amx_int8_available(), "AMX int8 activations: this CPU or OS has no AMX-INT8 tiles (or SMOE_AMX=0)");
  size_activations(T, D, out);
  parallel_for(pool, T, 16, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) quantize_token(x + t * D, D, t, out);
  });
}

void quantize_amx_activations_ref(const float* x, int64_t T, int64_t D, AmxInt8Activations& out) {
  size_activations(T, D, out);
  const int64_t S = D / kSuper;
  for (int64_t t = 0; t < T; ++t)
    for (int64_t s = 0; s < S; ++s) {
      const float* xs = x + t * D + s * kSuper;
      float amax = 0.f;
      for (int64_t i = 0; i < kSuper; ++i) amax = std::max(amax, std::fabs(xs[i]));
      const float d = amax / 127.f, id = d != 0.f ? 1.f / d : 0.f;
      out.d[act_scale_index(S, t, s)] = d;
      for (int64_t i = 0; i < kSuper; ++i) out.q[act_value_index(D, t, s * kSuper + i)] = round_int8(xs[i] * id);
      for (int64_t k = 0; k < 16; ++k) {
        int32_t sum = 0;
        for (int64_t i = 0; i < 16; ++i) sum += out.q[act_value_index(D, t, s * kSuper + 16 * k + i)];
        out.sum16[act_sum_index(D, t, s * 16 + k)] = static_cast<float>(sum);
      }
    }
}

void gemm_amx_kquant(DType t, const uint8_t* w, int64_t n_groups, const AmxInt8Activations& x, float* y,
                     int64_t ldy) {
  SMOE_CHECK(amx_kquant_supports(t, n_groups * kGroup, x.D), "AMX K-quant kernel: ", dtype_name(t), " rows of ",
             x.D, " values (expected a K-quant, a multiple of 256, and a CPU with AMX-INT8)");
  if (t == DType::Q2_K) amx_kquant_groups<DType::Q2_K>(w, n_groups, x, y, ldy);
  else if (t == DType::Q3_K) amx_kquant_groups<DType::Q3_K>(w, n_groups, x, y, ldy);
  else if (t == DType::Q4_K) amx_kquant_groups<DType::Q4_K>(w, n_groups, x, y, ldy);
  else if (t == DType::Q5_K) amx_kquant_groups<DType::Q5_K>(w, n_groups, x, y, ldy);
  else amx_kquant_groups<DType::Q6_K>(w, n_groups, x, y, ldy);
}

float kquant_superblock_ref(DType t, const uint8_t* blk, const int8_t* xq, float dx, float acc) {
  uint8_t q[kSuper];
  kquant_block_values(t, blk, q);
  // The weight's integer n (q3_K: -n) and min of each value, as the planes hold them.
  int32_t isum = 0, msum = 0;
  for (int64_t i = 0; i < kSuper; ++i) {
    const int32_t x = xq[i], k = static_cast<int32_t>(i / 16);
    if (t == DType::Q6_K) {
      isum += static_cast<int8_t>(blk[192 + k]) * (q[i] - 32) * x;
    } else if (t == DType::Q3_K) {
      isum += (q3k_scale(k, blk + 96) - 32) * (4 - q[i]) * x;
    } else if (t == DType::Q2_K) {
      isum += (blk[k] & 15) * q[i] * x;
      msum += (blk[k] >> 4) * x;
    } else {
      uint8_t sc, m;
      kquant_scale_min(k / 2, blk + 4, &sc, &m);
      isum += sc * q[i] * x;
      msum += m * x;
    }
  }
  const size_t d_at = t == DType::Q6_K ? 208 : t == DType::Q3_K ? 108 : t == DType::Q2_K ? 80 : 0;
  uint16_t hd, hm;
  std::memcpy(&hd, blk + d_at, 2);
  const float d = f16_to_f32(hd);
  acc = std::fma(static_cast<float>(isum), (t == DType::Q3_K ? -d : d) * dx, acc);
  if (t == DType::Q2_K || t == DType::Q4_K || t == DType::Q5_K) {
    std::memcpy(&hm, blk + d_at + 2, 2);
    acc = std::fma(static_cast<float>(msum), -f16_to_f32(hm) * dx, acc);
  }
  return acc;
}

void gemm_amx_kquant_ref(DType t, const uint8_t* w, int64_t n, const AmxInt8Activations& x, float* y,
                         int64_t ldy) {
  SMOE_CHECK(x16_kquant(t) && x.D % kSuper == 0, "AMX K-quant reference: ", dtype_name(t), " rows of ", x.D,
             " values (expected a K-quant and a multiple of 256)");
  const int64_t S = x.D / kSuper;
  const size_t rb = row_bytes(t, x.D), bb = row_bytes(t, kSuper);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t tk = 0; tk < x.T; ++tk) {
      float acc = 0.f;
      for (int64_t s = 0; s < S; ++s) {
        int8_t xq[kSuper];  // the token's values of super-block s, gathered from the A tiles
        for (int64_t i = 0; i < kSuper; ++i) xq[i] = x.q[act_value_index(x.D, tk, s * kSuper + i)];
        acc = kquant_superblock_ref(t, w + static_cast<size_t>(r) * rb + static_cast<size_t>(s) * bb, xq,
                                    x.d[act_scale_index(S, tk, s)], acc);
      }
      y[tk * ldy + r] = acc;
    }
}

}  // namespace smoe
