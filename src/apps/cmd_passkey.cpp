// cmd_passkey.cpp: `smoe passkey`: passkey retrieval accuracy over a grid of prompt
// lengths and key depths (analysis/passkey.h).
#include <cstdio>
#include <nlohmann/json.hpp>

#include "analysis/eval_common.h"
#include "analysis/passkey.h"
#include "apps/commands.h"
#include "core/error.h"
#include "model/model.h"

namespace smoe {

namespace {

struct PasskeyArgs {
  LoadOptions load;
  std::string model, lengths, positions = "0,0.25,0.5,0.75,1";
  int64_t trials = 2, digits = 5;
  uint64_t seed = 0;
  int threads = 0;
  bool json = false;
};

void run_passkey_cmd(const PasskeyArgs& a) {
  SMOE_CHECK(a.threads >= 0 && a.threads <= 1024, "-t ", a.threads, " is out of range (expected 1..1024; 0 = all cores)");
  PasskeyOptions opts;
  opts.depths = parse_double_list(a.positions, "--positions");
  if (!a.lengths.empty()) opts.lengths = parse_int_list(a.lengths, "--lengths");
  std::unique_ptr<Model> model = load_model(a.model, a.load);
  const ModelConfig& c = model->config;
  if (opts.lengths.empty()) {
    for (int64_t len : {256, 512, 1024, 2048, 4096})
      if (len + a.digits + 4 <= c.max_seq_len) opts.lengths.push_back(len);
    SMOE_CHECK(!opts.lengths.empty(), a.model, ": context length ", c.max_seq_len,
               " is below the default lengths; give --lengths");
  }
  ThreadPool pool(a.threads);
  opts.trials = a.trials;
  opts.digits = a.digits;
  opts.seed = a.seed;
  opts.pool = &pool;
  opts.progress_tool = "passkey";
  const PasskeyGrid grid = run_passkey(*model, opts);

  if (a.json) {
    nlohmann::ordered_json acc = nlohmann::ordered_json::array(), cases = nlohmann::ordered_json::array();
    for (size_t li = 0; li < grid.lengths.size(); ++li) {
      std::vector<double> row;
      for (size_t di = 0; di < grid.depths.size(); ++di) row.push_back(grid.accuracy(li, di));
      acc.push_back(row);
    }
    for (const PasskeyCase& pc : grid.cases)
      cases.push_back({{"length", pc.length}, {"position", pc.depth}, {"n_tokens", pc.n_tokens},
                       {"key_token", pc.key_token}, {"key", pc.key}, {"output", pc.output},
                       {"answer", pc.answer}, {"correct", pc.correct}});
    nlohmann::ordered_json j = {{"model", a.model},       {"lengths", grid.lengths}, {"positions", grid.depths},
                        {"trials", grid.trials},  {"accuracy", acc},         {"overall", grid.overall()},
                        {"cases", cases}};
    std::printf("%s\n", j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace).c_str());
    return;
  }
  std::printf("passkey retrieval accuracy (greedy, %lld key(s) per cell); rows: prompt length in tokens, "
              "columns: depth of the key in the filler\n\n| length |",
              static_cast<long long>(grid.trials));
  for (double d : grid.depths) std::printf(" %g%% |", 100 * d);
  std::printf("\n|---:|");
  for (size_t di = 0; di < grid.depths.size(); ++di) std::printf("---:|");
  std::printf("\n");
  for (size_t li = 0; li < grid.lengths.size(); ++li) {
    std::printf("| %lld |", static_cast<long long>(grid.lengths[li]));
    for (size_t di = 0; di < grid.depths.size(); ++di) std::printf(" %.0f%% |", 100 * grid.accuracy(li, di));
    std::printf("\n");
  }
  int64_t ok = 0;
  for (const PasskeyCase& pc : grid.cases) ok += pc.correct;
  std::printf("\noverall: %.1f%% (%lld of %zu)\n", 100 * grid.overall(), static_cast<long long>(ok), grid.cases.size());
}

}  // namespace

void register_passkey(CLI::App& app) {
  auto args = std::make_shared<PasskeyArgs>();
  CLI::App* cmd = app.add_subcommand("passkey", "passkey retrieval accuracy over prompt lengths and key depths");
  cmd->footer(
      "passkey retrieval: a random number hidden at a given depth of a filler text of a given length in "
      "tokens (BOS included, as much filler as fits); the model answers by greedy decoding and is right "
      "when the first number it writes is the key. Prints the accuracy grid over lengths and depths");
  add_model_option(*cmd, args->model);
  add_load_option(*cmd, args->load);
  cmd->add_option("--lengths", args->lengths,
                  "prompt lengths in tokens, e.g. 512,1024 (default: 256,512,1024,2048,4096 up to the model's "
                  "context length)");
  cmd->add_option("--positions", args->positions, "key depths in [0, 1] (0: start of the filler, 1: its end)")
      ->capture_default_str();
  cmd->add_option("--trials", args->trials, "random keys per length and depth")->capture_default_str();
  cmd->add_option("--digits", args->digits, "digits of each key")->capture_default_str();
  cmd->add_option("--seed", args->seed, "seed for the keys")->capture_default_str();
  cmd->add_option("-t,--threads", args->threads, "threads (0: all cores)")->capture_default_str();
  cmd->add_flag("--json", args->json,
                "print one JSON object: {model, lengths, positions, trials, accuracy[length][position], "
                "overall, cases: [{length, position, n_tokens, key_token, key, output, answer, correct}]}");
  cmd->callback([args] { run_passkey_cmd(*args); });
}

}  // namespace smoe
