// compare.cpp: KL divergence, top-1 and routing agreement between two models (see
// compare.h).
#include "analysis/compare.h"

#include <algorithm>
#include <cmath>

#include "analysis/eval_common.h"
#include "core/error.h"
#include "model/transformer.h"
#include "runtime/sampler.h"
#include "tokenizer/tokenizer.h"

namespace smoe {

namespace {
double share(int64_t a, int64_t b) { return b > 0 ? static_cast<double>(a) / static_cast<double>(b) : 0.0; }
}  // namespace

double CompareResult::mean_kl() const {
  double s = 0;
  for (double v : kl) s += v;
  return kl.empty() ? 0.0 : s / static_cast<double>(kl.size());
}

double CompareResult::kl_quantile(double q) const {
  if (kl.empty()) return 0.0;
  std::vector<double> sorted = kl;
  std::sort(sorted.begin(), sorted.end());
  const size_t i = static_cast<size_t>(std::llround(q * static_cast<double>(sorted.size() - 1)));
  return sorted[std::min(i, sorted.size() - 1)];
}

double CompareResult::top1_agreement() const { return share(top1_agree, n_positions); }
double CompareResult::routing_agreement(int64_t l) const { return share(same_set[static_cast<size_t>(l)], n_positions); }
double CompareResult::first_choice_agreement(int64_t l) const {
  return share(same_first[static_cast<size_t>(l)], n_positions);
}
double CompareResult::mean_routing_agreement() const {
  if (same_set.empty()) return 0.0;
  double s = 0;
  for (size_t l = 0; l < same_set.size(); ++l) s += routing_agreement(static_cast<int64_t>(l));
  return s / static_cast<double>(same_set.size());
}
double CompareResult::ppl_base() const { return n_scored ? std::exp(nll_base / static_cast<double>(n_scored)) : 0.0; }
double CompareResult::ppl_other() const { return n_scored ? std::exp(nll_other / static_cast<double>(n_scored)) : 0.0; }

void check_comparable(const Model& base, const Model& other, const std::string& sample_text) {
  SMOE_CHECK(base.config.vocab_size == other.config.vocab_size, "cannot compare ", base.path, " (vocabulary of ",
             base.config.vocab_size, ") with ", other.path, " (vocabulary of ", other.config.vocab_size,
             "): expected the same vocabulary");
  if (!base.tokenizer || !other.tokenizer) return;
  const std::vector<int32_t> a = base.tokenizer->encode(sample_text), b = other.tokenizer->encode(sample_text);
  size_t i = 0;
  while (i < a.size() && i < b.size() && a[i] == b[i]) ++i;
  SMOE_CHECK(i == a.size() && i == b.size(), "cannot compare ", base.path, " with ", other.path,
             ": their tokenizers split the text differently (first difference at token ", i,
             "); expected the same tokenizer");
}

CompareResult compare_models(const Model& base, const Model& other, std::span<const int32_t> tokens,
                             const CompareOptions& opts) {
  const ModelConfig &cb = base.config, &co = other.config;
  const int64_t V = cb.vocab_size, T = static_cast<int64_t>(tokens.size());
  SMOE_CHECK(V == co.vocab_size, "cannot compare models with vocabularies of ", V, " and ", co.vocab_size);
  SMOE_CHECK(T >= 1, "compare: no tokens");
  const int64_t max_ctx = std::min(cb.max_seq_len, co.max_seq_len);
  SMOE_CHECK(opts.ctx >= 1 && opts.ctx <= max_ctx, "--ctx ", opts.ctx, " is out of range (expected 1..", max_ctx,
             " for these models)");
  CompareResult r;
  r.has_routing = cb.has_router && co.has_router && cb.n_layers == co.n_layers && cb.n_experts == co.n_experts &&
                  cb.n_experts_used == co.n_experts_used;
  const int64_t L = cb.n_layers, K = cb.n_experts_used;
  if (r.has_routing) {
    r.same_set.assign(static_cast<size_t>(L), 0);
    r.same_first.assign(static_cast<size_t>(L), 0);
  }
  const int64_t n_ctx = std::min(opts.ctx, T);
  Session sb(base, n_ctx), so(other, n_ctx);
  sb.pool = so.pool = opts.pool;
  RouteRecord rb, ro;
  if (r.has_routing) {
    sb.route_record = &rb;
    so.route_record = &ro;
  }
  std::vector<float> lb, lo;
  std::vector<int32_t> set_b(static_cast<size_t>(K)), set_o(static_cast<size_t>(K));
  const std::vector<Window> windows = split_windows(T, opts.ctx);
  for (size_t w = 0; w < windows.size(); ++w) {
    const Window& win = windows[w];
    sb.reset();
    so.reset();
    for (int64_t first = win.begin; first < win.end; first += kForwardChunk) {
      const int64_t n = std::min(kForwardChunk, win.end - first);
      const std::span<const int32_t> chunk = tokens.subspan(first, n);
      sb.forward(chunk, true, lb);  // [n, V]
      so.forward(chunk, true, lo);
      for (int64_t i = 0; i < n; ++i) {
        const float* pb = &lb[i * V];
        const float* po = &lo[i * V];
        r.kl.push_back(kl_divergence(pb, po, V));
        r.top1_agree += argmax(pb, V) == argmax(po, V);
        if (first + i + 1 < win.end) {  // the next token is in this window: score it
          const int32_t target = tokens[static_cast<size_t>(first + i + 1)];
          r.nll_base += token_nll(pb, V, target);
          r.nll_other += token_nll(po, V, target);
          ++r.n_scored;
        }
      }
      if (r.has_routing)
        for (int64_t l = 0; l < L; ++l)
          for (int64_t i = 0; i < n; ++i) {
            for (int64_t j = 0; j < K; ++j) {
              set_b[j] = rb.expert(l, i, j);
              set_o[j] = ro.expert(l, i, j);
            }
            r.same_first[l] += set_b[0] == set_o[0];
            std::sort(set_b.begin(), set_b.end());
            std::sort(set_o.begin(), set_o.end());
            r.same_set[l] += set_b == set_o;
          }
      r.n_positions += n;
    }
    if (opts.progress_tool)
      progress(opts.progress_tool,
               cat(other.path, ": window ", w + 1, "/", windows.size(), ", ", r.n_positions, " positions, mean KL ",
                   r.mean_kl()),
               w + 1 == windows.size());
  }
  return r;
}

}  // namespace smoe
