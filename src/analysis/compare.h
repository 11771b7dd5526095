// compare.h: how far one model's outputs are from another's on the same tokens: the
// quantization quality report. Per position: KL(base || other) of the next-token
// distributions and whether their top-1 tokens agree; per layer: the share of tokens
// whose K chosen experts are the same set (and whose first choice is the same); and each
// model's perplexity on the same windows.
// Legend: T tokens, V vocab, L layers, K experts used per token.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "core/thread_pool.h"
#include "model/model.h"

namespace smoe {

struct CompareResult {
  int64_t n_positions = 0;       // positions compared (every token of every window)
  std::vector<double> kl;        // [positions] KL(base || other) in nats
  int64_t top1_agree = 0;        // positions whose argmax tokens are equal
  bool has_routing = false;      // both models route (same L, E, K): the fields below are set
  std::vector<int64_t> same_set;    // [L] tokens whose K chosen experts are the same set
  std::vector<int64_t> same_first;  // [L] tokens whose first-choice experts are equal
  int64_t n_scored = 0;          // next-token predictions inside windows (for perplexity)
  double nll_base = 0, nll_other = 0;

  double mean_kl() const;
  double kl_quantile(double q) const;  // q in [0, 1]; 0 for no positions
  double top1_agreement() const;
  double routing_agreement(int64_t layer) const;
  double first_choice_agreement(int64_t layer) const;
  double mean_routing_agreement() const;  // over layers
  double ppl_base() const;
  double ppl_other() const;
};

// Checks that the two models can be compared on the same tokens (same vocabulary size;
// when both have tokenizers, the same ids for `sample_text`). Throws naming both otherwise.
void check_comparable(const Model& base, const Model& other, const std::string& sample_text);

struct CompareOptions {
  int64_t ctx = 512;  // tokens[] is cut into consecutive windows of ctx, each a fresh sequence
  ThreadPool* pool = nullptr;
  const char* progress_tool = nullptr;
};

// Runs both models over tokens[T] (BOS first) window by window and compares them.
CompareResult compare_models(const Model& base, const Model& other, std::span<const int32_t> tokens,
                             const CompareOptions& opts);

}  // namespace smoe
