// gemm_x16_simd.h: AVX-512 pieces the x16 kernel files share (gemm_x16.cpp for q8_0/q4_0,
// gemm_x16_kquant.cpp for the K-quants, gemm_amx_kquant.cpp for their AMX batches); included by
// those files only.
// Legend: NT tokens of a pass, Tpad the activations' token stride, xb one 32-value block of
// activations laid out [8 groups][Tpad][4 values] (see Int8Activations).
#pragma once
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "core/dtype.h"

namespace smoe::x16 {

// How far ahead of the block being multiplied the kernels prefetch weights, and into which
// cache. A group's blocks are one sequential stream, yet with the hardware prefetcher alone
// decode read 8 expert matrices at 65-75% of the machine's read rate (AMD EPYC, 2 threads);
// prefetching 512-1536 bytes ahead into L1 gave 76-86% there. On a 2.3 GHz Xeon (Emerald
// Rapids) L1 prefetches 1 KB ahead read 2 expert-streaming threads at 17-22 GB/s, 4 KB ahead
// into L2 at 18-27 (the same sitting, alternating; 2 KB and 8 KB, L1 or L2, in between).
// Decode passes (1-3 tokens) prefetch each line twice: into L2 4 KB ahead and into L3 16 KB
// ahead. On the Xeon (2 threads, 1.2 GB of expert-shaped matrices, one token, both variants
// alternating in one process) the second, far prefetch read 2-12% faster by type than the
// L2 one alone, and the model's tg rose 5-17% (README); a lone L2 prefetch at 16 KB ran 7%
// slower, the far one at 8 KB 4% slower, at 24 or 32 KB the same. Batch passes keep the one
// prefetch: with both, q8_0 at 64 tokens ran 7% slower.
constexpr size_t kPrefetchBytes = 4096, kFarPrefetchBytes = 16384;
constexpr int kFarPrefetchMaxTokens = 3;

// Prefetches the `bytes` bytes (whole cache lines) that lie kPrefetchBytes past p, and for
// passes of NT <= kFarPrefetchMaxTokens tokens those kFarPrefetchBytes past p.
template <int NT>
__attribute__((always_inline)) inline void prefetch_ahead(const uint8_t* p, size_t bytes) {
  for (size_t o = 0; o < bytes; o += 64) {
    _mm_prefetch(reinterpret_cast<const char*>(p + kPrefetchBytes + o), _MM_HINT_T1);
    if constexpr (NT <= kFarPrefetchMaxTokens)
      _mm_prefetch(reinterpret_cast<const char*>(p + kFarPrefetchBytes + o), _MM_HINT_T2);
  }
}

// A 64-byte weight vector loaded once into a register. Used for vectors that feed several
// instructions (low and high nibbles, bit planes): without the empty asm GCC folds the load
// into each of them, and the extra loads compete with the activation broadcasts for the
// load ports.
__attribute__((target("avx512f"), always_inline)) inline __m512i load_once(const uint8_t* p) {
  __m512i v = _mm512_loadu_si512(p);
  asm("" : "+v"(v));
  return v;
}

// 4 int8 values as one int32 broadcast to every lane.
__attribute__((target("avx512f"), always_inline)) inline __m512i bcast4(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}

// The nibble vectors of NG row groups for one 32-value block, unpacked to lo[gi] (value
// group g: values 4g..4g+3 of the group's 16 rows) and hi[gi] (group g + 4):
// s[gi][c_lo][t] += lo[gi] . x_t(g), s[gi][c_hi][t] += hi[gi] . x_t(g + 4). Each
// activation broadcast feeds all NG groups. c_lo and c_hi may be the same chain.
template <int NT, int NG, int C>
__attribute__((target("avx512f,avx512bw,avx512vnni"), always_inline))
inline void dot_nibble_planes(__m512i (&s)[NG][C][NT], int c_lo, int c_hi, const __m512i* lo, const __m512i* hi,
                              const int8_t* xb, int g, int64_t Tpad) {
  for (int t = 0; t < NT; ++t) {
    const __m512i xl = bcast4(xb + 4 * (g * Tpad + t)), xh = bcast4(xb + 4 * ((g + 4) * Tpad + t));
    for (int gi = 0; gi < NG; ++gi) {
      s[gi][c_lo][t] = _mm512_dpbusd_epi32(s[gi][c_lo][t], lo[gi], xl);
      s[gi][c_hi][t] = _mm512_dpbusd_epi32(s[gi][c_hi][t], hi[gi], xh);
    }
  }
}

// ---- K-quant layout, scales and high bits of the repacked layout (gemm_x16.h), shared with
// the AMX kernels (gemm_amx_kquant.cpp) ----

// Byte offsets inside one super-block of a 16-row group (see gemm_x16.h): 32-value block jb
// starts at values + block * jb with its 256 bytes of nibbles, then its high bits (q2_K/q3_K:
// its 128 bytes of 2-bit planes, then q3_K's 64 bytes of high-bit masks).
struct KLayout {
  size_t bytes;   // = 16 * GGUF block bytes
  size_t values;  // offset of block 0
  size_t block;   // bytes per 32-value block
};
constexpr KLayout layout(DType t) {
  return t == DType::Q2_K   ? KLayout{16 * sizeof(BlockQ2_K), 320, 128}
         : t == DType::Q3_K ? KLayout{16 * sizeof(BlockQ3_K), 224, 192}
         : t == DType::Q4_K ? KLayout{16 * sizeof(BlockQ4_K), 256, 256}
         : t == DType::Q5_K ? KLayout{16 * sizeof(BlockQ5_K), 256, 320}
                            : KLayout{16 * sizeof(BlockQ6_K), 288, 384};
}
static_assert(layout(DType::Q2_K).values + 8 * layout(DType::Q2_K).block == layout(DType::Q2_K).bytes);
static_assert(layout(DType::Q3_K).values + 8 * layout(DType::Q3_K).block == layout(DType::Q3_K).bytes);

// Bits 2f..2f+1 of every byte moved to bits 4..5 (q6_K high bits, field f of a vector).
__attribute__((target("avx512f,avx512bw"), always_inline)) inline __m512i high2(__m512i h, int f) {
  const __m512i s = f == 0 ? _mm512_slli_epi16(h, 4) : f == 1 ? _mm512_slli_epi16(h, 2) : f == 2 ? h : _mm512_srli_epi16(h, 2);
  return _mm512_and_si512(s, _mm512_set1_epi8(0x30));
}
// GFNI affine transform of every byte of v by the bit matrix a (vgf2p8affineqb, no constant):
// bit i of a result byte is the parity of byte 7 - i of a AND the source byte. Inline
// assembly, so the kernels keep their AVX-512 VNNI target and also build for CPUs without
// GFNI; callers choose the GFNI instantiation at run time (x16_gfni_active).
__attribute__((target("avx512f"), always_inline)) inline __m512i gf2_affine(__m512i v, uint64_t a) {
  const __m512i m = _mm512_set1_epi64(static_cast<long long>(a));
  __m512i r;
  asm("vgf2p8affineqb $0, %[m], %[v], %[r]" : [r] "=v"(r) : [m] "v"(m), [v] "v"(v));
  return r;
}
// The matrix that moves bits s and s + 1 of each byte to bits d and d + 1 and clears the rest.
constexpr uint64_t bit_pair_move(int s, int d) {
  return (uint64_t{1} << s) << (8 * (7 - d)) | (uint64_t{2} << s) << (8 * (6 - d));
}
// high2 with one affine transform where kGfni (fields 0, 1 and 3 otherwise take a shift and
// an and; field 2 an and either way).
template <bool kGfni>
__attribute__((target("avx512f,avx512bw"), always_inline)) inline __m512i high2_at(__m512i h, int f) {
  if (kGfni && f != 2) return gf2_affine(h, bit_pair_move(2 * f, 4));
  return high2(h, f);
}

// q + add on the bytes whose bit is set in the 64-bit mask at p (q3_K and q5_K high bits:
// bit 4i + c of a mask for byte 4i + c of a value group). The mask is loaded straight into
// a mask register: through a general register (memcpy, _cvtu64_mask64) GCC adds a kmovq
// from it, one more vector-port uop per value group. (GCC's _load_mask64 takes a non-const
// pointer; it only reads.)
__attribute__((target("avx512f,avx512bw"), always_inline))
inline __m512i add_masked(__m512i q, const uint8_t* p, __m512i add) {
  const __mmask64 m = _load_mask64(reinterpret_cast<__mmask64*>(const_cast<uint8_t*>(p)));
  return _mm512_mask_add_epi8(q, m, q, add);
}

// The 6-bit scales and mins of the 8 sub-blocks of a q4_K/q5_K super-block for its 16 rows,
// from the transposed packed bytes B[k] = sb + 64 + 16k (k = 0..11, see kquant_scale_min):
// sc[16 j + i] and mn[16 j + i] for sub-block j of row i. Sub-blocks 0-3 hold their 6 bits
// in B[j] (scales) and B[j + 4] (mins); 4-7 take their low 4 bits from B[j + 4]'s low
// (scales) or high (mins) nibble and their top 2 bits from bits 6-7 of B[j - 4] (scales)
// or B[j] (mins). Decoded once per super-block with three 64-byte loads, instead of per
// sub-block with 128-bit ones.
__attribute__((target("avx512f,avx512bw"), always_inline))
inline void kquant_scales_mins(const uint8_t* sb, uint8_t* sc, uint8_t* mn) {
  const __m512i b03 = _mm512_loadu_si512(sb + 64), b47 = _mm512_loadu_si512(sb + 128);
  const __m512i b811 = _mm512_loadu_si512(sb + 192);
  const __m512i m6 = _mm512_set1_epi8(63), m4 = _mm512_set1_epi8(15), m30 = _mm512_set1_epi8(0x30);
  _mm512_storeu_si512(sc, _mm512_and_si512(b03, m6));
  _mm512_storeu_si512(mn, _mm512_and_si512(b47, m6));
  // (a & m4) | ((b >> 2) & m30) as one ternary-logic op per vector: bits of m30 from b >> 2.
  _mm512_storeu_si512(sc + 64, _mm512_ternarylogic_epi64(_mm512_and_si512(b811, m4), _mm512_srli_epi16(b03, 2), m30, 0xF8));
  _mm512_storeu_si512(mn + 64, _mm512_ternarylogic_epi64(_mm512_and_si512(_mm512_srli_epi16(b811, 4), m4),
                                                         _mm512_srli_epi16(b47, 2), m30, 0xF8));
}

// The 16 q3_K scales of the 16 rows, sc - 32 as int8 [16 sub-blocks][16 rows], from the
// transposed packed bytes B[k] = sb + 32 + 16k (see q3k_scale): sub-blocks 4a..4a+3 take
// their low 4 bits from B[0..3] (a = 0, 2: low / high nibbles) or B[4..7] (a = 1, 3) and
// their top 2 bits from bits 2a, 2a + 1 of B[8..11].
__attribute__((target("avx512f,avx512bw"), always_inline))
inline void q3k_scales(const uint8_t* sb, int8_t* sc) {
  const __m512i b03 = _mm512_loadu_si512(sb + 32), b47 = _mm512_loadu_si512(sb + 96);
  const __m512i b811 = _mm512_loadu_si512(sb + 160), m4 = _mm512_set1_epi8(15), c32 = _mm512_set1_epi8(32);
  for (int a = 0; a < 4; ++a) {
    const __m512i src = a % 2 ? b47 : b03;
    const __m512i lo = _mm512_and_si512(a < 2 ? src : _mm512_srli_epi16(src, 4), m4);
    _mm512_storeu_si512(sc + 64 * a, _mm512_sub_epi8(_mm512_or_si512(lo, high2(b811, a)), c32));
  }
}

}  // namespace smoe::x16
