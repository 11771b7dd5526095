// dot_kquant_sb-inl.h: the passes of dot_kquant_sb.cpp's kernel, compiled once per
// instruction set: dot_kquant_sb.cpp includes this file twice, in namespace SB_PASS_NS, with
// SB_PASS_TARGET the function target and SB_PASS_VNNI 1 (AVX-512 VNNI on 256-bit vectors:
// vpdpwssd adds a block's products times its scales to the sums in one instruction) or 0
// (AVX2: vpmaddwd, then vpaddd). The same bits either way: the sums are exact integers. No
// include guard, on purpose. Legend as in dot_kquant_sb.cpp.

namespace SB_PASS_NS {

// Rows per pass for NT tokens: R x NT int32 sums (at most 8, one reduction) stay in registers.
constexpr int sb_pass_rows(int nt) { return nt == 1 ? 8 : nt == 2 ? 4 : 2; }

// C[k] += the products of block jb of the super-block (k = i * NT + t).
template <class U, int NT, int jb>
__attribute__((target(SB_PASS_TARGET), always_inline)) inline void block_products(U& u, const int8_t* const* xq,
                                                                                   __m256i* c) {
  const __m256i q = u.template q<jb>(), sc = u.template sc<jb>();
  for (int t = 0; t < NT; ++t) {
    const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq[t] + 32 * jb));
#if SB_PASS_VNNI
    c[t] = _mm256_dpwssd_epi32(c[t], _mm256_maddubs_epi16(q, x), sc);
#else
    c[t] = _mm256_add_epi32(c[t], _mm256_madd_epi16(_mm256_maddubs_epi16(q, x), sc));
#endif
  }
}

// R rows of w (rb bytes apart) against NT tokens; y[t * ldy + i] for row i.
template <class U, int NT, int R>
__attribute__((target(SB_PASS_TARGET))) void sb_pass(const uint8_t* w, size_t rb, const Int8SuperVector* const* xs,
                                                float* y, int64_t ldy) {
  static_assert(R * NT <= 8);
  const int64_t S = xs[0]->D / kSuper;
  // Lane k = i * NT + t of each vector: row i's d (and -dmin) and token t's dx.
  alignas(32) float dl[8] = {}, ml[8] = {}, xl[8] = {};
  __m256 acc = _mm256_setzero_ps();
  for (int64_t s = 0; s < S; ++s) {
    const int8_t* xq[NT];
    const int16_t* xsum[NT];
    for (int t = 0; t < NT; ++t) {
      xq[t] = xs[t]->q.data() + s * kSuper;
      xsum[t] = xs[t]->sum16.data() + s * 16;
    }
    __m256i c[8];
    for (int k = R * NT; k < 8; ++k) c[k] = _mm256_setzero_si256();
    for (int i = 0; i < R; ++i) {
      const uint8_t* blk = w + static_cast<size_t>(i) * rb + static_cast<size_t>(s) * U::kBytes;
      int8dot::prefetch_unit(blk + R * rb, U::kBytes);
      U u(blk);
      __m256i* ci = c + i * NT;
      for (int t = 0; t < NT; ++t)
        ci[t] = U::kBias ? _mm256_madd_epi16(u.bias(), _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xsum[t])))
                         : _mm256_setzero_si256();
      block_products<U, NT, 0>(u, xq, ci);
      block_products<U, NT, 1>(u, xq, ci);
      block_products<U, NT, 2>(u, xq, ci);
      block_products<U, NT, 3>(u, xq, ci);
      block_products<U, NT, 4>(u, xq, ci);
      block_products<U, NT, 5>(u, xq, ci);
      block_products<U, NT, 6>(u, xq, ci);
      block_products<U, NT, 7>(u, xq, ci);
      const float d = U::d(blk), dmin = U::dmin(blk);
      for (int t = 0; t < NT; ++t) {
        dl[i * NT + t] = d;
        ml[i * NT + t] = -dmin;
        xl[i * NT + t] = xs[t]->d[static_cast<size_t>(s)];
      }
    }
    const __m256 dx = _mm256_load_ps(xl);
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum_each(c)), _mm256_mul_ps(_mm256_load_ps(dl), dx), acc);
    if constexpr (U::kMins) {
      for (int i = 0; i < R; ++i) {
        const __m256i m = U::mins(w + static_cast<size_t>(i) * rb + static_cast<size_t>(s) * U::kBytes);
        for (int t = 0; t < NT; ++t)
          c[i * NT + t] = _mm256_madd_epi16(m, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xsum[t])));
      }
      acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum_each(c)), _mm256_mul_ps(_mm256_load_ps(ml), dx), acc);
    }
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, acc);
  for (int i = 0; i < R; ++i)
    for (int t = 0; t < NT; ++t) y[t * ldy + i] = lanes[i * NT + t];
}

template <class U, int NT>
void sb_run(const uint8_t* w, size_t rb, int64_t n_rows, const Int8SuperVector* const* xs, float* y, int64_t ldy) {
  int8dot::for_row_passes<sb_pass_rows(NT)>(n_rows, [&](auto rows, int64_t r) {
    sb_pass<U, NT, rows()>(w + static_cast<size_t>(r) * rb, rb, xs, y + r, ldy);
  });
}

}  // namespace SB_PASS_NS
