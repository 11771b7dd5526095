// attention.cpp: blocked online-softmax attention (see attention.h) and its reference. The
// fast path is Highway, compiled once per x86 target (foreach_target.h), the best picked at
// run time; head dims that are not a whole number of 1-16 vectors take the generic path.
// Legend: G query heads per kv head, hd head dim, n keys, N float lanes, NV = hd / N.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/attention.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
// Must come after foreach_target.h.
#include "hwy/contrib/math/math-inl.h"
#include "hwy/highway.h"
#include "kernels/attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/ops.h"
#include "kernels/simd.h"

#ifndef SMOE_ATTENTION_ONCE
#define SMOE_ATTENTION_ONCE
namespace smoe {
namespace {
constexpr int64_t kKeyBlock = 64;  // keys per block of scores (a multiple of every N)
constexpr int64_t kHeads = 4;      // query heads whose scores share one read of a key row

// Per-thread scratch: scores [G][kKeyBlock], running max and sum [G]; grow-only.
struct Scratch {
  std::vector<float> s, m, l;
  void reserve(int64_t G) {
    if (s.size() < static_cast<size_t>(G * kKeyBlock)) s.resize(static_cast<size_t>(G * kKeyBlock));
    if (m.size() < static_cast<size_t>(G)) m.resize(static_cast<size_t>(G)), l.resize(static_cast<size_t>(G));
  }
};
thread_local Scratch scratch;

// This thread's scratch for G heads: running maxima -inf, sums 0, output rows zeroed.
Scratch& start_heads(int64_t G, int64_t hd, float* out, int64_t out_stride) {
  scratch.reserve(G);
  for (int64_t g = 0; g < G; ++g) {
    scratch.m[static_cast<size_t>(g)] = -INFINITY;
    scratch.l[static_cast<size_t>(g)] = 0.f;
    std::fill_n(out + g * out_stride, hd, 0.f);
  }
  return scratch;
}
}  // namespace
}  // namespace smoe
#endif

HWY_BEFORE_NAMESPACE();
namespace smoe {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;

// NV vectors per head row. Per block of keys: the scores of kHeads heads per read of each
// key row (one horizontal sum per head and key), a vector exp over the block, then each
// head's output row kept in registers while the block's value rows are added in.
template <int NV>
void attention_nv(const float* q, int64_t q_stride, int64_t G, const float* k, const float* v,
                  int64_t kv_stride, int64_t n, float scale, float* out, int64_t out_stride) {
  const DF d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  Scratch& sc = start_heads(G, NV * N, out, out_stride);
  float* s = sc.s.data();
  float* m = sc.m.data();
  float* l = sc.l.data();
  for (int64_t j0 = 0; j0 < n; j0 += kKeyBlock) {
    const int64_t nb = std::min(kKeyBlock, n - j0);
    for (int64_t g0 = 0; g0 < G; g0 += kHeads) {
      const int64_t nh = std::min(kHeads, G - g0);
      for (int64_t j = 0; j < nb; ++j) {
        const float* kj = k + (j0 + j) * kv_stride;
        VF acc[kHeads];
        for (int64_t h = 0; h < kHeads; ++h) acc[h] = hn::Zero(d);
        for (int c = 0; c < NV; ++c) {
          const VF kv = hn::LoadU(d, kj + c * N);
          for (int64_t h = 0; h < nh; ++h)
            acc[h] = hn::MulAdd(hn::LoadU(d, q + (g0 + h) * q_stride + c * N), kv, acc[h]);
        }
        for (int64_t h = 0; h < nh; ++h) s[(g0 + h) * kKeyBlock + j] = hn::GetLane(hn::SumOfLanes(d, acc[h])) * scale;
      }
    }
    for (int64_t g = 0; g < G; ++g) {
      float* sg = s + g * kKeyBlock;
      float* og = out + g * out_stride;
      float bmax = m[g];
      for (int64_t j = 0; j < nb; ++j) bmax = std::max(bmax, sg[j]);
      VF o[NV];
      for (int c = 0; c < NV; ++c) o[c] = hn::LoadU(d, og + c * N);
      if (bmax > m[g]) {  // rescale what was summed under the old max
        const float r = std::exp(m[g] - bmax);
        l[g] *= r;
        for (int c = 0; c < NV; ++c) o[c] = hn::Mul(o[c], hn::Set(d, r));
        m[g] = bmax;
      }
      // exp over whole vectors (scores past nb are not used).
      const VF vmax = hn::Set(d, m[g]);
      for (int64_t j = 0; j < nb; j += N) hn::StoreU(hn::Exp(d, hn::Sub(hn::LoadU(d, sg + j), vmax)), d, sg + j);
      for (int64_t j = 0; j < nb; ++j) {
        l[g] += sg[j];
        const VF p = hn::Set(d, sg[j]);
        const float* vj = v + (j0 + j) * kv_stride;
        for (int c = 0; c < NV; ++c) o[c] = hn::MulAdd(p, hn::LoadU(d, vj + c * N), o[c]);
      }
      for (int c = 0; c < NV; ++c) hn::StoreU(o[c], d, og + c * N);
    }
  }
  for (int64_t g = 0; g < G; ++g) {
    const VF inv = hn::Set(d, 1.f / l[g]);
    float* og = out + g * out_stride;
    for (int c = 0; c < NV; ++c) hn::StoreU(hn::Mul(hn::LoadU(d, og + c * N), inv), d, og + c * N);
  }
}

// Runs the fast path when hd is 1, 2, 4, 8 or 16 whole vectors; false otherwise.
bool AttentionHeadsFast(const float* q, int64_t q_stride, int64_t G, const float* k, const float* v,
                        int64_t kv_stride, int64_t n, int64_t hd, float scale, float* out,
                        int64_t out_stride) {
  const int64_t N = static_cast<int64_t>(hn::Lanes(DF()));
  if (hd % N != 0) return false;
  switch (hd / N) {
    case 1: attention_nv<1>(q, q_stride, G, k, v, kv_stride, n, scale, out, out_stride); return true;
    case 2: attention_nv<2>(q, q_stride, G, k, v, kv_stride, n, scale, out, out_stride); return true;
    case 4: attention_nv<4>(q, q_stride, G, k, v, kv_stride, n, scale, out, out_stride); return true;
    case 8: attention_nv<8>(q, q_stride, G, k, v, kv_stride, n, scale, out, out_stride); return true;
    case 16: attention_nv<16>(q, q_stride, G, k, v, kv_stride, n, scale, out, out_stride); return true;
    default: return false;
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace smoe
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace smoe {

HWY_EXPORT(AttentionHeadsFast);

namespace {
// Any head dim: the same blocks with per-key dot products and axpys.
void attention_heads_generic(const float* q, int64_t q_stride, int64_t G, const float* k, const float* v,
                             int64_t kv_stride, int64_t n, int64_t hd, float scale, float* out,
                             int64_t out_stride) {
  Scratch& sc = start_heads(G, hd, out, out_stride);
  float* s = sc.s.data();
  float* m = sc.m.data();
  float* l = sc.l.data();
  for (int64_t j0 = 0; j0 < n; j0 += kKeyBlock) {
    const int64_t nb = std::min(kKeyBlock, n - j0);
    for (int64_t j = 0; j < nb; ++j) {
      const float* kj = k + (j0 + j) * kv_stride;
      for (int64_t g = 0; g < G; ++g) s[g * kKeyBlock + j] = dot_f32(q + g * q_stride, kj, hd) * scale;
    }
    for (int64_t g = 0; g < G; ++g) {
      float* sg = s + g * kKeyBlock;
      float bmax = m[g];
      for (int64_t j = 0; j < nb; ++j) bmax = std::max(bmax, sg[j]);
      if (bmax > m[g]) {
        const float r = std::exp(m[g] - bmax);
        l[g] *= r;
        float* og = out + g * out_stride;
        for (int64_t i = 0; i < hd; ++i) og[i] *= r;
        m[g] = bmax;
      }
      for (int64_t j = 0; j < nb; ++j) {
        sg[j] = std::exp(sg[j] - m[g]);
        l[g] += sg[j];
      }
    }
    for (int64_t j = 0; j < nb; ++j) {
      const float* vj = v + (j0 + j) * kv_stride;
      for (int64_t g = 0; g < G; ++g) axpy(s[g * kKeyBlock + j], vj, out + g * out_stride, hd);
    }
  }
  for (int64_t g = 0; g < G; ++g) {
    const float inv = 1.f / l[g];
    float* og = out + g * out_stride;
    for (int64_t i = 0; i < hd; ++i) og[i] *= inv;
  }
}
}  // namespace

void attention_heads(const float* q, int64_t q_stride, int64_t G, const float* k, const float* v,
                     int64_t kv_stride, int64_t n, int64_t hd, float scale, float* out,
                     int64_t out_stride) {
  if (!HWY_DYNAMIC_DISPATCH(AttentionHeadsFast)(q, q_stride, G, k, v, kv_stride, n, hd, scale, out, out_stride))
    attention_heads_generic(q, q_stride, G, k, v, kv_stride, n, hd, scale, out, out_stride);
}

void attention_heads_ref(const float* q, int64_t q_stride, int64_t G, const float* k, const float* v,
                         int64_t kv_stride, int64_t n, int64_t hd, float scale, float* out,
                         int64_t out_stride) {
  std::vector<float> s(static_cast<size_t>(n));
  for (int64_t g = 0; g < G; ++g) {
    const float* qg = q + g * q_stride;
    for (int64_t j = 0; j < n; ++j) {
      float dot = 0.f;
      for (int64_t i = 0; i < hd; ++i) dot += qg[i] * k[j * kv_stride + i];
      s[static_cast<size_t>(j)] = dot * scale;
    }
    softmax(s.data(), n);
    float* og = out + g * out_stride;
    std::fill_n(og, hd, 0.f);
    for (int64_t j = 0; j < n; ++j)
      for (int64_t i = 0; i < hd; ++i) og[i] += s[static_cast<size_t>(j)] * v[j * kv_stride + i];
  }
}

}  // namespace smoe
#endif  // HWY_ONCE
