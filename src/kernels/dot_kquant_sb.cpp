// dot_kquant_sb.cpp: K-quant rows in the GGUF layout against per-super-block int8
// activations (dot_kquant_sb.h): the quantizer, the kernel (AVX2, its passes also built for
// AVX-512 VNNI: dot_kquant_sb-inl.h) and their scalar references.
// Legend: NT tokens of a pass, R rows of a pass, s super-block, jb 32-value block of a
// super-block, k 16-value sub-block (block jb holds sub-blocks 2jb and 2jb + 1).
#include "kernels/dot_kquant_sb.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "core/error.h"
#include "kernels/cpu_features.h"
#include "kernels/dot_int8_rows.h"
#include "kernels/gemm_amx_kquant.h"
#include "kernels/gemm_int8.h"

namespace smoe {

namespace {

constexpr int64_t kSuper = 256;

bool is_kquant(DType t) {
  return t == DType::Q2_K || t == DType::Q3_K || t == DType::Q4_K || t == DType::Q5_K || t == DType::Q6_K;
}

void size_vector(int64_t D, Int8SuperVector& out) {
  SMOE_CHECK(D >= 0 && D % kSuper == 0, "super-block int8 activations: a row of ", D,
             " values (expected a multiple of 256)");
  out.D = D;
  if (out.q.size() < static_cast<size_t>(D)) out.q.resize(static_cast<size_t>(D));
  if (out.d.size() < static_cast<size_t>(D / kSuper)) out.d.resize(static_cast<size_t>(D / kSuper));
  if (out.sum16.size() < static_cast<size_t>(D / 16)) out.sum16.resize(static_cast<size_t>(D / 16));
}

// round(v) as int8 where it is in range, else 0 (NaN included), as the AVX2 path's
// conversion gives (out-of-range conversions give 0x80000000, masked to 0).
int8_t round_int8(float v) {
  const float r = std::nearbyint(v);
  return r >= -128.f && r <= 127.f ? static_cast<int8_t>(r) : 0;
}

__attribute__((target("avx2,fma"))) void quantize_vector_sb_avx2(const float* x, int64_t D, Int8SuperVector& out) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256i invalid = _mm256_set1_epi32(INT32_MIN);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  for (int64_t s = 0; s < D / kSuper; ++s) {
    const float* xs = x + s * kSuper;
    // |x| first, so that a NaN is skipped as std::max skips it in the reference.
    __m256 m = _mm256_setzero_ps();
    for (int64_t i = 0; i < kSuper; i += 8) m = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(xs + i), abs_mask), m);
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_movehdup_ps(h));
    const float d = _mm_cvtss_f32(h) / 127.f, id = d != 0.f ? 1.f / d : 0.f;
    out.d[static_cast<size_t>(s)] = d;
    const __m256 iv = _mm256_set1_ps(id);
    for (int jb = 0; jb < 8; ++jb) {
      __m256i v[4];
      for (int u = 0; u < 4; ++u) {
        v[u] = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xs + 32 * jb + 8 * u), iv));
        v[u] = _mm256_andnot_si256(_mm256_cmpeq_epi32(v[u], invalid), v[u]);
      }
      // The packs interleave 4-value groups across the 128-bit halves; the permute restores
      // value order. Every value is in -128..127 here, so nothing saturates.
      const __m256i p = _mm256_permutevar8x32_epi32(
          _mm256_packs_epi16(_mm256_packs_epi32(v[0], v[1]), _mm256_packs_epi32(v[2], v[3])), order);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(&out.q[static_cast<size_t>(s * kSuper + 32 * jb)]), p);
      // Sums of 8 values each, offset by 8 x 128 (the bytes read as unsigned after the xor).
      alignas(32) uint64_t sums[4];
      _mm256_store_si256(reinterpret_cast<__m256i*>(sums),
                         _mm256_sad_epu8(_mm256_xor_si256(p, _mm256_set1_epi8(-128)), _mm256_setzero_si256()));
      int16_t* s16 = &out.sum16[static_cast<size_t>(s * 16 + 2 * jb)];
      s16[0] = static_cast<int16_t>(static_cast<int64_t>(sums[0] + sums[1]) - 2048);
      s16[1] = static_cast<int16_t>(static_cast<int64_t>(sums[2] + sums[3]) - 2048);
    }
  }
}

// ---- the AVX2 kernel ----

#define SB_TARGET "avx2,fma,f16c"
#define SB_INLINE __attribute__((target(SB_TARGET), always_inline)) inline

// Lane k of the result: the sum of the 8 lanes of v[k] (exact).
SB_INLINE __m256i sum_each(const __m256i* v) {
  const __m256i a = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
  const __m256i b = _mm256_hadd_epi32(_mm256_hadd_epi32(v[4], v[5]), _mm256_hadd_epi32(v[6], v[7]));
  // a = [v0..v3: sums of lanes 0-3 | sums of lanes 4-7], b likewise for v4..v7.
  return _mm256_add_epi32(_mm256_permute2x128_si256(a, b, 0x20), _mm256_permute2x128_si256(a, b, 0x31));
}

// Byte-shuffle patterns over 8 int16 values held in both 128-bit halves: kSplat[j] puts value j
// in every lane; kPair[m] puts value 2m in the low half's lanes and 2m + 1 in the high half's.
alignas(32) constexpr uint8_t kSplat[8][32] = {
#define SB_SPLAT(j) {2 * j, 2 * j + 1, 2 * j, 2 * j + 1, 2 * j, 2 * j + 1, 2 * j, 2 * j + 1, 2 * j, 2 * j + 1, 2 * j, 2 * j + 1, \
                     2 * j, 2 * j + 1, 2 * j, 2 * j + 1, 2 * j, 2 * j + 1, 2 * j, 2 * j + 1, 2 * j, 2 * j + 1, 2 * j, 2 * j + 1, \
                     2 * j, 2 * j + 1, 2 * j, 2 * j + 1, 2 * j, 2 * j + 1, 2 * j, 2 * j + 1}
    SB_SPLAT(0), SB_SPLAT(1), SB_SPLAT(2), SB_SPLAT(3), SB_SPLAT(4), SB_SPLAT(5), SB_SPLAT(6), SB_SPLAT(7)};
#undef SB_SPLAT
alignas(32) constexpr uint8_t kPair[4][32] = {
#define SB_PAIR(m) {4 * m, 4 * m + 1, 4 * m, 4 * m + 1, 4 * m, 4 * m + 1, 4 * m, 4 * m + 1, \
                    4 * m, 4 * m + 1, 4 * m, 4 * m + 1, 4 * m, 4 * m + 1, 4 * m, 4 * m + 1, \
                    4 * m + 2, 4 * m + 3, 4 * m + 2, 4 * m + 3, 4 * m + 2, 4 * m + 3, 4 * m + 2, 4 * m + 3, \
                    4 * m + 2, 4 * m + 3, 4 * m + 2, 4 * m + 3, 4 * m + 2, 4 * m + 3, 4 * m + 2, 4 * m + 3}
    SB_PAIR(0), SB_PAIR(1), SB_PAIR(2), SB_PAIR(3)};
#undef SB_PAIR

SB_INLINE __m256i pattern(const uint8_t* p) { return _mm256_load_si256(reinterpret_cast<const __m256i*>(p)); }
SB_INLINE float f16_at(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}
// Bit b of each byte of v moved to bit `to` (16-bit shifts move no bit across a byte here).
template <int b, int to>
SB_INLINE __m256i bit_to(__m256i v) {
  const __m256i m = _mm256_and_si256(v, _mm256_set1_epi8(static_cast<char>(1 << b)));
  if constexpr (b < to) return _mm256_slli_epi16(m, to - b);
  else if constexpr (b > to) return _mm256_srli_epi16(m, b - to);
  else return m;
}

// Per type, over one super-block at blk: q<jb>() the 32 values of block jb as unsigned bytes
// (in block order), sc<jb>() the int16 scale of each 16-bit lane of vpmaddubsw's result (low
// half: sub-block 2jb, high half: 2jb + 1), bias() int16 per sub-block k that, times the
// token's sum16[k], completes C (q3_K/q6_K's offsets; kBias), mins(blk) the int16 min of
// each sub-block (kMins), d and dmin the f16 scales. For q3_K the kernel sums
// (sc - 32) * (q - 4) * x_q, which is -C, and multiplies it by d where the reference takes C
// times -d: the same bits (rounding is symmetric).
struct Q4K {
  static constexpr size_t kBytes = sizeof(BlockQ4_K);
  static constexpr bool kBias = false, kMins = true;
  const uint8_t* blk;
  __m256i sc8, v;
  SB_INLINE explicit Q4K(const uint8_t* b)
      : blk(b), sc8(_mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(int8dot::k45_scales_mins(b)))) {}
  template <int jb>
  SB_INLINE __m256i q() {
    if constexpr (jb % 2 == 0) {
      v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 16 + 16 * jb));
      return _mm256_and_si256(v, _mm256_set1_epi8(15));
    } else {
      return _mm256_and_si256(_mm256_srli_epi16(v, 4), _mm256_set1_epi8(15));
    }
  }
  template <int jb>
  SB_INLINE __m256i sc() const { return _mm256_shuffle_epi8(sc8, pattern(kSplat[jb])); }
  SB_INLINE __m256i bias() const { return _mm256_setzero_si256(); }
  SB_INLINE static __m256i mins(const uint8_t* b) {
    const __m128i m = _mm_shuffle_epi8(int8dot::k45_scales_mins(b),
                                       _mm_setr_epi8(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15));
    return _mm256_cvtepu8_epi16(m);
  }
  SB_INLINE static float d(const uint8_t* b) { return f16_at(b); }
  SB_INLINE static float dmin(const uint8_t* b) { return f16_at(b + 2); }
};

struct Q5K : Q4K {
  static constexpr size_t kBytes = sizeof(BlockQ5_K);
  __m256i qh;
  SB_INLINE explicit Q5K(const uint8_t* b)
      : Q4K(b), qh(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 16))) {}
  template <int jb>
  SB_INLINE __m256i q() {  // the nibble and bit jb of qh as bit 4
    if constexpr (jb % 2 == 0) {
      v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 48 + 16 * jb));
      return _mm256_or_si256(_mm256_and_si256(v, _mm256_set1_epi8(15)), bit_to<jb, 4>(qh));
    } else {
      return _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v, 4), _mm256_set1_epi8(15)), bit_to<jb, 4>(qh));
    }
  }
};

// The 16 sub-block scales as int16 [k] in s16: lo / hi hold values 0-7 / 8-15 in both halves.
struct Scales16 {
  __m256i s16, lo, hi;
  SB_INLINE explicit Scales16(__m256i v)
      : s16(v), lo(_mm256_permute2x128_si256(v, v, 0x00)), hi(_mm256_permute2x128_si256(v, v, 0x11)) {}
  template <int jb>
  SB_INLINE __m256i pair() const { return _mm256_shuffle_epi8(jb < 4 ? lo : hi, pattern(kPair[jb % 4])); }
};

struct Q6K {
  static constexpr size_t kBytes = sizeof(BlockQ6_K);
  static constexpr bool kBias = true, kMins = false;
  const uint8_t* blk;
  Scales16 scales;
  __m256i ql0, ql1, qh;
  SB_INLINE explicit Q6K(const uint8_t* b)
      : blk(b), scales(_mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 192)))) {}
  template <int jb>
  SB_INLINE __m256i q() {  // half h = jb / 4: low nibbles of ql0/ql1, then high; qh bits 2k, 2k + 1
    constexpr int h = jb / 4, k = jb % 4;
    if constexpr (k == 0) {
      ql0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 64 * h));
      ql1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 64 * h + 32));
      qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 128 + 32 * h));
    }
    const __m256i low = k < 2 ? (k == 0 ? ql0 : ql1) : _mm256_srli_epi16(k == 2 ? ql0 : ql1, 4);
    const __m256i high = k == 0 ? qh : _mm256_srli_epi16(qh, 2 * k);
    return _mm256_or_si256(_mm256_and_si256(low, _mm256_set1_epi8(15)),
                           _mm256_slli_epi16(_mm256_and_si256(high, _mm256_set1_epi8(3)), 4));
  }
  template <int jb>
  SB_INLINE __m256i sc() const { return scales.pair<jb>(); }
  SB_INLINE __m256i bias() const { return _mm256_sub_epi16(_mm256_setzero_si256(), _mm256_slli_epi16(scales.s16, 5)); }
  SB_INLINE static __m256i mins(const uint8_t*) { return _mm256_setzero_si256(); }
  SB_INLINE static float d(const uint8_t* b) { return f16_at(b + 208); }
  SB_INLINE static float dmin(const uint8_t*) { return 0.f; }
};

// q2_K and q3_K: block jb = 4n + j holds bits 2j of the 32 bytes of qs[32n ..] (at blk + kQs).
template <size_t kQs>
struct Low2 {
  const uint8_t* blk;
  __m256i v;
  template <int jb>
  SB_INLINE __m256i low2() {
    if constexpr (jb % 4 == 0) v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + kQs + 8 * jb));
    return _mm256_and_si256(_mm256_srli_epi16(v, 2 * (jb % 4)), _mm256_set1_epi8(3));
  }
};

struct Q2K : Low2<16> {
  static constexpr size_t kBytes = sizeof(BlockQ2_K);
  static constexpr bool kBias = false, kMins = true;
  Scales16 scales;
  SB_INLINE explicit Q2K(const uint8_t* b)
      : Low2<16>{b, _mm256_setzero_si256()},
        scales(_mm256_cvtepu8_epi16(_mm_and_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b)), _mm_set1_epi8(15)))) {}
  template <int jb>
  SB_INLINE __m256i q() { return low2<jb>(); }
  template <int jb>
  SB_INLINE __m256i sc() const { return scales.pair<jb>(); }
  SB_INLINE __m256i bias() const { return _mm256_setzero_si256(); }
  SB_INLINE static __m256i mins(const uint8_t* b) {
    const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b));
    return _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(raw, 4), _mm_set1_epi8(15)));
  }
  SB_INLINE static float d(const uint8_t* b) { return f16_at(b + 80); }
  SB_INLINE static float dmin(const uint8_t* b) { return f16_at(b + 82); }
};

struct Q3K : Low2<32> {
  static constexpr size_t kBytes = sizeof(BlockQ3_K);
  static constexpr bool kBias = true, kMins = false;
  Scales16 scales;  // sc - 32
  __m256i hmask;
  SB_INLINE explicit Q3K(const uint8_t* b)
      : Low2<32>{b, _mm256_setzero_si256()},
        scales(_mm256_sub_epi16(_mm256_cvtepu8_epi16(int8dot::q3k_stored_scales(b)), _mm256_set1_epi16(32))),
        hmask(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b))) {}
  template <int jb>
  SB_INLINE __m256i q() { return _mm256_or_si256(low2<jb>(), bit_to<jb, 2>(hmask)); }  // low + 4 * high (bit jb of hmask)
  template <int jb>
  SB_INLINE __m256i sc() const { return scales.pair<jb>(); }
  SB_INLINE __m256i bias() const { return _mm256_sub_epi16(_mm256_setzero_si256(), _mm256_slli_epi16(scales.s16, 2)); }
  SB_INLINE static __m256i mins(const uint8_t*) { return _mm256_setzero_si256(); }
  SB_INLINE static float d(const uint8_t* b) { return f16_at(b + 108); }
  SB_INLINE static float dmin(const uint8_t*) { return 0.f; }
};

// The passes, once for AVX-512 VNNI and once for AVX2. With VNNI (mapped files and
// --no-repack on such CPUs: 2026-12-06, the Xeon, `smoe bench --load mmap -p 128 -n 32`,
// builds alternating) prompts ran q4_K 118-121 -> 139-146 tokens/s, q3_K 106-109 -> 129,
// q6_K 113-126 -> 116-127; decode q3_K 40-42 -> 45, q4_K and q6_K within 2 tokens/s.
#define SB_PASS_NS vnni
#define SB_PASS_TARGET "avx512f,avx512vl,avx512vnni,avx2,fma,f16c"
#define SB_PASS_VNNI 1
#include "kernels/dot_kquant_sb-inl.h"
#undef SB_PASS_NS
#undef SB_PASS_TARGET
#undef SB_PASS_VNNI
#define SB_PASS_NS avx2
#define SB_PASS_TARGET SB_TARGET
#define SB_PASS_VNNI 0
#include "kernels/dot_kquant_sb-inl.h"
#undef SB_PASS_NS
#undef SB_PASS_TARGET
#undef SB_PASS_VNNI

}  // namespace

void quantize_vector_sb_ref(const float* x, int64_t D, Int8SuperVector& out) {
  size_vector(D, out);
  for (int64_t s = 0; s < D / kSuper; ++s) {
    const float* xs = x + s * kSuper;
    float amax = 0.f;
    for (int64_t i = 0; i < kSuper; ++i) amax = std::max(amax, std::fabs(xs[i]));
    const float d = amax / 127.f, id = d != 0.f ? 1.f / d : 0.f;
    out.d[static_cast<size_t>(s)] = d;
    for (int64_t i = 0; i < kSuper; ++i) out.q[static_cast<size_t>(s * kSuper + i)] = round_int8(xs[i] * id);
    for (int64_t k = 0; k < 16; ++k) {
      int32_t sum = 0;
      for (int64_t i = 0; i < 16; ++i) sum += out.q[static_cast<size_t>(s * kSuper + 16 * k + i)];
      out.sum16[static_cast<size_t>(s * 16 + k)] = static_cast<int16_t>(sum);
    }
  }
}

void quantize_vector_sb(const float* x, int64_t D, Int8SuperVector& out) {
  if (!avx2_allowed()) return quantize_vector_sb_ref(x, D, out);
  size_vector(D, out);
  quantize_vector_sb_avx2(x, D, out);
}

bool kquant_sb_avx2(DType t) { return is_kquant(t) && avx2_allowed(); }

void dot_kquant_sb(DType t, const uint8_t* w, int64_t n_rows, const Int8SuperVector* const* xs, int n_tokens,
                   float* y, int64_t ldy) {
  if (!kquant_sb_avx2(t)) return dot_kquant_sb_ref(t, w, n_rows, xs, n_tokens, y, ldy);
  const size_t rb = row_bytes(t, xs[0]->D);
  const bool vnni = int8_gemm_fast();
  int8dot::for_token_groups(n_tokens, [&](auto nt, int t0) {
    const Int8SuperVector* const* x = xs + t0;
    float* yt = y + t0 * ldy;
    auto run = [&](auto type) {
      using U = typename decltype(type)::type;
      if (vnni) vnni::sb_run<U, nt()>(w, rb, n_rows, x, yt, ldy);
      else avx2::sb_run<U, nt()>(w, rb, n_rows, x, yt, ldy);
    };
    switch (t) {
      case DType::Q2_K: return run(std::type_identity<Q2K>{});
      case DType::Q3_K: return run(std::type_identity<Q3K>{});
      case DType::Q4_K: return run(std::type_identity<Q4K>{});
      case DType::Q5_K: return run(std::type_identity<Q5K>{});
      default: return run(std::type_identity<Q6K>{});
    }
  });
}

void dot_kquant_sb_ref(DType t, const uint8_t* w, int64_t n_rows, const Int8SuperVector* const* xs,
                       int n_tokens, float* y, int64_t ldy) {
  SMOE_CHECK(is_kquant(t), "super-block int8 dot: ", dtype_name(t), " is not a K-quant");
  for (int i = 0; i < n_tokens; ++i)
    SMOE_CHECK(xs[i]->D == xs[0]->D && xs[0]->D % kSuper == 0, "super-block int8 dot: token rows of ", xs[i]->D,
               " and ", xs[0]->D, " values (expected one multiple of 256)");
  const int64_t D = n_tokens > 0 ? xs[0]->D : 0, S = D / kSuper;
  const size_t rb = row_bytes(t, D), bb = row_bytes(t, kSuper);
  for (int64_t r = 0; r < n_rows; ++r)
    for (int tk = 0; tk < n_tokens; ++tk) {
      float acc = 0.f;
      for (int64_t s = 0; s < S; ++s)
        acc = kquant_superblock_ref(t, w + static_cast<size_t>(r) * rb + static_cast<size_t>(s) * bb,
                                    xs[tk]->q.data() + s * kSuper, xs[tk]->d[static_cast<size_t>(s)], acc);
      y[tk * ldy + r] = acc;
    }
}

}  // namespace smoe
