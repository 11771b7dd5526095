// gemm_x16_simd.h: AVX-512 VNNI pieces the two x16 kernel files share (gemm_x16.cpp for
// q8_0/q4_0, gemm_x16_kquant.cpp for the K-quants); included by those two files only.
// Legend: NT tokens of a pass, Tpad the activations' token stride, xb one 32-value block of
// activations laid out [8 groups][Tpad][4 values] (see Int8Activations).
#pragma once
#include <immintrin.h>

#include <cstdint>
#include <cstring>

namespace smoe::x16 {

// How far ahead of the block being multiplied the kernels prefetch weights, and into which
// cache. A group's blocks are one sequential stream, yet with the hardware prefetcher alone
// decode read 8 expert matrices at 65-75% of the machine's read rate (AMD EPYC, 2 threads);
// prefetching 512-1536 bytes ahead into L1 gave 76-86% there. On a 2.3 GHz Xeon (Emerald
// Rapids) L1 prefetches 1 KB ahead read 2 expert-streaming threads at 17-22 GB/s, 4 KB ahead
// into L2 at 18-27 (the same sitting, alternating; 2 KB and 8 KB, L1 or L2, in between).
constexpr size_t kPrefetchBytes = 4096;

// Prefetches the `bytes` bytes (whole cache lines) that lie kPrefetchBytes past p.
__attribute__((always_inline)) inline void prefetch_ahead(const uint8_t* p, size_t bytes) {
  for (size_t o = 0; o < bytes; o += 64) _mm_prefetch(reinterpret_cast<const char*>(p + kPrefetchBytes + o), _MM_HINT_T1);
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

}  // namespace smoe::x16
