// quantize.cpp: float32 -> f16/bf16/q8_0/q4_0/q2_K/q3_K/q4_K/q5_K/q6_K row quantizers (scalar,
// but for the q2_K/q3_K scale searches' trials, which run on AVX-512 where the CPU has it).
// q8_0 and q4_0 round the way llama.cpp's reference quantizers do; q4_K/q5_K/q6_K take each
// sub-block's scale (and min) from its range, then 6-bit (8-bit for q6_K) super-block
// quantization of those scales, then round every value with the scales actually stored.
// q2_K and q3_K, with only 4 or 8 levels per value, search for each 16-value sub-block's
// least-squares scale (and min), then fit the 4-bit (q2_K) or 6-bit (q3_K) super-block
// quantization of those scales the same way, then round every value with the stored scales.
#include "kernels/quantize.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "kernels/cpu_features.h"

// GCC 12 reports the _mm512_undefined_* sources inside the conversion intrinsics as
// "may be used uninitialized" once they are inlined here; they are fully overwritten.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

namespace smoe {

namespace {

void store_u16(uint8_t* p, uint16_t v) { std::memcpy(p, &v, 2); }

// Rounds half away from zero, as std::lround does, without its libm call (which took 40%
// of q2_K/q3_K quantization). |x| is clamped to 1e9 and NaN maps to 0, so the conversion
// is always defined; every caller clamps the result to a small range anyway.
int nearest_int(float x) {
  if (!(std::fabs(x) < 1e9f)) x = x > 0.f ? 1e9f : (x < 0.f ? -1e9f : 0.f);
  const int t = static_cast<int>(x);          // toward zero
  const float f = x - static_cast<float>(t);  // exact: t is x's integer part
  return t + (f >= 0.5f) - (f <= -0.5f);
}

// The value of largest magnitude in x[n] (its sign kept; the first on ties).
float signed_absmax(const float* x, int n) {
  float best = 0.f;
  for (int i = 0; i < n; ++i)
    if (std::fabs(x[i]) > std::fabs(best)) best = x[i];
  return best;
}

void quantize_q8_0(const float* x, BlockQ8_0& b) {
  float amax = 0.f;
  for (size_t i = 0; i < kQK8_0; ++i) amax = std::max(amax, std::fabs(x[i]));
  const float d = amax / 127.f, id = d != 0.f ? 1.f / d : 0.f;
  b.d = f32_to_f16(d);
  for (size_t i = 0; i < kQK8_0; ++i) b.qs[i] = static_cast<int8_t>(std::roundf(x[i] * id));
}

void quantize_q4_0(const float* x, BlockQ4_0& b) {
  const float max = signed_absmax(x, kQK4_0);
  const float d = max / -8.f, id = d != 0.f ? 1.f / d : 0.f;
  b.d = f32_to_f16(d);
  for (size_t i = 0; i < kQK4_0 / 2; ++i) {
    const int lo = std::min(15, static_cast<int>(static_cast<int8_t>(x[i] * id + 8.5f)));
    const int hi = std::min(15, static_cast<int>(static_cast<int8_t>(x[i + kQK4_0 / 2] * id + 8.5f)));
    b.qs[i] = static_cast<uint8_t>(lo | hi << 4);
  }
}

// Q4_K (nmax 15, qh null) or Q5_K (nmax 31): fills d, dmin, scales and q[256] (0..nmax).
void quantize_k4_k5(const float* x, int nmax, uint16_t* d16, uint16_t* dmin16, uint8_t* scales,
                    uint8_t* q) {
  float scale[8], min[8];  // per 32-value sub-block: value ~ scale * q - min
  float max_scale = 0.f, max_min = 0.f;
  for (int j = 0; j < 8; ++j) {
    const float* s = x + 32 * j;
    float lo = 0.f, hi = -INFINITY;
    for (int l = 0; l < 32; ++l) {
      lo = std::min(lo, s[l]);
      hi = std::max(hi, s[l]);
    }
    scale[j] = (hi - lo) / static_cast<float>(nmax);
    min[j] = -lo;
    max_scale = std::max(max_scale, scale[j]);
    max_min = std::max(max_min, min[j]);
  }
  *d16 = f32_to_f16(max_scale / 63.f);
  *dmin16 = f32_to_f16(max_min / 63.f);
  const float d = f16_to_f32(*d16), dmin = f16_to_f32(*dmin16);
  uint8_t sc[8], mn[8];
  for (int j = 0; j < 8; ++j) {
    sc[j] = static_cast<uint8_t>(d > 0 ? std::clamp(nearest_int(scale[j] / d), 0, 63) : 0);
    mn[j] = static_cast<uint8_t>(dmin > 0 ? std::clamp(nearest_int(min[j] / dmin), 0, 63) : 0);
  }
  std::memset(scales, 0, 12);
  for (int j = 0; j < 8; ++j) {
    if (j < 4) {
      scales[j] = sc[j];
      scales[j + 4] = mn[j];
    } else {
      scales[j + 4] = static_cast<uint8_t>((sc[j] & 0xF) | (mn[j] & 0xF) << 4);
      scales[j - 4] |= static_cast<uint8_t>((sc[j] >> 4) << 6);
      scales[j] |= static_cast<uint8_t>((mn[j] >> 4) << 6);
    }
  }
  for (int j = 0; j < 8; ++j) {
    const float ds = d * sc[j], m = dmin * mn[j];
    for (int l = 0; l < 32; ++l) {
      const int v = ds > 0 ? nearest_int((x[32 * j + l] + m) / ds) : 0;
      q[32 * j + l] = static_cast<uint8_t>(std::clamp(v, 0, nmax));
    }
  }
}

void quantize_q4_k(const float* x, BlockQ4_K& b) {
  uint8_t q[kQK_K];
  quantize_k4_k5(x, 15, &b.d, &b.dmin, b.scales, q);
  for (int c = 0; c < 4; ++c)
    for (int l = 0; l < 32; ++l)
      b.qs[32 * c + l] = static_cast<uint8_t>(q[64 * c + l] | q[64 * c + 32 + l] << 4);
}

void quantize_q5_k(const float* x, BlockQ5_K& b) {
  uint8_t q[kQK_K];
  quantize_k4_k5(x, 31, &b.d, &b.dmin, b.scales, q);
  std::memset(b.qh, 0, sizeof b.qh);
  for (int c = 0; c < 4; ++c)
    for (int l = 0; l < 32; ++l) {
      const uint8_t lo = q[64 * c + l], hi = q[64 * c + 32 + l];
      b.qs[32 * c + l] = static_cast<uint8_t>((lo & 0xF) | (hi & 0xF) << 4);
      b.qh[l] |= static_cast<uint8_t>((lo >> 4) << (2 * c) | (hi >> 4) << (2 * c + 1));
    }
}

void quantize_q6_k(const float* x, BlockQ6_K& b) {
  float scale[16];  // per 16-value sub-block: value ~ scale * q, q in -32..31
  float max_scale = 0.f;
  for (int j = 0; j < 16; ++j) {
    scale[j] = signed_absmax(x + 16 * j, 16) / -32.f;
    max_scale = std::max(max_scale, std::fabs(scale[j]));
  }
  b.d = f32_to_f16(max_scale / 127.f);
  const float d = f16_to_f32(b.d);
  uint8_t q[kQK_K];
  for (int j = 0; j < 16; ++j) {
    const int sc = d > 0 ? std::clamp(nearest_int(scale[j] / d), -128, 127) : 0;
    b.scales[j] = static_cast<int8_t>(sc);
    const float ds = d * static_cast<float>(sc);
    for (int l = 0; l < 16; ++l) {
      const int v = ds != 0.f ? nearest_int(x[16 * j + l] / ds) : 0;
      q[16 * j + l] = static_cast<uint8_t>(std::clamp(v, -32, 31) + 32);
    }
  }
  std::memset(b.ql, 0, sizeof b.ql);
  std::memset(b.qh, 0, sizeof b.qh);
  for (int h = 0; h < 2; ++h)
    for (int j = 0; j < 4; ++j)
      for (int l = 0; l < 32; ++l) {
        const uint8_t v = q[128 * h + 32 * j + l];
        b.ql[64 * h + l + 32 * (j & 1)] |= static_cast<uint8_t>((v & 0xF) << (j < 2 ? 0 : 4));
        b.qh[32 * h + l] |= static_cast<uint8_t>((v >> 4) << (2 * j));
      }
}

// ---- q2_K / q3_K ------------------------------------------------------------------------

// The trial searches, scalar and AVX-512.
// Both sum each trial's terms over the values in index order with the same operations (no
// fused multiply-adds), so they give the same bits; the AVX-512 versions run one trial per
// lane, 16 at a time (q2_K/q3_K quantization spent nearly all its time in these loops).

// fit_scale's trials k < nt: levels L = clamp(nearest_int(iscale[k] x[i]), qmin, qmax),
// sxl[k] = sum w x L and sll[k] = sum w L^2.
void scale_trials_ref(const float* x, const float* w, int n, int qmin, int qmax, const float* iscale, int nt,
                      double* sxl, double* sll) {
  for (int k = 0; k < nt; ++k) {
    sxl[k] = sll[k] = 0;
    for (int i = 0; i < n; ++i) {
      const int q = std::clamp(nearest_int(iscale[k] * x[i]), qmin, qmax);
      sxl[k] += static_cast<double>(w[i]) * x[i] * q;
      sll[k] += static_cast<double>(w[i]) * q * q;
    }
  }
}

// fit_scale_min's trials k < nt: levels Lq[i][k] = clamp(nearest_int(iscale[k] (x[i] - lo)),
// 0, 3) and their sums sl = sum L, sll = sum L^2, sxl = sum x L.
void min_trials_ref(const float* x, float lo, const float* iscale, int nt, int (*Lq)[16], double* sl, double* sll,
                    double* sxl) {
  for (int k = 0; k < nt; ++k) {
    sl[k] = sll[k] = sxl[k] = 0;
    for (int i = 0; i < 16; ++i) {
      const int q = std::clamp(nearest_int(iscale[k] * (x[i] - lo)), 0, 3);
      Lq[i][k] = q;
      sl[k] += q;
      sll[k] += q * q;
      sxl[k] += static_cast<double>(x[i]) * q;
    }
  }
}

// The squared error of value ~ a L + b over the 16 values, L = Lq[i][k].
double min_error(const float* x, const int (*Lq)[16], int k, float a, float b) {
  double err = 0;
  for (int i = 0; i < 16; ++i) {
    const double e = a * static_cast<float>(Lq[i][k]) + b - x[i];
    err += e * e;
  }
  return err;
}

bool quant_avx512() {
  static const bool ok = __builtin_cpu_supports("avx512f");
  return ok && avx512_allowed();
}

// The compiler may not fuse a product into the add that follows (GNU mode contracts).
__attribute__((target("avx512f"), always_inline)) inline __m512d opaque(__m512d v) {
  asm("" : "+v"(v));
  return v;
}
__attribute__((target("avx512f"), always_inline)) inline __m512 opaque(__m512 v) {
  asm("" : "+v"(v));
  return v;
}

// nearest_int on 16 lanes.
__attribute__((target("avx512f"), always_inline)) inline __m512i nearest_int16(__m512 v) {
  const __m512 big = _mm512_set1_ps(1e9f), zero = _mm512_setzero_ps();
  const __mmask16 in_range = _mm512_cmp_ps_mask(_mm512_abs_ps(v), big, _CMP_LT_OQ);
  __m512 r = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v, zero, _CMP_GT_OQ), big);
  r = _mm512_mask_mov_ps(r, _mm512_cmp_ps_mask(v, zero, _CMP_LT_OQ), _mm512_set1_ps(-1e9f));
  v = _mm512_mask_mov_ps(r, in_range, v);
  const __m512i t = _mm512_cvttps_epi32(v), one = _mm512_set1_epi32(1);
  const __m512 f = _mm512_sub_ps(v, _mm512_cvtepi32_ps(t));
  const __m512i up = _mm512_mask_add_epi32(t, _mm512_cmp_ps_mask(f, _mm512_set1_ps(0.5f), _CMP_GE_OQ), t, one);
  return _mm512_mask_sub_epi32(up, _mm512_cmp_ps_mask(f, _mm512_set1_ps(-0.5f), _CMP_LE_OQ), up, one);
}
__attribute__((target("avx512f"), always_inline)) inline __m512i clamp16(__m512i q, int lo, int hi) {
  return _mm512_max_epi32(_mm512_min_epi32(q, _mm512_set1_epi32(hi)), _mm512_set1_epi32(lo));
}

// scale_trials_ref for trials 0..15.
__attribute__((target("avx512f"))) void scale_trials_avx512(const float* x, const float* w, int n, int qmin, int qmax,
                                                            const float* iscale, double* sxl, double* sll) {
  const __m512 is = _mm512_loadu_ps(iscale);
  __m512d xl[2] = {_mm512_setzero_pd(), _mm512_setzero_pd()}, ll[2] = {xl[0], xl[1]};
  for (int i = 0; i < n; ++i) {
    const __m512i q = clamp16(nearest_int16(_mm512_mul_ps(is, _mm512_set1_ps(x[i]))), qmin, qmax);
    const __m512d wi = _mm512_set1_pd(w[i]), wx = _mm512_set1_pd(static_cast<double>(w[i]) * x[i]);
    for (int h = 0; h < 2; ++h) {
      const __m512d qd = _mm512_cvtepi32_pd(h ? _mm512_extracti64x4_epi64(q, 1) : _mm512_castsi512_si256(q));
      xl[h] = _mm512_add_pd(xl[h], opaque(_mm512_mul_pd(wx, qd)));
      ll[h] = _mm512_add_pd(ll[h], opaque(_mm512_mul_pd(opaque(_mm512_mul_pd(wi, qd)), qd)));
    }
  }
  for (int h = 0; h < 2; ++h) {
    _mm512_storeu_pd(sxl + 8 * h, xl[h]);
    _mm512_storeu_pd(sll + 8 * h, ll[h]);
  }
}

// min_trials_ref for trials 0..15.
__attribute__((target("avx512f"))) void min_trials_avx512(const float* x, float lo, const float* iscale, int (*Lq)[16],
                                                          double* sl, double* sll, double* sxl) {
  const __m512 is = _mm512_loadu_ps(iscale);
  __m512d l1[2] = {_mm512_setzero_pd(), _mm512_setzero_pd()}, l2[2] = {l1[0], l1[1]}, xl[2] = {l1[0], l1[1]};
  for (int i = 0; i < 16; ++i) {
    const __m512i q = clamp16(nearest_int16(_mm512_mul_ps(is, _mm512_set1_ps(x[i] - lo))), 0, 3);
    _mm512_storeu_si512(Lq[i], q);
    const __m512i qq = _mm512_mullo_epi32(q, q);
    const __m512d xd = _mm512_set1_pd(x[i]);
    for (int h = 0; h < 2; ++h) {
      const __m512d qd = _mm512_cvtepi32_pd(h ? _mm512_extracti64x4_epi64(q, 1) : _mm512_castsi512_si256(q));
      const __m512d qqd = _mm512_cvtepi32_pd(h ? _mm512_extracti64x4_epi64(qq, 1) : _mm512_castsi512_si256(qq));
      l1[h] = _mm512_add_pd(l1[h], qd);
      l2[h] = _mm512_add_pd(l2[h], qqd);
      xl[h] = _mm512_add_pd(xl[h], opaque(_mm512_mul_pd(xd, qd)));
    }
  }
  for (int h = 0; h < 2; ++h) {
    _mm512_storeu_pd(sl + 8 * h, l1[h]);
    _mm512_storeu_pd(sll + 8 * h, l2[h]);
    _mm512_storeu_pd(sxl + 8 * h, xl[h]);
  }
}

// min_error for trials 0..15 (a[k], b[k] per lane).
__attribute__((target("avx512f"))) void min_errors_avx512(const float* x, const int (*Lq)[16], const float* a,
                                                          const float* b, double* err) {
  const __m512 av = _mm512_loadu_ps(a), bv = _mm512_loadu_ps(b);
  __m512d acc[2] = {_mm512_setzero_pd(), _mm512_setzero_pd()};
  for (int i = 0; i < 16; ++i) {
    const __m512 l = _mm512_cvtepi32_ps(_mm512_loadu_si512(Lq[i]));
    const __m512 e = _mm512_sub_ps(_mm512_add_ps(opaque(_mm512_mul_ps(av, l)), bv), _mm512_set1_ps(x[i]));
    for (int h = 0; h < 2; ++h) {
      const __m512d ed = _mm512_cvtps_pd(h ? _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(e), 1)) : _mm512_castps512_ps256(e));
      acc[h] = _mm512_add_pd(acc[h], opaque(_mm512_mul_pd(ed, ed)));
    }
  }
  _mm512_storeu_pd(err, acc[0]);
  _mm512_storeu_pd(err + 8, acc[1]);
}

// The s minimising sum_i w[i] (x[i] - s L[i])^2 over integer L[i] in [qmin, qmax], found by
// trying scales that map the value of largest magnitude to qmin or qmax times 0.6 .. 1.4,
// each followed by the least-squares s for its L; then two rounds of re-rounding with the
// best s. Fills L[n] and returns s (0, with L all 0, when x is all zero). simd: the trials
// on AVX-512 where the CPU has it (the same result).
float fit_scale(const float* x, const float* w, int n, int qmin, int qmax, int* L, bool simd) {
  const float amax = signed_absmax(x, n);
  if (amax == 0.f) {
    std::fill(L, L + n, 0);
    return 0.f;
  }
  auto round_all = [&](float iscale, int* out) {
    for (int i = 0; i < n; ++i) out[i] = std::clamp(nearest_int(iscale * x[i]), qmin, qmax);
  };
  // Least-squares s for levels q, and how much it lowers the error (sxl^2 / sll).
  auto solve = [&](const int* q, float* scale) {
    double sxl = 0, sll = 0;
    for (int i = 0; i < n; ++i) {
      sxl += static_cast<double>(w[i]) * x[i] * q[i];
      sll += static_cast<double>(w[i]) * q[i] * q[i];
    }
    *scale = sll > 0 ? static_cast<float>(sxl / sll) : 0.f;
    return sll > 0 ? sxl * sxl / sll : 0.0;
  };
  constexpr int kTrials = 17;  // scale factors 0.6, 0.65, .., 1.4
  double best_gain = -1;
  float best = 0.f;
  for (const int target : {qmin, qmax}) {
    if (target == 0) continue;
    float iscale[kTrials];
    double sxl[kTrials], sll[kTrials];
    for (int k = 0; k < kTrials; ++k) iscale[k] = static_cast<float>(target) * (1.f + 0.05f * static_cast<float>(k - 8)) / amax;
    int done = 0;
    if (simd && quant_avx512()) {
      scale_trials_avx512(x, w, n, qmin, qmax, iscale, sxl, sll);
      done = 16;
    }
    scale_trials_ref(x, w, n, qmin, qmax, iscale + done, kTrials - done, sxl + done, sll + done);
    for (int k = 0; k < kTrials; ++k) {  // as solve()
      const double gain = sll[k] > 0 ? sxl[k] * sxl[k] / sll[k] : 0.0;
      if (gain > best_gain) {
        best_gain = gain;
        best = sll[k] > 0 ? static_cast<float>(sxl[k] / sll[k]) : 0.f;
      }
    }
  }
  round_all(best != 0.f ? 1.f / best : 0.f, L);
  for (int iter = 0; iter < 2 && best != 0.f; ++iter) {
    float sc;
    solve(L, &sc);
    if (sc == 0.f || sc == best) break;
    best = sc;
    round_all(1.f / best, L);
  }
  return best;
}

// A q2_K sub-block of 16 values: value ~ a * L - m with L in 0..3, a >= 0, m >= 0 (the
// stored mins are unsigned), minimising the squared error. Candidate levels come from
// rounding with scales around the range's, each followed by the least-squares (a, m).
void fit_scale_min(const float* x, float* a_out, float* m_out, bool simd) {
  constexpr int n = 16, nmax = 3;
  float lo = 0.f, hi = x[0];
  for (int i = 0; i < n; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
  }
  if (hi <= lo) {  // all values equal and <= 0: the min alone represents them
    *a_out = 0.f;
    *m_out = -lo;
    return;
  }
  double sx = 0;
  for (int i = 0; i < n; ++i) sx += x[i];
  // Least-squares (a, b) for value ~ a L + b, with b <= 0 and a >= 0, from the level sums
  // sl = sum L, sll = sum L^2 and sxl = sum x L.
  auto solve = [&](double sl, double sll, double sxl, float* a, float* b) {
    const double det = n * sll - sl * sl;
    double av = det > 0 ? (n * sxl - sl * sx) / det : 0.0, bv = det > 0 ? (sll * sx - sl * sxl) / det : sx / n;
    if (bv > 0) {  // offset must not be positive: fit a alone
      bv = 0;
      av = sll > 0 ? sxl / sll : 0.0;
    }
    if (av < 0) {
      av = 0;
      bv = std::min(0.0, sx / n);
    }
    *a = static_cast<float>(av);
    *b = static_cast<float>(bv);
  };
  // 13 trial scales (lanes 13-15 of the AVX-512 path run a zero scale and are ignored).
  constexpr int kTrials = 13;
  float iscale[16] = {}, a[16] = {}, b[16] = {};
  int Lq[n][16];
  double sl[16], sll[16], sxl[16], err[16];
  for (int k = 0; k < kTrials; ++k) iscale[k] = (static_cast<float>(nmax) + 0.1f * static_cast<float>(k - 6)) / (hi - lo);
  const bool vec = simd && quant_avx512();
  if (vec) min_trials_avx512(x, lo, iscale, Lq, sl, sll, sxl);
  else min_trials_ref(x, lo, iscale, kTrials, Lq, sl, sll, sxl);
  for (int k = 0; k < kTrials; ++k) solve(sl[k], sll[k], sxl[k], &a[k], &b[k]);
  if (vec) min_errors_avx512(x, Lq, a, b, err);
  else
    for (int k = 0; k < kTrials; ++k) err[k] = min_error(x, Lq, k, a[k], b[k]);
  double best_err = INFINITY;
  float best_a = 0.f, best_b = 0.f;
  for (int k = 0; k < kTrials; ++k)
    if (err[k] < best_err) {
      best_err = err[k];
      best_a = a[k];
      best_b = b[k];
    }
  for (int iter = 0; iter < 3; ++iter) {  // re-round with the best fit, refit
    double s1 = 0, s2 = 0, s3 = 0;
    for (int i = 0; i < n; ++i) {
      const int q = best_a > 0 ? std::clamp(nearest_int((x[i] - best_b) / best_a), 0, nmax) : 0;
      Lq[i][0] = q;
      s1 += q;
      s2 += q * q;
      s3 += static_cast<double>(x[i]) * q;
    }
    float a1, b1;
    solve(s1, s2, s3, &a1, &b1);
    const double e = min_error(x, Lq, 0, a1, b1);
    if (!(e < best_err)) break;
    best_err = e;
    best_a = a1;
    best_b = b1;
  }
  *a_out = best_a;
  *m_out = -best_b;
}

// Packs L[256] (0..3) into the 2-bit qs layout shared by q2_K and q3_K (dtype.h).
void pack_2bit(const uint8_t* L, uint8_t* qs) {
  std::memset(qs, 0, kQK_K / 4);
  for (int i = 0; i < static_cast<int>(kQK_K); ++i)
    qs[32 * (i / 128) + i % 32] |= static_cast<uint8_t>((L[i] & 3) << (2 * ((i % 128) / 32)));
}

void quantize_q2_k(const float* x, BlockQ2_K& b, bool simd) {
  float scale[16], min[16];
  for (int j = 0; j < 16; ++j) fit_scale_min(x + 16 * j, &scale[j], &min[j], simd);
  // Scales and mins to 4 bits, every sub-block weighted alike.
  const float ones[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
  int sc[16], mn[16];
  b.d = f32_to_f16(fit_scale(scale, ones, 16, 0, 15, sc, simd));
  const float d = f16_to_f32(b.d);
  // Each min refitted to the scale actually stored (a sub-block whose scale rounds to 0
  // becomes the constant closest to its values, not its old min).
  for (int j = 0; j < 16; ++j) {
    const float dl = d * static_cast<float>(sc[j]);
    const float* xs = x + 16 * j;
    for (int iter = 0; iter < 2; ++iter) {
      double sum = 0;
      for (int l = 0; l < 16; ++l) {
        const int q = dl > 0 ? std::clamp(nearest_int((xs[l] + min[j]) / dl), 0, 3) : 0;
        sum += static_cast<double>(dl) * q - xs[l];
      }
      min[j] = std::max(0.f, static_cast<float>(sum / 16));
    }
  }
  b.dmin = f32_to_f16(fit_scale(min, ones, 16, 0, 15, mn, simd));
  for (int j = 0; j < 16; ++j) b.scales[j] = static_cast<uint8_t>(sc[j] | mn[j] << 4);
  const float dmin = f16_to_f32(b.dmin);
  uint8_t L[kQK_K];
  for (int j = 0; j < 16; ++j) {
    const float dl = d * static_cast<float>(sc[j]), ml = dmin * static_cast<float>(mn[j]);
    for (int l = 0; l < 16; ++l) {
      const int v = dl > 0 ? nearest_int((x[16 * j + l] + ml) / dl) : 0;
      L[16 * j + l] = static_cast<uint8_t>(std::clamp(v, 0, 3));
    }
  }
  pack_2bit(L, b.qs);
}

void quantize_q3_k(const float* x, BlockQ3_K& b, bool simd) {
  float scale[16], w_scale[16];
  int L[kQK_K];
  const float ones[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
  for (int j = 0; j < 16; ++j) {
    scale[j] = fit_scale(x + 16 * j, ones, 16, -4, 3, L + 16 * j, simd);
    // An error e in this scale moves value i by e * L[i].
    float sll = 0.f;
    for (int l = 0; l < 16; ++l) sll += static_cast<float>(L[16 * j + l] * L[16 * j + l]);
    w_scale[j] = std::max(sll, 1.f);
  }
  int sc[16];
  b.d = f32_to_f16(fit_scale(scale, w_scale, 16, -32, 31, sc, simd));
  std::memset(b.scales, 0, sizeof b.scales);
  for (int j = 0; j < 16; ++j) {
    const int v = sc[j] + 32;  // stored 6-bit value (dtype.h, q3k_scale)
    b.scales[j % 8] |= static_cast<uint8_t>((v & 0xF) << (j < 8 ? 0 : 4));
    b.scales[8 + j % 4] |= static_cast<uint8_t>((v >> 4) << (2 * (j / 4)));
  }
  const float d = f16_to_f32(b.d);
  uint8_t low[kQK_K];
  std::memset(b.hmask, 0, sizeof b.hmask);
  for (int i = 0; i < static_cast<int>(kQK_K); ++i) {
    const float dl = d * static_cast<float>(sc[i / 16]);
    const int q = (dl != 0.f ? std::clamp(nearest_int(x[i] / dl), -4, 3) : 0) + 4;  // 0..7
    low[i] = static_cast<uint8_t>(q & 3);
    if (q >= 4) b.hmask[i % 32] |= static_cast<uint8_t>(1 << (i / 32));
  }
  pack_2bit(low, b.qs);
}

template <typename Block, typename Fn>
void per_block(const float* src, uint8_t* dst, int64_t n, size_t block_elems, Fn fn) {
  for (int64_t b = 0; b < n / static_cast<int64_t>(block_elems); ++b) {
    Block blk;
    fn(src + b * static_cast<int64_t>(block_elems), blk);
    std::memcpy(dst + b * sizeof(Block), &blk, sizeof(Block));
  }
}

void quantize_row_impl(DType t, const float* src, uint8_t* dst, int64_t n, bool simd) {
  row_bytes(t, n);  // checks n is a whole number of blocks
  if (n == 0) return;
  switch (t) {
    case DType::F32:
      std::memcpy(dst, src, static_cast<size_t>(n) * 4);
      return;
    case DType::F16:
      for (int64_t i = 0; i < n; ++i) store_u16(dst + 2 * i, f32_to_f16(src[i]));
      return;
    case DType::BF16:
      for (int64_t i = 0; i < n; ++i) store_u16(dst + 2 * i, f32_to_bf16(src[i]));
      return;
    case DType::Q8_0: return per_block<BlockQ8_0>(src, dst, n, kQK8_0, quantize_q8_0);
    case DType::Q4_0: return per_block<BlockQ4_0>(src, dst, n, kQK4_0, quantize_q4_0);
    case DType::Q2_K:
      return per_block<BlockQ2_K>(src, dst, n, kQK_K, [&](const float* x, BlockQ2_K& b) { quantize_q2_k(x, b, simd); });
    case DType::Q3_K:
      return per_block<BlockQ3_K>(src, dst, n, kQK_K, [&](const float* x, BlockQ3_K& b) { quantize_q3_k(x, b, simd); });
    case DType::Q4_K: return per_block<BlockQ4_K>(src, dst, n, kQK_K, quantize_q4_k);
    case DType::Q5_K: return per_block<BlockQ5_K>(src, dst, n, kQK_K, quantize_q5_k);
    case DType::Q6_K: return per_block<BlockQ6_K>(src, dst, n, kQK_K, quantize_q6_k);
  }
  fail("quantize_row: unsupported type ", static_cast<uint32_t>(t));
}

}  // namespace

void quantize_row(DType t, const float* src, uint8_t* dst, int64_t n) { quantize_row_impl(t, src, dst, n, true); }
void quantize_row_ref(DType t, const float* src, uint8_t* dst, int64_t n) { quantize_row_impl(t, src, dst, n, false); }

}  // namespace smoe
