// routing.h: routing statistics of a mixture-of-experts model over texts, per layer:
// which experts tokens go to (first choice, second choice, any of the K chosen) and how
// often consecutive tokens repeat their experts, next to what random routing would give.
// These are the Mixtral paper's Figures 7 and 9 and its Table 5. Counting only; running
// the model is route_text(), drawing is routes_report.h.
// Legend: L layers, T tokens, E experts, K experts used per token.
#pragma once
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/thread_pool.h"
#include "model/model.h"
#include "model/transformer.h"

namespace smoe {

// Chance that two tokens routed uniformly at random share their first expert: 1/n.
double random_repeat_first(int64_t n_experts);
// Chance that two uniformly random K-subsets of n experts intersect:
// 1 - C(n-K, K) / C(n, K). For n = 8, K = 2: 1 - (6/8)(5/7) = 0.4643.
double random_repeat_either(int64_t n_experts, int64_t k);

// Counts for one layer.
struct LayerRoutingCounts {
  std::vector<int64_t> first;   // [E] tokens whose best expert is e
  std::vector<int64_t> second;  // [E] tokens whose second-best expert is e (K >= 2)
  std::vector<int64_t> chosen;  // [E] tokens that have e among their K chosen experts
  int64_t pairs = 0;            // consecutive token pairs seen
  int64_t same_first = 0;       // pairs whose best experts are equal
  int64_t same_either = 0;      // pairs whose K chosen experts intersect
  std::map<std::vector<int32_t>, int64_t> sets;  // tokens per chosen set (sorted expert ids)
};

// Accumulates routing over any number of sequences.
class RoutingStats {
 public:
  RoutingStats(int64_t n_layers, int64_t n_experts, int64_t k);

  // Adds one forward call's routing. continues_sequence: its first token directly follows
  // the last token of the previous add() in the same sequence (so that pair counts too);
  // false starts a new sequence (no pair across the boundary).
  void add(const RouteRecord& record, bool continues_sequence);

  int64_t n_layers() const { return n_layers_; }
  int64_t n_experts() const { return n_experts_; }
  int64_t k() const { return k_; }
  int64_t n_tokens() const { return n_tokens_; }
  const LayerRoutingCounts& layer(int64_t l) const { return layers_[static_cast<size_t>(l)]; }

  // Shares of tokens, each summing to 1 over experts (uniform routing gives 1/E each):
  std::vector<double> first_share(int64_t l) const;   // best expert
  std::vector<double> second_share(int64_t l) const;  // second-best expert; empty when K = 1
  std::vector<double> either_share(int64_t l) const;  // chosen count / (T * K): any of the K
  double repeat_first(int64_t l) const;   // share of consecutive pairs with the same best expert
  double repeat_either(int64_t l) const;  // share of consecutive pairs whose K chosen intersect
  // What the two repetition figures would be if consecutive tokens were routed
  // independently, each like a token drawn at random from the text: sum_e first_share(e)^2,
  // and the chance that two chosen sets drawn from the measured set frequencies intersect
  // (-1 when there are more than 4096 distinct sets). Uneven shares alone raise repetition
  // above the uniform baseline; locality is repetition above these.
  double repeat_first_independent(int64_t l) const;
  double repeat_either_independent(int64_t l) const;

  // {"layer", "first_choice_share", "second_choice_share", "either_share", "repeat_first",
  //  "repeat_either", "repeat_first_independent", "repeat_either_independent" (null when
  //  not computed), "n_pairs"} for each layer.
  nlohmann::ordered_json layers_json() const;

 private:
  int64_t n_layers_, n_experts_, k_;
  int64_t n_tokens_ = 0;
  std::vector<LayerRoutingCounts> layers_;  // [L]
  std::vector<int32_t> last_;               // [L, K] experts of the last token added
  bool have_last_ = false;
};

// The routing of one text's first tokens, kept to draw them (routes.html).
struct TokenRoutes {
  std::vector<int32_t> tokens;   // [T]
  std::vector<int32_t> experts;  // [L, T, K], best first
  std::vector<float> gates;      // [L, T, K]
};

// Runs tokens[T] (BOS first) through the model, as one sequence when T <= ctx, else as
// consecutive windows of ctx tokens (each a fresh sequence), adding the routing to `stats`.
// When keep is given, the routing of the first keep_tokens tokens is stored there.
void route_text(const Model& model, std::span<const int32_t> tokens, int64_t ctx, ThreadPool* pool,
                RoutingStats& stats, TokenRoutes* keep = nullptr, int64_t keep_tokens = 0);

}  // namespace smoe
