// attention.cpp: blocked online-softmax attention (see attention.h) and its reference.
#include "kernels/attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/ops.h"
#include "kernels/simd.h"

namespace smoe {

namespace {
constexpr int64_t kKeyBlock = 64;  // keys per block of scores
}  // namespace

void attention_heads(const float* q, int64_t q_stride, int64_t G, const float* k, const float* v,
                     int64_t kv_stride, int64_t n, int64_t hd, float scale, float* out,
                     int64_t out_stride) {
  thread_local std::vector<float> s, m, l;  // [G][block], [G], [G]; grow-only
  if (s.size() < static_cast<size_t>(G * kKeyBlock)) s.resize(static_cast<size_t>(G * kKeyBlock));
  if (m.size() < static_cast<size_t>(G)) m.resize(static_cast<size_t>(G)), l.resize(static_cast<size_t>(G));
  for (int64_t g = 0; g < G; ++g) {
    m[g] = -INFINITY;
    l[g] = 0.f;
    std::fill_n(out + g * out_stride, hd, 0.f);
  }
  for (int64_t j0 = 0; j0 < n; j0 += kKeyBlock) {
    const int64_t nb = std::min(kKeyBlock, n - j0);
    // Scores of this block for every head; each key row is read once for all heads.
    for (int64_t j = 0; j < nb; ++j) {
      const float* kj = k + (j0 + j) * kv_stride;
      for (int64_t g = 0; g < G; ++g) s[g * kKeyBlock + j] = dot_f32(q + g * q_stride, kj, hd) * scale;
    }
    for (int64_t g = 0; g < G; ++g) {
      float* sg = &s[static_cast<size_t>(g * kKeyBlock)];
      float bmax = m[g];
      for (int64_t j = 0; j < nb; ++j) bmax = std::max(bmax, sg[j]);
      if (bmax > m[g]) {  // rescale what was summed under the old max
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
