// gemm_amx_kquant.cpp: repacked q2_K/q6_K weights times int8 activations on AMX-INT8 tiles,
// and the scalar reference of the same arithmetic (see gemm_amx_kquant.h).
#include "kernels/gemm_amx_kquant.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "core/thread_pool.h"
#include "kernels/gemm_amx.h"
#include "kernels/gemm_x16.h"

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

bool supported_type(DType t) { return t == DType::Q2_K || t == DType::Q6_K; }

// ---- activations ----

// Token t's scale for super-block s and where its value k goes.
size_t act_scale_index(int64_t S, int64_t t, int64_t s) { return static_cast<size_t>(((t / kTile) * S + s) * kTile + t % kTile); }
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
  // Padding tokens: zero values and scales.
  for (int64_t t = T; t < out.Tpad; ++t)
    for (int64_t s = 0; s < D / kSuper; ++s) {
      out.d[act_scale_index(D / kSuper, t, s)] = 0.f;
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
      const __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(xs + i), iv));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(&out.q[act_value_index(D, t, s * kSuper + i)]),
                       _mm512_cvtepi32_epi8(q));
    }
  }
}

// ---- weights: the B tiles of one super-block of a row group ----

// 16 bytes (one per row) at p, each repeated over its row's 4 bytes.
__attribute__((target("avx512f,avx512bw"), always_inline)) inline __m512i row_bytes4(const uint8_t* p) {
  const __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm512_shuffle_epi8(v, _mm512_set4_epi32(0x0C0C0C0C, 0x08080808, 0x04040404, 0x00000000));
}

// Bits 2f..2f+1 of every byte moved to bits 4..5 (q6_K high bits, field f).
__attribute__((target("avx512f,avx512bw"), always_inline)) inline __m512i high2(__m512i h, int f) {
  const __m512i s = f == 0 ? _mm512_slli_epi16(h, 4) : f == 1 ? _mm512_slli_epi16(h, 2) : f == 2 ? h : _mm512_srli_epi16(h, 2);
  return _mm512_and_si512(s, _mm512_set1_epi8(0x30));
}

// The 64 words of x, y narrowed to bytes (low bytes), x's first.
__attribute__((target("avx512f,avx512bw"), always_inline)) inline __m512i join(__m512i x, __m512i y) {
  return _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtepi16_epi8(x)), _mm512_cvtepi16_epi8(y), 1);
}

// One B row pair of q6_K: n = sc * (q - 32) for 16 rows x 4 values (q in 0..63 as bytes; sc
// as 16-bit words, rows 0-7 in sc_lo and 8-15 in sc_hi, each over its row's 4 words), written
// as hi = n >> 6 and lo = n & 63.
__attribute__((target("avx512f,avx512bw"), always_inline)) inline void q6k_row(__m512i q, __m512i sc_lo, __m512i sc_hi,
                                                                              uint8_t* hi, uint8_t* lo) {
  const __m512i qs = _mm512_sub_epi8(q, _mm512_set1_epi8(32));
  const __m512i a = _mm512_mullo_epi16(_mm512_cvtepi8_epi16(_mm512_castsi512_si256(qs)), sc_lo);
  const __m512i b = _mm512_mullo_epi16(_mm512_cvtepi8_epi16(_mm512_extracti64x4_epi64(qs, 1)), sc_hi);
  const __m512i m6 = _mm512_set1_epi16(63);
  _mm512_store_si512(hi, join(_mm512_srai_epi16(a, 6), _mm512_srai_epi16(b, 6)));
  _mm512_store_si512(lo, join(_mm512_and_si512(a, m6), _mm512_and_si512(b, m6)));
}

// The super-block at sb as out[u][plane][16 B rows][64 bytes] (u = 64-value step, 2 KB each):
// B row p of step u holds values 4 (p % 8) .. + 3 of 32-value block 2u + p / 8 for the 16 rows.
// q6_K planes: hi, lo of n; q2_K planes: n, m.
template <DType kT>
__attribute__((target("avx512f,avx512bw,avx512vl"), noipa)) void prepare_weights(const uint8_t* sb, uint8_t* out) {
  if constexpr (kT == DType::Q6_K) {
    // int32 lane r's low word (word 2r) to words 4r'..4r'+3 (r' = r for rows 0-7, r - 8 for 8-15).
    const __m512i widx = _mm512_set_epi16(14, 14, 14, 14, 12, 12, 12, 12, 10, 10, 10, 10, 8, 8, 8, 8, 6, 6, 6, 6, 4,
                                          4, 4, 4, 2, 2, 2, 2, 0, 0, 0, 0);
    const __m512i widx_hi = _mm512_add_epi16(widx, _mm512_set1_epi16(16)), m4 = _mm512_set1_epi8(15);
    for (int jb = 0; jb < 8; ++jb) {  // repacked q6_K block: 4 nibble vectors, 2 high-bit vectors
      const uint8_t* qb = sb + 288 + 384 * jb;
      const __m512i h0 = _mm512_loadu_si512(qb + 256), h1 = _mm512_loadu_si512(qb + 320);
      __m512i sc[2][2];  // [half: sub-block 2jb + half][rows 0-7, 8-15]
      for (int h = 0; h < 2; ++h) {
        const __m512i s32 = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sb + 32 + 16 * (2 * jb + h))));
        sc[h][0] = _mm512_permutexvar_epi16(widx, s32);
        sc[h][1] = _mm512_permutexvar_epi16(widx_hi, s32);
      }
      uint8_t* o = out + (jb / 2) * 2 * kTileBytes + (jb % 2) * 8 * 64;
      for (int g = 0; g < 4; ++g) {
        const __m512i v = _mm512_loadu_si512(qb + 64 * g);
        const __m512i lo = _mm512_or_si512(_mm512_and_si512(v, m4), high2(h0, g));
        const __m512i hi = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(v, 4), m4), high2(h1, g));
        q6k_row(lo, sc[0][0], sc[0][1], o + 64 * g, o + kTileBytes + 64 * g);
        q6k_row(hi, sc[1][0], sc[1][1], o + 64 * (4 + g), o + kTileBytes + 64 * (4 + g));
      }
    }
  } else {  // q2_K: per block 2 plane vectors (sub-blocks 2jb, 2jb + 1), value group 4h + p at bits 2p
    const __m512i one = _mm512_set1_epi8(1), two = _mm512_set1_epi8(2), m4 = _mm512_set1_epi8(15);
    for (int jb = 0; jb < 8; ++jb) {
      const uint8_t* qb = sb + 320 + 128 * jb;
      uint8_t* o = out + (jb / 2) * 2 * kTileBytes + (jb % 2) * 8 * 64;
      for (int h = 0; h < 2; ++h) {
        const __m512i sm = row_bytes4(sb + 64 + 16 * (2 * jb + h));
        const __m512i sc = _mm512_and_si512(sm, m4), sc2 = _mm512_add_epi8(sc, sc);
        const __m512i mn = _mm512_and_si512(_mm512_srli_epi16(sm, 4), m4);
        const __m512i v = _mm512_loadu_si512(qb + 64 * h);
        for (int p = 0; p < 4; ++p) {
          const __m512i q = _mm512_srli_epi16(v, 2 * p);
          __m512i n = _mm512_maskz_mov_epi8(_mm512_test_epi8_mask(q, one), sc);
          n = _mm512_mask_add_epi8(n, _mm512_test_epi8_mask(q, two), n, sc2);
          _mm512_store_si512(o + 64 * (4 * h + p), n);
          _mm512_store_si512(o + kTileBytes + 64 * (4 * h + p), mn);
        }
      }
    }
  }
}

// ---- the tile kernel ----
// Tiles: tmm0 the activations of a token tile (A), tmm1/tmm2 the weights' two planes (B),
// tmm3/tmm4 the two planes' results for token tile 0 of a chunk, tmm5/tmm6 for token tile 1.

// NJ (1 or 2) token tiles from j0 against one super-block s of a row group (its B tiles at
// b, scales in sb): the products, then the super-block's terms added to acc[j][16 tokens][16 rows].
template <DType kT, int NJ>
__attribute__((target("amx-tile,amx-int8,avx512f,avx512bw,avx512dq,f16c"))) void chunk(const uint8_t* b, const uint8_t* sb,
                                                                             const AmxInt8Activations& x, int64_t j0,
                                                                             int64_t s, float* acc, int32_t* cb) {
  const int64_t nu = x.D / kStep, S = x.D / kSuper;
  amx_memory_barrier(b);  // b, written by plain stores, before the tile loads
  _tile_zero(3);
  _tile_zero(4);
  if constexpr (NJ > 1) {
    _tile_zero(5);
    _tile_zero(6);
  }
  const int8_t* a = x.q.data() + static_cast<size_t>(j0 * nu + s * kStepsPerSuper) * kTileBytes;
  for (int u = 0; u < kStepsPerSuper; ++u) {
    _tile_loadd(1, b + u * 2 * kTileBytes, 64);
    _tile_loadd(2, b + u * 2 * kTileBytes + kTileBytes, 64);
    _tile_loadd(0, a + u * kTileBytes, 64);
    _tile_dpbssd(3, 0, 1);
    _tile_dpbssd(4, 0, 2);
    if constexpr (NJ > 1) {
      _tile_loadd(0, a + (nu + u) * kTileBytes, 64);
      _tile_dpbssd(5, 0, 1);
      _tile_dpbssd(6, 0, 2);
    }
  }
  _tile_stored(3, cb, 64);
  _tile_stored(4, cb + 256, 64);
  if constexpr (NJ > 1) {
    _tile_stored(5, cb + 512, 64);
    _tile_stored(6, cb + 768, 64);
  }
  amx_memory_barrier(cb);  // cb, written by tile stores, before plain loads
  const __m512 dv = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(sb)));
  [[maybe_unused]] __m512 ndmin;
  if constexpr (kT == DType::Q2_K)
    ndmin = _mm512_xor_ps(_mm512_set1_ps(-0.f), _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(sb + 32))));
  for (int jj = 0; jj < NJ; ++jj) {
    const float* dx = x.d.data() + act_scale_index(S, (j0 + jj) * kTile, s);
    float* at = acc + (j0 + jj) * 256;
    const int32_t* c0 = cb + jj * 512;
    for (int t = 0; t < kTile; ++t) {
      const __m512 dxt = _mm512_set1_ps(dx[t]);
      __m512 r = _mm512_load_ps(at + 16 * t);
      const __m512i p0 = _mm512_load_si512(c0 + 16 * t), p1 = _mm512_load_si512(c0 + 256 + 16 * t);
      if constexpr (kT == DType::Q6_K) {
        r = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(_mm512_slli_epi32(p0, 6), p1)), _mm512_mul_ps(dv, dxt), r);
      } else {
        r = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p0), _mm512_mul_ps(dv, dxt), r);
        r = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p1), _mm512_mul_ps(ndmin, dxt), r);
      }
      _mm512_store_ps(at + 16 * t, r);
    }
  }
}

// A grow-only buffer of at least n T's whose returned start is 64-byte aligned (tile rows).
template <class T>
T* aligned64(std::vector<T>& buf, size_t n) {
  if (buf.size() < n + 64 / sizeof(T)) buf.resize(n + 64 / sizeof(T));
  return buf.data() + (64 - reinterpret_cast<uintptr_t>(buf.data()) % 64) % 64 / sizeof(T);
}

template <DType kT>
void amx_kquant_groups(const uint8_t* w, int64_t n_groups, const AmxInt8Activations& x, float* y, int64_t ldy) {
  load_amx_tile_config();
  const int64_t TT = x.Tpad / kTile, S = x.D / kSuper;
  const size_t sb_bytes = static_cast<size_t>(row_bytes(kT, kSuper)) * kGroup;
  thread_local std::vector<float> acc_buf;    // [kTokenTiles][16 tokens][16 rows]
  thread_local std::vector<uint8_t> b_buf;    // [4 steps][2 planes][1 KB]
  thread_local std::vector<int32_t> c_buf;    // [2 token tiles][2 planes][16][16]
  float* acc = aligned64(acc_buf, static_cast<size_t>(kTokenTiles * 256));
  uint8_t* b = aligned64(b_buf, kStepsPerSuper * 2 * kTileBytes);
  int32_t* cb = aligned64(c_buf, 1024);
  for (int64_t j0 = 0; j0 < TT; j0 += kTokenTiles) {
    const int64_t j1 = std::min(TT, j0 + kTokenTiles);
    for (int64_t g = 0; g < n_groups; ++g) {
      std::fill(acc, acc + (j1 - j0) * 256, 0.f);
      const uint8_t* wg = w + static_cast<size_t>(g * S) * sb_bytes;
      for (int64_t s = 0; s < S; ++s) {
        const uint8_t* sb = wg + static_cast<size_t>(s) * sb_bytes;
        prepare_weights<kT>(sb, b);
        amx_memory_barrier(b);
        int64_t j = j0;
        for (; j + 2 <= j1; j += 2) chunk<kT, 2>(b, sb, x, j, s, acc - j0 * 256, cb);
        if (j < j1) chunk<kT, 1>(b, sb, x, j, s, acc - j0 * 256, cb);
      }
      for (int64_t t = j0 * kTile; t < std::min(x.T, j1 * kTile); ++t)
        std::memcpy(y + t * ldy + g * kGroup, acc + (t - j0 * kTile) * kGroup, kGroup * sizeof(float));
    }
  }
}

}  // namespace

bool amx_kquant_supports(DType t, int64_t N, int64_t D) {
  return supported_type(t) && N > 0 && N % kGroup == 0 && D > 0 && D % kSuper == 0 && amx_int8_available();
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
    }
}

void gemm_amx_kquant(DType t, const uint8_t* w, int64_t n_groups, const AmxInt8Activations& x, float* y,
                     int64_t ldy) {
  SMOE_CHECK(amx_kquant_supports(t, n_groups * kGroup, x.D), "AMX K-quant kernel: ", dtype_name(t), " rows of ",
             x.D, " values (expected q2_K or q6_K, a multiple of 256, and a CPU with AMX-INT8)");
  if (t == DType::Q6_K) amx_kquant_groups<DType::Q6_K>(w, n_groups, x, y, ldy);
  else amx_kquant_groups<DType::Q2_K>(w, n_groups, x, y, ldy);
}

void gemm_amx_kquant_ref(DType t, const uint8_t* w, int64_t n, const AmxInt8Activations& x, float* y,
                         int64_t ldy) {
  SMOE_CHECK(supported_type(t) && x.D % kSuper == 0, "AMX K-quant reference: ", dtype_name(t), " rows of ", x.D,
             " values (expected q2_K or q6_K and a multiple of 256)");
  const int64_t S = x.D / kSuper;
  const size_t rb = row_bytes(t, x.D), bb = row_bytes(t, kSuper);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t tk = 0; tk < x.T; ++tk) {
      float acc = 0.f;
      for (int64_t s = 0; s < S; ++s) {
        const uint8_t* blk = w + static_cast<size_t>(r) * rb + static_cast<size_t>(s) * bb;
        uint8_t q[kSuper];
        kquant_block_values(t, blk, q);
        const float dx = x.d[act_scale_index(S, tk, s)];
        int32_t isum = 0, msum = 0;
        for (int64_t i = 0; i < kSuper; ++i) {
          const int32_t xq = x.q[act_value_index(x.D, tk, s * kSuper + i)];
          if (t == DType::Q6_K) {
            isum += static_cast<int8_t>(blk[192 + i / 16]) * (q[i] - 32) * xq;
          } else {
            isum += (blk[i / 16] & 15) * q[i] * xq;
            msum += (blk[i / 16] >> 4) * xq;
          }
        }
        uint16_t hd, hm;
        std::memcpy(&hd, blk + (t == DType::Q6_K ? 208 : 80), 2);
        acc = std::fma(static_cast<float>(isum), f16_to_f32(hd) * dx, acc);
        if (t == DType::Q2_K) {
          std::memcpy(&hm, blk + 82, 2);
          acc = std::fma(static_cast<float>(msum), -f16_to_f32(hm) * dx, acc);
        }
      }
      y[tk * ldy + r] = acc;
    }
}

}  // namespace smoe
