// dot_int8_decode-inl.h: the int8-activation decode kernels for q8_0, q4_0, q4_K, q5_K and
// q6_K rows in the GGUF layout (gemm_int8.h: dot_rows_int8_tokens), compiled once per
// instruction set: gemm_int8.cpp includes this file twice, in namespace SMOE_DOT_NS, with
// SMOE_DOT_TARGET the function target and SMOE_DOT_VNNI 1 (AVX-512 VNNI on 256-bit vectors:
// vpdpbusd) or 0 (AVX2: vpmaddubsw, then vpmaddwd with ones; q8_0 and q4_0 only, as CPUs
// without VNNI take the K-quants on dot_kquant_sb.h). No include guard, on purpose.
// Both give the same bits: every vpmaddubsw operand pair here is an unsigned weight of at
// most 128 (q8_0 as |w| with x taking w's sign, nibbles, q5_K 0..31, q6_K 0..63) times an
// activation of at most 127 in magnitude, so the 16-bit pair sums (at most 2 * 128 * 127 =
// 32512) never saturate and each 32-bit lane gets the exact sum of its 4 products.
// Legend: NT tokens of a call, R rows of a pass, b 32-value block, s 256-value super-block.

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

template <bool kHigh, int NT>
__attribute__((target(SMOE_DOT_TARGET), always_inline))
inline void k45_superblock_terms(const uint8_t* blk, const Int8Vector* const* xs, int64_t s, __m256* acc, __m256* macc) {
  const __m256i one = _mm256_set1_epi8(1);
  const __m256i m4 = _mm256_set1_epi8(15);
  uint16_t hd, hm;
  std::memcpy(&hd, blk, 2);
  std::memcpy(&hm, blk + 2, 2);
  const __m128i scmn = int8dot::k45_scales_mins(blk);  // the 8 scales, then the 8 mins
  const __m256 dscv = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(scmn)), _mm256_set1_ps(_cvtsh_ss(hd)));
  const __m256 dmv =
      _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_unpackhi_epi64(scmn, scmn))), _mm256_set1_ps(_cvtsh_ss(hm)));
  __m256 scale[NT];  // (d * sc_j) * dx_j for the 8 sub-blocks
  for (int t = 0; t < NT; ++t) {
    const Int8Vector& x = *xs[t];
    scale[t] = _mm256_mul_ps(dscv, _mm256_loadu_ps(&x.d[static_cast<size_t>(s * 8)]));
    macc[t] = _mm256_fmadd_ps(dmv, _mm256_loadu_ps(&x.dsum[static_cast<size_t>(s * 8)]), macc[t]);
  }
  for (int c = 0; c < 4; ++c) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + (kHigh ? 48 : 16) + 32 * c));
    __m256i nib[2] = {_mm256_and_si256(v, m4), _mm256_and_si256(_mm256_srli_epi16(v, 4), m4)};
    if constexpr (kHigh) {
      // Bits 2c and 2c+1 of each qh byte (16-bit shifts, then one bit per byte kept).
      const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 16));
      for (int h = 0; h < 2; ++h)
        nib[h] = _mm256_or_si256(nib[h], _mm256_slli_epi16(
            _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * c + h)), one), 4));
    }
    for (int h = 0; h < 2; ++h) {
      const int j = 2 * c + h;
      const int64_t bx = s * 8 + j;
      for (int t = 0; t < NT; ++t) {
        const __m256i xq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(&xs[t]->q[static_cast<size_t>(bx * kBlock)]));
        const __m256i isum = dot4(_mm256_setzero_si256(), nib[h], xq);
        const __m256 sj = _mm256_permutevar8x32_ps(scale[t], _mm256_set1_epi32(j));
        acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), sj, acc[t]);
      }
    }
  }
}

// R rows of w (rb bytes apart) against NT token vectors; y[t * ldy + i] for row i.
template <bool kHigh, int NT, int R>
__attribute__((target(SMOE_DOT_TARGET)))
void dot_k45_pass(const uint8_t* w, size_t rb, const Int8Vector* const* xs, float* y, int64_t ldy) {
  constexpr size_t bb = kHigh ? sizeof(BlockQ5_K) : sizeof(BlockQ4_K);
  __m256 acc[R][NT], macc[R][NT];
  for (int i = 0; i < R; ++i)
    for (int t = 0; t < NT; ++t) acc[i][t] = macc[i][t] = _mm256_setzero_ps();
  for (int64_t s = 0; s < xs[0]->D / 256; ++s)
    for (int i = 0; i < R; ++i) {
      const uint8_t* blk = w + static_cast<size_t>(i) * rb + static_cast<size_t>(s) * bb;
      prefetch_unit(blk + R * rb, bb);
      k45_superblock_terms<kHigh, NT>(blk, xs, s, acc[i], macc[i]);
    }
  for (int i = 0; i < R; ++i)
    for (int t = 0; t < NT; ++t) {
      alignas(32) float lanes[8], mlanes[8];
      _mm256_store_ps(lanes, acc[i][t]);
      _mm256_store_ps(mlanes, macc[i][t]);
      y[t * ldy + i] = reduce_lanes(lanes) - reduce_lanes(mlanes);
    }
}

template <bool kHigh, int NT>
void dot_k45_run(const uint8_t* w, int64_t n_rows, const Int8Vector* const* xs, float* y, int64_t ldy) {
  const size_t rb = row_bytes(kHigh ? DType::Q5_K : DType::Q4_K, xs[0]->D);
  for_row_passes<pass_rows(NT)>(n_rows, [&](auto rows, int64_t r) {
    dot_k45_pass<kHigh, NT, rows()>(w + static_cast<size_t>(r) * rb, rb, xs, y + r, ldy);
  });
}

// Super-block s (at blk) of one row against NT token vectors: acc[t] as above.
template <int NT>
__attribute__((target(SMOE_DOT_TARGET), always_inline))
inline void q6k_superblock_terms(const uint8_t* blk, const Int8Vector* const* xs, int64_t s, __m256* acc) {
  const __m256i m4 = _mm256_set1_epi8(15), m2 = _mm256_set1_epi8(3);
  uint16_t hd;
  std::memcpy(&hd, blk + 208, 2);
  const float d = _cvtsh_ss(hd);
  const auto* sc = reinterpret_cast<const int8_t*>(blk + 192);
  for (int h = 0; h < 2; ++h) {
    const __m256i ql0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 64 * h));
    const __m256i ql1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 64 * h + 32));
    const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 128 + 32 * h));
    const __m256i q[4] = {
        _mm256_or_si256(_mm256_and_si256(ql0, m4), _mm256_slli_epi16(_mm256_and_si256(qh, m2), 4)),
        _mm256_or_si256(_mm256_and_si256(ql1, m4),
                        _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m2), 4)),
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                        _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), m2), 4)),
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                        _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), m2), 4))};
    for (int k = 0; k < 4; ++k) {
      const int jb = 4 * h + k;
      const int64_t bx = s * 8 + jb;
      const float s0 = d * static_cast<float>(sc[2 * jb]), s1 = d * static_cast<float>(sc[2 * jb + 1]);
      for (int t = 0; t < NT; ++t) {
        const Int8Vector& x = *xs[t];
        const float dx = x.d[static_cast<size_t>(bx)];
        const __m256i xq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(&x.q[static_cast<size_t>(bx * kBlock)]));
        const __m256i corr = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(&x.neg32_lane_sums[static_cast<size_t>(bx * 8)]));
        const __m256i isum = dot4(corr, q[k], xq);
        const __m256 scale = _mm256_set_m128(_mm_set1_ps(s1 * dx), _mm_set1_ps(s0 * dx));
        acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), scale, acc[t]);
      }
    }
  }
}

// R rows of w (rb bytes apart) against NT token vectors; y[t * ldy + i] for row i.
template <int NT, int R>
__attribute__((target(SMOE_DOT_TARGET)))
void dot_q6k_pass(const uint8_t* w, size_t rb, const Int8Vector* const* xs, float* y, int64_t ldy) {
  __m256 acc[R][NT];
  for (int i = 0; i < R; ++i)
    for (int t = 0; t < NT; ++t) acc[i][t] = _mm256_setzero_ps();
  for (int64_t s = 0; s < xs[0]->D / 256; ++s)
    for (int i = 0; i < R; ++i) {
      const uint8_t* blk = w + static_cast<size_t>(i) * rb + static_cast<size_t>(s) * sizeof(BlockQ6_K);
      prefetch_unit(blk + R * rb, sizeof(BlockQ6_K));
      q6k_superblock_terms<NT>(blk, xs, s, acc[i]);
    }
  for (int i = 0; i < R; ++i)
    for (int t = 0; t < NT; ++t) {
      alignas(32) float lanes[8];
      _mm256_store_ps(lanes, acc[i][t]);
      y[t * ldy + i] = reduce_lanes(lanes);
    }
}

template <int NT>
void dot_q6k_run(const uint8_t* w, int64_t n_rows, const Int8Vector* const* xs, float* y, int64_t ldy) {
  const size_t rb = row_bytes(DType::Q6_K, xs[0]->D);
  for_row_passes<pass_rows(NT)>(n_rows, [&](auto rows, int64_t r) {
    dot_q6k_pass<NT, rows()>(w + static_cast<size_t>(r) * rb, rb, xs, y + r, ldy);
  });
}

// Rows of w of type t (q8_0, q4_0, q4_K, q5_K or q6_K; on AVX2 q8_0 and q4_0 only) against
// NT token vectors.
template <int NT>
void dot_rows_run(DType t, const uint8_t* w, int64_t n_rows, const Int8Vector* const* xs, float* y, int64_t ldy) {
  if constexpr (!SMOE_DOT_VNNI)
    return t == DType::Q8_0 ? dot_int8_run<true, NT>(w, n_rows, xs, y, ldy) : dot_int8_run<false, NT>(w, n_rows, xs, y, ldy);
  switch (t) {
    case DType::Q8_0: return dot_int8_run<true, NT>(w, n_rows, xs, y, ldy);
    case DType::Q4_0: return dot_int8_run<false, NT>(w, n_rows, xs, y, ldy);
    case DType::Q4_K: return dot_k45_run<false, NT>(w, n_rows, xs, y, ldy);
    case DType::Q5_K: return dot_k45_run<true, NT>(w, n_rows, xs, y, ldy);
    default: return dot_q6k_run<NT>(w, n_rows, xs, y, ldy);
  }
}

}  // namespace SMOE_DOT_NS
