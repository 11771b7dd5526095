// dot_int8_decode-inl.h: the int8-activation decode kernels for q8_0 and q4_0 rows in the
// GGUF layout (gemm_int8.h: dot_rows_int8_tokens), compiled once per instruction set:
// gemm_int8.cpp includes this file twice, in namespace SMOE_DOT_NS, with SMOE_DOT_TARGET the
// function target and SMOE_DOT_VNNI 1 (AVX-512 VNNI on 256-bit vectors: vpdpbusd) or 0
// (AVX2: vpmaddubsw, then vpmaddwd with ones). No include guard, on purpose. Both give the
// same bits: every vpmaddubsw operand pair here is an unsigned weight of at most 128 (q8_0 as
// |w| with x taking w's sign, q4_0's nibbles) times an activation of at most 127 in
// magnitude, so the 16-bit pair sums (at most 2 * 128 * 127 = 32512) never saturate and each
// 32-bit lane gets the exact sum of its 4 products. (The K-quants' rows take dot_kquant_sb.h.)
// Legend: NT tokens of a call, R rows of a pass, b 32-value block.

namespace SMOE_DOT_NS {

// acc + the sums of 4 products u * s (u unsigned bytes, s signed bytes) per 32-bit lane.
__attribute__((target(SMOE_DOT_TARGET), always_inline)) inline __m256i dot4(__m256i acc, __m256i u, __m256i s) {
#if SMOE_DOT_VNNI
  return _mm256_dpbusd_epi32(acc, u, s);
#else
  return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
#endif
}

// Rows per pass for NT tokens: R x NT accumulators must fit the registers (AVX2 has 16).
constexpr int pass_rows(int nt) { return SMOE_DOT_VNNI || nt <= 2 ? int8dot::kPassRows : 2; }

// For NT tokens at once: acc[t] + (block b of `row` . block b of x_t) per 32-bit lane, as
// dot_int8_ref_row computes it for each token. The weight block is loaded once for all NT.
template <bool kQ8, int NT>
__attribute__((target(SMOE_DOT_TARGET), always_inline))
inline void block_terms(const uint8_t* row, const Int8Vector* const* xs, int64_t b, __m256* acc) {
  uint16_t h;
  __m256i w;  // q8_0: the signed weights; q4_0: the nibbles (weights + 8)
  if constexpr (kQ8) {
    const uint8_t* blk = row + static_cast<size_t>(b) * sizeof(BlockQ8_0);
    std::memcpy(&h, blk, 2);
    w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 2));
  } else {
    const uint8_t* blk = row + static_cast<size_t>(b) * sizeof(BlockQ4_0);
    std::memcpy(&h, blk, 2);
    const __m128i m4 = _mm_set1_epi8(15);
    const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 2));
    w = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(bytes, 4), m4), _mm_and_si128(bytes, m4));
  }
  // F16C converts the weight scale in one instruction (exactly, as f16_to_f32_fast does).
  const float dw = _cvtsh_ss(h);
  const __m256i wabs = kQ8 ? _mm256_abs_epi8(w) : w;
  for (int t = 0; t < NT; ++t) {
    const Int8Vector& x = *xs[t];
    const __m256i xq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(&x.q[static_cast<size_t>(b * kBlock)]));
    __m256i isum;
    if constexpr (kQ8) {
      // |w| (unsigned) times x with w's sign: the same products as w * x.
      isum = dot4(_mm256_setzero_si256(), wabs, _mm256_sign_epi8(xq, w));
    } else {
      // (nibble - 8) * x = nibble * x - 8 * x: start from -8 * (lane sums of x).
      const __m256i corr = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(&x.neg8_lane_sums[static_cast<size_t>(b * 8)]));
      isum = dot4(corr, wabs, xq);
    }
    const __m256 scale = _mm256_set1_ps(dw * x.d[static_cast<size_t>(b)]);
    acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), scale, acc[t]);
  }
}

// R rows of w (rb bytes apart) against NT token vectors; y[t * ldy + i] for row i (rows in
// passes, see dot_int8_rows.h).
template <bool kQ8, int NT, int R>
__attribute__((target(SMOE_DOT_TARGET)))
void dot_int8_pass(const uint8_t* w, size_t rb, const Int8Vector* const* xs, float* y, int64_t ldy) {
  constexpr size_t bb = kQ8 ? sizeof(BlockQ8_0) : sizeof(BlockQ4_0);
  const int64_t nb = xs[0]->D / kBlock;
  __m256 acc[R][NT];
  for (int i = 0; i < R; ++i)
    for (int t = 0; t < NT; ++t) acc[i][t] = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; ++b)
    for (int i = 0; i < R; ++i) {
      const uint8_t* row = w + static_cast<size_t>(i) * rb;
      // Blocks are under 64 bytes: the one that starts in a line's first bb bytes fetches it.
      const uint8_t* next = row + R * rb + static_cast<size_t>(b) * bb;
      if ((reinterpret_cast<uintptr_t>(next) & 63) < bb) _mm_prefetch(reinterpret_cast<const char*>(next), _MM_HINT_T1);
      block_terms<kQ8, NT>(row, xs, b, acc[i]);
    }
  for (int i = 0; i < R; ++i)
    for (int t = 0; t < NT; ++t) {
      alignas(32) float lanes[8];
      _mm256_store_ps(lanes, acc[i][t]);
      y[t * ldy + i] = reduce_lanes(lanes);
    }
}

// Rows of w against NT token vectors; y[t * ldy + r].
template <bool kQ8, int NT>
void dot_int8_run(const uint8_t* w, int64_t n_rows, const Int8Vector* const* xs, float* y, int64_t ldy) {
  const size_t rb = row_bytes(kQ8 ? DType::Q8_0 : DType::Q4_0, xs[0]->D);
  for_row_passes<pass_rows(NT)>(n_rows, [&](auto rows, int64_t r) {
    dot_int8_pass<kQ8, NT, rows()>(w + static_cast<size_t>(r) * rb, rb, xs, y + r, ldy);
  });
}

// Rows of w of type t (q8_0 or q4_0) against NT token vectors.
template <int NT>
void dot_rows_run(DType t, const uint8_t* w, int64_t n_rows, const Int8Vector* const* xs, float* y, int64_t ldy) {
  if (t == DType::Q8_0) return dot_int8_run<true, NT>(w, n_rows, xs, y, ldy);
  return dot_int8_run<false, NT>(w, n_rows, xs, y, ldy);
}

}  // namespace SMOE_DOT_NS
