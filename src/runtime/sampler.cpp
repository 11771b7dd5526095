// sampler.cpp: greedy and filtered temperature sampling, penalties, token log-probabilities.
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
  SMOE_CHECK(std::isfinite(repetition_penalty) && repetition_penalty > 0 && repetition_penalty <= 10,
             "repetition penalty ", repetition_penalty, " is out of range (expected 0 < r <= 10; 1 is off)");
  SMOE_CHECK(std::isfinite(presence_penalty) && presence_penalty >= -2 && presence_penalty <= 2,
             "presence penalty ", presence_penalty, " is out of range (expected -2..2)");
  SMOE_CHECK(std::isfinite(frequency_penalty) && frequency_penalty >= -2 && frequency_penalty <= 2,
             "frequency penalty ", frequency_penalty, " is out of range (expected -2..2)");
}

bool SamplingParams::has_penalties() const {
  return repetition_penalty != 1.0f || presence_penalty != 0.0f || frequency_penalty != 0.0f;
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

void Sampler::add_context(std::span<const int32_t> ids) {
  if (params_.repetition_penalty != 1.0f) context_.insert(ids.begin(), ids.end());
}

int32_t Sampler::sample(const float* logits, int64_t V) {
  if (params_.has_penalties()) {
    penalized_.assign(logits, logits + V);
    const float r = params_.repetition_penalty;
    auto repeat = [&](int32_t id) {
      if (id < 0 || id >= V) return;
      float& l = penalized_[static_cast<size_t>(id)];
      l = l > 0 ? l / r : l * r;
    };
    if (r != 1.0f) {
      for (int32_t id : context_) repeat(id);
      for (const auto& [id, n] : generated_)
        if (!context_.count(id)) repeat(id);
    }
    for (const auto& [id, n] : generated_)
      if (id >= 0 && id < V)
        penalized_[static_cast<size_t>(id)] -=
            params_.presence_penalty + params_.frequency_penalty * static_cast<float>(n);
    logits = penalized_.data();
  }
  const int32_t id = pick(logits, V);
  if (params_.has_penalties()) ++generated_[id];
  return id;
}

int32_t Sampler::pick(const float* logits, int64_t V) {
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


TokenLogprob token_logprob(const float* logits, int64_t V, int32_t id, int32_t n_top) {
  float mx = -INFINITY;
  for (int64_t i = 0; i < V; ++i) mx = std::max(mx, logits[i]);
  double sum = 0;
  for (int64_t i = 0; i < V; ++i) sum += std::exp(static_cast<double>(logits[i] - mx));
  const double log_z = static_cast<double>(mx) + std::log(sum);
  TokenLogprob r;
  r.id = id;
  r.logprob = static_cast<float>(logits[id] - log_z);
  const int64_t n = std::min<int64_t>(std::max<int32_t>(n_top, 0), V);
  if (n > 0) {
    thread_local std::vector<int32_t> order;
    order.resize(static_cast<size_t>(V));
    for (int64_t i = 0; i < V; ++i) order[i] = static_cast<int32_t>(i);
    std::partial_sort(order.begin(), order.begin() + n, order.end(), [&](int32_t a, int32_t b) {
      return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
    });
    for (int64_t j = 0; j < n; ++j)
      r.top.emplace_back(order[j], static_cast<float>(logits[order[j]] - log_z));
  }
  return r;
}

}  // namespace smoe
