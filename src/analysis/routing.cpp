// routing.cpp: routing shares and consecutive-token repetition per layer (see routing.h).
#include "analysis/routing.h"

#include <algorithm>

#include "analysis/eval_common.h"
#include "core/error.h"

namespace smoe {

double random_repeat_first(int64_t n_experts) { return 1.0 / static_cast<double>(n_experts); }

double random_repeat_either(int64_t n, int64_t k) {
  // P(disjoint) = C(n-K, K) / C(n, K) = prod_{i<K} (n-K-i) / (n-i).
  if (2 * k > n) return 1.0;
  double disjoint = 1.0;
  for (int64_t i = 0; i < k; ++i) disjoint *= static_cast<double>(n - k - i) / static_cast<double>(n - i);
  return 1.0 - disjoint;
}

RoutingStats::RoutingStats(int64_t n_layers, int64_t n_experts, int64_t k)
    : n_layers_(n_layers), n_experts_(n_experts), k_(k) {
  SMOE_CHECK(n_layers >= 1 && n_experts >= 1 && k >= 1 && k <= n_experts, "routing statistics: bad shape L=",
             n_layers, " E=", n_experts, " K=", k, " (expected L >= 1, 1 <= K <= E)");
  layers_.resize(static_cast<size_t>(n_layers));
  for (LayerRoutingCounts& c : layers_) {
    c.first.assign(static_cast<size_t>(n_experts), 0);
    c.second.assign(static_cast<size_t>(n_experts), 0);
    c.chosen.assign(static_cast<size_t>(n_experts), 0);
  }
  last_.assign(static_cast<size_t>(n_layers * k), 0);
}

void RoutingStats::add(const RouteRecord& rec, bool continues_sequence) {
  SMOE_CHECK(rec.n_layers == n_layers_ && rec.n_experts == n_experts_ && rec.k == k_,
             "routing record of shape L=", rec.n_layers, " E=", rec.n_experts, " K=", rec.k,
             " does not match the statistics' L=", n_layers_, " E=", n_experts_, " K=", k_);
  const int64_t T = rec.n_tokens, K = k_;
  if (T == 0) return;
  auto intersect = [K](const int32_t* a, const int32_t* b) {
    for (int64_t i = 0; i < K; ++i)
      for (int64_t j = 0; j < K; ++j)
        if (a[i] == b[j]) return true;
    return false;
  };
  for (int64_t l = 0; l < n_layers_; ++l) {
    LayerRoutingCounts& c = layers_[static_cast<size_t>(l)];
    const int32_t* e = &rec.experts[static_cast<size_t>(l * T * K)];  // [T, K]
    for (int64_t t = 0; t < T; ++t) {
      const int32_t* cur = e + t * K;
      ++c.first[cur[0]];
      if (K >= 2) ++c.second[cur[1]];
      for (int64_t j = 0; j < K; ++j) ++c.chosen[cur[j]];
      std::vector<int32_t> set(cur, cur + K);
      std::sort(set.begin(), set.end());
      ++c.sets[set];
      const int32_t* prev = t > 0 ? cur - K : (continues_sequence && have_last_ ? &last_[l * K] : nullptr);
      if (prev) {
        ++c.pairs;
        c.same_first += prev[0] == cur[0];
        c.same_either += intersect(prev, cur);
      }
    }
    std::copy_n(e + (T - 1) * K, K, &last_[l * K]);
  }
  have_last_ = true;
  n_tokens_ += T;
}

namespace {
std::vector<double> shares(const std::vector<int64_t>& counts, int64_t total) {
  std::vector<double> out(counts.size(), 0.0);
  if (total > 0)
    for (size_t i = 0; i < counts.size(); ++i) out[i] = static_cast<double>(counts[i]) / static_cast<double>(total);
  return out;
}
double ratio(int64_t a, int64_t b) { return b > 0 ? static_cast<double>(a) / static_cast<double>(b) : 0.0; }
}  // namespace

std::vector<double> RoutingStats::first_share(int64_t l) const { return shares(layer(l).first, n_tokens_); }
std::vector<double> RoutingStats::second_share(int64_t l) const {
  return k_ >= 2 ? shares(layer(l).second, n_tokens_) : std::vector<double>{};
}
std::vector<double> RoutingStats::either_share(int64_t l) const { return shares(layer(l).chosen, n_tokens_ * k_); }
double RoutingStats::repeat_first(int64_t l) const { return ratio(layer(l).same_first, layer(l).pairs); }
double RoutingStats::repeat_either(int64_t l) const { return ratio(layer(l).same_either, layer(l).pairs); }

double RoutingStats::repeat_first_independent(int64_t l) const {
  double s = 0;
  for (double p : first_share(l)) s += p * p;
  return s;
}

double RoutingStats::repeat_either_independent(int64_t l) const {
  const auto& sets = layer(l).sets;
  if (sets.size() > 4096 || n_tokens_ == 0) return -1;
  const double n = static_cast<double>(n_tokens_);
  double s = 0;
  for (const auto& [a, na] : sets)
    for (const auto& [b, nb] : sets) {
      bool meet = false;  // both sorted: merge-walk
      for (size_t i = 0, j = 0; i < a.size() && j < b.size() && !meet;) {
        if (a[i] == b[j]) meet = true;
        else if (a[i] < b[j]) ++i;
        else ++j;
      }
      if (meet) s += (static_cast<double>(na) / n) * (static_cast<double>(nb) / n);
    }
  return s;
}

nlohmann::ordered_json RoutingStats::layers_json() const {
  nlohmann::ordered_json out = nlohmann::ordered_json::array();
  for (int64_t l = 0; l < n_layers_; ++l)
    out.push_back({{"layer", l},
                   {"first_choice_share", first_share(l)},
                   {"second_choice_share", second_share(l)},
                   {"either_share", either_share(l)},
                   {"repeat_first", repeat_first(l)},
                   {"repeat_either", repeat_either(l)},
                   {"repeat_first_independent", repeat_first_independent(l)},
                   {"repeat_either_independent", repeat_either_independent(l) < 0
                                                     ? nlohmann::ordered_json(nullptr)
                                                     : nlohmann::ordered_json(repeat_either_independent(l))},
                   {"n_pairs", layer(l).pairs}});
  return out;
}

void route_text(const Model& model, std::span<const int32_t> tokens, int64_t ctx, ThreadPool* pool,
                RoutingStats& stats, TokenRoutes* keep, int64_t keep_tokens) {
  const ModelConfig& c = model.config;
  const int64_t T = static_cast<int64_t>(tokens.size());
  const int64_t L = c.n_layers, K = c.n_experts_used;
  if (keep) {
    keep_tokens = std::min(keep_tokens, T);
    keep->tokens.assign(tokens.begin(), tokens.begin() + keep_tokens);
    keep->experts.assign(static_cast<size_t>(L * keep_tokens * K), 0);
    keep->gates.assign(keep->experts.size(), 0.f);
  }
  RouteRecord rec;
  for (const Window& w : split_windows(T, ctx)) {
    Session session(model, w.size());
    session.pool = pool;
    session.route_record = &rec;
    auto on_chunk = [&](int64_t first, int64_t n, const std::vector<float>&) {
      stats.add(rec, /*continues_sequence=*/first > 0);
      if (!keep) return;
      // Copy the routing of the kept tokens of this chunk.
      for (int64_t i = 0; i < n; ++i) {
        const int64_t t = w.begin + first + i;
        if (t >= keep_tokens) break;
        for (int64_t l = 0; l < L; ++l)
          for (int64_t j = 0; j < K; ++j) {
            keep->experts[static_cast<size_t>((l * keep_tokens + t) * K + j)] = rec.expert(l, i, j);
            keep->gates[static_cast<size_t>((l * keep_tokens + t) * K + j)] = rec.gate(l, i, j);
          }
      }
    };
    feed_chunked(session, tokens.subspan(static_cast<size_t>(w.begin), static_cast<size_t>(w.size())),
                 /*all_logits=*/false, on_chunk);
  }
}

}  // namespace smoe
