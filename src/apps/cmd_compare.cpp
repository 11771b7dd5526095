// cmd_compare.cpp: `smoe compare`: the quantization quality report. Runs a base model and
// one or more other models (e.g. its Q8_0 and Q4_0 files) over the same text and reports
// KL divergence, top-1 agreement, routing agreement per layer and both perplexities.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "analysis/compare.h"
#include "analysis/eval_common.h"
#include "apps/commands.h"
#include "core/error.h"
#include "model/model.h"

namespace smoe {

namespace {

struct CompareArgs {
  LoadOptions load;
  std::string model, file, split = "all";
  std::vector<std::string> others;
  int64_t ctx = 0, max_tokens = 0;
  int threads = 0;
  bool json = false;
};

nlohmann::ordered_json result_json(const std::string& path, const CompareResult& r) {
  nlohmann::ordered_json j = {{"model", path},
                      {"ppl", r.ppl_other()},
                      {"mean_kl", r.mean_kl()},
                      {"median_kl", r.kl_quantile(0.5)},
                      {"p99_kl", r.kl_quantile(0.99)},
                      {"max_kl", r.kl_quantile(1.0)},
                      {"top1_agreement", r.top1_agreement()},
                      {"routing_agreement", nullptr},
                      {"first_choice_agreement", nullptr},
                      {"mean_routing_agreement", nullptr}};
  if (r.has_routing) {
    std::vector<double> set, first;
    for (size_t l = 0; l < r.same_set.size(); ++l) {
      set.push_back(r.routing_agreement(static_cast<int64_t>(l)));
      first.push_back(r.first_choice_agreement(static_cast<int64_t>(l)));
    }
    j["routing_agreement"] = set;
    j["first_choice_agreement"] = first;
    j["mean_routing_agreement"] = r.mean_routing_agreement();
  }
  return j;
}

void run_compare(const CompareArgs& a) {
  const TextSplit split = parse_split(a.split);
  SMOE_CHECK(!a.others.empty(), "--vs: give the model to compare with");
  SMOE_CHECK(a.ctx >= 0, "--ctx ", a.ctx, " must be positive");
  SMOE_CHECK(a.max_tokens >= 0, "--max-tokens ", a.max_tokens, " must be >= 0 (0: the whole text)");
  SMOE_CHECK(a.threads >= 0 && a.threads <= 1024, "-t ", a.threads, " is out of range (expected 1..1024; 0 = all cores)");
  const std::string text = select_split(read_eval_text(a.file), split, a.file);
  std::unique_ptr<Model> base = load_model(a.model, a.load);
  std::vector<std::unique_ptr<Model>> others;
  for (const std::string& path : a.others) {
    others.push_back(load_model(path, a.load));
    check_comparable(*base, *others.back(), text.substr(0, 4096));
  }
  int64_t max_ctx = base->config.max_seq_len;
  for (const auto& m : others) max_ctx = std::min(max_ctx, m->config.max_seq_len);
  const int64_t ctx = a.ctx > 0 ? a.ctx : std::min<int64_t>(1024, max_ctx);
  SMOE_CHECK(ctx >= 1 && ctx <= max_ctx, "--ctx ", ctx, " is out of range (expected 1..", max_ctx, " for these models)");
  std::vector<int32_t> tokens = tokenize_with_bos(*base, text, a.file);
  if (a.max_tokens > 0 && static_cast<int64_t>(tokens.size()) > a.max_tokens) tokens.resize(a.max_tokens);
  ThreadPool pool(a.threads);
  progress("compare", cat(a.file, " (split ", a.split, "): ", tokens.size(), " tokens with BOS, windows of ", ctx), true);

  CompareOptions opts;
  opts.ctx = ctx;
  opts.pool = &pool;
  opts.progress_tool = "compare";
  std::vector<CompareResult> results;
  for (const auto& m : others) results.push_back(compare_models(*base, *m, tokens, opts));

  if (a.json) {
    nlohmann::ordered_json j = {{"base", a.model},
                        {"file", a.file},
                        {"split", a.split},
                        {"n_tokens", tokens.size()},
                        {"ctx", ctx},
                        {"n_positions", results[0].n_positions},
                        {"base_ppl", results[0].ppl_base()},
                        {"others", nlohmann::ordered_json::array()}};
    for (size_t i = 0; i < results.size(); ++i) j["others"].push_back(result_json(a.others[i], results[i]));
    std::printf("%s\n", j.dump().c_str());
    return;
  }
  std::printf("base %s: perplexity %.4f\n%lld positions of %s (split %s), windows of %lld tokens\n\n", a.model.c_str(),
              results[0].ppl_base(), static_cast<long long>(results[0].n_positions), a.file.c_str(), a.split.c_str(),
              static_cast<long long>(ctx));
  std::printf("| model | perplexity | mean KL | median KL | p99 KL | max KL | top-1 agreement | same experts (mean over layers) |\n");
  std::printf("|---|---:|---:|---:|---:|---:|---:|---:|\n");
  for (size_t i = 0; i < results.size(); ++i) {
    const CompareResult& r = results[i];
    std::printf("| %s | %.4f | %.5f | %.5f | %.5f | %.5f | %.1f%% |", a.others[i].c_str(), r.ppl_other(), r.mean_kl(),
                r.kl_quantile(0.5), r.kl_quantile(0.99), r.kl_quantile(1.0), 100 * r.top1_agreement());
    if (r.has_routing) std::printf(" %.1f%% |\n", 100 * r.mean_routing_agreement());
    else std::printf(" n/a (different routing shapes) |\n");
  }
  for (size_t i = 0; i < results.size(); ++i) {
    const CompareResult& r = results[i];
    if (!r.has_routing) continue;
    std::printf("\nrouting agreement per layer, %s (same K experts chosen / same first choice):\n", a.others[i].c_str());
    for (size_t l = 0; l < r.same_set.size(); ++l)
      std::printf("  layer %3zu: %6.1f%% / %6.1f%%\n", l, 100 * r.routing_agreement(static_cast<int64_t>(l)),
                  100 * r.first_choice_agreement(static_cast<int64_t>(l)));
  }
}

}  // namespace

void register_compare(CLI::App& app) {
  auto args = std::make_shared<CompareArgs>();
  CLI::App* cmd = app.add_subcommand("compare", "quantization quality report: KL, top-1 and routing agreement between models");
  cmd->footer(
      "compare models on the same text (e.g. a float model and its quantizations): mean/median/p99/max "
      "KL(base || other) of the next-token distributions, top-1 agreement, routing agreement per layer "
      "(share of tokens whose K chosen experts are the same set, and whose first choice is the same) and "
      "both perplexities. The text is tokenized once with BOS first and cut into consecutive windows of "
      "--ctx tokens, each a fresh sequence; every position is compared");
  add_model_option(*cmd, args->model, "BASE model");
  add_load_option(*cmd, args->load);
  cmd->add_option("--vs", args->others, "model(s) to compare with the base (repeat --vs for several)")->required();
  cmd->add_option("-f,--file", args->file, "text file (UTF-8)")->required();
  cmd->add_option("--split", args->split,
                  "part of the text: all, train (first 90% of characters) or val (last 10%, from character "
                  "len*9//10)")
      ->capture_default_str();
  cmd->add_option("--ctx", args->ctx, "window length in tokens (default: min(1024, the models' context length))");
  cmd->add_option("--max-tokens", args->max_tokens, "use only the first N tokens (BOS included; 0: all)")
      ->capture_default_str();
  cmd->add_option("-t,--threads", args->threads, "threads (0: all cores)")->capture_default_str();
  cmd->add_flag("--json", args->json,
                "print one JSON object: {base, file, split, n_tokens, ctx, n_positions, base_ppl, others: "
                "[{model, ppl, mean_kl, median_kl, p99_kl, max_kl, top1_agreement, routing_agreement[L], "
                "first_choice_agreement[L], mean_routing_agreement}]}");
  cmd->callback([args] { run_compare(*args); });
}

}  // namespace smoe
