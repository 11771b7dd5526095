// gemm_int8.cpp: products with int8 activations (see gemm_int8.h): batched tiles for
// q8_0/q4_0 weights, decode dot products for their rows, and the activation quantizers
// (also per super-block for the K-quant kernels of gemm_x16.h). The kernels are compiled with function target attributes and
// chosen at run time (__builtin_cpu_supports, capped by cpu_features.h): the batch tiles for
// AVX-512 VNNI, the decode kernels (dot_int8_decode-inl.h) once for AVX-512 VNNI and once
// for AVX2; other CPUs run the scalar references.
#include "kernels/gemm_int8.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "core/error.h"
#include "core/thread_pool.h"
#include "kernels/cpu_features.h"
#include "kernels/dot_int8_rows.h"
#include "kernels/simd.h"

// GCC 12 reports the _mm512_undefined_* sources inside the conversion intrinsics as
// "may be used uninitialized" once they are inlined here; they are fully overwritten.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace smoe {

namespace {

using int8dot::for_row_passes;
using int8dot::for_token_groups;
using int8dot::prefetch_unit;
using int8dot::reduce_lanes;
constexpr int64_t kBlock = 32;
constexpr int64_t kTokVec = 16;  // tokens per 512-bit vector of int32 lanes
constexpr int64_t kRows = 6;     // rows per micro tile

// One block's int8 values and its f16 scale (scalar, for the references).
void unpack_block(DType t, const uint8_t* blk, int8_t* q, uint16_t* h) {
  std::memcpy(h, blk, 2);
  if (t == DType::Q8_0) {
    std::memcpy(q, blk + 2, kBlock);
  } else {  // Q4_0
    for (int i = 0; i < 16; ++i) {
      q[i] = static_cast<int8_t>((blk[2 + i] & 15) - 8);
      q[i + 16] = static_cast<int8_t>((blk[2 + i] >> 4) - 8);
    }
  }
}

// Weight values 4g..4g+3 of a block, broadcast to every 32-bit lane, as the unsigned
// operand of vpdpbusd: q8_0 w + 128 (sign bit flipped), q4_0 the raw nibbles (w + 8).
// Broadcast straight from memory, then fixed up in the vector unit.
template <bool kQ8>
__attribute__((target("avx512f,avx512bw"), always_inline))
inline __m512i weight_group(const uint8_t* blk, int g) {
  int32_t v;
  if constexpr (kQ8) {
    std::memcpy(&v, blk + 2 + 4 * g, 4);
    return _mm512_xor_si512(_mm512_set1_epi32(v), _mm512_set1_epi8(static_cast<char>(0x80)));
  } else {
    std::memcpy(&v, blk + 2 + 4 * (g % 4), 4);
    const __m512i b = _mm512_set1_epi32(v);
    return _mm512_and_si512(g < 4 ? b : _mm512_srli_epi16(b, 4), _mm512_set1_epi8(15));
  }
}

// Rows 0..R-1 of w (rb bytes apart) against the NV vectors of 16 tokens from t0 (NV = 1 for
// the last token block when fewer than 32 tokens remain). Weights are read straight from
// their blocks: each group of 4 values broadcast to all token lanes.
template <bool kQ8, int R, int NV>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c"), always_inline))
inline void vnni_tile(const uint8_t* w, size_t rb, const Int8Activations& x, int64_t t0, float* y,
                      int64_t ldy) {
  constexpr size_t bb = kQ8 ? sizeof(BlockQ8_0) : sizeof(BlockQ4_0);
  const int64_t Tpad = x.Tpad, nb = x.D / kBlock;
  const int32_t* corr = kQ8 ? x.corr8.data() : x.corr4.data();
  __m512 acc[R][NV];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    __m512i cv[NV];
    for (int v = 0; v < NV; ++v) cv[v] = _mm512_loadu_si512(corr + b * Tpad + t0 + v * kTokVec);
    __m512i isum[R][NV];
    for (int r = 0; r < R; ++r)
      for (int v = 0; v < NV; ++v) isum[r][v] = cv[v];
    const int8_t* xb = &x.q[static_cast<size_t>(b * 8 * Tpad * 4)];
    for (int g = 0; g < 8; ++g) {
      const int8_t* xg = xb + (g * Tpad + t0) * 4;
      __m512i xv[NV];
      for (int v = 0; v < NV; ++v) xv[v] = _mm512_loadu_si512(xg + v * 4 * kTokVec);
      for (int r = 0; r < R; ++r) {
        const uint8_t* blk = w + static_cast<size_t>(r) * rb + static_cast<size_t>(b) * bb;
        const __m512i wb = weight_group<kQ8>(blk, g);
        for (int v = 0; v < NV; ++v) isum[r][v] = _mm512_dpbusd_epi32(isum[r][v], wb, xv[v]);
      }
    }
    const float* db = &x.d[static_cast<size_t>(b * Tpad + t0)];
    for (int r = 0; r < R; ++r) {
      uint16_t h;
      std::memcpy(&h, w + static_cast<size_t>(r) * rb + static_cast<size_t>(b) * bb, 2);
      const __m512 dw = _mm512_set1_ps(_cvtsh_ss(h));
      for (int v = 0; v < NV; ++v)
        acc[r][v] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[r][v]),
                                    _mm512_mul_ps(_mm512_loadu_ps(db + v * kTokVec), dw), acc[r][v]);
    }
  }
  float tile[R][NV * kTokVec];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) _mm512_storeu_ps(tile[r] + v * kTokVec, acc[r][v]);
  const int64_t t_end = std::min(x.T, t0 + NV * kTokVec);
  for (int r = 0; r < R; ++r)
    for (int64_t t = t0; t < t_end; ++t) y[t * ldy + r] = tile[r][t - t0];
}

template <bool kQ8, int R>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c")))
void vnni_rows(const uint8_t* w, size_t rb, const Int8Activations& x, float* y, int64_t ldy) {
  for (int64_t t0 = 0; t0 < x.Tpad; t0 += 2 * kTokVec) {
    if (t0 + 2 * kTokVec <= x.Tpad) vnni_tile<kQ8, R, 2>(w, rb, x, t0, y, ldy);
    else vnni_tile<kQ8, R, 1>(w, rb, x, t0, y, ldy);
  }
}

template <bool kQ8>
void vnni_kernel(const uint8_t* w, int64_t n, const Int8Activations& x, float* y, int64_t ldy) {
  const size_t rb = row_bytes(kQ8 ? DType::Q8_0 : DType::Q4_0, x.D);
  int64_t r = 0;
  for (; r + kRows <= n; r += kRows) vnni_rows<kQ8, kRows>(w + r * rb, rb, x, y + r, ldy);
  const uint8_t* wr = w + r * rb;
  switch (n - r) {
    case 5: return vnni_rows<kQ8, 5>(wr, rb, x, y + r, ldy);
    case 4: return vnni_rows<kQ8, 4>(wr, rb, x, y + r, ldy);
    case 3: return vnni_rows<kQ8, 3>(wr, rb, x, y + r, ldy);
    case 2: return vnni_rows<kQ8, 2>(wr, rb, x, y + r, ldy);
    case 1: return vnni_rows<kQ8, 1>(wr, rb, x, y + r, ldy);
    default: return;
  }
}

// Same integer sums (exact) and the same float operations in the same order as vnni_tile.
void reference_kernel(DType t, const uint8_t* w, int64_t n, const Int8Activations& x, float* y,
                      int64_t ldy) {
  const int64_t Tpad = x.Tpad, nb = x.D / kBlock;
  const size_t rb = row_bytes(t, x.D), bb = dtype_info(t).block_bytes;
  for (int64_t r = 0; r < n; ++r)
    for (int64_t tt = 0; tt < x.T; ++tt) {
      float acc = 0.f;
      for (int64_t b = 0; b < nb; ++b) {
        int8_t q[kBlock];
        uint16_t h;
        unpack_block(t, w + static_cast<size_t>(r) * rb + static_cast<size_t>(b) * bb, q, &h);
        int32_t isum = 0;
        for (int64_t k = 0; k < kBlock; ++k) {
          const int64_t g = k / 4, j = k % 4;
          isum += q[k] * x.q[static_cast<size_t>(((b * 8 + g) * Tpad + tt) * 4 + j)];
        }
        const float scale = x.d[static_cast<size_t>(b * Tpad + tt)] * f16_to_f32_fast(h);
        acc = std::fma(static_cast<float>(isum), scale, acc);
      }
      y[tt * ldy + r] = acc;
    }
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

// The decode kernels, once for AVX-512 VNNI (256-bit vectors) and once for AVX2.
#define SMOE_DOT_NS vnni
#define SMOE_DOT_TARGET "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c"
#define SMOE_DOT_VNNI 1
#include "kernels/dot_int8_decode-inl.h"
#undef SMOE_DOT_NS
#undef SMOE_DOT_TARGET
#undef SMOE_DOT_VNNI
#define SMOE_DOT_NS avx2
#define SMOE_DOT_TARGET "avx2,fma,f16c"
#define SMOE_DOT_VNNI 0
#include "kernels/dot_int8_decode-inl.h"
#undef SMOE_DOT_NS
#undef SMOE_DOT_TARGET
#undef SMOE_DOT_VNNI

}  // namespace

void quantize_vector(const float* x, int64_t D, Int8Vector& out) {
  SMOE_CHECK(D % kBlock == 0, "int8 activations: row of ", D, " values is not a whole number of 32-value blocks");
  out.D = D;
  const int64_t nb = D / kBlock;
  if (out.q.size() < static_cast<size_t>(D)) out.q.resize(static_cast<size_t>(D));
  if (out.d.size() < static_cast<size_t>(nb)) out.d.resize(static_cast<size_t>(nb));
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
      out.neg8_lane_sums[static_cast<size_t>(b * 8 + l)] = -8 * s;
    }
  }
}

void dot_rows_int8(DType t, const uint8_t* w, int64_t n_rows, const Int8Vector& x, float* y) {
  const Int8Vector* xs[1] = {&x};
  dot_rows_int8_tokens(t, w, n_rows, xs, 1, y, 0);
}

void dot_rows_int8_tokens(DType t, const uint8_t* w, int64_t n_rows, const Int8Vector* const* xs,
                          int n_tokens, float* y, int64_t ldy) {
  SMOE_CHECK(int8_dot_supports(t), "int8 dot: unsupported weight type ", dtype_name(t));
  const bool vnni = int8_gemm_fast();
  if (!vnni && !int8_dot_avx2(t)) {
    for (int i = 0; i < n_tokens; ++i) dot_rows_int8_ref(t, w, n_rows, *xs[i], y + i * ldy);
    return;
  }
  for_token_groups(n_tokens, [&](auto nt, int t0) {
    const Int8Vector* const* x = xs + t0;
    float* yt = y + t0 * ldy;
    if (!vnni) return avx2::dot_rows_run<nt()>(t, w, n_rows, x, yt, ldy);
    return vnni::dot_rows_run<nt()>(t, w, n_rows, x, yt, ldy);
  });
}

void dot_rows_int8_ref(DType t, const uint8_t* w, int64_t n_rows, const Int8Vector& x, float* y) {
  SMOE_CHECK(int8_dot_supports(t), "int8 dot: unsupported weight type ", dtype_name(t));
  const size_t rb = row_bytes(t, x.D);
  for (int64_t r = 0; r < n_rows; ++r) dot_int8_ref_row(t, w + static_cast<size_t>(r) * rb, x, &y[r]);
}

namespace {

constexpr int kSuperBlock = 256;

// Sizes out for T tokens padded to pad_to (grow-only buffers).
void size_activations(int64_t T, int64_t D, Int8Activations& out, int64_t pad_to, bool superblocks) {
  SMOE_CHECK(D % kBlock == 0, "int8 activations: row of ", D, " values is not a whole number of 32-value blocks");
  SMOE_CHECK(!superblocks || D % kSuperBlock == 0, "int8 activations: row of ", D,
             " values is not a whole number of 256-value super-blocks");
  SMOE_CHECK(pad_to >= 1, "int8 activations: padding to multiples of ", pad_to);
  out.T = T;
  out.D = D;
  out.Tpad = (T + pad_to - 1) / pad_to * pad_to;
  out.superblocks = superblocks;
  if (superblocks) {
    const size_t n = static_cast<size_t>(D * out.Tpad);
    if (out.q256.size() < n) out.q256.resize(n);
    if (out.d256.size() < n / kSuperBlock) out.d256.resize(n / kSuperBlock);
    if (out.sum16.size() < n / 16) out.sum16.resize(n / 16);
    for (auto* v : {&out.sum32, &out.corr32}) if (v->size() < n / 32) v->resize(n / 32);
  }
  const size_t nl = static_cast<size_t>(D / kBlock * out.Tpad);
  if (out.q.size() < static_cast<size_t>(D * out.Tpad)) out.q.resize(static_cast<size_t>(D * out.Tpad));
  for (auto* v : {&out.d, &out.dsum}) if (v->size() < nl) v->resize(nl);
  for (auto* v : {&out.corr8, &out.corr4}) if (v->size() < nl) v->resize(nl);
  if (out.corr6.size() < 2 * nl) out.corr6.resize(2 * nl);
  if (out.dsum16.size() < 2 * nl) out.dsum16.resize(2 * nl);
}

// Block b of token t: its 32 values q (zeros for padding tokens), scale and sums stored.
// Inlined (as all of these helpers), also into the AVX-512 quantizer: called there, GCC left the upper halves of the
// vector registers dirty before this function's SSE code, and the transition stalls made it
// the costliest part of activation quantization (perf).
__attribute__((always_inline)) inline void store_block(Int8Activations& out, int64_t b, int64_t t, const int8_t* q, float d, int32_t half0, int32_t half1) {
  const int64_t Tpad = out.Tpad;
  const size_t i = static_cast<size_t>(b * Tpad + t);
  const int32_t sum = half0 + half1;
  out.d[i] = d;
  out.dsum[i] = d * static_cast<float>(sum);
  out.corr8[i] = -128 * sum;
  out.corr4[i] = -8 * sum;
  out.corr6[static_cast<size_t>((b * 2) * Tpad + t)] = -32 * half0;
  out.corr6[static_cast<size_t>((b * 2 + 1) * Tpad + t)] = -32 * half1;
  out.dsum16[static_cast<size_t>((b * 2) * Tpad + t)] = d * static_cast<float>(half0);
  out.dsum16[static_cast<size_t>((b * 2 + 1) * Tpad + t)] = d * static_cast<float>(half1);
  for (int g = 0; g < 8; ++g) std::memcpy(&out.q[static_cast<size_t>(((b * 8 + g) * Tpad + t) * 4)], q + 4 * g, 4);
}

// Super-block s of token t quantized per 256 values (q[256], scale d; zeros for padding
// tokens) stored into q256, d256, sum16, sum32 and corr32.
__attribute__((always_inline)) inline void store_superblock(Int8Activations& out, int64_t t, int64_t s,
                                                            const int8_t* q, float d, const int32_t* sums) {
  const int64_t Tpad = out.Tpad;
  out.d256[static_cast<size_t>(s * Tpad + t)] = d;
  for (int k = 0; k < 16; ++k) out.sum16[static_cast<size_t>((s * 16 + k) * Tpad + t)] = sums[k];
  for (int b = 0; b < 8; ++b) {
    const size_t i = static_cast<size_t>((s * 8 + b) * Tpad + t);
    out.sum32[i] = sums[2 * b] + sums[2 * b + 1];
    out.corr32[i] = -8 * out.sum32[i];
  }
  for (int g = 0; g < kSuperBlock / 4; ++g)  // 4-value groups, laid out as q
    std::memcpy(&out.q256[static_cast<size_t>(((s * 64 + g) * Tpad + t) * 4)], q + 4 * g, 4);
}

// The N values at xs as int8 q[N] (scale amax / 127, round to nearest even) and each 16
// values' sum of q added to sums[N / 16]; returns the scale. Scalar.
template <int N>
float quantize_values_ref(const float* xs, int8_t* q, int32_t* sums) {
  float amax = 0.f;
  for (int i = 0; i < N; ++i) amax = std::max(amax, std::fabs(xs[i]));
  const float d = amax / 127.f, id = d != 0.f ? 1.f / d : 0.f;
  for (int i = 0; i < N; ++i) {
    q[i] = static_cast<int8_t>(std::nearbyint(xs[i] * id));
    sums[i / 16] += q[i];
  }
  return d;
}

// The same with AVX-512, equal bit for bit: the same max, division, product and
// round-to-nearest-even conversion. q 16-byte aligned.
template <int N>
__attribute__((target("avx512f,avx512bw,avx512vl"), always_inline)) inline float quantize_values_avx512(
    const float* xs, int8_t* q, int32_t* sums) {
  __m512 m = _mm512_setzero_ps();
  for (int i = 0; i < N; i += 16) m = _mm512_max_ps(m, _mm512_abs_ps(_mm512_loadu_ps(xs + i)));
  const float d = _mm512_reduce_max_ps(m) / 127.f;
  const __m512 idv = _mm512_set1_ps(d != 0.f ? 1.f / d : 0.f);
  for (int k = 0; k < N / 16; ++k) {
    const __m512i v = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(xs + 16 * k), idv));
    _mm_store_si128(reinterpret_cast<__m128i*>(q + 16 * k), _mm512_cvtsepi32_epi8(v));
    sums[k] += _mm512_reduce_add_epi32(v);
  }
  return d;
}

// Token t (a padding token when t >= T: zeros) per 32-value block and, with out.superblocks,
// per 256-value super-block, with Quant one of the two above. A macro: the scalar and the
// AVX-512 loop must be separate functions (only the second may hold AVX-512 code), and
// GCC does not inline target-attributed code into a function template without the target.
#define SMOE_QUANTIZE_TOKEN(Quant)                                                  \
  do {                                                                              \
    for (int64_t b = 0; b < out.D / kBlock; ++b) {                                  \
      alignas(64) int8_t q[kBlock] = {};                                            \
      float d = 0.f;                                                                \
      int32_t half[2] = {0, 0};                                                     \
      if (t < out.T) d = Quant<kBlock>(x + t * out.D + b * kBlock, q, half);        \
      store_block(out, b, t, q, d, half[0], half[1]);                               \
    }                                                                               \
    for (int64_t s = 0; out.superblocks && s < out.D / kSuperBlock; ++s) {          \
      alignas(64) int8_t q[kSuperBlock] = {};                                       \
      float d = 0.f;                                                                \
      int32_t sums[16] = {};                                                        \
      if (t < out.T) d = Quant<kSuperBlock>(x + t * out.D + s * kSuperBlock, q, sums); \
      store_superblock(out, t, s, q, d, sums);                                      \
    }                                                                               \
  } while (0)

// Tokens [t0, t1), scalar and with AVX-512.
void quantize_tokens_ref(const float* x, Int8Activations& out, int64_t t0, int64_t t1) {
  for (int64_t t = t0; t < t1; ++t) SMOE_QUANTIZE_TOKEN(quantize_values_ref);
}
__attribute__((target("avx512f,avx512bw,avx512vl")))
void quantize_tokens_avx512(const float* x, Int8Activations& out, int64_t t0, int64_t t1) {
  for (int64_t t = t0; t < t1; ++t) SMOE_QUANTIZE_TOKEN(quantize_values_avx512);
}
#undef SMOE_QUANTIZE_TOKEN

}  // namespace

void quantize_activations(const float* x, int64_t T, int64_t D, Int8Activations& out, int64_t pad_to,
                          ThreadPool* pool, bool superblocks) {
  size_activations(T, D, out, pad_to, superblocks);
  const bool fast = int8_gemm_fast();
  // Tokens write disjoint bytes of every buffer: split them over the threads.
  parallel_for(pool, out.Tpad, 4, [&](int64_t t0, int64_t t1) {
    if (fast) quantize_tokens_avx512(x, out, t0, t1);
    else quantize_tokens_ref(x, out, t0, t1);
  });
}

void quantize_activations_ref(const float* x, int64_t T, int64_t D, Int8Activations& out, int64_t pad_to,
                              bool superblocks) {
  size_activations(T, D, out, pad_to, superblocks);
  quantize_tokens_ref(x, out, 0, out.Tpad);
}

bool int8_gemm_fast() {
  static const bool fast = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
  return fast && avx512_allowed();
}

bool int8_gemm_supports(DType t) { return t == DType::Q8_0 || t == DType::Q4_0; }

bool int8_dot_avx2(DType t) { return avx2_allowed() && int8_dot_supports(t); }

bool int8_dot_supports(DType t) { return int8_gemm_supports(t); }

void gemm_int8_panel(DType t, const uint8_t* w, int64_t n, const Int8Activations& x, float* y,
                     int64_t ldy) {
  SMOE_CHECK(int8_gemm_supports(t), "int8 gemm: unsupported weight type ", dtype_name(t));
  if (!int8_gemm_fast()) return reference_kernel(t, w, n, x, y, ldy);
  if (t == DType::Q8_0) vnni_kernel<true>(w, n, x, y, ldy);
  else vnni_kernel<false>(w, n, x, y, ldy);
}

void gemm_int8_panel_ref(DType t, const uint8_t* w, int64_t n, const Int8Activations& x, float* y,
                         int64_t ldy) {
  SMOE_CHECK(int8_gemm_supports(t), "int8 gemm: unsupported weight type ", dtype_name(t));
  reference_kernel(t, w, n, x, y, ldy);
}

}  // namespace smoe
