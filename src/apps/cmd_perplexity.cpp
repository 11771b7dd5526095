// cmd_perplexity.cpp: `smoe perplexity`: perplexity of a model on a text with the
// sliding-window protocol of analysis/perplexity.h, by context length, and optionally
// repeated over several window lengths (perplexity against context length).
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "analysis/eval_common.h"
#include "analysis/perplexity.h"
#include "apps/commands.h"
#include "core/error.h"
#include "model/model.h"

namespace smoe {

namespace {

struct PerplexityArgs {
  LoadOptions load;
  std::string model, file, split = "all", sweep;
  int64_t ctx = 0, stride = 0, max_tokens = 0;
  int threads = 0;
  bool json = false;
};

nlohmann::ordered_json result_json(const PerplexityResult& r) {
  nlohmann::ordered_json buckets = nlohmann::ordered_json::array();
  for (const ContextBucket& b : r.by_context)
    buckets.push_back({{"min_context", b.min_context}, {"max_context", b.max_context}, {"n", b.n}, {"ppl", b.ppl()}});
  return {{"ctx", r.ctx},           {"stride", r.stride},       {"n_windows", r.n_windows},
          {"n_scored", r.n_scored}, {"mean_nll", r.mean_nll()}, {"ppl", r.ppl()},
          {"by_context", buckets}};
}

void run_perplexity(const PerplexityArgs& a) {
  const TextSplit split = parse_split(a.split);
  SMOE_CHECK(a.ctx >= 0, "--ctx ", a.ctx, " must be positive");
  SMOE_CHECK(a.stride >= 0, "--stride ", a.stride, " must be positive");
  SMOE_CHECK(a.max_tokens >= 0, "--max-tokens ", a.max_tokens, " must be >= 0 (0: the whole text)");
  SMOE_CHECK(a.threads >= 0 && a.threads <= 1024, "-t ", a.threads, " is out of range (expected 1..1024; 0 = all cores)");
  const std::string text = select_split(read_eval_text(a.file), split, a.file);
  std::vector<int64_t> sweep;
  if (!a.sweep.empty()) sweep = parse_int_list(a.sweep, "--sweep");

  std::unique_ptr<Model> model = load_model(a.model, a.load);
  const ModelConfig& c = model->config;
  const int64_t ctx = a.ctx > 0 ? a.ctx : std::min<int64_t>(1024, c.max_seq_len);
  SMOE_CHECK(ctx >= 2 && ctx <= c.max_seq_len, "--ctx ", ctx, " is out of range (expected 2..", c.max_seq_len,
             " for this model)");
  const int64_t stride = a.stride > 0 ? a.stride : std::max<int64_t>(1, ctx / 2);
  SMOE_CHECK(stride < ctx, "--stride ", stride, " must be less than the window (--ctx ", ctx, "): expected 1..",
             ctx - 1);
  for (int64_t s : sweep)
    SMOE_CHECK(s >= 2 && s <= c.max_seq_len, "--sweep: window length ", s, " is out of range (expected 2..",
               c.max_seq_len, " for this model)");

  std::vector<int32_t> tokens = tokenize_with_bos(*model, text, a.file);
  if (a.max_tokens > 0 && static_cast<int64_t>(tokens.size()) > a.max_tokens) tokens.resize(a.max_tokens);
  SMOE_CHECK(tokens.size() >= 2, "--max-tokens ", a.max_tokens, " leaves nothing to score (expected at least 2)");
  ThreadPool pool(a.threads);
  progress("perplexity", cat(a.file, " (split ", a.split, "): ", tokens.size(), " tokens with BOS"), true);

  PerplexityOptions opts;
  opts.ctx = ctx;
  opts.stride = stride;
  opts.pool = &pool;
  opts.progress_tool = "perplexity";
  const PerplexityResult main = evaluate_perplexity(*model, tokens, opts);
  std::vector<PerplexityResult> swept;
  for (int64_t s : sweep) {
    PerplexityOptions o = opts;
    o.ctx = s;
    // Same overlap as the main run: stride / ctx kept.
    o.stride = std::clamp<int64_t>(std::llround(static_cast<double>(s) * static_cast<double>(stride) / static_cast<double>(ctx)), 1, s - 1);
    swept.push_back(evaluate_perplexity(*model, tokens, o));
  }

  if (a.json) {
    nlohmann::ordered_json j = result_json(main);
    j["model"] = a.model;
    j["file"] = a.file;
    j["split"] = a.split;
    j["n_tokens"] = main.n_tokens;
    j["sweep"] = nlohmann::ordered_json::array();
    for (const PerplexityResult& r : swept) j["sweep"].push_back(result_json(r));
    std::printf("%s\n", j.dump().c_str());
    return;
  }
  std::printf("perplexity %.4f (mean NLL %.4f nats/token) over %lld tokens of %s (split %s, %lld tokens with BOS)\n",
              main.ppl(), main.mean_nll(), static_cast<long long>(main.n_scored), a.file.c_str(), a.split.c_str(),
              static_cast<long long>(main.n_tokens));
  std::printf("windows of %lld tokens, stride %lld: %lld windows\n\n", static_cast<long long>(ctx),
              static_cast<long long>(stride), static_cast<long long>(main.n_windows));
  std::printf("by context length (tokens before the predicted one in its window):\n");
  std::printf("  %-13s %10s %12s\n", "context", "tokens", "perplexity");
  for (const ContextBucket& b : main.by_context) {
    const std::string range = b.min_context == b.max_context ? std::to_string(b.min_context)
                                                             : cat(b.min_context, "-", b.max_context);
    std::printf("  %-13s %10lld %12.4f\n", range.c_str(), static_cast<long long>(b.n), b.ppl());
  }
  if (!swept.empty()) {
    std::printf("\nby window length:\n  %-8s %8s %10s %12s\n", "ctx", "stride", "tokens", "perplexity");
    for (const PerplexityResult& r : swept)
      std::printf("  %-8lld %8lld %10lld %12.4f\n", static_cast<long long>(r.ctx), static_cast<long long>(r.stride),
                  static_cast<long long>(r.n_scored), r.ppl());
  }
}

}  // namespace

void register_perplexity(CLI::App& app) {
  auto args = std::make_shared<PerplexityArgs>();
  CLI::App* cmd = app.add_subcommand("perplexity", "perplexity of a model on a text (sliding windows)");
  cmd->footer(
      "perplexity of a model on a text. Protocol: the text (or its --split) is tokenized once with BOS "
      "first; windows of --ctx tokens start every --stride (< ctx) tokens, each run as a fresh sequence; every "
      "token after BOS is scored once, in the first window that covers it, predicted from all the tokens "
      "of its window before it (so at least ctx - stride of context after the first window); perplexity = "
      "exp(mean negative log-likelihood). Also reports perplexity by context length and, with --sweep, "
      "by window length. The project's figures use --split val on tinyshakespeare.txt");
  add_model_option(*cmd, args->model);
  add_load_option(*cmd, args->load);
  cmd->add_option("-f,--file", args->file, "text file (UTF-8)")->required();
  cmd->add_option("--split", args->split,
                  "part of the text: all, train (first 90% of characters) or val (the validation split: the "
                  "last 10%, from character len*9//10)")
      ->capture_default_str();
  cmd->add_option("--ctx", args->ctx, "window length in tokens (default: min(1024, the model's context length))");
  cmd->add_option("--stride", args->stride, "tokens between window starts, 1..ctx-1 (default: ctx / 2)");
  cmd->add_option("--sweep", args->sweep,
                  "also run with these window lengths, e.g. 64,128,256 (same stride/ctx ratio): perplexity "
                  "against context length");
  cmd->add_option("--max-tokens", args->max_tokens, "use only the first N tokens (BOS included; 0: all)")
      ->capture_default_str();
  cmd->add_option("-t,--threads", args->threads, "threads (0: all cores)")->capture_default_str();
  cmd->add_flag("--json", args->json,
                "print one JSON object: {model, file, split, n_tokens, ctx, stride, n_windows, n_scored, "
                "mean_nll, ppl, by_context: [{min_context, max_context, n, ppl}], sweep: [...]}");
  cmd->callback([args] { run_perplexity(*args); });
}

}  // namespace smoe
