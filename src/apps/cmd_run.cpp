// cmd_run.cpp: `smoe run`: generate text from a prompt, streamed to stdout, or one JSON
// object with --json. Runs one request through the Scheduler, like `smoe serve`.
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "apps/commands.h"
#include "core/error.h"
#include "model/model.h"
#include "model/transformer.h"
#include "runtime/generate.h"
#include "runtime/scheduler.h"
#include "tokenizer/tokenizer.h"

namespace smoe {

namespace {

struct RunArgs {
  LoadOptions load;
  std::string model, prompt, prompt_tokens;
  std::vector<std::string> stop;
  int64_t n_predict = 128;
  int64_t n_ctx = 0;
  int threads = 0;
  SamplingParams sampling;
  bool chat = false, json = false, ignore_eos = false;
};

void run(const RunArgs& a) {
  a.sampling.validate();
  SMOE_CHECK(a.n_predict >= 0, "-n ", a.n_predict, " must be >= 0");
  SMOE_CHECK(a.prompt.empty() || a.prompt_tokens.empty(),
             "give either -p/--prompt or --prompt-tokens, not both");
  SMOE_CHECK(!a.prompt.empty() || !a.prompt_tokens.empty(),
             "no prompt: give -p TEXT or --prompt-tokens 1,2,3");
  const auto t0 = std::chrono::steady_clock::now();
  std::unique_ptr<Model> model = load_model(a.model, a.load);
  const double load_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  const ModelConfig& c = model->config;

  std::vector<int32_t> prompt;
  if (!a.prompt_tokens.empty()) {
    prompt = parse_token_list(a.prompt_tokens, "--prompt-tokens");
    SMOE_CHECK(!prompt.empty(), "--prompt-tokens: no token ids given");
    for (int32_t id : prompt)
      SMOE_CHECK(id < c.vocab_size, "--prompt-tokens: token id ", id,
                 " is out of range for this model (vocabulary of ", c.vocab_size, ")");
  } else {
    SMOE_CHECK(model->tokenizer, a.model, ": has no tokenizer; give --prompt-tokens instead of -p");
    prompt = a.chat ? chat_prompt(*model->tokenizer, a.prompt)
                    : model->tokenizer->encode(a.prompt, /*add_bos=*/true);
  }
  const int64_t n_ctx = a.n_ctx > 0
                            ? a.n_ctx
                            : std::min<int64_t>(c.max_seq_len,
                                                std::max<int64_t>(4096, static_cast<int64_t>(prompt.size()) + a.n_predict));
  SMOE_CHECK(a.n_ctx >= 0 && n_ctx <= c.max_seq_len, "--ctx ", a.n_ctx,
             " is out of range (expected 1..", c.max_seq_len, " for this model)");
  SMOE_CHECK(a.threads >= 0 && a.threads <= 1024, "-t ", a.threads, " is out of range (expected 1..1024; 0 = all cores)");
  ThreadPool pool(a.threads);
  // One request on a one-slot scheduler: the same generation path as `smoe serve`.
  SchedulerOptions so;
  so.n_slots = 1;
  so.n_ctx = n_ctx;
  so.max_queue = 0;
  so.max_prefill_tokens = std::max<int64_t>(1, static_cast<int64_t>(prompt.size()));  // one pass
  Scheduler scheduler(*model, so, &pool);

  GenerateOptions opts;
  opts.max_tokens = a.n_predict;
  opts.sampling = a.sampling;
  opts.stop_at_eos = !a.ignore_eos;
  opts.stop = a.stop;
  RequestCallbacks cb;
  cb.on_token = [&](const TokenOut& t) {
    if (!a.json) {
      if (model->tokenizer) std::fputs(t.text.c_str(), stdout);
      else std::printf("%d ", t.id);
      std::fflush(stdout);
    }
    return true;
  };
  RequestResult r;
  cb.on_done = [&](const RequestResult& result) { r = result; };
  scheduler.submit(prompt, opts, std::move(cb));
  while (scheduler.step()) {
  }
  SMOE_CHECK(r.reason != FinishReason::Error, r.error);
  const std::string stop_reason = finish_reason_name(r.reason);

  if (a.json) {
    nlohmann::json out;
    out["prompt_tokens"] = prompt;
    out["tokens"] = r.tokens;
    out["text"] = r.text;
    out["stop_reason"] = stop_reason;
    const double n_gen = static_cast<double>(r.tokens.size());
    out["timings"] = {
        {"load_ms", load_ms},
        {"prompt_ms", r.prompt_ms},
        {"prompt_tokens_per_s", r.prompt_ms > 0 ? 1000.0 * r.n_prompt / r.prompt_ms : 0.0},
        {"generate_ms", r.generate_ms},
        {"generate_tokens_per_s", r.generate_ms > 0 ? 1000.0 * n_gen / r.generate_ms : 0.0},
    };
    std::printf("%s\n", out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  } else {
    std::fputs(r.tail.c_str(), stdout);
    std::printf("\n");
    std::fprintf(stderr, "\nsmoe: %lld prompt tokens in %.1f ms (%.1f tok/s), %zu generated in %.1f ms (%.1f tok/s), stop: %s\n",
                 static_cast<long long>(r.n_prompt), r.prompt_ms,
                 r.prompt_ms > 0 ? 1000.0 * r.n_prompt / r.prompt_ms : 0.0, r.tokens.size(),
                 r.generate_ms, r.generate_ms > 0 ? 1000.0 * r.tokens.size() / r.generate_ms : 0.0,
                 stop_reason.c_str());
  }
}

}  // namespace

void register_run(CLI::App& app) {
  auto args = std::make_shared<RunArgs>();
  CLI::App* cmd = app.add_subcommand("run", "generate text from a prompt");
  add_model_option(*cmd, args->model);
  add_load_option(*cmd, args->load);
  cmd->add_option("-p,--prompt", args->prompt, "prompt text (BOS is added)");
  cmd->add_option("--prompt-tokens", args->prompt_tokens, "prompt as token ids: 1,2,3");
  cmd->add_option("-n,--n-predict", args->n_predict, "tokens to generate at most")->capture_default_str();
  cmd->add_option("--ctx", args->n_ctx, "context size in tokens (default: max(4096, prompt + n), capped at the model's)");
  cmd->add_option("-t,--threads", args->threads, "threads (0: all cores)")->capture_default_str();
  cmd->add_option("--temp", args->sampling.temperature, "temperature; 0 is greedy")->capture_default_str();
  cmd->add_option("--top-k", args->sampling.top_k, "keep the K most likely tokens (0: off)")->capture_default_str();
  cmd->add_option("--top-p", args->sampling.top_p, "nucleus sampling mass (1: off)")->capture_default_str();
  cmd->add_option("--min-p", args->sampling.min_p, "drop tokens below P x p(best) (0: off)")->capture_default_str();
  cmd->add_option("--seed", args->sampling.seed, "random seed")->capture_default_str();
  cmd->add_option("--repeat-penalty", args->sampling.repetition_penalty,
                  "divide logits of tokens already seen by R (1: off)")->capture_default_str();
  cmd->add_option("--presence-penalty", args->sampling.presence_penalty,
                  "subtract P from logits of generated tokens (0: off)")->capture_default_str();
  cmd->add_option("--frequency-penalty", args->sampling.frequency_penalty,
                  "subtract F per occurrence from logits of generated tokens (0: off)")->capture_default_str();
  cmd->add_option("--stop", args->stop, "stop when the text contains STR (repeatable; not printed)");
  cmd->add_flag("--chat", args->chat, "wrap the prompt in the Mistral instruct template");
  cmd->add_flag("--ignore-eos", args->ignore_eos, "keep generating after end-of-sequence");
  cmd->add_flag("--json", args->json, "print one JSON object at the end instead of streaming");
  cmd->callback([args] { run(*args); });
}

}  // namespace smoe
