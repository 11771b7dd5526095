// cmd_mc.cpp: `smoe mc`: multiple-choice accuracy by log-likelihood on a JSON Lines task
// file (analysis/mc.h).
#include <cstdio>
#include <nlohmann/json.hpp>

#include "analysis/eval_common.h"
#include "analysis/mc.h"
#include "apps/commands.h"
#include "core/error.h"
#include "model/model.h"

namespace smoe {

namespace {

struct McArgs {
  LoadOptions load;
  std::string model, file;
  int64_t limit = 0;
  int threads = 0;
  bool json = false, details = false;
};

void run_mc_cmd(const McArgs& a) {
  SMOE_CHECK(a.limit >= 0, "--limit ", a.limit, " must be >= 0 (0: every question)");
  SMOE_CHECK(a.threads >= 0 && a.threads <= 1024, "-t ", a.threads, " is out of range (expected 1..1024; 0 = all cores)");
  std::vector<McQuestion> questions = parse_mc_jsonl(read_eval_text(a.file), a.file);
  if (a.limit > 0 && static_cast<int64_t>(questions.size()) > a.limit) questions.resize(a.limit);
  std::unique_ptr<Model> model = load_model(a.model, a.load);
  ThreadPool pool(a.threads);
  progress("mc", cat(a.file, ": ", questions.size(), " questions"), true);
  const McResult r = run_mc(*model, questions, &pool, "mc");
  const int64_t n = static_cast<int64_t>(questions.size());
  if (a.json) {
    nlohmann::ordered_json j = {{"model", a.model},
                        {"file", a.file},
                        {"n_questions", n},
                        {"accuracy", r.accuracy()},
                        {"accuracy_norm", r.accuracy_norm()},
                        {"correct", r.correct},
                        {"correct_norm", r.correct_norm},
                        {"random_baseline", r.random_baseline}};
    if (a.details) {
      j["questions"] = nlohmann::ordered_json::array();
      for (size_t i = 0; i < questions.size(); ++i) {
        const McScore& s = r.scores[i];
        j["questions"].push_back({{"line", questions[i].line}, {"label", questions[i].label},
                                  {"pred", s.pred}, {"pred_norm", s.pred_norm}, {"loglik", s.loglik},
                                  {"n_tokens", s.n_tokens}, {"n_chars", s.n_chars}});
      }
    }
    std::printf("%s\n", j.dump().c_str());
    return;
  }
  std::printf("%s: %lld questions\n", a.file.c_str(), static_cast<long long>(n));
  std::printf("accuracy       %6.2f%% (%lld right; choice with the highest summed log-likelihood)\n",
              100 * r.accuracy(), static_cast<long long>(r.correct));
  std::printf("accuracy_norm  %6.2f%% (%lld right; log-likelihood per character)\n", 100 * r.accuracy_norm(),
              static_cast<long long>(r.correct_norm));
  std::printf("random guess   %6.2f%%\n", 100 * r.random_baseline);
}

}  // namespace

void register_mc(CLI::App& app) {
  auto args = std::make_shared<McArgs>();
  CLI::App* cmd = app.add_subcommand("mc", "multiple-choice accuracy by log-likelihood");
  cmd->footer(
      "multiple-choice accuracy by log-likelihood: each choice is scored by the summed log-probability of "
      "its tokens after BOS + context (the tokens of context + choice past their common prefix with the "
      "context's), the highest wins; also per-character normalised. TASK.jsonl: one "
      "{\"context\": str, \"choices\": [str, ...], \"label\": index} per line (\"question\" and "
      "\"answer\", also as a letter, are accepted); choices are appended to the context as given");
  add_model_option(*cmd, args->model);
  add_load_option(*cmd, args->load);
  cmd->add_option("-f,--file", args->file, "task file, JSON Lines")->required();
  cmd->add_option("--limit", args->limit, "score only the first N questions (0: all)")->capture_default_str();
  cmd->add_option("-t,--threads", args->threads, "threads (0: all cores)")->capture_default_str();
  cmd->add_flag("--json", args->json,
                "print one JSON object: {model, file, n_questions, accuracy, accuracy_norm, correct, "
                "correct_norm, random_baseline}");
  cmd->add_flag("--details", args->details,
                "with --json: add questions: [{line, label, pred, pred_norm, loglik[], n_tokens[], n_chars[]}]");
  cmd->callback([args] { run_mc_cmd(*args); });
}

}  // namespace smoe
