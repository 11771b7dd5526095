// gemm_int8_avx2.cpp: batches of q8_0/q4_0 rows (GGUF layout) against int8 activations on
// AVX2, for CPUs without AVX-512 VNNI (gemm_int8.h: quantize_quads, gemm_int8_rows_avx2).
// Legend: T tokens, quad 4 tokens k = 0..3 (pairs p = k / 2), b 32-value block, nb blocks per
// row, R rows of a pass, NQ quads of a pass.
//
// One 256-bit vector holds 16 values of two tokens (a pair), so each weight block is loaded
// once, its 16-value halves broadcast to both 128-bit lanes, and meets two tokens per
// instruction. The int32 sums of 2 rows x 2 pairs are folded by two vphaddd into one vector
// of 8 exact block sums, (row, token) per lane, so the float work (the block's scale
// d_w * d_x and the multiply-add) is one instruction for 8 row-token products where the
// decode kernels spend it per row and token. Arithmetic: per block the exact int32 dot, then
// acc = fma(isum, d_w * d_x, acc) in block order: gemm_int8_panel_ref's, bit for bit.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "kernels/cpu_features.h"
#include "kernels/gemm_int8.h"

namespace smoe {

namespace {

constexpr int64_t kBlock = 32;

// Lane of token k (0..3 of its quad) and row r (0..1 of a pass) in the folded sums.
constexpr int quad_lane(int k, int r) { return (k % 2) * 4 + (k / 2) * 2 + r; }

// R rows of w (rb bytes apart) against quads [q0, q0 + NQ) of x; y[t * ldy + i] for row i.
template <bool kQ8, int R, int NQ>
__attribute__((target("avx2,fma,f16c"))) void quad_pass(const uint8_t* w, size_t rb, const Int8QuadActivations& x,
                                                         int64_t q0, float* y, int64_t ldy) {
  constexpr size_t bb = kQ8 ? sizeof(BlockQ8_0) : sizeof(BlockQ4_0);
  const int64_t nb = x.D / kBlock;
  const __m256i ones = _mm256_set1_epi16(1), m4 = _mm256_set1_epi8(15);
  __m256 acc[NQ];
  for (int qd = 0; qd < NQ; ++qd) acc[qd] = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    // Per row: the block's values 0-15 and 16-31 in both 128-bit lanes (q8_0: their
    // magnitudes, the signs moved to x), and its scale.
    __m256i lo[2], hi[2], slo[2], shi[2];
    float dw[2] = {0.f, 0.f};
    for (int i = 0; i < R; ++i) {
      const uint8_t* blk = w + static_cast<size_t>(i) * rb + static_cast<size_t>(b) * bb;
      uint16_t h;
      std::memcpy(&h, blk, 2);
      dw[i] = _cvtsh_ss(h);
      if constexpr (kQ8) {
        slo[i] = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 2)));
        shi[i] = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 18)));
        lo[i] = _mm256_abs_epi8(slo[i]);
        hi[i] = _mm256_abs_epi8(shi[i]);
      } else {
        const __m256i v = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 2)));
        lo[i] = _mm256_and_si256(v, m4);
        hi[i] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
      }
    }
    const __m256 dwv = _mm256_unpacklo_ps(_mm256_set1_ps(dw[0]), _mm256_set1_ps(dw[1]));
    for (int qd = 0; qd < NQ; ++qd) {
      const size_t at = static_cast<size_t>((q0 + qd) * nb + b);
      const int8_t* xb = x.q.data() + at * 128;
      __m256i s[4];  // (row 0, pair 0), (row 1, pair 0), (row 0, pair 1), (row 1, pair 1)
      for (int p = 0; p < 2; ++p)
        for (int i = 0; i < 2; ++i) {
          if (i >= R) {
            s[2 * p + i] = _mm256_setzero_si256();
            continue;
          }
          const __m256i xl = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xb + 64 * p));
          const __m256i xh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xb + 64 * p + 32));
          if constexpr (kQ8) {
            // Pair sums of |w| x (at most 2 x 128 x 127) fit 16 bits; two blocks' halves do not.
            s[2 * p + i] = _mm256_add_epi32(
                _mm256_madd_epi16(_mm256_maddubs_epi16(lo[i], _mm256_sign_epi8(xl, slo[i])), ones),
                _mm256_madd_epi16(_mm256_maddubs_epi16(hi[i], _mm256_sign_epi8(xh, shi[i])), ones));
          } else {
            // Nibbles (w + 8) times x, both halves in 16 bits (at most 4 x 15 x 127).
            const __m256i v = _mm256_add_epi16(_mm256_maddubs_epi16(lo[i], xl), _mm256_maddubs_epi16(hi[i], xh));
            s[2 * p + i] = _mm256_madd_epi16(v, ones);
          }
        }
      __m256i sums = _mm256_hadd_epi32(_mm256_hadd_epi32(s[0], s[1]), _mm256_hadd_epi32(s[2], s[3]));
      // q4_0's offset: -8 x each token's block sum of x, per (row, token) lane.
      if constexpr (!kQ8)
        sums = _mm256_add_epi32(sums, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.corr.data() + at * 8)));
      const __m256 dx = _mm256_loadu_ps(x.dx.data() + at * 8);
      acc[qd] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), _mm256_mul_ps(dwv, dx), acc[qd]);
    }
  }
  for (int qd = 0; qd < NQ; ++qd) {
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, acc[qd]);
    for (int k = 0; k < 4; ++k) {
      const int64_t t = 4 * (q0 + qd) + k;
      if (t >= x.T) break;
      for (int i = 0; i < R; ++i) y[t * ldy + i] = lanes[quad_lane(k, i)];
    }
  }
}

template <bool kQ8>
void quad_run(const uint8_t* w, int64_t n_rows, const Int8QuadActivations& x, float* y, int64_t ldy) {
  const size_t rb = row_bytes(kQ8 ? DType::Q8_0 : DType::Q4_0, x.D);
  int64_t qd = 0;
  for (; qd + 2 <= x.quads; qd += 2) {
    int64_t r = 0;
    for (; r + 2 <= n_rows; r += 2) quad_pass<kQ8, 2, 2>(w + r * rb, rb, x, qd, y + r, ldy);
    if (r < n_rows) quad_pass<kQ8, 1, 2>(w + r * rb, rb, x, qd, y + r, ldy);
  }
  if (qd < x.quads) {
    int64_t r = 0;
    for (; r + 2 <= n_rows; r += 2) quad_pass<kQ8, 2, 1>(w + r * rb, rb, x, qd, y + r, ldy);
    if (r < n_rows) quad_pass<kQ8, 1, 1>(w + r * rb, rb, x, qd, y + r, ldy);
  }
}

}  // namespace

void quantize_quads(const float* x, int64_t T, int64_t D, Int8QuadActivations& out) {
  SMOE_CHECK(T >= 0 && D % kBlock == 0, "int8 activations: [", T, ", ", D,
             "] (expected a row length that is a whole number of 32-value blocks)");
  const int64_t nb = D / kBlock;
  out.T = T;
  out.D = D;
  out.quads = (T + 3) / 4;
  const size_t nq = static_cast<size_t>(out.quads * nb);
  if (out.q.size() < nq * 128) out.q.resize(nq * 128);
  if (out.dx.size() < nq * 8) out.dx.resize(nq * 8);
  if (out.corr.size() < nq * 8) out.corr.resize(nq * 8);
  if (T % 4 != 0) {  // the last quad's padding tokens: zero values, scales and sums
    const size_t last = static_cast<size_t>((out.quads - 1) * nb);
    std::fill(out.q.begin() + static_cast<ptrdiff_t>(last * 128), out.q.begin() + static_cast<ptrdiff_t>(nq * 128), 0);
    std::fill(out.dx.begin() + static_cast<ptrdiff_t>(last * 8), out.dx.begin() + static_cast<ptrdiff_t>(nq * 8), 0.f);
    std::fill(out.corr.begin() + static_cast<ptrdiff_t>(last * 8), out.corr.begin() + static_cast<ptrdiff_t>(nq * 8), 0);
  }
  thread_local Int8Vector v;
  for (int64_t t = 0; t < T; ++t) {
    quantize_vector(x + t * D, D, v);
    const int64_t quad = t / 4;
    const int k = static_cast<int>(t % 4), p = k / 2, side = k % 2;
    for (int64_t b = 0; b < nb; ++b) {
      const size_t at = static_cast<size_t>(quad * nb + b);
      int8_t* xb = out.q.data() + at * 128 + 64 * p + 16 * side;
      std::memcpy(xb, v.q.data() + b * kBlock, 16);            // values 0-15
      std::memcpy(xb + 32, v.q.data() + b * kBlock + 16, 16);  // values 16-31
      int32_t neg8 = 0;  // -8 x the block's sum of x_q
      for (int l = 0; l < 8; ++l) neg8 += v.neg8_lane_sums[static_cast<size_t>(b * 8 + l)];
      for (int r = 0; r < 2; ++r) {
        out.dx[at * 8 + static_cast<size_t>(quad_lane(k, r))] = v.d[static_cast<size_t>(b)];
        out.corr[at * 8 + static_cast<size_t>(quad_lane(k, r))] = neg8;
      }
    }
  }
}

void gemm_int8_rows_avx2(DType t, const uint8_t* w, int64_t n_rows, const Int8QuadActivations& x, float* y,
                         int64_t ldy) {
  SMOE_CHECK(int8_gemm_supports(t) && avx2_allowed(), "int8 AVX2 batch: ", dtype_name(t),
             " rows (expected q8_0 or q4_0 on a CPU with AVX2)");
  if (t == DType::Q8_0) quad_run<true>(w, n_rows, x, y, ldy);
  else quad_run<false>(w, n_rows, x, y, ldy);
}

}  // namespace smoe
