// cmd_logits.cpp: `smoe logits`: the logits of every position of a token sequence, from
// one forward pass, written as float32 little-endian rows of vocab_size.
#include <cstdio>
#include <fstream>

#include "apps/commands.h"
#include "core/error.h"
#include "model/model.h"
#include "model/transformer.h"

namespace smoe {

namespace {

struct LogitsArgs {
  LoadOptions load;
  std::string model, tokens, out;
  int threads = 0;
};

void run_logits(const LogitsArgs& a) {
  std::vector<int32_t> tokens = parse_token_list(a.tokens, "--tokens");
  SMOE_CHECK(!tokens.empty(), "--tokens: no token ids given");
  std::unique_ptr<Model> model = load_model(a.model, a.load);
  const ModelConfig& c = model->config;
  SMOE_CHECK(static_cast<int64_t>(tokens.size()) <= c.max_seq_len, "--tokens: ", tokens.size(),
             " tokens exceed the model's context length ", c.max_seq_len);
  SMOE_CHECK(a.threads >= 0 && a.threads <= 1024, "-t ", a.threads, " is out of range (expected 1..1024; 0 = all cores)");
  ThreadPool pool(a.threads);
  Session session(*model, static_cast<int64_t>(tokens.size()));
  session.pool = &pool;
  std::vector<float> logits;
  session.forward(tokens, /*all_logits=*/true, logits);  // [T, V]
  std::ofstream out(a.out, std::ios::binary | std::ios::trunc);
  SMOE_CHECK(out, a.out, ": cannot open for writing");
  out.write(reinterpret_cast<const char*>(logits.data()),
            static_cast<std::streamsize>(logits.size() * sizeof(float)));
  SMOE_CHECK(out.good(), a.out, ": write failed");
  std::fprintf(stderr, "smoe: wrote %zu x %lld logits to %s\n", tokens.size(),
               static_cast<long long>(c.vocab_size), a.out.c_str());
}

}  // namespace

void register_logits(CLI::App& app) {
  auto args = std::make_shared<LogitsArgs>();
  CLI::App* cmd = app.add_subcommand("logits", "write the logits of every position of a token sequence");
  add_model_option(*cmd, args->model);
  add_load_option(*cmd, args->load);
  cmd->add_option("--tokens", args->tokens, "token ids: 1,2,3 (BOS is not added)")->required();
  cmd->add_option("--out", args->out, "output file: float32 little-endian, [tokens, vocab_size]")->required();
  cmd->add_option("-t,--threads", args->threads, "threads (0: all cores)")->capture_default_str();
  cmd->callback([args] { run_logits(*args); });
}

}  // namespace smoe
