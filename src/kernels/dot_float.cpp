// dot_float.cpp: decode-sized products (T = 1..kMaxFloatDotTokens tokens) for float32, f16
// and bf16 weight rows in the file layout (see dot_float.h). Highway, compiled once per x86
// target (foreach_target.h), the best picked at run time.
// Legend: T tokens, D row length, R rows per pass, N lanes of a float vector.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/dot_float.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
// Must come after foreach_target.h.
#include "hwy/cache_control.h"
#include "hwy/highway.h"
#include "kernels/dot_float.h"

#include <cstring>

#include "kernels/dequant.h"
#include "kernels/simd.h"

HWY_BEFORE_NAMESPACE();
namespace smoe {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DFloat = hn::ScalableTag<float>;
using VFloat = hn::Vec<DFloat>;

// How far ahead of the current column each row's weights are prefetched into L1; the same
// column of the next pass's row (R rows on) is prefetched into L2 as well. On a Xeon
// (Emerald Rapids, 2 threads, 1.2 GB of [14336, 4096] rows, one token, alternating in one
// process) that second prefetch read f16 rows 9-14% faster and bf16 0-9% (median 3.5%);
// into L3 instead, or one pass further, it gained less.
constexpr int64_t kPrefetchBytes = 1024;
// A prefetch into L2 (prefetcht1 on x86).
HWY_INLINE void prefetch_l2(const uint8_t* p) { __builtin_prefetch(p, 0, 2); }

template <DType kType>
constexpr int64_t elem_bytes() {
  return kType == DType::F32 ? 4 : 2;
}

// N weights of a row from element i on, as float32.
template <DType kType>
HWY_INLINE VFloat load_weights(DFloat d, const uint8_t* row, int64_t i) {
  if constexpr (kType == DType::F32) {
    return hn::LoadU(d, reinterpret_cast<const float*>(row) + i);
  } else if constexpr (kType == DType::F16) {
    const hn::Rebind<hwy::float16_t, DFloat> dh;
    return hn::PromoteTo(d, hn::LoadU(dh, reinterpret_cast<const hwy::float16_t*>(row) + i));
  } else {
    const hn::RebindToUnsigned<DFloat> du32;
    const hn::Rebind<uint16_t, DFloat> du16;
    const auto h = hn::PromoteTo(du32, hn::LoadU(du16, reinterpret_cast<const uint16_t*>(row) + i));
    return hn::BitCast(d, hn::ShiftLeft<16>(h));
  }
}

template <DType kType>
float scalar_weight(const uint8_t* row, int64_t i) {
  uint16_t h;
  if constexpr (kType == DType::F32) {
    float v;
    std::memcpy(&v, row + 4 * i, 4);
    return v;
  } else if constexpr (kType == DType::F16) {
    std::memcpy(&h, row + 2 * i, 2);
    return f16_to_f32_fast(h);
  } else {
    std::memcpy(&h, row + 2 * i, 2);
    return bf16_to_f32(h);
  }
}

// y[t * ldy + r] = dot(row r, x[t]) for R rows from w (rb bytes apart) and T tokens: each
// weight vector is loaded and converted once for all T tokens, and x[t]'s vector once for
// all R rows; R x T independent accumulators.
template <DType kType, int R, int T>
void dot_pass(const uint8_t* w, size_t rb, const float* x, int64_t D, float* y, int64_t ldy) {
  const DFloat d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  constexpr int64_t eb = elem_bytes<kType>();
  VFloat acc[R][T];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) acc[r][t] = hn::Zero(d);
  int64_t i = 0;
  for (; i + N <= D; i += N) {
    VFloat xv[T];
    for (int t = 0; t < T; ++t) xv[t] = hn::LoadU(d, x + t * D + i);
    for (int r = 0; r < R; ++r) {
      const uint8_t* row = w + r * rb;
      if ((i * eb) % 64 == 0) {
        hwy::Prefetch(row + i * eb + kPrefetchBytes);
        prefetch_l2(row + R * rb + i * eb);
      }
      const VFloat wv = load_weights<kType>(d, row, i);
      for (int t = 0; t < T; ++t) acc[r][t] = hn::MulAdd(wv, xv[t], acc[r][t]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) {
      float s = hn::GetLane(hn::SumOfLanes(d, acc[r][t]));
      for (int64_t k = i; k < D; ++k) s += scalar_weight<kType>(w + r * rb, k) * x[t * D + k];
      y[t * ldy + r] = s;
    }
}

template <DType kType, int T>
void dot_rows_t(const uint8_t* w, int64_t n_rows, const float* x, int64_t D, float* y, int64_t ldy) {
  const size_t rb = static_cast<size_t>(D * elem_bytes<kType>());
  // 4 rows per pass for one token (4 accumulator chains hide the multiply-add latency),
  // 2 for more (2 x T chains, x vectors reused twice).
  constexpr int R = T == 1 ? 4 : 2;
  int64_t r = 0;
  for (; r + R <= n_rows; r += R) dot_pass<kType, R, T>(w + r * rb, rb, x, D, y + r, ldy);
  for (; r < n_rows; ++r) dot_pass<kType, 1, T>(w + r * rb, rb, x, D, y + r, ldy);
}

template <DType kType>
void dot_rows_type(const uint8_t* w, int64_t n_rows, const float* x, int T, int64_t D, float* y,
                   int64_t ldy) {
  switch (T) {
    case 1: return dot_rows_t<kType, 1>(w, n_rows, x, D, y, ldy);
    case 2: return dot_rows_t<kType, 2>(w, n_rows, x, D, y, ldy);
    default: return dot_rows_t<kType, 3>(w, n_rows, x, D, y, ldy);
  }
}

void DotRowsFloat(DType t, const uint8_t* w, int64_t n_rows, const float* x, int T, int64_t D,
                  float* y, int64_t ldy) {
  switch (t) {
    case DType::F32: return dot_rows_type<DType::F32>(w, n_rows, x, T, D, y, ldy);
    case DType::F16: return dot_rows_type<DType::F16>(w, n_rows, x, T, D, y, ldy);
    default: return dot_rows_type<DType::BF16>(w, n_rows, x, T, D, y, ldy);
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace smoe
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include "core/error.h"

namespace smoe {

HWY_EXPORT(DotRowsFloat);

bool dot_rows_float_supports(DType t) {
  return t == DType::F32 || t == DType::F16 || t == DType::BF16;
}

void dot_rows_float(DType t, const uint8_t* w, int64_t n_rows, const float* x, int T, int64_t D,
                    float* y, int64_t ldy) {
  SMOE_CHECK(dot_rows_float_supports(t), "dot_rows_float: type ", dtype_name(t),
             " is not a float type (f32, f16, bf16)");
  SMOE_CHECK(T >= 1 && T <= kMaxFloatDotTokens, "dot_rows_float: ", T, " tokens, expected 1..",
             kMaxFloatDotTokens);
  HWY_DYNAMIC_DISPATCH(DotRowsFloat)(t, w, n_rows, x, T, D, y, ldy);
}

}  // namespace smoe
#endif  // HWY_ONCE
