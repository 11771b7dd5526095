// gemm_int8.cpp: int8-activation batched matmul for q8_0/q4_0 weights (see gemm_int8.h).
// The VNNI kernel is compiled for AVX-512 VNNI with a function target attribute and chosen
// at run time (__builtin_cpu_supports); every other CPU runs the scalar reference.
#include "kernels/gemm_int8.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "kernels/simd.h"

namespace smoe {

namespace {

constexpr int64_t kBlock = 32;
constexpr int64_t kTokVec = 16;  // tokens per 512-bit vector of int32 lanes
constexpr int64_t kRows = 6;     // rows per micro tile

// A panel's weights as int8 blocks: q[n][D], scale d[n][D/32], corr[n][D/32] = -128 * sum(q)
// (undoes the +128 bias of the activations). Rows padded to a multiple of kRows with zeros.
struct PackedWeights {
  int64_t n = 0, rows = 0, nb = 0;
  std::vector<int8_t> q;
  std::vector<float> d;
  std::vector<int32_t> corr;
};

// One block's int8 values, returning their sum (scalar; the SIMD packer below agrees).
int32_t unpack_block(DType t, const uint8_t* blk, int8_t* q, uint16_t* h) {
  std::memcpy(h, blk, 2);
  if (t == DType::Q8_0) {
    std::memcpy(q, blk + 2, kBlock);
  } else {  // Q4_0
    for (int i = 0; i < 16; ++i) {
      q[i] = static_cast<int8_t>((blk[2 + i] & 15) - 8);
      q[i + 16] = static_cast<int8_t>((blk[2 + i] >> 4) - 8);
    }
  }
  int32_t sum = 0;
  for (int i = 0; i < kBlock; ++i) sum += q[i];
  return sum;
}

__attribute__((target("avx2,sse4.1")))
int32_t unpack_block_simd(DType t, const uint8_t* blk, int8_t* q, uint16_t* h) {
  std::memcpy(h, blk, 2);
  __m128i lo, hi;
  if (t == DType::Q8_0) {
    lo = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 2));
    hi = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 18));
  } else {
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 2));
    const __m128i m = _mm_set1_epi8(15), eight = _mm_set1_epi8(8);
    lo = _mm_sub_epi8(_mm_and_si128(b, m), eight);
    hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(b, 4), m), eight);
  }
  _mm_storeu_si128(reinterpret_cast<__m128i*>(q), lo);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(q + 16), hi);
  // Sum of 32 signed bytes: widen to 16 bits, multiply-add pairs by 1.
  const __m256i w = _mm256_add_epi16(_mm256_cvtepi8_epi16(lo), _mm256_cvtepi8_epi16(hi));
  const __m256i s32 = _mm256_madd_epi16(w, _mm256_set1_epi16(1));
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(s32), _mm256_extracti128_si256(s32, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}

void pack_weights(DType t, const uint8_t* w, int64_t n, int64_t D, bool simd, PackedWeights& p) {
  p.n = n;
  p.rows = (n + kRows - 1) / kRows * kRows;
  p.nb = D / kBlock;
  // Grow-only buffers; rows < n are overwritten below, padding rows are zeroed.
  p.q.resize(std::max(p.q.size(), static_cast<size_t>(p.rows * D)));
  p.d.resize(std::max(p.d.size(), static_cast<size_t>(p.rows * p.nb)));
  p.corr.resize(std::max(p.corr.size(), static_cast<size_t>(p.rows * p.nb)));
  std::fill(p.q.begin() + n * D, p.q.begin() + p.rows * D, 0);
  std::fill(p.d.begin() + n * p.nb, p.d.begin() + p.rows * p.nb, 0.f);
  std::fill(p.corr.begin() + n * p.nb, p.corr.begin() + p.rows * p.nb, 0);
  const size_t rb = row_bytes(t, D), bb = dtype_info(t).block_bytes;
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t b = 0; b < p.nb; ++b) {
      const uint8_t* blk = w + static_cast<size_t>(r) * rb + static_cast<size_t>(b) * bb;
      int8_t* q = &p.q[static_cast<size_t>(r * D + b * kBlock)];
      uint16_t h;
      const int32_t sum = simd ? unpack_block_simd(t, blk, q, &h) : unpack_block(t, blk, q, &h);
      p.d[static_cast<size_t>(r * p.nb + b)] = f16_to_f32_fast(h);
      p.corr[static_cast<size_t>(r * p.nb + b)] = -128 * sum;
    }
  }
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,fma")))
void vnni_kernel(const PackedWeights& p, const Int8Activations& x, float* y, int64_t ldy) {
  const int64_t D = x.D, Tpad = x.Tpad, nb = p.nb;
  float tile[kRows][2 * kTokVec];
  for (int64_t t0 = 0; t0 < Tpad; t0 += 2 * kTokVec) {
    const int nv = t0 + 2 * kTokVec <= Tpad ? 2 : 1;
    for (int64_t r0 = 0; r0 < p.rows; r0 += kRows) {
      __m512 acc[kRows][2];
      for (int r = 0; r < kRows; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
      for (int64_t b = 0; b < nb; ++b) {
        __m512i isum[kRows][2];
        for (int r = 0; r < kRows; ++r)
          isum[r][0] = isum[r][1] = _mm512_set1_epi32(p.corr[static_cast<size_t>((r0 + r) * nb + b)]);
        const uint8_t* xb = &x.q[static_cast<size_t>(b * 8 * Tpad * 4)];
        for (int g = 0; g < 8; ++g) {
          const uint8_t* xg = xb + (g * Tpad + t0) * 4;
          const __m512i x0 = _mm512_loadu_si512(xg);
          const __m512i x1 = nv == 2 ? _mm512_loadu_si512(xg + 4 * kTokVec) : _mm512_setzero_si512();
          for (int r = 0; r < kRows; ++r) {
            int32_t wv;
            std::memcpy(&wv, &p.q[static_cast<size_t>((r0 + r) * D + b * kBlock + 4 * g)], 4);
            const __m512i wb = _mm512_set1_epi32(wv);
            isum[r][0] = _mm512_dpbusd_epi32(isum[r][0], x0, wb);
            isum[r][1] = _mm512_dpbusd_epi32(isum[r][1], x1, wb);
          }
        }
        const float* db = &x.d[static_cast<size_t>(b * Tpad + t0)];
        const __m512 dx0 = _mm512_loadu_ps(db);
        const __m512 dx1 = nv == 2 ? _mm512_loadu_ps(db + kTokVec) : _mm512_setzero_ps();
        for (int r = 0; r < kRows; ++r) {
          const __m512 dw = _mm512_set1_ps(p.d[static_cast<size_t>((r0 + r) * nb + b)]);
          acc[r][0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[r][0]), _mm512_mul_ps(dx0, dw), acc[r][0]);
          acc[r][1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[r][1]), _mm512_mul_ps(dx1, dw), acc[r][1]);
        }
      }
      for (int r = 0; r < kRows; ++r) {
        _mm512_storeu_ps(tile[r], acc[r][0]);
        _mm512_storeu_ps(tile[r] + kTokVec, acc[r][1]);
      }
      const int64_t t_end = std::min(x.T, t0 + nv * kTokVec);
      for (int r = 0; r < kRows && r0 + r < p.n; ++r)
        for (int64_t t = t0; t < t_end; ++t) y[t * ldy + r0 + r] = tile[r][t - t0];
    }
  }
}

void reference_kernel(const PackedWeights& p, const Int8Activations& x, float* y, int64_t ldy) {
  const int64_t D = x.D, Tpad = x.Tpad, nb = p.nb;
  for (int64_t r = 0; r < p.n; ++r)
    for (int64_t t = 0; t < x.T; ++t) {
      float acc = 0.f;
      for (int64_t b = 0; b < nb; ++b) {
        int32_t isum = p.corr[static_cast<size_t>(r * nb + b)];
        for (int64_t k = 0; k < kBlock; ++k) {
          const int64_t g = k / 4, j = k % 4;
          const uint8_t xq = x.q[static_cast<size_t>(((b * 8 + g) * Tpad + t) * 4 + j)];
          isum += static_cast<int32_t>(xq) * p.q[static_cast<size_t>(r * D + b * kBlock + k)];
        }
        const float scale = x.d[static_cast<size_t>(b * Tpad + t)] * p.d[static_cast<size_t>(r * nb + b)];
        acc = std::fma(static_cast<float>(isum), scale, acc);
      }
      y[t * ldy + r] = acc;
    }
}


float reduce_lanes(const float* a) {
  return ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]));
}

void dot_int8_ref_row(DType t, const uint8_t* row, const Int8Vector& x, float* out) {
  const int64_t nb = x.D / kBlock;
  const size_t bb = dtype_info(t).block_bytes;
  float acc[8] = {};
  for (int64_t b = 0; b < nb; ++b) {
    int8_t q[kBlock];
    uint16_t h;
    unpack_block(t, row + static_cast<size_t>(b) * bb, q, &h);
    const float scale = f16_to_f32_fast(h) * x.d[static_cast<size_t>(b)];
    for (int l = 0; l < 8; ++l) {
      int32_t isum = 0;
      for (int j = 0; j < 4; ++j) isum += q[4 * l + j] * x.q[static_cast<size_t>(b * kBlock + 4 * l + j)];
      acc[l] = std::fma(static_cast<float>(isum), scale, acc[l]);
    }
  }
  *out = reduce_lanes(acc);
}

// acc + (block b of `row` . block b of x) per 32-bit lane, as dot_int8_ref_row computes it.
template <bool kQ8>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c"), always_inline))
inline __m256 block_term_vnni(const uint8_t* row, const Int8Vector& x, int64_t b, __m256 acc) {
  const __m256i xq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(&x.q[static_cast<size_t>(b * kBlock)]));
  __m256i isum;
  uint16_t h;
  if constexpr (kQ8) {
    const uint8_t* blk = row + static_cast<size_t>(b) * sizeof(BlockQ8_0);
    std::memcpy(&h, blk, 2);
    const __m256i wq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 2));
    // |w| (unsigned) times x with w's sign: the same products as w * x.
    isum = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_abs_epi8(wq), _mm256_sign_epi8(xq, wq));
  } else {
    const uint8_t* blk = row + static_cast<size_t>(b) * sizeof(BlockQ4_0);
    std::memcpy(&h, blk, 2);
    const __m128i m4 = _mm_set1_epi8(15);
    const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 2));
    const __m256i nib = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(bytes, 4), m4), _mm_and_si128(bytes, m4));
    // (nibble - 8) * x = nibble * x - 8 * x: start from -8 * (lane sums of x).
    const __m256i corr = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(&x.neg8_lane_sums[static_cast<size_t>(b * 8)]));
    isum = _mm256_dpbusd_epi32(corr, nib, xq);
  }
  // F16C converts the weight scale in one instruction (exactly, as f16_to_f32_fast does).
  const __m256 scale = _mm256_set1_ps(_cvtsh_ss(h) * x.d[static_cast<size_t>(b)]);
  return _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), scale, acc);
}

template <bool kQ8>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))
void dot_int8_vnni(const uint8_t* w, int64_t n_rows, const Int8Vector& x, float* y) {
  const int64_t nb = x.D / kBlock;
  const size_t rb = row_bytes(kQ8 ? DType::Q8_0 : DType::Q4_0, x.D);
  for (int64_t r = 0; r < n_rows; ++r) {
    const uint8_t* row = w + static_cast<size_t>(r) * rb;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) acc = block_term_vnni<kQ8>(row, x, b, acc);
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, acc);
    y[r] = reduce_lanes(lanes);
  }
}

}  // namespace

void quantize_vector(const float* x, int64_t D, Int8Vector& out) {
  SMOE_CHECK(D % kBlock == 0, "int8 activations: row of ", D, " values is not a whole number of 32-value blocks");
  out.D = D;
  const int64_t nb = D / kBlock;
  if (out.q.size() < static_cast<size_t>(D)) out.q.resize(static_cast<size_t>(D));
  if (out.d.size() < static_cast<size_t>(nb)) out.d.resize(static_cast<size_t>(nb));
  if (out.lane_sums.size() < static_cast<size_t>(nb * 8)) out.lane_sums.resize(static_cast<size_t>(nb * 8));
  if (out.neg8_lane_sums.size() < static_cast<size_t>(nb * 8)) out.neg8_lane_sums.resize(static_cast<size_t>(nb * 8));
  for (int64_t b = 0; b < nb; ++b) {
    const float* xb = x + b * kBlock;
    float amax = 0.f;
    for (int64_t k = 0; k < kBlock; ++k) amax = std::max(amax, std::fabs(xb[k]));
    const float d = amax / 127.f, id = d != 0.f ? 1.f / d : 0.f;
    out.d[static_cast<size_t>(b)] = d;
    for (int64_t k = 0; k < kBlock; ++k)
      out.q[static_cast<size_t>(b * kBlock + k)] = static_cast<int8_t>(std::nearbyint(xb[k] * id));
    for (int l = 0; l < 8; ++l) {
      int32_t s = 0;
      for (int j = 0; j < 4; ++j) s += out.q[static_cast<size_t>(b * kBlock + 4 * l + j)];
      out.lane_sums[static_cast<size_t>(b * 8 + l)] = s;
      out.neg8_lane_sums[static_cast<size_t>(b * 8 + l)] = -8 * s;
    }
  }
}

void dot_rows_int8(DType t, const uint8_t* w, int64_t n_rows, const Int8Vector& x, float* y) {
  SMOE_CHECK(int8_gemm_supports(t), "int8 dot: unsupported weight type ", dtype_name(t));
  if (int8_gemm_fast()) return t == DType::Q8_0 ? dot_int8_vnni<true>(w, n_rows, x, y)
                                                : dot_int8_vnni<false>(w, n_rows, x, y);
  dot_rows_int8_ref(t, w, n_rows, x, y);
}

void dot_rows_int8_ref(DType t, const uint8_t* w, int64_t n_rows, const Int8Vector& x, float* y) {
  SMOE_CHECK(int8_gemm_supports(t), "int8 dot: unsupported weight type ", dtype_name(t));
  const size_t rb = row_bytes(t, x.D);
  for (int64_t r = 0; r < n_rows; ++r) dot_int8_ref_row(t, w + static_cast<size_t>(r) * rb, x, &y[r]);
}

void quantize_activations(const float* x, int64_t T, int64_t D, Int8Activations& out) {
  SMOE_CHECK(D % kBlock == 0, "int8 activations: row of ", D, " values is not a whole number of 32-value blocks");
  out.T = T;
  out.D = D;
  out.Tpad = (T + kTokVec - 1) / kTokVec * kTokVec;
  const int64_t nb = D / kBlock, Tpad = out.Tpad;
  if (out.q.size() < static_cast<size_t>(D * Tpad)) out.q.resize(static_cast<size_t>(D * Tpad));
  if (out.d.size() < static_cast<size_t>(nb * Tpad)) out.d.resize(static_cast<size_t>(nb * Tpad));
  for (int64_t b = 0; b < nb; ++b) {
    for (int64_t t = 0; t < Tpad; ++t) {
      uint8_t q[kBlock];
      float d = 0.f;
      if (t < T) {
        const float* xb = x + t * D + b * kBlock;
        float amax = 0.f;
        for (int64_t k = 0; k < kBlock; ++k) amax = std::max(amax, std::fabs(xb[k]));
        d = amax / 127.f;
        const float id = d != 0.f ? 1.f / d : 0.f;
        for (int64_t k = 0; k < kBlock; ++k) q[k] = static_cast<uint8_t>(static_cast<int>(std::nearbyint(xb[k] * id)) + 128);
      } else {
        std::fill_n(q, kBlock, static_cast<uint8_t>(128));
      }
      out.d[static_cast<size_t>(b * Tpad + t)] = d;
      for (int g = 0; g < 8; ++g)
        std::memcpy(&out.q[static_cast<size_t>(((b * 8 + g) * Tpad + t) * 4)], q + 4 * g, 4);
    }
  }
}

bool int8_gemm_fast() {
  static const bool fast = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
  return fast;
}

bool int8_gemm_supports(DType t) { return t == DType::Q8_0 || t == DType::Q4_0; }

void gemm_int8_panel(DType t, const uint8_t* w, int64_t n, const Int8Activations& x, float* y,
                     int64_t ldy) {
  SMOE_CHECK(int8_gemm_supports(t), "int8 gemm: unsupported weight type ", dtype_name(t));
  thread_local PackedWeights p;
  pack_weights(t, w, n, x.D, int8_gemm_fast(), p);
  if (int8_gemm_fast()) vnni_kernel(p, x, y, ldy);
  else reference_kernel(p, x, y, ldy);
}

void gemm_int8_panel_ref(DType t, const uint8_t* w, int64_t n, const Int8Activations& x, float* y,
                         int64_t ldy) {
  SMOE_CHECK(int8_gemm_supports(t), "int8 gemm: unsupported weight type ", dtype_name(t));
  PackedWeights p;
  pack_weights(t, w, n, x.D, false, p);
  reference_kernel(p, x, y, ldy);
}

}  // namespace smoe
