// sampler.cpp: greedy and filtered temperature sampling.
#include "runtime/sampler.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace smoe {

void SamplingParams::validate() const {
  SMOE_CHECK(std::isfinite(temperature) && temperature >= 0 && temperature <= 100,
             "temperature ", temperature, " is out of range (expected 0..100; 0 is greedy)");
  SMOE_CHECK(top_k >= 0, "top-k ", top_k, " must be >= 0 (0 turns it off)");
  SMOE_CHECK(std::isfinite(top_p) && top_p > 0 && top_p <= 1, "top-p ", top_p,
             " is out of range (expected 0 < p <= 1)");
  SMOE_CHECK(std::isfinite(min_p) && min_p >= 0 && min_p < 1, "min-p ", min_p,
             " is out of range (expected 0 <= p < 1)");
}

int32_t argmax(const float* logits, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i)
    if (logits[i] > logits[best]) best = i;
  return static_cast<int32_t>(best);
}

Sampler::Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) {
  params_.validate();
}

int32_t Sampler::sample(const float* logits, int64_t V) {
  if (params_.temperature <= 0) return argmax(logits, V);
  cand_.resize(static_cast<size_t>(V));
  for (int64_t i = 0; i < V; ++i) cand_[i] = {logits[i], static_cast<int32_t>(i)};
  auto by_logit = [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  size_t n = cand_.size();
  if (params_.top_k > 0 && static_cast<size_t>(params_.top_k) < n) {
    std::partial_sort(cand_.begin(), cand_.begin() + params_.top_k, cand_.end(), by_logit);
    n = static_cast<size_t>(params_.top_k);
  } else {
    std::sort(cand_.begin(), cand_.end(), by_logit);
  }
  // Softmax with temperature over the survivors (sorted, best first).
  const float mx = cand_[0].first;
  double sum = 0;
  for (size_t i = 0; i < n; ++i) {
    cand_[i].first = std::exp((cand_[i].first - mx) / params_.temperature);
    sum += cand_[i].first;
  }
  for (size_t i = 0; i < n; ++i) cand_[i].first = static_cast<float>(cand_[i].first / sum);
  // min-p: drop tokens far less likely than the best.
  if (params_.min_p > 0) {
    const float floor = params_.min_p * cand_[0].first;
    size_t keep = 1;
    while (keep < n && cand_[keep].first >= floor) ++keep;
    n = keep;
  }
  // top-p: the smallest prefix whose mass reaches top_p.
  if (params_.top_p < 1) {
    double mass = 0;
    size_t keep = 0;
    while (keep < n) {
      mass += cand_[keep++].first;
      if (mass >= params_.top_p) break;
    }
    n = keep;
  }
  double total = 0;
  for (size_t i = 0; i < n; ++i) total += cand_[i].first;
  std::uniform_real_distribution<double> uni(0.0, total);
  double r = uni(rng_), acc = 0;
  for (size_t i = 0; i < n; ++i) {
    acc += cand_[i].first;
    if (r < acc) return cand_[i].second;
  }
  return cand_[n - 1].second;
}

}  // namespace smoe
