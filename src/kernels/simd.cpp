// simd.cpp: Highway SIMD kernels (see simd.h). This file is compiled once per x86 target
// (foreach_target.h) and the best one is picked at run time (HWY_DYNAMIC_DISPATCH).
// Fused decode dot products per weight type, and a packed GEMM tile for batches.
// Legend: T tokens, D row length, N lanes of a float vector on the current target.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/simd.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
// Must come after foreach_target.h.
#include "hwy/cache_control.h"
#include "hwy/highway.h"
#include "hwy/contrib/math/math-inl.h"
#include "kernels/simd.h"

#include <cstring>
#include <vector>

#include "kernels/dequant.h"
#include "kernels/dot_float.h"
#include "kernels/cpu_features.h"

HWY_BEFORE_NAMESPACE();
namespace smoe {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Quantized kernels use at most 16 float lanes so that a vector never spans two
// 16-value groups (q4_0 halves, q6_K sub-blocks).
using DF = hn::CappedTag<float, 16>;

// How far ahead of the current block the decode kernels prefetch weights (rows are
// contiguous, so this runs on into the next row).
constexpr size_t kPrefetchBytes = 2048;

inline uint16_t load_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

// out[n] += a * v[n]
void Axpy(float a, const float* v, float* out, int64_t n) {
  const hn::ScalableTag<float> d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  const auto av = hn::Set(d, a);
  int64_t i = 0;
  for (; i + N <= n; i += N) hn::StoreU(hn::MulAdd(av, hn::LoadU(d, v + i), hn::LoadU(d, out + i)), d, out + i);
  for (; i < n; ++i) out[i] += a * v[i];
}

// g[n] = silu(g[n]) * u[n] (SwiGLU) = g / (1 + e^-g) * u, with Highway's vector exp (valid
// up to +104): below g = -88, where silu is under 1e-36, the result is a signed zero, as
// std::exp overflowing to infinity gives.
void SiluMul(float* g, const float* u, int64_t n) {
  const hn::ScalableTag<float> d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  const auto one = hn::Set(d, 1.f), lim = hn::Set(d, 88.f), zero = hn::Zero(d);
  int64_t i = 0;
  for (; i + N <= n; i += N) {
    const auto x = hn::LoadU(d, g + i);
    const auto nx = hn::Neg(x);
    auto s = hn::Div(x, hn::Add(one, hn::Exp(d, hn::Min(nx, lim))));
    s = hn::IfThenElse(hn::Gt(nx, lim), hn::Mul(x, zero), s);
    hn::StoreU(hn::Mul(s, hn::LoadU(d, u + i)), d, g + i);
  }
  for (; i < n; ++i) g[i] = g[i] / (1.f + std::exp(-g[i])) * u[i];
}

// dot of a[n] and b[n]: 4 vector accumulators, then the tail.
float DotF32(const float* a, const float* b, int64_t n) {
  const hn::ScalableTag<float> d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  auto a0 = hn::Zero(d), a1 = hn::Zero(d), a2 = hn::Zero(d), a3 = hn::Zero(d);
  int64_t i = 0;
  for (; i + 4 * N <= n; i += 4 * N) {
    a0 = hn::MulAdd(hn::LoadU(d, a + i), hn::LoadU(d, b + i), a0);
    a1 = hn::MulAdd(hn::LoadU(d, a + i + N), hn::LoadU(d, b + i + N), a1);
    a2 = hn::MulAdd(hn::LoadU(d, a + i + 2 * N), hn::LoadU(d, b + i + 2 * N), a2);
    a3 = hn::MulAdd(hn::LoadU(d, a + i + 3 * N), hn::LoadU(d, b + i + 3 * N), a3);
  }
  for (; i + N <= n; i += N) a0 = hn::MulAdd(hn::LoadU(d, a + i), hn::LoadU(d, b + i), a0);
  float sum = hn::GetLane(hn::SumOfLanes(d, hn::Add(hn::Add(a0, a1), hn::Add(a2, a3))));
  for (; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

// ---- 32-value blocks ---------------------------------------------------------------------

float dot_q8_0(const uint8_t* w, const float* x, int64_t D) {
  const DF d;
  const hn::RebindToSigned<DF> di;
  const hn::Rebind<int8_t, DF> d8;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  auto sum0 = hn::Zero(d), sum1 = hn::Zero(d);
  const int64_t nb = D / 32;
  int64_t b = 0;
  for (; b < nb; ++b) {
    const uint8_t* blk = w + b * sizeof(BlockQ8_0);
    hwy::Prefetch(blk + kPrefetchBytes);
    const int8_t* qs = reinterpret_cast<const int8_t*>(blk + 2);
    const float* xb = x + b * 32;
    auto acc = hn::Zero(d);
    for (int64_t i = 0; i < 32; i += N)
      acc = hn::MulAdd(hn::ConvertTo(d, hn::PromoteTo(di, hn::LoadU(d8, qs + i))), hn::LoadU(d, xb + i), acc);
    const auto scale = hn::Set(d, f16_to_f32_fast(load_u16(blk)));
    if (b & 1) sum1 = hn::MulAdd(scale, acc, sum1);
    else sum0 = hn::MulAdd(scale, acc, sum0);
  }
  return hn::GetLane(hn::SumOfLanes(d, hn::Add(sum0, sum1)));
}

float dot_q4_0(const uint8_t* w, const float* x, int64_t D) {
  const DF d;
  const hn::RebindToSigned<DF> di;
  const hn::Rebind<uint8_t, DF> d8;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  const auto mask = hn::Set(di, 15), eight = hn::Set(di, 8);
  auto sum0 = hn::Zero(d), sum1 = hn::Zero(d);
  const int64_t nb = D / 32;
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* blk = w + b * sizeof(BlockQ4_0);
    if (b & 1) hwy::Prefetch(blk + kPrefetchBytes);
    const uint8_t* qs = blk + 2;
    const float* xb = x + b * 32;
    auto acc = hn::Zero(d);
    for (int64_t i = 0; i < 16; i += N) {
      const auto q = hn::BitCast(di, hn::PromoteTo(hn::RebindToUnsigned<DF>(), hn::LoadU(d8, qs + i)));
      const auto lo = hn::Sub(hn::And(q, mask), eight);
      const auto hi = hn::Sub(hn::ShiftRight<4>(q), eight);
      acc = hn::MulAdd(hn::ConvertTo(d, lo), hn::LoadU(d, xb + i), acc);
      acc = hn::MulAdd(hn::ConvertTo(d, hi), hn::LoadU(d, xb + 16 + i), acc);
    }
    const auto scale = hn::Set(d, f16_to_f32_fast(load_u16(blk)));
    if (b & 1) sum1 = hn::MulAdd(scale, acc, sum1);
    else sum0 = hn::MulAdd(scale, acc, sum0);
  }
  return hn::GetLane(hn::SumOfLanes(d, hn::Add(sum0, sum1)));
}

// Four rows at once (q8_0 / q4_0): the x loads are shared, and four independent weight
// streams keep more memory requests in flight. Same per-row arithmetic as the 1-row kernels.
template <DType kType>
void dot4_rows(const uint8_t* w, size_t rb, const float* x, int64_t D, float* y) {
  const DF d;
  const hn::RebindToSigned<DF> di;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  constexpr size_t bb = kType == DType::Q8_0 ? sizeof(BlockQ8_0) : sizeof(BlockQ4_0);
  // One accumulator per row: the four rows are four independent dependency chains.
  auto sum0 = hn::Zero(d), sum1 = hn::Zero(d), sum2 = hn::Zero(d), sum3 = hn::Zero(d);
  const int64_t nb = D / 32;
  for (int64_t b = 0; b < nb; ++b) {
    const float* xb = x + b * 32;
    auto block = [&](int r) {
      const uint8_t* blk = w + r * rb + b * bb;
      if (kType == DType::Q8_0 || (b & 1)) hwy::Prefetch(blk + kPrefetchBytes);
      auto acc = hn::Zero(d);
      if constexpr (kType == DType::Q8_0) {
        const hn::Rebind<int8_t, DF> d8;
        const int8_t* qs = reinterpret_cast<const int8_t*>(blk + 2);
        for (int64_t i = 0; i < 32; i += N)
          acc = hn::MulAdd(hn::ConvertTo(d, hn::PromoteTo(di, hn::LoadU(d8, qs + i))), hn::LoadU(d, xb + i), acc);
      } else {
        const hn::Rebind<uint8_t, DF> d8;
        const auto mask = hn::Set(di, 15), eight = hn::Set(di, 8);
        for (int64_t i = 0; i < 16; i += N) {
          const auto q = hn::BitCast(di, hn::PromoteTo(hn::RebindToUnsigned<DF>(), hn::LoadU(d8, blk + 2 + i)));
          acc = hn::MulAdd(hn::ConvertTo(d, hn::Sub(hn::And(q, mask), eight)), hn::LoadU(d, xb + i), acc);
          acc = hn::MulAdd(hn::ConvertTo(d, hn::Sub(hn::ShiftRight<4>(q), eight)), hn::LoadU(d, xb + 16 + i), acc);
        }
      }
      return hn::Mul(hn::Set(d, f16_to_f32_fast(load_u16(blk))), acc);
    };
    sum0 = hn::Add(sum0, block(0));
    sum1 = hn::Add(sum1, block(1));
    sum2 = hn::Add(sum2, block(2));
    sum3 = hn::Add(sum3, block(3));
  }
  y[0] = hn::GetLane(hn::SumOfLanes(d, sum0));
  y[1] = hn::GetLane(hn::SumOfLanes(d, sum1));
  y[2] = hn::GetLane(hn::SumOfLanes(d, sum2));
  y[3] = hn::GetLane(hn::SumOfLanes(d, sum3));
}

// ---- K-quants (256-value super-blocks) ---------------------------------------------------

// Q4_K (with_high false) or Q5_K: sum_j d*sc_j * (q_j . x_j) - dmin * sum_j m_j * xsum_j.
template <bool kHigh>
float dot_k4_k5(const uint8_t* w, const float* x, const float* xsum32, int64_t D) {
  const DF d;
  const hn::RebindToSigned<DF> di;
  const hn::RebindToUnsigned<DF> du;
  const hn::Rebind<uint8_t, DF> d8;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  const auto mask = hn::Set(di, 15), one = hn::Set(di, 1);
  const size_t bb = kHigh ? sizeof(BlockQ5_K) : sizeof(BlockQ4_K);
  auto sum = hn::Zero(d);
  float min_sum = 0.f;
  const int64_t nb = D / 256;
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* blk = w + b * bb;
    for (size_t p = 0; p < bb; p += 64) hwy::Prefetch(blk + kPrefetchBytes + p);
    const float dd = f16_to_f32_fast(load_u16(blk)), dmin = f16_to_f32_fast(load_u16(blk + 2));
    const uint8_t* scales = blk + 4;
    const uint8_t* qh = blk + 16;
    const uint8_t* qs = blk + (kHigh ? 48 : 16);
    const float* xb = x + b * 256;
    float mins = 0.f;
    for (int c = 0; c < 4; ++c) {
      uint8_t sc0, m0, sc1, m1;
      kquant_scale_min(2 * c, scales, &sc0, &m0);
      kquant_scale_min(2 * c + 1, scales, &sc1, &m1);
      mins += static_cast<float>(m0) * xsum32[b * 8 + 2 * c] + static_cast<float>(m1) * xsum32[b * 8 + 2 * c + 1];
      auto acc0 = hn::Zero(d), acc1 = hn::Zero(d);
      for (int64_t i = 0; i < 32; i += N) {
        const auto q = hn::BitCast(di, hn::PromoteTo(du, hn::LoadU(d8, qs + 32 * c + i)));
        auto lo = hn::And(q, mask);
        auto hi = hn::ShiftRight<4>(q);
        if constexpr (kHigh) {
          const auto h = hn::BitCast(di, hn::PromoteTo(du, hn::LoadU(d8, qh + i)));
          lo = hn::Or(lo, hn::ShiftLeft<4>(hn::And(hn::ShiftRightSame(h, 2 * c), one)));
          hi = hn::Or(hi, hn::ShiftLeft<4>(hn::And(hn::ShiftRightSame(h, 2 * c + 1), one)));
        }
        acc0 = hn::MulAdd(hn::ConvertTo(d, lo), hn::LoadU(d, xb + 64 * c + i), acc0);
        acc1 = hn::MulAdd(hn::ConvertTo(d, hi), hn::LoadU(d, xb + 64 * c + 32 + i), acc1);
      }
      sum = hn::MulAdd(hn::Set(d, dd * sc0), acc0, sum);
      sum = hn::MulAdd(hn::Set(d, dd * sc1), acc1, sum);
    }
    min_sum += dmin * mins;
  }
  return hn::GetLane(hn::SumOfLanes(d, sum)) - min_sum;
}

float dot_q6_k(const uint8_t* w, const float* x, int64_t D) {
  const DF d;
  const hn::RebindToSigned<DF> di;
  const hn::RebindToUnsigned<DF> du;
  const hn::Rebind<uint8_t, DF> d8;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  const auto mask = hn::Set(di, 15), three = hn::Set(di, 3), k32 = hn::Set(di, 32);
  auto sum = hn::Zero(d);
  const int64_t nb = D / 256;
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* blk = w + b * sizeof(BlockQ6_K);
    for (size_t p = 0; p < sizeof(BlockQ6_K); p += 64) hwy::Prefetch(blk + kPrefetchBytes + p);
    const uint8_t* ql = blk;
    const uint8_t* qh = blk + 128;
    const int8_t* sc = reinterpret_cast<const int8_t*>(blk + 192);
    const float dd = f16_to_f32_fast(load_u16(blk + 208));
    const float* xb = x + b * 256;
    for (int h = 0; h < 2; ++h) {
      for (int64_t l = 0; l < 32; l += N) {
        const auto l0 = hn::BitCast(di, hn::PromoteTo(du, hn::LoadU(d8, ql + 64 * h + l)));
        const auto l1 = hn::BitCast(di, hn::PromoteTo(du, hn::LoadU(d8, ql + 64 * h + 32 + l)));
        const auto hb = hn::BitCast(di, hn::PromoteTo(du, hn::LoadU(d8, qh + 32 * h + l)));
        const decltype(l0) q[4] = {
            hn::Or(hn::And(l0, mask), hn::ShiftLeft<4>(hn::And(hb, three))),
            hn::Or(hn::And(l1, mask), hn::ShiftLeft<4>(hn::And(hn::ShiftRight<2>(hb), three))),
            hn::Or(hn::ShiftRight<4>(l0), hn::ShiftLeft<4>(hn::And(hn::ShiftRight<4>(hb), three))),
            hn::Or(hn::ShiftRight<4>(l1), hn::ShiftLeft<4>(hn::ShiftRight<6>(hb)))};
        for (int j = 0; j < 4; ++j) {
          const int64_t i = 128 * h + 32 * j + l;  // first value of this vector
          const auto prod = hn::Mul(hn::ConvertTo(d, hn::Sub(q[j], k32)), hn::LoadU(d, xb + i));
          sum = hn::MulAdd(hn::Set(d, dd * static_cast<float>(sc[i / 16])), prod, sum);
        }
      }
    }
  }
  return hn::GetLane(hn::SumOfLanes(d, sum));
}

// Q2_K / Q3_K: value i = 128h + 32j + l takes its 2 low bits from qs[32h + l] >> 2j
// (dtype.h); a vector of at most 16 lanes stays inside one 16-value sub-block.
// Q2_K: sum over sub-blocks s of dl_s * (q . x)_s - ml_s * sum(x)_s.
float dot_q2_k(const uint8_t* w, const float* x, int64_t D) {
  const DF d;
  const hn::RebindToSigned<DF> di;
  const hn::RebindToUnsigned<DF> du;
  const hn::Rebind<uint8_t, DF> d8;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  const auto three = hn::Set(di, 3);
  auto sum = hn::Zero(d), mins = hn::Zero(d);
  for (int64_t b = 0; b < D / 256; ++b) {
    const uint8_t* blk = w + b * sizeof(BlockQ2_K);
    for (size_t p = 0; p < sizeof(BlockQ2_K); p += 64) hwy::Prefetch(blk + kPrefetchBytes + p);
    const uint8_t* scales = blk;
    const uint8_t* qs = blk + 16;
    const float dd = f16_to_f32_fast(load_u16(blk + 80)), dmin = f16_to_f32_fast(load_u16(blk + 82));
    const float* xb = x + b * 256;
    for (int h = 0; h < 2; ++h)
      for (int64_t l = 0; l < 32; l += N) {
        const auto q8 = hn::BitCast(di, hn::PromoteTo(du, hn::LoadU(d8, qs + 32 * h + l)));
        for (int j = 0; j < 4; ++j) {
          const int64_t i = 128 * h + 32 * j + l;
          const auto xv = hn::LoadU(d, xb + i);
          const auto q = hn::ConvertTo(d, hn::And(hn::ShiftRightSame(q8, 2 * j), three));
          const uint8_t sc = scales[i / 16];
          sum = hn::MulAdd(hn::Set(d, dd * static_cast<float>(sc & 0xF)), hn::Mul(q, xv), sum);
          mins = hn::MulAdd(hn::Set(d, dmin * static_cast<float>(sc >> 4)), xv, mins);
        }
      }
  }
  return hn::GetLane(hn::SumOfLanes(d, hn::Sub(sum, mins)));
}

// Q3_K: sum over sub-blocks s of d * (sc_s - 32) * (q . x)_s, q = low 2 bits + 4 * (bit
// 4h + j of hmask[l]) - 4.
float dot_q3_k(const uint8_t* w, const float* x, int64_t D) {
  const DF d;
  const hn::RebindToSigned<DF> di;
  const hn::RebindToUnsigned<DF> du;
  const hn::Rebind<uint8_t, DF> d8;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  const auto three = hn::Set(di, 3), one = hn::Set(di, 1), four = hn::Set(di, 4);
  auto sum = hn::Zero(d);
  for (int64_t b = 0; b < D / 256; ++b) {
    const uint8_t* blk = w + b * sizeof(BlockQ3_K);
    for (size_t p = 0; p < sizeof(BlockQ3_K); p += 64) hwy::Prefetch(blk + kPrefetchBytes + p);
    const uint8_t* hmask = blk;
    const uint8_t* qs = blk + 32;
    const uint8_t* scales = blk + 96;
    const float dd = f16_to_f32_fast(load_u16(blk + 108));
    const float* xb = x + b * 256;
    for (int h = 0; h < 2; ++h)
      for (int64_t l = 0; l < 32; l += N) {
        const auto q8 = hn::BitCast(di, hn::PromoteTo(du, hn::LoadU(d8, qs + 32 * h + l)));
        const auto hb = hn::BitCast(di, hn::PromoteTo(du, hn::LoadU(d8, hmask + l)));
        for (int j = 0; j < 4; ++j) {
          const int64_t i = 128 * h + 32 * j + l;
          const auto low = hn::And(hn::ShiftRightSame(q8, 2 * j), three);
          const auto high = hn::And(hn::ShiftRightSame(hb, 4 * h + j), one);
          const auto q = hn::Sub(hn::Or(low, hn::ShiftLeft<2>(high)), four);
          const float dl = dd * static_cast<float>(q3k_scale(static_cast<int>(i / 16), scales) - 32);
          sum = hn::MulAdd(hn::Set(d, dl), hn::Mul(hn::ConvertTo(d, q), hn::LoadU(d, xb + i)), sum);
        }
      }
  }
  return hn::GetLane(hn::SumOfLanes(d, sum));
}

void DotRows(DType t, const uint8_t* w, int64_t n_rows, const float* x, const float* xsum32,
             int64_t D, float* y) {
  const size_t rb = row_bytes(t, D);
  int64_t r = 0;
  if (t == DType::Q8_0)
    for (; r + 4 <= n_rows; r += 4) dot4_rows<DType::Q8_0>(w + static_cast<size_t>(r) * rb, rb, x, D, y + r);
  if (t == DType::Q4_0)
    for (; r + 4 <= n_rows; r += 4) dot4_rows<DType::Q4_0>(w + static_cast<size_t>(r) * rb, rb, x, D, y + r);
  for (; r < n_rows; ++r) {
    const uint8_t* row = w + static_cast<size_t>(r) * rb;
    float v = 0.f;
    switch (t) {
      case DType::F32:
      case DType::F16:
      case DType::BF16: break;  // dot_rows hands these to dot_rows_float
      case DType::Q8_0: v = dot_q8_0(row, x, D); break;
      case DType::Q4_0: v = dot_q4_0(row, x, D); break;
      case DType::Q2_K: v = dot_q2_k(row, x, D); break;
      case DType::Q3_K: v = dot_q3_k(row, x, D); break;
      case DType::Q4_K: v = dot_k4_k5<false>(row, x, xsum32, D); break;
      case DType::Q5_K: v = dot_k4_k5<true>(row, x, xsum32, D); break;
      case DType::Q6_K: v = dot_q6_k(row, x, D); break;
    }
    y[r] = v;
  }
}

void SubBlockSums(const float* x, int64_t D, float* sums) {
  const hn::CappedTag<float, 32> d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  for (int64_t b = 0; b < D / 32; ++b) {
    auto acc = hn::Zero(d);
    for (int64_t i = 0; i < 32; i += N) acc = hn::Add(acc, hn::LoadU(d, x + 32 * b + i));
    sums[b] = hn::GetLane(hn::SumOfLanes(d, acc));
  }
}

// ---- dequantization (for the GEMM panels) --------------------------------------------------

void dequant_q8_0(const uint8_t* w, float* out, int64_t n) {
  const DF d;
  const hn::RebindToSigned<DF> di;
  const hn::Rebind<int8_t, DF> d8;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  for (int64_t b = 0; b < n / 32; ++b) {
    const uint8_t* blk = w + b * sizeof(BlockQ8_0);
    const int8_t* qs = reinterpret_cast<const int8_t*>(blk + 2);
    const auto scale = hn::Set(d, f16_to_f32_fast(load_u16(blk)));
    for (int64_t i = 0; i < 32; i += N)
      hn::StoreU(hn::Mul(scale, hn::ConvertTo(d, hn::PromoteTo(di, hn::LoadU(d8, qs + i)))), d, out + 32 * b + i);
  }
}

void dequant_q4_0(const uint8_t* w, float* out, int64_t n) {
  const DF d;
  const hn::RebindToSigned<DF> di;
  const hn::Rebind<uint8_t, DF> d8;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  const auto mask = hn::Set(di, 15), eight = hn::Set(di, 8);
  for (int64_t b = 0; b < n / 32; ++b) {
    const uint8_t* blk = w + b * sizeof(BlockQ4_0);
    const auto scale = hn::Set(d, f16_to_f32_fast(load_u16(blk)));
    for (int64_t i = 0; i < 16; i += N) {
      const auto q = hn::BitCast(di, hn::PromoteTo(hn::RebindToUnsigned<DF>(), hn::LoadU(d8, blk + 2 + i)));
      hn::StoreU(hn::Mul(scale, hn::ConvertTo(d, hn::Sub(hn::And(q, mask), eight))), d, out + 32 * b + i);
      hn::StoreU(hn::Mul(scale, hn::ConvertTo(d, hn::Sub(hn::ShiftRight<4>(q), eight))), d, out + 32 * b + 16 + i);
    }
  }
}

void dequant_f16(const uint8_t* w, float* out, int64_t n) {
  const hn::ScalableTag<float> d;
  const hn::Rebind<hwy::float16_t, decltype(d)> dh;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  int64_t i = 0;
  for (; i + N <= n; i += N)
    hn::StoreU(hn::PromoteTo(d, hn::LoadU(dh, reinterpret_cast<const hwy::float16_t*>(w) + i)), d, out + i);
  for (; i < n; ++i) out[i] = f16_to_f32_fast(load_u16(w + 2 * i));
}

void dequant_bf16(const uint8_t* w, float* out, int64_t n) {
  const hn::ScalableTag<float> d;
  const hn::RebindToUnsigned<decltype(d)> du32;
  const hn::Rebind<uint16_t, decltype(d)> du16;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  int64_t i = 0;
  for (; i + N <= n; i += N) {
    const auto h = hn::PromoteTo(du32, hn::LoadU(du16, reinterpret_cast<const uint16_t*>(w) + i));
    hn::StoreU(hn::BitCast(d, hn::ShiftLeft<16>(h)), d, out + i);
  }
  for (; i < n; ++i) out[i] = bf16_to_f32(load_u16(w + 2 * i));
}

// Same values as dequantize_row (dequant.h), any type: SIMD for the common ones.
void DequantRow(DType t, const uint8_t* w, float* out, int64_t n) {
  switch (t) {
    case DType::F16: return dequant_f16(w, out, n);
    case DType::BF16: return dequant_bf16(w, out, n);
    case DType::Q8_0: return dequant_q8_0(w, out, n);
    case DType::Q4_0: return dequant_q4_0(w, out, n);
    default: return dequantize_row(t, w, out, n);
  }
}

// ---- GEMM panel (batches) ----------------------------------------------------------------
// Tokens are the vector dimension: x is given transposed, xT[D][Tpad], and each weight
// value is broadcast against a vector of tokens, so weight rows are converted to float32
// contiguously (no transposition) once per panel and reused across all tokens.

int64_t GemmTokenBlock() { return 2 * static_cast<int64_t>(hn::Lanes(hn::ScalableTag<float>())); }

// Rows are padded to a multiple of 24 so that both micro-kernel shapes (6 rows x 4 token
// vectors for wide token blocks, 8 rows x 1-2 vectors for the rest) tile them.
constexpr int64_t kRowPad = 24;

// acc[r][v] (rows r < ROWS, token vectors v < NV) over KC inner values:
// yt[r * ldyt + t] += sum_k wbuf[r * ldw + k] * xT[k * ldx + t], t in one token block.
template <int ROWS, int NV>
void micro_kernel(const float* wbuf, int64_t ldw, const float* xT, int64_t ldx, int64_t KC,
                  float* yt, int64_t ldyt) {
  const hn::ScalableTag<float> d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  decltype(hn::Zero(d)) acc[ROWS][NV];
  for (int r = 0; r < ROWS; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = hn::LoadU(d, yt + r * ldyt + v * N);
  for (int64_t k = 0; k < KC; ++k) {
    decltype(hn::Zero(d)) xv[NV];
    for (int v = 0; v < NV; ++v) xv[v] = hn::LoadU(d, xT + k * ldx + v * N);
    for (int r = 0; r < ROWS; ++r) {
      const auto wb = hn::Set(d, wbuf[r * ldw + k]);
      for (int v = 0; v < NV; ++v) acc[r][v] = hn::MulAdd(wb, xv[v], acc[r][v]);
    }
  }
  for (int r = 0; r < ROWS; ++r)
    for (int v = 0; v < NV; ++v) hn::StoreU(acc[r][v], d, yt + r * ldyt + v * N);
}

void GemmPanel(DType t, const uint8_t* w, int64_t n, const float* xT, int64_t Tpad, int64_t T,
               int64_t D, float* y, int64_t ldy) {
  const int64_t N = static_cast<int64_t>(hn::Lanes(hn::ScalableTag<float>()));
  const int64_t KC = D % 256 == 0 ? 256 : D;  // a whole number of blocks of any type
  const int64_t rows_pad = (n + kRowPad - 1) / kRowPad * kRowPad;
  const size_t rb = row_bytes(t, D), kc_bytes = row_bytes(t, KC);
  thread_local std::vector<float> wbuf, yt;
  wbuf.resize(static_cast<size_t>(rows_pad * KC));
  yt.assign(static_cast<size_t>(rows_pad * Tpad), 0.f);  // [rows][Tpad] partial sums
  std::fill(wbuf.begin() + n * KC, wbuf.end(), 0.f);     // padding rows stay zero
  for (int64_t k0 = 0; k0 < D; k0 += KC) {
    for (int64_t j = 0; j < n; ++j)
      DequantRow(t, w + static_cast<size_t>(j) * rb + static_cast<size_t>(k0 / KC) * kc_bytes,
                 &wbuf[static_cast<size_t>(j * KC)], KC);
    const float* xk = xT + k0 * Tpad;
    int64_t t0 = 0;
    for (; t0 + 4 * N <= Tpad; t0 += 4 * N)
      for (int64_t r = 0; r < rows_pad; r += 6)
        micro_kernel<6, 4>(&wbuf[static_cast<size_t>(r * KC)], KC, xk + t0, Tpad, KC,
                           &yt[static_cast<size_t>(r * Tpad + t0)], Tpad);
    for (; t0 < Tpad; t0 += 2 * N) {
      const bool two = t0 + 2 * N <= Tpad;
      for (int64_t r = 0; r < rows_pad; r += 8) {
        const float* wg = &wbuf[static_cast<size_t>(r * KC)];
        float* ytg = &yt[static_cast<size_t>(r * Tpad + t0)];
        if (two) micro_kernel<8, 2>(wg, KC, xk + t0, Tpad, KC, ytg, Tpad);
        else micro_kernel<8, 1>(wg, KC, xk + t0, Tpad, KC, ytg, Tpad);
      }
    }
  }
  // Token by token, so that each token's n outputs are written as one contiguous run (y's
  // rows are ldy apart: row by row, every value written was a cache line and often a page
  // of its own, which cost 10-20% of a 128-token f16 product).
  for (int64_t tt = 0; tt < T; ++tt)
    for (int64_t j = 0; j < n; ++j) y[tt * ldy + j] = yt[static_cast<size_t>(j * Tpad + tt)];
}

const char* TargetNameHere() { return hwy::TargetName(HWY_TARGET); }

}  // namespace HWY_NAMESPACE
}  // namespace smoe
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace smoe {

HWY_EXPORT(TargetNameHere);
const char* simd_target() { return HWY_DYNAMIC_DISPATCH(TargetNameHere)(); }

HWY_EXPORT(DotRows);
HWY_EXPORT(SubBlockSums);
HWY_EXPORT(GemmTokenBlock);
HWY_EXPORT(GemmPanel);
HWY_EXPORT(Axpy);
HWY_EXPORT(DequantRow);

void dequantize_row_simd(DType t, const uint8_t* src, float* dst, int64_t n) {
  HWY_DYNAMIC_DISPATCH(DequantRow)(t, src, dst, n);
}
HWY_EXPORT(DotF32);
HWY_EXPORT(SiluMul);
void silu_mul(float* g, const float* u, int64_t n) { HWY_DYNAMIC_DISPATCH(SiluMul)(g, u, n); }

void axpy(float a, const float* v, float* out, int64_t n) { HWY_DYNAMIC_DISPATCH(Axpy)(a, v, out, n); }

float dot_f32(const float* a, const float* b, int64_t n) { return HWY_DYNAMIC_DISPATCH(DotF32)(a, b, n); }

void dot_rows(DType t, const uint8_t* w, int64_t n_rows, const float* x, const float* xsum32,
              int64_t D, float* y) {
  if (dot_rows_float_supports(t)) return dot_rows_float(t, w, n_rows, x, 1, D, y, 0);
  HWY_DYNAMIC_DISPATCH(DotRows)(t, w, n_rows, x, xsum32, D, y);
}

void sub_block_sums(const float* x, int64_t D, float* sums) {
  HWY_DYNAMIC_DISPATCH(SubBlockSums)(x, D, sums);
}

int64_t gemm_token_block() { return HWY_DYNAMIC_DISPATCH(GemmTokenBlock)(); }

void gemm_panel(DType t, const uint8_t* w, int64_t n, const float* xT, int64_t Tpad, int64_t T,
                int64_t D, float* y, int64_t ldy) {
  HWY_DYNAMIC_DISPATCH(GemmPanel)(t, w, n, xT, Tpad, T, D, y, ldy);
}

}  // namespace smoe
#endif  // HWY_ONCE
