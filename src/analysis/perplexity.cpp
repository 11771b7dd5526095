// perplexity.cpp: the sliding-window perplexity protocol (see perplexity.h).
#include "analysis/perplexity.h"

#include <algorithm>
#include <cmath>

#include "analysis/eval_common.h"
#include "core/error.h"
#include "model/transformer.h"

namespace smoe {

std::vector<ScoredWindow> perplexity_windows(int64_t n_tokens, int64_t ctx, int64_t stride) {
  SMOE_CHECK(ctx >= 2, "--ctx ", ctx, " is too small: a window needs at least 2 tokens (one to predict from)");
  SMOE_CHECK(stride >= 1 && stride < ctx, "--stride ", stride, " is out of range (expected 1..", ctx - 1,
             ": less than the window length ", ctx, ", so that every window starts with context)");
  SMOE_CHECK(n_tokens >= 2, "the text has ", n_tokens, " token(s) with BOS: nothing to score");
  std::vector<ScoredWindow> out;
  int64_t prev_end = 0;
  for (int64_t begin = 0;; begin += stride) {
    const int64_t end = std::min(begin + ctx, n_tokens);
    const int64_t first = std::max(begin + 1, prev_end);
    if (first < end) out.push_back({begin, end, first});
    prev_end = end;
    if (end == n_tokens) break;
  }
  return out;
}

double ContextBucket::ppl() const { return n ? std::exp(nll_sum / static_cast<double>(n)) : 0.0; }
double PerplexityResult::ppl() const { return std::exp(mean_nll()); }

PerplexityResult evaluate_perplexity(const Model& model, std::span<const int32_t> tokens,
                                     const PerplexityOptions& opts) {
  const ModelConfig& c = model.config;
  const int64_t V = c.vocab_size, N = static_cast<int64_t>(tokens.size());
  SMOE_CHECK(opts.ctx <= c.max_seq_len, "--ctx ", opts.ctx, " exceeds the model's context length ", c.max_seq_len);
  const std::vector<ScoredWindow> windows = perplexity_windows(N, opts.ctx, opts.stride);
  PerplexityResult r;
  r.n_tokens = N;
  r.ctx = opts.ctx;
  r.stride = opts.stride;
  r.n_windows = static_cast<int64_t>(windows.size());
  // Buckets by context length: bucket b holds contexts [2^b, 2^(b+1) - 1].
  std::vector<ContextBucket> buckets;
  auto score = [&](int64_t i, const float* row, int64_t context) {  // x_i predicted by row
    const double nll = token_nll(row, V, tokens[static_cast<size_t>(i)]);
    r.nll_sum += nll;
    ++r.n_scored;
    size_t b = 0;
    while ((int64_t{2} << b) <= context) ++b;
    if (buckets.size() <= b) buckets.resize(b + 1);
    buckets[b].n += 1;
    buckets[b].nll_sum += nll;
  };

  Session session(model, std::min(opts.ctx, N));
  session.pool = opts.pool;
  std::vector<float> last;
  for (size_t w = 0; w < windows.size(); ++w) {
    const ScoredWindow& win = windows[w];
    session.reset();
    // The unscored prefix [begin, first): its last logits predict x_first.
    feed_chunked(session, tokens.subspan(win.begin, win.first_scored - win.begin), false, nullptr, &last);
    score(win.first_scored, last.data(), win.first_scored - win.begin);
    // Then [first, end - 1): row j predicts x_{first + j + 1}.
    const int64_t rest = win.end - 1 - win.first_scored;
    if (rest > 0) {
      const int64_t base = win.first_scored;
      feed_chunked(session, tokens.subspan(base, rest), true,
                   [&](int64_t first, int64_t n, const std::vector<float>& logits) {
                     for (int64_t j = 0; j < n; ++j) {
                       const int64_t target = base + first + j + 1;
                       score(target, &logits[j * V], target - win.begin);
                     }
                   });
    }
    if (opts.progress_tool)
      progress(opts.progress_tool,
               cat("ctx ", opts.ctx, ": window ", w + 1, "/", windows.size(), ", ", r.n_scored,
                   " tokens scored, running perplexity ", r.ppl()),
               w + 1 == windows.size());
  }
  for (size_t b = 0; b < buckets.size(); ++b) {
    buckets[b].min_context = int64_t{1} << b;
    buckets[b].max_context = (int64_t{2} << b) - 1;
    if (buckets[b].n > 0) r.by_context.push_back(buckets[b]);
  }
  return r;
}

}  // namespace smoe
