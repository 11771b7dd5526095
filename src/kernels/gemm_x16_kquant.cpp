// gemm_x16_kquant.cpp: q2_K/q3_K/q4_K/q5_K/q6_K rows repacked in 16-row groups and the
// AVX-512 VNNI matmul over them, plus the scalar reference of its arithmetic on GGUF rows
// (layout and arithmetic in gemm_x16.h). Legend: T tokens, b 32-value block of a row, s
// super-block, k 16-value sub-block.
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <utility>

#include "core/error.h"
#include "kernels/gemm_x16.h"
#include "kernels/gemm_x16_simd.h"

// GCC 12 reports the _mm512_undefined_* sources inside the conversion intrinsics as
// "may be used uninitialized" once they are inlined here; they are fully overwritten.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace smoe {

namespace {

constexpr int64_t kGroup = 16;
constexpr int64_t kSuper = 256;  // values per super-block

using x16::KLayout;
using x16::layout;

// q2_K and q3_K: 2-bit values in planes (gemm_x16.h), not nibbles.
constexpr bool low_bits(DType t) { return t == DType::Q2_K || t == DType::Q3_K; }

// ---- value access: GGUF blocks and the repacked group ----

// The 256 values q of a GGUF super-block (q2_K 0..3, q3_K 0..7 = low + 4 * high bit,
// q4_K 0..15, q5_K 0..31, q6_K 0..63).
void gguf_values(DType t, const uint8_t* blk, uint8_t* q) {
  if (low_bits(t)) {  // value 128h + 32j + l: low bits (qs[32h + l] >> 2j) & 3, q3_K's high bit 4h + j of hmask[l]
    const bool q3 = t == DType::Q3_K;
    const uint8_t* qs = blk + (q3 ? 32 : 16);
    for (int h = 0; h < 2; ++h)
      for (int j = 0; j < 4; ++j)
        for (int l = 0; l < 32; ++l) {
          const int x = (qs[32 * h + l] >> (2 * j)) & 3;
          q[128 * h + 32 * j + l] = static_cast<uint8_t>(q3 ? x | ((blk[l] >> (4 * h + j)) & 1) << 2 : x);
        }
    return;
  }
  if (t == DType::Q6_K) {
    for (int h = 0; h < 2; ++h)
      for (int k = 0; k < 4; ++k)
        for (int l = 0; l < 32; ++l) {
          const int lo = (blk[64 * h + 32 * (k % 2) + l] >> (k < 2 ? 0 : 4)) & 15;
          q[128 * h + 32 * k + l] = static_cast<uint8_t>(lo | (((blk[128 + 32 * h + l] >> (2 * k)) & 3) << 4));
        }
    return;
  }
  const uint8_t* qs = blk + (t == DType::Q5_K ? 48 : 16);
  for (int j = 0; j < 8; ++j)
    for (int v = 0; v < 32; ++v) {
      int x = (qs[32 * (j / 2) + v] >> (4 * (j % 2))) & 15;
      if (t == DType::Q5_K) x |= ((blk[16 + v] >> j) & 1) << 4;
      q[32 * j + v] = static_cast<uint8_t>(x);
    }
}

// Writes the values of a GGUF super-block (its header left as it is).
void gguf_set_values(DType t, const uint8_t* q, uint8_t* blk) {
  if (low_bits(t)) {
    uint8_t* qs = blk + (t == DType::Q3_K ? 32 : 16);
    std::memset(qs, 0, 64);
    if (t == DType::Q3_K) std::memset(blk, 0, 32);
    for (int i = 0; i < static_cast<int>(kSuper); ++i) {
      qs[32 * (i / 128) + i % 32] |= static_cast<uint8_t>((q[i] & 3) << (2 * (i % 128 / 32)));
      if (t == DType::Q3_K) blk[i % 32] |= static_cast<uint8_t>(((q[i] >> 2) & 1) << (i / 32));
    }
    return;
  }
  if (t == DType::Q6_K) {
    std::memset(blk, 0, 192);
    for (int h = 0; h < 2; ++h)
      for (int k = 0; k < 4; ++k)
        for (int l = 0; l < 32; ++l) {
          const int x = q[128 * h + 32 * k + l];
          blk[64 * h + 32 * (k % 2) + l] |= static_cast<uint8_t>((x & 15) << (k < 2 ? 0 : 4));
          blk[128 + 32 * h + l] |= static_cast<uint8_t>((x >> 4) << (2 * k));
        }
    return;
  }
  uint8_t* qs = blk + (t == DType::Q5_K ? 48 : 16);
  std::memset(qs, 0, 128);
  if (t == DType::Q5_K) std::memset(blk + 16, 0, 32);
  for (int j = 0; j < 8; ++j)
    for (int v = 0; v < 32; ++v) {
      const int x = q[32 * j + v];
      qs[32 * (j / 2) + v] |= static_cast<uint8_t>((x & 15) << (4 * (j % 2)));
      if (t == DType::Q5_K) blk[16 + v] |= static_cast<uint8_t>(((x >> 4) & 1) << j);
    }
}

// Where the bytes of 32-value block jb of row i live in a repacked super-block: nibble
// vector g (0..3) byte c at nib(jb) + 64g + 4i + c; q6_K's high bits of value group G in
// vector G / 4 at nib(jb) + 256 + 64(G / 4) + 4i + c, bits 2(G % 4)..2(G % 4) + 1; q5_K's
// fifth bits as 8 masks at nib(jb) + 256 + 8G, bit 4i + c (value 4G + c).
size_t nib_offset(DType t, int jb) { return layout(t).values + layout(t).block * static_cast<size_t>(jb); }
size_t high_offset(DType t, int jb) { return nib_offset(t, jb) + 256; }

// q2_K/q3_K: calls f(v, byte offset in the super-block, bit in that byte, bit of q, bits) for
// each bit field holding row i's value v = 32jb + 16h + 4p + c: its 2 low bits in plane
// vector h of block jb (sub-block 2jb + h), byte 4i + c, bits 2p..2p+1; q3_K's high bit
// (bit 2 of q) in mask g = 4h + p of block jb, bit 4i + c (64-bit little-endian masks).
template <class F>
void for_each_low_field(DType t, int i, F&& f) {
  const KLayout L = layout(t);
  for (int jb = 0; jb < 8; ++jb)
    for (int h = 0; h < 2; ++h)
      for (int p = 0; p < 4; ++p)
        for (int c = 0; c < 4; ++c) {
          const int v = 32 * jb + 16 * h + 4 * p + c, lane_byte = 4 * i + c;
          const size_t blk = L.values + L.block * static_cast<size_t>(jb);
          f(v, blk + 64 * static_cast<size_t>(h) + static_cast<size_t>(lane_byte), 2 * p, 0, 2);
          if (t == DType::Q3_K)
            f(v, blk + 128 + 8 * static_cast<size_t>(4 * h + p) + static_cast<size_t>(lane_byte / 8), lane_byte % 8, 2, 1);
        }
}

// The 256 values q[i] of each of the 16 rows into a repacked super-block's value bytes
// (layout in gemm_x16.h; x16_values below reads them back one field at a time).
void x16_pack_values(DType t, const uint8_t (*q)[kSuper], uint8_t* sb) {
  const KLayout L = layout(t);
  for (int jb = 0; jb < 8; ++jb) {
    uint8_t* blk = sb + L.values + L.block * static_cast<size_t>(jb);
    const int v0 = 32 * jb;
    // q3_K/q5_K: mask G, bit 4i + c for value 4G + c of the block, from bit `bit` of q. Row
    // i's 32 bits (bit v from value v) come from two byte-sign masks, bit `bit` shifted to 7.
    auto masks = [&](uint8_t* at, int bit) {
      uint64_t m[8] = {};
      for (int i = 0; i < kGroup; ++i) {
        const __m128i lo = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q[i] + v0));
        const __m128i hi = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q[i] + v0 + 16));
        const uint32_t bits = static_cast<uint32_t>(_mm_movemask_epi8(_mm_slli_epi16(lo, 7 - bit))) |
                              static_cast<uint32_t>(_mm_movemask_epi8(_mm_slli_epi16(hi, 7 - bit))) << 16;
        for (int G = 0; G < 8; ++G) m[G] |= static_cast<uint64_t>((bits >> (4 * G)) & 15) << (4 * i);
      }
      std::memcpy(at, m, sizeof(m));
    };
    // Values v .. v + 3 of row i as one word, byte c from value v + c (values stay in their
    // bytes when the word is shifted or masked below).
    auto word = [&](int i, int v) {
      uint32_t w;
      std::memcpy(&w, q[i] + v0 + v, 4);
      return w;
    };
    auto put = [&](size_t off, uint32_t w) { std::memcpy(blk + off, &w, 4); };
    constexpr uint32_t k2 = 0x03030303u, k4 = 0x0F0F0F0Fu;
    for (int i = 0; i < kGroup; ++i) {
      if (low_bits(t)) {  // plane h byte 4i + c: value 16h + 4p + c in bits 2p..2p + 1
        for (int h = 0; h < 2; ++h)
          put(64 * h + 4 * i, (word(i, 16 * h) & k2) | (word(i, 16 * h + 4) & k2) << 2 | (word(i, 16 * h + 8) & k2) << 4 |
                                  (word(i, 16 * h + 12) & k2) << 6);
        continue;
      }
      for (int g = 0; g < 4; ++g)  // nibble vector g byte 4i + c: values 4g + c (low) and 16 + 4g + c (high)
        put(64 * g + 4 * i, (word(i, 4 * g) & k4) | (word(i, 16 + 4 * g) & k4) << 4);
      if (t == DType::Q6_K)  // vector h byte 4i + c: the top 2 bits of value 16h + 4f + c in bits 2f..2f + 1
        for (int h = 0; h < 2; ++h)
          put(256 + 64 * h + 4 * i, (word(i, 16 * h) >> 4 & k2) | (word(i, 16 * h + 4) >> 4 & k2) << 2 |
                                        (word(i, 16 * h + 8) >> 4 & k2) << 4 | (word(i, 16 * h + 12) >> 4 & k2) << 6);
    }
    if (t == DType::Q3_K) masks(blk + 128, 2);
    if (t == DType::Q5_K) masks(blk + 256, 4);
  }
}

// Row i's 256 values read back from a repacked super-block one bit field at a time (how
// rows are unpacked; the tests' round trip checks x16_pack_values against it).
void x16_values(DType t, const uint8_t* sb, int i, uint8_t* q) {
  if (low_bits(t)) {
    std::memset(q, 0, kSuper);
    for_each_low_field(t, i, [&](int v, size_t off, int bit, int qbit, int n) {
      q[v] = static_cast<uint8_t>(q[v] | ((sb[off] >> bit) & ((1 << n) - 1)) << qbit);
    });
    return;
  }
  for (int jb = 0; jb < 8; ++jb) {
    uint8_t* qb = q + 32 * jb;
    for (int g = 0; g < 4; ++g)
      for (int c = 0; c < 4; ++c) {
        const int v = 4 * g + c;
        const uint8_t b = sb[nib_offset(t, jb) + 64 * g + 4 * i + c];
        qb[v] = b & 15;
        qb[v + 16] = b >> 4;
      }
    if (t == DType::Q4_K) continue;
    if (t == DType::Q5_K) {
      for (int G = 0; G < 8; ++G)
        for (int c = 0; c < 4; ++c) {
          const int byte = sb[high_offset(t, jb) + 8 * G + (4 * i + c) / 8];
          qb[4 * G + c] = static_cast<uint8_t>(qb[4 * G + c] | ((byte >> ((4 * i + c) % 8)) & 1) << 4);
        }
      continue;
    }
    for (int h = 0; h < 2; ++h)
      for (int c = 0; c < 4; ++c) {
        const int byte = sb[high_offset(t, jb) + 64 * h + 4 * i + c];
        for (int f = 0; f < 4; ++f) qb[16 * h + 4 * f + c] = static_cast<uint8_t>(qb[16 * h + 4 * f + c] | ((byte >> (2 * f)) & 3) << 4);
      }
  }
}

// Header byte k of row i: {offset in the GGUF block, offset in the repacked super-block}.
// q4_K/q5_K (16 bytes): d at 2i, dmin at 32 + 2i, packed scale byte k at 64 + 16k + i.
// q6_K (18 bytes): d at 2i, int8 scale k at 32 + 16k + i.
// q2_K (20 bytes): d at 2i, dmin at 32 + 2i, scale byte k at 64 + 16k + i.
// q3_K (14 bytes): d at 2i, packed scale byte k at 32 + 16k + i.
constexpr int kMaxHeaderBytes = 20;
int header_bytes(DType t) {
  return t == DType::Q2_K ? kMaxHeaderBytes : t == DType::Q3_K ? 14 : t == DType::Q6_K ? 18 : 16;
}
std::pair<size_t, size_t> header_byte(DType t, int i, int k) {
  const auto si = static_cast<size_t>(i);
  const auto sk = static_cast<size_t>(k);
  if (t == DType::Q2_K) {
    if (k < 16) return {sk, 64 + 16 * sk + si};
    return {80 + (sk - 16), 32 * ((sk - 16) / 2) + 2 * si + sk % 2};
  }
  if (t == DType::Q3_K) {
    if (k < 12) return {96 + sk, 32 + 16 * sk + si};
    return {108 + (sk - 12), 2 * si + (sk - 12)};
  }
  if (t == DType::Q6_K) {
    if (k < 2) return {208 + static_cast<size_t>(k), 2 * si + static_cast<size_t>(k)};
    return {192 + static_cast<size_t>(k - 2), 32 + 16 * static_cast<size_t>(k - 2) + si};
  }
  if (k < 4) return {static_cast<size_t>(k), 32 * static_cast<size_t>(k / 2) + 2 * si + static_cast<size_t>(k % 2)};
  return {static_cast<size_t>(k), 64 + 16 * static_cast<size_t>(k - 4) + si};
}

// ---- the VNNI kernel ----

using x16::high2;
using x16::kquant_scales_mins;
using x16::q3k_scales;

// 16 unsigned bytes (one per row) at p, as 16 floats.
__attribute__((target("avx512f,avx512bw,avx512vl"), always_inline))
inline __m512 uint8_scales(const uint8_t* p) {
  return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}

// 16 int8 scales (one per row) at p, as 16 floats.
__attribute__((target("avx512f,avx512bw,avx512vl"), always_inline))
inline __m512 int8_scales(const void* p) {
  const __m128i v = _mm_loadu_si128(static_cast<const __m128i*>(p));
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(v));
}
// q6_K int8 scale of sub-block k for the 16 rows.
__attribute__((target("avx512f,avx512bw,avx512vl"), always_inline))
inline __m512 q6k_scale(const uint8_t* sb, int k) { return int8_scales(sb + 32 + 16 * k); }

// 32-value block jb of super-block s of NG row groups (at sb[gi]): its index b in the row,
// each group's weights qb[gi] (prefetched ahead, see prefetch_ahead) and the
// pass's activations xb (xq at its first token, see kx16_group), for a pass of NT tokens.
template <DType kT, int NG>
struct KBlock {
  int64_t b;
  const uint8_t* qb[NG];
  const int8_t* xb;
};
template <DType kT, int NG, int NT>
__attribute__((always_inline)) inline KBlock<kT, NG> kblock(const uint8_t* const* sb, int64_t s, int jb,
                                                            const int8_t* xq, int64_t Tpad) {
  constexpr KLayout L = layout(kT);
  KBlock<kT, NG> k;
  k.b = s * 8 + jb;
  for (int gi = 0; gi < NG; ++gi) {
    k.qb[gi] = sb[gi] + L.values + L.block * jb;
    x16::prefetch_ahead<NT>(k.qb[gi], L.block);
  }
  k.xb = xq + 4 * k.b * 8 * Tpad;
  return k;
}

// Bit pair p of each byte of v as a value 0..3 (a q2_K/q3_K plane, gemm_x16.h). With GFNI one
// affine transform per plane instead of a shift and an and: in one process, one thread on
// L1-resident q2_K rows, 1.12x (q3_K 1.10x) over the shifts; at the model level tg q2_K rose
// 1-17% in 4 alternating rounds.
template <bool kGfni>
__attribute__((target("avx512f,avx512bw"), always_inline)) inline __m512i plane2(__m512i v, int p, __m512i m3) {
  if (p == 0) return _mm512_and_si512(v, m3);
  if constexpr (kGfni) return x16::gf2_affine(v, x16::bit_pair_move(2 * p, 0));
  return _mm512_and_si512(_mm512_srli_epi16(v, 2 * p), m3);
}

// q2_K/q3_K: super-block s (at sb, d of its 16 rows in dv) against the NT tokens of a pass,
// on activations quantized per super-block: xq, dx256 and sum16 point at the first token's
// (Int8Activations::q256, d256, sum16), acc[t] their sums. Everything before the super-block's
// two multiply-adds is exact in int32: per 16-value sub-block k, the sum isum_k of q x_q
// (q3_K: of (q - 4) x_q) times the row's scale goes into C, and q2_K's min times the
// sub-block's sum of x_q into M, each with one vpdpwssd (isum_k, the scales and the sums fit
// in 16 bits: the other operand's upper halves are zero). Then acc += float(C) * (d * dx) and
// acc -= float(M) * (dmin * dx), as gemm_amx_kquant does. (With a float scale per 16 values,
// the epilogue took as many instructions as the products themselves.)
template <DType kT, int NT, bool kGfni>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c"), always_inline))
inline void kx16_low_superblock(const uint8_t* sb, int64_t s, __m512 dv, const int8_t* xq, const float* dx256,
                                const int32_t* sum16, int64_t Tpad, __m512* acc) {
  constexpr bool kQ3 = kT == DType::Q3_K;
  const __m512i m3 = _mm512_set1_epi8(3), four = _mm512_set1_epi8(4), m4 = _mm512_set1_epi32(15);
  [[maybe_unused]] const __m512i low16 = _mm512_set1_epi32(0xFFFF);
  [[maybe_unused]] alignas(64) int8_t sc3[kSuper];
  if constexpr (kQ3) q3k_scales(sb, sc3);
  // A single token gets both halves of a block at once as two chains (and two C and M).
  constexpr int kHalves = NT == 1 ? 2 : 1;
  __m512i C[kHalves][NT];
  [[maybe_unused]] __m512i M[kHalves][NT];
  for (int c = 0; c < kHalves; ++c)
    for (int t = 0; t < NT; ++t) C[c][t] = M[c][t] = _mm512_setzero_si512();
  const int32_t* sums = sum16 + 16 * s * Tpad;  // [16][Tpad]: this super-block's sub-blocks
  for (int jb = 0; jb < 8; ++jb) {
    const KBlock<kT, 1> k = kblock<kT, 1, NT>(&sb, s, jb, xq, Tpad);
    const uint8_t* qb = k.qb[0];
    const int8_t* xb = k.xb;
    // Sub-block 2jb + h from plane vector h, one chain per token.
    for (int h0 = 0; h0 < 2; h0 += kHalves) {
      __m512i si[kHalves][NT];
      for (int c = 0; c < kHalves; ++c)
        for (int t = 0; t < NT; ++t)  // q3_K: - 4 x the sub-block's sum of x_q
          si[c][t] = kQ3 ? _mm512_set1_epi32(-4 * sums[(2 * jb + h0 + c) * Tpad + t]) : _mm512_setzero_si512();
#pragma GCC unroll 2
      for (int c = 0; c < kHalves; ++c) {
        const int h = h0 + c;
        const __m512i v = x16::load_once(qb + 64 * h);
#pragma GCC unroll 4
        for (int p = 0; p < 4; ++p) {
          __m512i q = plane2<kGfni>(v, p, m3);
          if constexpr (kQ3) q = x16::add_masked(q, qb + 128 + 8 * (4 * h + p), four);
          for (int t = 0; t < NT; ++t)
            si[c][t] = _mm512_dpbusd_epi32(si[c][t], q, x16::bcast4(xb + 4 * ((4 * h + p) * Tpad + t)));
        }
      }
      for (int c = 0; c < kHalves; ++c) {
        const int kk = 2 * jb + h0 + c;
        if constexpr (kQ3) {  // sc_k - 32 in the low 16 bits of each row's lane
          const __m512i sc = _mm512_and_si512(
              _mm512_cvtepi8_epi32(_mm_load_si128(reinterpret_cast<const __m128i*>(sc3 + 16 * kk))), low16);
          for (int t = 0; t < NT; ++t) C[c][t] = _mm512_dpwssd_epi32(C[c][t], si[c][t], sc);
        } else {  // scale byte k of the 16 rows: scale in the low nibble, min in the high one
          const __m512i sm = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sb + 64 + 16 * kk)));
          const __m512i sc = _mm512_and_si512(sm, m4), mn = _mm512_srli_epi32(sm, 4);
          for (int t = 0; t < NT; ++t) {
            C[c][t] = _mm512_dpwssd_epi32(C[c][t], si[c][t], sc);
            M[c][t] = _mm512_dpwssd_epi32(M[c][t], mn, _mm512_set1_epi32(sums[kk * Tpad + t]));
          }
        }
      }
    }
  }
  [[maybe_unused]] __m512 dmv;
  if constexpr (!kQ3) dmv = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(sb + 32)));
  for (int t = 0; t < NT; ++t) {
    __m512i ct = C[0][t];
    [[maybe_unused]] __m512i mt = M[0][t];
    if constexpr (kHalves == 2) {
      ct = _mm512_add_epi32(ct, C[1][t]);
      mt = _mm512_add_epi32(mt, M[1][t]);
    }
    const __m512 dx = _mm512_set1_ps(dx256[s * Tpad + t]);
    acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ct), _mm512_mul_ps(dv, dx), acc[t]);
    if constexpr (!kQ3) acc[t] = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(mt), _mm512_mul_ps(dmv, dx), acc[t]);
  }
}

// q6_K: super-block s (at sb, d of its 16 rows in dv) against the NT tokens of a pass: xq,
// dx and corr6 point at the first token's (see kx16_group), acc[t] their sums.
template <int NT, bool kGfni>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c"), always_inline))
inline void kx16_q6_superblock(const uint8_t* sb, int64_t s, __m512 dv, const int8_t* xq, const float* dx,
                               const int32_t* corr6, int64_t Tpad, __m512* acc) {
  const __m512i m4 = _mm512_set1_epi8(15);
  for (int jb = 0; jb < 8; ++jb) {
    const KBlock<DType::Q6_K, 1> k = kblock<DType::Q6_K, 1, NT>(&sb, s, jb, xq, Tpad);
    const int64_t b = k.b;
    const uint8_t* qb = k.qb[0];
    // Chain 0: values 0-15 (sub-block 2jb), chain 1: values 16-31 (sub-block 2jb + 1).
    __m512i si[1][2][NT];
    for (int t = 0; t < NT; ++t) {
      si[0][0][t] = _mm512_set1_epi32(corr6[(2 * b) * Tpad + t]);
      si[0][1][t] = _mm512_set1_epi32(corr6[(2 * b + 1) * Tpad + t]);
    }
    const __m512i h0 = _mm512_loadu_si512(qb + 256), h1 = _mm512_loadu_si512(qb + 320);
#pragma GCC unroll 4
    for (int g = 0; g < 4; ++g) {
      const __m512i v = x16::load_once(qb + 64 * g);
      const __m512i lo = _mm512_or_si512(_mm512_and_si512(v, m4), x16::high2_at<kGfni>(h0, g));
      const __m512i hi = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(v, 4), m4), x16::high2_at<kGfni>(h1, g));
      x16::dot_nibble_planes<NT, 1, 2>(si, 0, 1, &lo, &hi, k.xb, g, Tpad);
    }
    const __m512 sca = _mm512_mul_ps(dv, q6k_scale(sb, 2 * jb));
    const __m512 scb = _mm512_mul_ps(dv, q6k_scale(sb, 2 * jb + 1));
    for (int t = 0; t < NT; ++t) {
      const __m512 d = _mm512_set1_ps(dx[b * Tpad + t]);
      acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(si[0][0][t]), _mm512_mul_ps(sca, d), acc[t]);
      acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(si[0][1][t]), _mm512_mul_ps(scb, d), acc[t]);
    }
  }
}

// NG consecutive row groups (wg, stride bytes apart) against tokens t0 .. t0 + NT - 1 of
// x, over all super-blocks. For q4_K/q5_K each activation broadcast feeds the NG groups'
// vpdpbusd; each group's arithmetic is the same whatever NG is. kSb: q4_K on the
// activations quantized per super-block (x.superblocks; q2_K/q3_K always take those).
template <DType kT, int NT, int NG, bool kGfni, bool kSb>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c")))
void kx16_group(const uint8_t* wg, size_t stride, const Int8Activations& x, int64_t t0, float* y, int64_t ldy) {
  constexpr KLayout L = layout(kT);
  const int64_t Tpad = x.Tpad, nsb = x.D / kSuper;
  const float* dx = x.d.data() + t0;
  const float* dsum = x.dsum.data() + t0;
  const int32_t* corr6 = x.corr6.data() + t0;
  // [nb][8][Tpad] groups of 4 values; q2_K/q3_K (and q4_K given them: kInt, exact int32
  // sums per super-block) take the activations quantized per super-block.
  constexpr bool kInt = kT == DType::Q4_K && kSb;
  constexpr bool kPer256 = low_bits(kT) || kInt;
  const int8_t* xq = (kPer256 ? x.q256.data() : x.q.data()) + 4 * t0;
  [[maybe_unused]] const float* dx256 = kPer256 ? x.d256.data() + t0 : nullptr;
  [[maybe_unused]] const int32_t* sum16 = kPer256 ? x.sum16.data() + t0 : nullptr;
  const __m512i m4 = _mm512_set1_epi8(15), sixteen = _mm512_set1_epi8(16);
  __m512 acc[NG][NT];
  for (int gi = 0; gi < NG; ++gi)
    for (int t = 0; t < NT; ++t) acc[gi][t] = _mm512_setzero_ps();
  // q4_K's per-256 sums stay in memory between super-blocks (touched once per super-block):
  // in registers beside the integer sums and the chains, batch passes spilled.
  [[maybe_unused]] alignas(64) float accm[kInt ? NG : 1][kInt ? NT : 1][kGroup] = {};
  for (int64_t s = 0; s < nsb; ++s) {
    const uint8_t* sb[NG];
    __m512 dv[NG];
    for (int gi = 0; gi < NG; ++gi) {
      sb[gi] = wg + gi * stride + static_cast<size_t>(s) * L.bytes;
      x16::prefetch_ahead<NT>(sb[gi], L.values);
      dv[gi] = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(sb[gi])));
    }
    if constexpr (low_bits(kT)) {  // one group at a time (these types run NG = 1)
      for (int gi = 0; gi < NG; ++gi)
        kx16_low_superblock<kT, NT, kGfni>(sb[gi], s, dv[gi], xq, dx256, sum16, Tpad, acc[gi]);
    } else if constexpr (kT == DType::Q6_K) {  // one group at a time (q6_K runs NG = 1)
      for (int gi = 0; gi < NG; ++gi) kx16_q6_superblock<NT, kGfni>(sb[gi], s, dv[gi], xq, dx, corr6, Tpad, acc[gi]);
    } else {
      __m512 dmv[NG];
      alignas(64) uint8_t sc[NG][128], mn[NG][128];
      for (int gi = 0; gi < NG; ++gi) {
        dmv[gi] = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(sb[gi] + 32)));
        kquant_scales_mins(sb[gi], sc[gi], mn[gi]);
      }
      // One chain per token and group; a single token of a single group gets two (low and
      // high nibbles).
      constexpr int kChains = NT * NG == 1 ? 2 : 1;
      // q4_K's lone chain pair takes the high nibbles in place (16 x their value): no shift.
      constexpr bool kInPlace = kChains == 2 && kT == DType::Q4_K;
      // q4_K: C, the super-block's exact sum over blocks j of sc_j times the block's sum of
      // q x_q, per row (C[gi][1]: the high nibbles' half of the in-place pair; a single
      // chain holds sum (q - 8) x_q, and 8 sc_j xsum_j is added at the end). q5_K keeps
      // float terms per block (its block sums need 17 bits: see gemm_x16.h).
      constexpr int kC = kInPlace ? 2 : 1;
      [[maybe_unused]] __m512i C[NG][kC][NT];
      if constexpr (kInt)
        for (int gi = 0; gi < NG; ++gi)
          for (int c = 0; c < kC; ++c)
            for (int t = 0; t < NT; ++t) C[gi][c][t] = _mm512_setzero_si512();
      // This super-block's per-block sums of x_q and -8 times them, [8][Tpad] each.
      [[maybe_unused]] const int32_t* xs = kInt ? x.sum32.data() + t0 + 8 * s * Tpad : nullptr;
      [[maybe_unused]] const int32_t* xc = kInt ? x.corr32.data() + t0 + 8 * s * Tpad : nullptr;
      for (int j = 0; j < 8; ++j) {
        const KBlock<kT, NG> k = kblock<kT, NG, NT>(sb, s, j, xq, Tpad);
        [[maybe_unused]] const int64_t b = k.b;
        __m512i si[NG][kChains][NT];
        for (int t = 0; t < NT; ++t) {
          // q4_K's single chain starts at -8 x the block's sum of x_q: |sum (q - 8) x_q| <= 32 * 8 * 127
          const __m512i init = kInt && !kInPlace ? _mm512_set1_epi32(xc[j * Tpad + t]) : _mm512_setzero_si512();
          for (int gi = 0; gi < NG; ++gi)
            for (int c = 0; c < kChains; ++c) si[gi][c][t] = init;
        }
#pragma GCC unroll 4
        for (int g = 0; g < 4; ++g) {
          __m512i lo[NG], hi[NG];
          for (int gi = 0; gi < NG; ++gi) {
            const __m512i v = x16::load_once(k.qb[gi] + 64 * g);
            lo[gi] = _mm512_and_si512(v, m4);
            hi[gi] = kInPlace ? _mm512_andnot_si512(m4, v) : _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
            if constexpr (kT == DType::Q5_K) {
              lo[gi] = x16::add_masked(lo[gi], k.qb[gi] + 256 + 8 * g, sixteen);
              hi[gi] = x16::add_masked(hi[gi], k.qb[gi] + 256 + 8 * (g + 4), sixteen);
            }
          }
          x16::dot_nibble_planes<NT, NG, kChains>(si, 0, kChains - 1, lo, hi, k.xb, g, Tpad);
        }
        for (int gi = 0; gi < NG; ++gi) {
          if constexpr (kInt) {
            // The sums fit 16 bits (the in-place halves: 16 values of 0..15 times |x_q| <= 127):
            // one vpdpwssd each, the scales' upper halves zero.
            const __m512i scv = _mm512_cvtepu8_epi32(_mm_load_si128(reinterpret_cast<const __m128i*>(sc[gi] + 16 * j)));
            if constexpr (kInPlace) {
              C[gi][0][0] = _mm512_dpwssd_epi32(C[gi][0][0], si[gi][0][0], scv);
              C[gi][1][0] = _mm512_dpwssd_epi32(C[gi][1][0], _mm512_srai_epi32(si[gi][1][0], 4), scv);
            } else {
              for (int t = 0; t < NT; ++t) C[gi][0][t] = _mm512_dpwssd_epi32(C[gi][0][t], si[gi][0][t], scv);
            }
          } else {
            if constexpr (kChains == 2)
              si[gi][0][0] = _mm512_add_epi32(si[gi][0][0], kInPlace ? _mm512_srai_epi32(si[gi][1][0], 4) : si[gi][1][0]);
            const __m512 rscale = _mm512_mul_ps(dv[gi], uint8_scales(sc[gi] + 16 * j));
            const __m512 rmin = _mm512_mul_ps(dmv[gi], uint8_scales(mn[gi] + 16 * j));
            for (int t = 0; t < NT; ++t) {
              const __m512 scale = _mm512_mul_ps(rscale, _mm512_set1_ps(dx[b * Tpad + t]));
              acc[gi][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(si[gi][0][t]), scale, acc[gi][t]);
              acc[gi][t] = _mm512_fnmadd_ps(rmin, _mm512_set1_ps(dsum[b * Tpad + t]), acc[gi][t]);
            }
          }
        }
      }
      if constexpr (kInt) {
        // The mins (M) and, for a single chain, the scales (E) times each block's sum of x_q,
        // exact (6-bit values, sums below 2^15); then the super-block's two float terms.
        for (int gi = 0; gi < NG; ++gi) {
          __m512i M[NT], E[NT];
          for (int t = 0; t < NT; ++t) M[t] = E[t] = _mm512_setzero_si512();
          for (int j = 0; j < 8; ++j) {
            const __m512i mnv = _mm512_cvtepu8_epi32(_mm_load_si128(reinterpret_cast<const __m128i*>(mn[gi] + 16 * j)));
            [[maybe_unused]] const __m512i scv =
                _mm512_cvtepu8_epi32(_mm_load_si128(reinterpret_cast<const __m128i*>(sc[gi] + 16 * j)));
            for (int t = 0; t < NT; ++t) {
              const __m512i xsum = _mm512_set1_epi32(xs[j * Tpad + t]);
              M[t] = _mm512_dpwssd_epi32(M[t], mnv, xsum);
              if constexpr (!kInPlace) E[t] = _mm512_dpwssd_epi32(E[t], scv, xsum);
            }
          }
          for (int t = 0; t < NT; ++t) {
            __m512i ct = C[gi][0][t];
            if constexpr (kInPlace) ct = _mm512_add_epi32(ct, C[gi][1][t]);
            else ct = _mm512_add_epi32(ct, _mm512_slli_epi32(E[t], 3));
            const __m512 dxv = _mm512_set1_ps(dx256[s * Tpad + t]);
            __m512 a = _mm512_load_ps(accm[gi][t]);
            a = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ct), _mm512_mul_ps(dv[gi], dxv), a);
            _mm512_store_ps(accm[gi][t], _mm512_fnmadd_ps(_mm512_cvtepi32_ps(M[t]), _mm512_mul_ps(dmv[gi], dxv), a));
          }
        }
      }
    }
  }
  for (int gi = 0; gi < NG; ++gi)
    for (int t = 0; t < NT; ++t)
      _mm512_storeu_ps(y + (t0 + t) * ldy + gi * kGroup, kInt ? _mm512_load_ps(accm[gi][t]) : acc[gi][t]);
}

// Batch passes (see x16_for_each_pass): q4_K/q5_K go 2 row groups x 8 tokens. q6_K, q2_K
// and q3_K keep one group per pass: they hold more chains and float sums per token, and on
// the AMD EPYC (Zen 5) 2 groups x 4-6 tokens ran within 5% of one group x 8 (q6_K 295-305
// against 295, q3_K 344-352 against 333, q2_K 328-340 against 342 G multiply-adds/s,
// 8 expert-sized matrices, 128 tokens). kx16_group is written for any NG (q6_K/q2_K/q3_K
// super-blocks then go one group at a time), but only q4_K and q5_K use NG = 2.
template <DType kT>
constexpr int kBatchGroups = kT == DType::Q4_K || kT == DType::Q5_K ? 2 : 1;

template <DType kT, bool kGfni = false, bool kSb = false>
void kx16_groups(const uint8_t* w, int64_t n_groups, const Int8Activations& x, float* y, int64_t ldy) {
  const size_t stride = static_cast<size_t>(x.D / kSuper) * layout(kT).bytes;
  x16_for_each_pass<kBatchGroups<kT>>(n_groups, x.T, [&](auto nt, auto ng, int64_t g, int64_t t0) {
    kx16_group<kT, decltype(nt)::value, decltype(ng)::value, kGfni, kSb>(w + static_cast<size_t>(g) * stride, stride, x,
                                                                    t0, y + g * kGroup, ldy);
  });
}

std::atomic<bool> g_gfni_enabled{true};

bool use_gfni() {
  static const bool has = __builtin_cpu_supports("gfni");
  return has && g_gfni_enabled.load(std::memory_order_relaxed);
}

void check_kquant(DType t, int64_t N, int64_t D) {
  SMOE_CHECK(x16_kquant(t), "x16 K-quant repacking: unsupported weight type ", dtype_name(t),
             " (expected q2_K, q3_K, q4_K, q5_K or q6_K)");
  SMOE_CHECK(N % kGroup == 0 && D % kSuper == 0, "x16 repacking: shape [", N, ", ", D,
             "] is not a multiple of [16, 256]");
}

}  // namespace

void set_x16_gfni_enabled(bool on) { g_gfni_enabled.store(on, std::memory_order_relaxed); }

bool x16_gfni_active() { return use_gfni(); }

bool x16_kquant(DType t) {
  return t == DType::Q2_K || t == DType::Q3_K || t == DType::Q4_K || t == DType::Q5_K || t == DType::Q6_K;
}

void kquant_block_values(DType t, const uint8_t* blk, uint8_t* q) {
  SMOE_CHECK(x16_kquant(t), "K-quant values: unsupported type ", dtype_name(t));
  gguf_values(t, blk, q);
}

void repack_x16_kquant(DType t, const uint8_t* src, uint8_t* dst, int64_t N, int64_t D) {
  check_kquant(t, N, D);
  const size_t bb = layout(t).bytes / kGroup, rb = row_bytes(t, D);
  const int64_t nsb = D / kSuper;
  const int nh = header_bytes(t);
  std::pair<size_t, size_t> header[kGroup][kMaxHeaderBytes];  // [row][byte]: {GGUF offset, repacked offset}
  for (int i = 0; i < kGroup; ++i)
    for (int k = 0; k < nh; ++k) header[i][k] = header_byte(t, i, k);
  alignas(64) uint8_t q[kGroup][kSuper];
  for (int64_t g = 0; g < N / kGroup; ++g)
    for (int64_t s = 0; s < nsb; ++s) {
      uint8_t* out = dst + static_cast<size_t>(g * nsb + s) * layout(t).bytes;
      for (int i = 0; i < kGroup; ++i) {
        const uint8_t* blk = src + static_cast<size_t>(g * kGroup + i) * rb + static_cast<size_t>(s) * bb;
        for (int k = 0; k < nh; ++k) out[header[i][k].second] = blk[header[i][k].first];
        gguf_values(t, blk, q[i]);
      }
      x16_pack_values(t, q, out);
    }
}

void unpack_x16_kquant_row(DType t, const uint8_t* packed, int64_t D, int64_t r, uint8_t* row) {
  check_kquant(t, kGroup, D);
  const size_t bb = layout(t).bytes / kGroup;
  const int64_t nsb = D / kSuper, g = r / kGroup;
  const int i = static_cast<int>(r % kGroup);
  for (int64_t s = 0; s < nsb; ++s) {
    const uint8_t* in = packed + static_cast<size_t>(g * nsb + s) * layout(t).bytes;
    uint8_t* blk = row + static_cast<size_t>(s) * bb;
    for (int k = 0; k < header_bytes(t); ++k) {
      const auto [go, xo] = header_byte(t, i, k);
      blk[go] = in[xo];
    }
    uint8_t q[kSuper];
    x16_values(t, in, i, q);
    gguf_set_values(t, q, blk);
  }
}

void gemm_x16_kquant(DType t, const uint8_t* w, int64_t n_groups, const Int8Activations& x, float* y,
                     int64_t ldy) {
  check_kquant(t, kGroup, x.D);
  SMOE_CHECK(int8_gemm_fast(), "x16 kernels need AVX-512 VNNI");
  SMOE_CHECK(!low_bits(t) || x.superblocks, "x16 ", dtype_name(t),
             " kernel: activations quantized without super-blocks (quantize_activations(..., superblocks = true))");
  const bool gfni = use_gfni();
  if (t == DType::Q2_K && gfni) kx16_groups<DType::Q2_K, true>(w, n_groups, x, y, ldy);
  else if (t == DType::Q2_K) kx16_groups<DType::Q2_K>(w, n_groups, x, y, ldy);
  else if (t == DType::Q3_K && gfni) kx16_groups<DType::Q3_K, true>(w, n_groups, x, y, ldy);
  else if (t == DType::Q3_K) kx16_groups<DType::Q3_K>(w, n_groups, x, y, ldy);
  else if (t == DType::Q4_K && x.superblocks) kx16_groups<DType::Q4_K, false, true>(w, n_groups, x, y, ldy);
  else if (t == DType::Q4_K) kx16_groups<DType::Q4_K>(w, n_groups, x, y, ldy);
  else if (t == DType::Q5_K) kx16_groups<DType::Q5_K>(w, n_groups, x, y, ldy);
  else if (gfni) kx16_groups<DType::Q6_K, true>(w, n_groups, x, y, ldy);
  else kx16_groups<DType::Q6_K>(w, n_groups, x, y, ldy);
}

void gemm_x16_kquant_ref(DType t, const uint8_t* w, int64_t n, const Int8Activations& x, float* y,
                         int64_t ldy) {
  check_kquant(t, kGroup, x.D);
  const size_t bb = layout(t).bytes / kGroup, rb = row_bytes(t, x.D);
  const int64_t nsb = x.D / kSuper, Tpad = x.Tpad;
  auto xq = [&](int64_t b, int64_t tk, int v) {
    return static_cast<int32_t>(x.q[static_cast<size_t>(((b * 8 + v / 4) * Tpad + tk) * 4 + v % 4)]);
  };
  auto xq256 = [&](int64_t b, int64_t tk, int v) {
    return static_cast<int32_t>(x.q256[static_cast<size_t>(((b * 8 + v / 4) * Tpad + tk) * 4 + v % 4)]);
  };
  SMOE_CHECK(!low_bits(t) || x.superblocks, "x16 ", dtype_name(t),
             " reference: activations quantized without super-blocks");
  for (int64_t r = 0; r < n; ++r)
    for (int64_t tk = 0; tk < x.T; ++tk) {
      float acc = 0.f;
      for (int64_t s = 0; s < nsb; ++s) {
        const uint8_t* blk = w + static_cast<size_t>(r) * rb + static_cast<size_t>(s) * bb;
        if (low_bits(t)) {  // on the activations quantized per super-block
          const bool q3 = t == DType::Q3_K;
          uint16_t hd, hm = 0;
          std::memcpy(&hd, blk + (q3 ? 108 : 80), 2);
          if (!q3) std::memcpy(&hm, blk + 82, 2);
          const float d = f16_to_f32(hd), dmin = f16_to_f32(hm), dx = x.d256[static_cast<size_t>(s * Tpad + tk)];
          uint8_t q[kSuper];
          gguf_values(t, blk, q);
          int32_t csum = 0, msum = 0;  // exact: sum over sub-blocks k of sc_k isum_k and m_k xsum_k
          for (int k = 0; k < 16; ++k) {
            const int32_t xsum = x.sum16[static_cast<size_t>((s * 16 + k) * Tpad + tk)];
            int32_t isum = q3 ? -4 * xsum : 0;  // q3_K: sum (q - 4) x_q
            for (int v = 16 * k; v < 16 * k + 16; ++v) isum += q[v] * xq256(s * 8 + v / 32, tk, v % 32);
            csum += (q3 ? q3k_scale(k, blk + 96) - 32 : blk[k] & 15) * isum;
            if (!q3) msum += (blk[k] >> 4) * xsum;
          }
          acc = std::fma(static_cast<float>(csum), d * dx, acc);
          if (!q3) acc = std::fma(static_cast<float>(msum), -dmin * dx, acc);
        } else if (t == DType::Q6_K) {
          uint16_t hd;
          std::memcpy(&hd, blk + 208, 2);
          const float d = f16_to_f32(hd);
          uint8_t q[kSuper];
          gguf_values(t, blk, q);
          for (int jb = 0; jb < 8; ++jb) {
            const int64_t b = s * 8 + jb;
            const float dx = x.d[static_cast<size_t>(b * Tpad + tk)];
            for (int h = 0; h < 2; ++h) {
              int32_t isum = x.corr6[static_cast<size_t>((2 * b + h) * Tpad + tk)];
              for (int v = 16 * h; v < 16 * h + 16; ++v) isum += q[32 * jb + v] * xq(b, tk, v);
              const float scale = (d * static_cast<float>(static_cast<int8_t>(blk[192 + 2 * jb + h]))) * dx;
              acc = std::fma(static_cast<float>(isum), scale, acc);
            }
          }
        } else if (t == DType::Q4_K && x.superblocks) {  // on the activations quantized per super-block
          uint16_t hd, hm;
          std::memcpy(&hd, blk, 2);
          std::memcpy(&hm, blk + 2, 2);
          const float d = f16_to_f32(hd), dmin = f16_to_f32(hm), dx = x.d256[static_cast<size_t>(s * Tpad + tk)];
          uint8_t q[kSuper];
          gguf_values(t, blk, q);
          int32_t csum = 0, msum = 0;  // exact: sum over blocks j of sc_j isum_j and m_j xsum_j
          for (int j = 0; j < 8; ++j) {
            uint8_t sc, m;
            kquant_scale_min(j, blk + 4, &sc, &m);
            int32_t isum = 0;
            for (int v = 0; v < 32; ++v) isum += q[32 * j + v] * xq256(s * 8 + j, tk, v);
            const int32_t xsum = x.sum16[static_cast<size_t>((s * 16 + 2 * j) * Tpad + tk)] +
                                 x.sum16[static_cast<size_t>((s * 16 + 2 * j + 1) * Tpad + tk)];
            csum += sc * isum;
            msum += m * xsum;
          }
          acc = std::fma(static_cast<float>(csum), d * dx, acc);
          acc = std::fma(static_cast<float>(msum), -dmin * dx, acc);
        } else {
          uint16_t hd, hm;
          std::memcpy(&hd, blk, 2);
          std::memcpy(&hm, blk + 2, 2);
          const float d = f16_to_f32(hd), dmin = f16_to_f32(hm);
          uint8_t q[kSuper];
          gguf_values(t, blk, q);
          for (int j = 0; j < 8; ++j) {
            const int64_t b = s * 8 + j;
            uint8_t sc, m;
            kquant_scale_min(j, blk + 4, &sc, &m);
            int32_t isum = 0;
            for (int v = 0; v < 32; ++v) isum += q[32 * j + v] * xq(b, tk, v);
            const size_t i = static_cast<size_t>(b * Tpad + tk);
            acc = std::fma(static_cast<float>(isum), (d * static_cast<float>(sc)) * x.d[i], acc);
            acc = std::fma(-(dmin * static_cast<float>(m)), x.dsum[i], acc);
          }
        }
      }
      y[tk * ldy + r] = acc;
    }
}

}  // namespace smoe
