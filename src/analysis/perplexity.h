// perplexity.h: perplexity of a model on a token stream with sliding windows, and how it
// varies with the context a token is predicted from.
//
// Protocol. The text is tokenized once with BOS first: x_0 = BOS, x_1 .. x_{N-1}. Windows
// of at most `ctx` tokens start at 0, stride, 2*stride, ...; each runs as a fresh sequence
// (no BOS is inserted into later windows). Every token x_i (i >= 1) is scored exactly once,
// in the first window that covers it: window [b, e) scores the tokens after the previous
// window's end (from b + 1 in the first window), each predicted from all the tokens of its
// window before it. So after the first window every scored token sees at least
// ctx - stride tokens of context (so stride < ctx: the first token of a window has no context
// of its own). perplexity = exp(mean over scored tokens of -log p(x_i)).
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "core/thread_pool.h"
#include "model/model.h"

namespace smoe {

// One window of the protocol: tokens [begin, end) run, tokens [first_scored, end) scored.
struct ScoredWindow {
  int64_t begin = 0, end = 0, first_scored = 0;
};
// The protocol's windows for n_tokens tokens (BOS included). Throws unless
// 1 <= stride < ctx and n_tokens >= 2.
std::vector<ScoredWindow> perplexity_windows(int64_t n_tokens, int64_t ctx, int64_t stride);

// Scored tokens whose context (tokens before them in their window) is in [min, max].
struct ContextBucket {
  int64_t min_context = 0, max_context = 0;
  int64_t n = 0;
  double nll_sum = 0;
  double ppl() const;
};

struct PerplexityResult {
  int64_t n_tokens = 0, ctx = 0, stride = 0, n_windows = 0;
  int64_t n_scored = 0;
  double nll_sum = 0;                     // sum of -log p over scored tokens (nats)
  std::vector<ContextBucket> by_context;  // [1,1], [2,3], [4,7], ... (powers of two), non-empty only
  double mean_nll() const { return n_scored ? nll_sum / static_cast<double>(n_scored) : 0.0; }
  double ppl() const;
};

struct PerplexityOptions {
  int64_t ctx = 512;
  int64_t stride = 256;
  ThreadPool* pool = nullptr;
  const char* progress_tool = nullptr;  // progress lines on stderr under this name, when set
};

// Runs the protocol over tokens[N] (BOS first). Throws for ctx beyond the model's context
// length, fewer than 2 tokens, or a bad stride.
PerplexityResult evaluate_perplexity(const Model& model, std::span<const int32_t> tokens,
                                     const PerplexityOptions& opts);

}  // namespace smoe
