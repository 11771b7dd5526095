// cmd_train.cpp: `smoe train`: trains a Mixtral-architecture model from scratch on text
// files (tokenizer, AdamW, validation, checkpoints, plots) and writes OUT/model.gguf.
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "apps/commands.h"
#include "core/error.h"
#include "train/report.h"
#include "train/trainer.h"

namespace smoe {

namespace {

struct TrainArgs {
  train::TrainOptions o;
  std::string config_json;
  int64_t dim = 128, layers = 4, heads = 4, kv_heads = 2, hidden = 256, experts = 8, experts_used = 2;
  float rope_theta = 10000.f;
  bool resume = false, save_hf = false, quiet = false;
  int64_t stop_after = 0;
};

void write_outputs(const train::Trainer& t) {
  const std::string& out = t.options().out;
  const ModelConfig& c = t.config();
  train::write_csv(t.history(), c.n_layers, c.n_experts, out + "/train_log.csv");
  train::write_loss_svg(t.history(), out + "/loss.svg");
  train::write_expert_load_svg(t.history(), c.n_layers, c.n_experts, out + "/expert_load.svg");
}

void run_train(TrainArgs& a) {
  std::unique_ptr<train::Trainer> t;
  if (a.resume) {
    t = train::Trainer::resume(a.o.out, a.o.threads);
    std::fprintf(stderr, "resuming %s at step %lld of %lld\n", a.o.out.c_str(),
                 static_cast<long long>(t->done_steps()), static_cast<long long>(t->options().steps));
  } else {
    ModelConfig& c = a.o.config;
    if (!a.config_json.empty()) {
      c = train::shape_from_json(a.config_json);
    } else {
      c.dim = a.dim, c.n_layers = a.layers, c.n_heads = a.heads, c.n_kv_heads = a.kv_heads;
      c.head_dim = a.heads > 0 ? a.dim / a.heads : 0;
      c.hidden_dim = a.hidden, c.n_experts = a.experts, c.n_experts_used = a.experts_used;
      c.rope_theta = a.rope_theta;
    }
    SMOE_CHECK(!a.o.data.empty(), "give the training text with --data FILE (or --resume)");
    t = std::make_unique<train::Trainer>(a.o);
  }
  const ModelConfig& c = t->config();
  const train::TrainOptions& o = t->options();
  std::fprintf(stderr, "model: %s\n  %.2fM parameters (%.2fM active per token)\n", c.summary().c_str(),
               static_cast<double>(c.total_params()) / 1e6, static_cast<double>(c.active_params()) / 1e6);
  std::fprintf(stderr, "data: %lld training tokens, %lld validation tokens (held-out tail %.0f%%), batch %lld x %lld\n",
               static_cast<long long>(t->train_tokens()), static_cast<long long>(t->val_tokens()),
               o.val_split * 100, static_cast<long long>(o.batch), static_cast<long long>(o.ctx));
  const bool tty = isatty(fileno(stderr)) && !a.quiet;
  double last_val = -1;
  for (const auto& r : t->history())
    if (r.val_loss >= 0) last_val = r.val_loss;
  const int64_t stop = a.stop_after > 0 ? std::min(a.stop_after, o.steps) : o.steps;
  while (t->done_steps() < stop) {
    const train::StepRecord r = t->step();
    if (r.val_loss >= 0) last_val = r.val_loss;
    const std::string line = train::progress_line(r, o.steps, last_val);
    if (tty) std::fprintf(stderr, "\r%s\033[K", line.c_str());
    else if (!a.quiet && (r.step % 10 == 0 || r.step == 1 || r.val_loss >= 0)) std::fprintf(stderr, "%s\n", line.c_str());
    if (o.checkpoint_every > 0 && (r.step % o.checkpoint_every == 0 || r.step == stop)) {
      t->save_checkpoint();
      write_outputs(*t);
    }
  }
  if (tty) std::fprintf(stderr, "\n");
  if (t->done_steps() < o.steps) {
    t->save_checkpoint();
    write_outputs(*t);
    std::fprintf(stderr, "stopped at step %lld; continue with: smoe train --out %s --resume\n",
                 static_cast<long long>(t->done_steps()), o.out.c_str());
    return;
  }
  // Final: the whole validation split, the model files, a summary.
  const double val = t->evaluate(0);
  const std::string gguf = o.out + "/model.gguf";
  t->export_gguf(gguf);
  if (a.save_hf) t->export_hf(o.out + "/hf");
  write_outputs(*t);
  const train::StepRecord& last = t->history().back();
  double tps = 0;
  for (const auto& r : t->history()) tps += r.tokens_per_s;
  tps /= static_cast<double>(t->history().size());
  nlohmann::json s = {{"model", c.summary()},
                      {"total_params", c.total_params()},
                      {"active_params", c.active_params()},
                      {"steps", o.steps},
                      {"train_tokens_seen", o.steps * o.batch * o.ctx},
                      {"final_train_loss", last.loss},
                      {"val_loss", val},
                      {"val_perplexity", std::exp(val)},
                      {"val_tokens", t->val_tokens()},
                      {"mean_tokens_per_s", tps},
                      {"train_time_s", t->elapsed_s()}};
  std::ofstream(o.out + "/summary.json") << s.dump(2) << "\n";
  std::fprintf(stderr, "validation: loss %.4f, perplexity %.2f over %lld tokens; training time %.0f s\nwrote %s\n",
               val, std::exp(val), static_cast<long long>(t->val_tokens()), t->elapsed_s(), gguf.c_str());
}

}  // namespace

void register_train(CLI::App& app) {
  auto a = std::make_shared<TrainArgs>();
  CLI::App* cmd = app.add_subcommand("train", "train a Mixtral-architecture model from scratch on text files");
  train::TrainOptions& o = a->o;
  cmd->add_option("--data", o.data, "training text files (the tail --val-split of each is held out)");
  cmd->add_option("--out", o.out, "output folder: model.gguf, tokenizer.model, checkpoint.bin, logs, plots")->required();
  cmd->add_option("--config", a->config_json, "model shape as JSON (dim, n_layers, n_heads, n_kv_heads, hidden_dim, n_experts, n_experts_used)");
  cmd->add_option("--dim", a->dim, "model dimension D")->capture_default_str();
  cmd->add_option("--layers", a->layers, "layers")->capture_default_str();
  cmd->add_option("--heads", a->heads, "attention heads")->capture_default_str();
  cmd->add_option("--kv-heads", a->kv_heads, "key/value heads")->capture_default_str();
  cmd->add_option("--hidden", a->hidden, "expert hidden size F")->capture_default_str();
  cmd->add_option("--experts", a->experts, "experts per layer")->capture_default_str();
  cmd->add_option("--experts-used", a->experts_used, "experts per token (top-K)")->capture_default_str();
  cmd->add_option("--rope-theta", a->rope_theta, "RoPE base")->capture_default_str();
  cmd->add_option("--vocab", o.vocab_size, "tokenizer pieces to train")->capture_default_str();
  cmd->add_option("--tokenizer", o.tokenizer, "use this tokenizer.model instead of training one");
  cmd->add_option("--steps", o.steps, "optimizer steps")->capture_default_str();
  cmd->add_option("--batch", o.batch, "sequences per step B")->capture_default_str();
  cmd->add_option("--ctx", o.ctx, "tokens per sequence T (the model's context)")->capture_default_str();
  cmd->add_option("--lr", o.lr, "peak learning rate")->capture_default_str();
  cmd->add_option("--min-lr-ratio", o.min_lr_ratio, "final learning rate / peak (cosine decay)")->capture_default_str();
  cmd->add_option("--warmup", o.warmup, "linear warm-up steps")->capture_default_str();
  cmd->add_option("--weight-decay", o.weight_decay, "AdamW weight decay (matrices only)")->capture_default_str();
  cmd->add_option("--clip", o.grad_clip, "gradient norm clipping (0: off)")->capture_default_str();
  cmd->add_option("--aux-coef", o.aux_coef, "load-balancing loss coefficient")->capture_default_str();
  cmd->add_option("--z-coef", o.z_coef, "router z-loss coefficient (0: off)")->capture_default_str();
  cmd->add_option("--val-split", o.val_split, "held-out tail of each data file")->capture_default_str();
  cmd->add_option("--eval-every", o.eval_every, "steps between validation measurements")->capture_default_str();
  cmd->add_option("--eval-windows", o.eval_windows, "validation windows measured during training (the end uses all)")->capture_default_str();
  cmd->add_option("--checkpoint-every", o.checkpoint_every, "steps between checkpoints")->capture_default_str();
  cmd->add_option("--seed", o.seed, "seed of initialisation and batches")->capture_default_str();
  cmd->add_option("-t,--threads", o.threads, "threads (0: all cores)")->capture_default_str();
  cmd->add_flag("--resume", a->resume, "continue the run in --out from its checkpoint");
  cmd->add_option("--stop-after", a->stop_after, "stop (with a checkpoint) after this many steps in all");
  cmd->add_flag("--save-hf", a->save_hf, "also write a Hugging Face folder OUT/hf");
  cmd->add_flag("-q,--quiet", a->quiet, "no progress output");
  cmd->callback([a] { run_train(*a); });
}

}  // namespace smoe
