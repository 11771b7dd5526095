// trainer.h: one training run of `smoe train`: data and tokenizer, parameters and AdamW
// state, the step (forward, backward, clipping, warm-up + cosine learning rate), validation,
// checkpoints that resume bit-for-bit, and the export to GGUF / Hugging Face.
// Not the CLI (src/apps/cmd_train.cpp) nor the plots (train/report.h).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/thread_pool.h"
#include "model/config.h"
#include "tokenizer/tokenizer.h"
#include "train/params.h"
#include "train/train_model.h"

namespace smoe::train {

struct TrainOptions {
  std::vector<std::string> data;  // text files
  std::string out;                // output folder
  std::string tokenizer;          // a tokenizer.model to use; empty: train one on the data
  ModelConfig config;             // the shape; vocab_size comes from the tokenizer
  int vocab_size = 1024;          // pieces of the tokenizer to train
  int64_t steps = 1000, batch = 16, ctx = 128, warmup = 100;
  float lr = 3e-3f, min_lr_ratio = 0.1f, weight_decay = 0.1f, grad_clip = 1.0f;
  double aux_coef = 0.02, z_coef = 0.0, val_split = 0.1;
  int64_t eval_every = 100, eval_windows = 32, checkpoint_every = 100;
  uint64_t seed = 1;
  int threads = 0;  // 0: all cores
};

struct StepRecord {
  int64_t step = 0;
  double lr = 0, loss = 0, aux = 0, z = 0, grad_norm = 0, tokens_per_s = 0, elapsed_s = 0;
  double val_loss = -1;              // < 0: not measured at this step
  std::vector<double> expert_share;  // [L, E] share of this step's routed slots
};

class Trainer {
 public:
  // Reads the data (holding out the validation tail), trains or loads the tokenizer
  // (written to OUT/tokenizer.model), tokenizes, and initialises the model from the seed.
  explicit Trainer(const TrainOptions& options);
  // Continues from OUT/checkpoint.bin: options, parameters, optimizer state, history.
  static std::unique_ptr<Trainer> resume(const std::string& out_dir, int threads);

  StepRecord step();  // one optimizer step; appended to history()
  // Mean cross-entropy per validation token over the first max_windows windows (0: all).
  double evaluate(int64_t max_windows);

  void save_checkpoint() const;  // OUT/checkpoint.bin, written atomically
  std::unique_ptr<Model> to_model() const;  // with the tokenizer attached
  void export_gguf(const std::string& path) const;
  void export_hf(const std::string& dir) const;

  int64_t done_steps() const { return step_; }
  const TrainOptions& options() const { return opt_; }
  const ModelConfig& config() const { return config_; }
  const std::vector<StepRecord>& history() const { return history_; }
  std::vector<StepRecord>& history() { return history_; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  const Layout& layout() const { return *layout_; }
  const std::vector<float>& params() const { return params_; }
  int64_t train_tokens() const { return static_cast<int64_t>(train_tok_.size()); }
  int64_t val_tokens() const { return static_cast<int64_t>(val_tok_.size()); }
  double elapsed_s() const { return elapsed_s_; }
  void add_elapsed(double s) { elapsed_s_ += s; }
  double lr_at(int64_t step) const;  // step counts from 1

 private:
  Trainer(const TrainOptions& options, bool fresh);
  void load_tokens();

  TrainOptions opt_;
  ModelConfig config_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::vector<int32_t> train_tok_, val_tok_;
  std::unique_ptr<Layout> layout_;
  std::vector<float> params_, grads_, m_, v_;
  std::unique_ptr<TrainModel<float>> model_;
  std::unique_ptr<ThreadPool> pool_;
  int64_t step_ = 0;
  double elapsed_s_ = 0;
  std::vector<StepRecord> history_;
  std::vector<int32_t> in_, tgt_;
};

// Model shape from a JSON file: our keys (dim, n_layers, n_heads, n_kv_heads, head_dim,
// hidden_dim, n_experts, n_experts_used, rope_theta, norm_eps) or Hugging Face ones.
ModelConfig shape_from_json(const std::string& path);

}  // namespace smoe::train
