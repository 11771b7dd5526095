// trainer.cpp: the training run: setup, step, validation, checkpoints, export.
#include "train/trainer.h"

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "model/model_writer.h"
#include "train/data.h"

namespace smoe::train {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr char kMagic[8] = {'S', 'M', 'O', 'E', 'C', 'K', 'P', 'T'};
constexpr uint32_t kVersion = 1;

json shape_json(const ModelConfig& c) {
  return {{"dim", c.dim},           {"n_layers", c.n_layers},     {"n_heads", c.n_heads},
          {"n_kv_heads", c.n_kv_heads}, {"head_dim", c.head_dim}, {"hidden_dim", c.hidden_dim},
          {"n_experts", c.n_experts}, {"n_experts_used", c.n_experts_used}, {"rope_theta", c.rope_theta},
          {"norm_eps", c.norm_eps}};
}

ModelConfig shape_from(const json& j, const std::string& src) {
  ModelConfig c;
  auto get = [&](std::initializer_list<const char*> keys, int64_t def) -> int64_t {
    for (const char* k : keys)
      if (j.contains(k)) return j.at(k).get<int64_t>();
    SMOE_CHECK(def >= 0, src, ": missing \"", *keys.begin(), "\"");
    return def;
  };
  c.dim = get({"dim", "hidden_size"}, -1);
  c.n_layers = get({"n_layers", "num_hidden_layers"}, -1);
  c.n_heads = get({"n_heads", "num_attention_heads"}, -1);
  c.n_kv_heads = get({"n_kv_heads", "num_key_value_heads"}, c.n_heads);
  c.head_dim = get({"head_dim"}, c.n_heads > 0 ? c.dim / c.n_heads : 0);
  c.hidden_dim = get({"hidden_dim", "intermediate_size"}, -1);
  c.n_experts = get({"n_experts", "num_local_experts"}, 8);
  c.n_experts_used = get({"n_experts_used", "num_experts_per_tok"}, 2);
  if (j.contains("rope_theta")) c.rope_theta = j.at("rope_theta").get<float>();
  else c.rope_theta = 10000.f;
  if (j.contains("norm_eps")) c.norm_eps = j.at("norm_eps").get<float>();
  else if (j.contains("rms_norm_eps")) c.norm_eps = j.at("rms_norm_eps").get<float>();
  return c;
}

json options_json(const TrainOptions& o) {
  return {{"data", o.data}, {"shape", shape_json(o.config)}, {"vocab_size", o.vocab_size},
          {"steps", o.steps}, {"batch", o.batch}, {"ctx", o.ctx}, {"warmup", o.warmup}, {"lr", o.lr},
          {"min_lr_ratio", o.min_lr_ratio}, {"weight_decay", o.weight_decay}, {"grad_clip", o.grad_clip},
          {"aux_coef", o.aux_coef}, {"z_coef", o.z_coef}, {"val_split", o.val_split},
          {"eval_every", o.eval_every}, {"eval_windows", o.eval_windows},
          {"checkpoint_every", o.checkpoint_every}, {"seed", o.seed}};
}

TrainOptions options_from(const json& j, const std::string& out) {
  TrainOptions o;
  o.out = out;
  o.data = j.at("data").get<std::vector<std::string>>();
  o.config = shape_from(j.at("shape"), "checkpoint");
  o.vocab_size = j.at("vocab_size");
  o.steps = j.at("steps"), o.batch = j.at("batch"), o.ctx = j.at("ctx"), o.warmup = j.at("warmup");
  o.lr = j.at("lr"), o.min_lr_ratio = j.at("min_lr_ratio"), o.weight_decay = j.at("weight_decay");
  o.grad_clip = j.at("grad_clip"), o.aux_coef = j.at("aux_coef"), o.z_coef = j.at("z_coef");
  o.val_split = j.at("val_split"), o.eval_every = j.at("eval_every"), o.eval_windows = j.at("eval_windows");
  o.checkpoint_every = j.at("checkpoint_every"), o.seed = j.at("seed");
  return o;
}

}  // namespace

ModelConfig shape_from_json(const std::string& path) {
  std::ifstream in(path);
  SMOE_CHECK(in, "cannot read model config ", path);
  json j;
  try {
    j = json::parse(in);
  } catch (const std::exception& e) {
    fail(path, ": not valid JSON: ", e.what());
  }
  return shape_from(j, path);
}

Trainer::Trainer(const TrainOptions& options) : Trainer(options, true) {}

Trainer::Trainer(const TrainOptions& options, bool fresh) : opt_(options) {
  SMOE_CHECK(!opt_.out.empty(), "give an output folder with --out DIR");
  SMOE_CHECK(opt_.steps > 0 && opt_.batch > 0 && opt_.ctx > 1, "--steps, --batch must be > 0 and --ctx > 1");
  SMOE_CHECK(opt_.lr > 0 && opt_.warmup >= 0, "--lr must be > 0 and --warmup >= 0");
  fs::create_directories(opt_.out);
  pool_ = std::make_unique<ThreadPool>(opt_.threads);
  const TextSplit text = load_text(opt_.data, opt_.val_split);
  const std::string tok_path = opt_.out + "/tokenizer.model";
  if (fresh && opt_.tokenizer.empty()) {
    train_tokenizer(text.train, opt_.vocab_size, opt_.out + "/tokenizer", pool_->size());
  } else if (fresh) {
    std::unique_ptr<Tokenizer> given = Tokenizer::from_spm_file(opt_.tokenizer);
    std::ofstream(tok_path, std::ios::binary) << given->serialized_model();
  }
  tokenizer_ = Tokenizer::from_spm_file(tok_path);
  train_tok_ = tokenizer_->encode(text.train);
  val_tok_ = tokenizer_->encode(text.val);
  SMOE_CHECK(static_cast<int64_t>(train_tok_.size()) > opt_.ctx, "training data: ", train_tok_.size(),
             " tokens, fewer than --ctx ", opt_.ctx);

  config_ = opt_.config;
  config_.arch = "mixtral";
  config_.vocab_size = tokenizer_->vocab_size();
  config_.has_router = config_.n_experts > 1;
  config_.max_seq_len = opt_.ctx;
  config_.bos_id = tokenizer_->bos_id();
  config_.eos_id = tokenizer_->eos_id();
  config_.validate("training model (--config / shape options)");
  layout_ = std::make_unique<Layout>(config_);
  init_params(config_, *layout_, opt_.seed, params_);
  grads_.assign(layout_->total, 0.f);
  m_.assign(layout_->total, 0.f);
  v_.assign(layout_->total, 0.f);
  model_ = std::make_unique<TrainModel<float>>(config_, *layout_);
}

double Trainer::lr_at(int64_t step) const {
  if (step <= opt_.warmup) return opt_.lr * static_cast<double>(step) / static_cast<double>(std::max<int64_t>(1, opt_.warmup));
  const double frac = static_cast<double>(step - opt_.warmup) / static_cast<double>(std::max<int64_t>(1, opt_.steps - opt_.warmup));
  const double min_lr = opt_.lr * opt_.min_lr_ratio;
  return min_lr + 0.5 * (opt_.lr - min_lr) * (1.0 + std::cos(M_PI * std::min(1.0, frac)));
}

StepRecord Trainer::step() {
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t B = opt_.batch, T = opt_.ctx;
  sample_batch(train_tok_, B, T, config_.bos_id, opt_.seed, step_, in_, tgt_);
  const LossOptions lo{opt_.aux_coef, opt_.z_coef};
  const LossParts loss = model_->forward(params_.data(), in_.data(), tgt_.data(), B, T, lo, pool_.get());
  std::fill(grads_.begin(), grads_.end(), 0.f);
  model_->backward(params_.data(), grads_.data(), pool_.get());
  const double norm = grad_norm(grads_.data(), grads_.size());
  if (opt_.grad_clip > 0 && norm > opt_.grad_clip) {
    const float s = static_cast<float>(opt_.grad_clip / norm);
    for (float& g : grads_) g *= s;
  }
  ++step_;
  const double lr = lr_at(step_);
  AdamW aw;
  aw.weight_decay = opt_.weight_decay;
  adamw_update(*layout_, aw, static_cast<float>(lr), step_, grads_.data(), params_.data(), m_.data(), v_.data(),
               pool_.get());
  StepRecord r;
  r.step = step_;
  r.lr = lr;
  r.loss = loss.ce;
  r.aux = loss.aux;
  r.z = loss.z;
  r.grad_norm = norm;
  const int64_t E = config_.n_experts;
  for (int64_t i = 0; i < config_.n_layers * E; ++i)
    r.expert_share.push_back(static_cast<double>(model_->expert_counts()[i]) /
                             static_cast<double>(B * T * config_.n_experts_used));
  const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.tokens_per_s = static_cast<double>(B * T) / dt;
  elapsed_s_ += dt;
  if (opt_.eval_every > 0 && (step_ % opt_.eval_every == 0 || step_ == opt_.steps)) {
    const auto e0 = std::chrono::steady_clock::now();
    r.val_loss = evaluate(opt_.eval_windows);
    elapsed_s_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - e0).count();
  }
  r.elapsed_s = elapsed_s_;
  history_.push_back(r);
  return r;
}

double Trainer::evaluate(int64_t max_windows) {
  if (val_tok_.empty()) return -1;
  std::vector<int32_t> in, tgt;
  int64_t W = eval_windows(val_tok_, opt_.ctx, config_.bos_id, in, tgt);
  if (max_windows > 0) W = std::min(W, max_windows);
  const int64_t T = opt_.ctx;
  double sum = 0;
  int64_t count = 0;
  for (int64_t w0 = 0; w0 < W; w0 += opt_.batch) {
    const int64_t nb = std::min(opt_.batch, W - w0);
    const LossParts l = model_->forward(params_.data(), &in[w0 * T], &tgt[w0 * T], nb, T, {}, pool_.get());
    int64_t n = 0;
    for (int64_t i = w0 * T; i < (w0 + nb) * T; ++i) n += tgt[i] >= 0;
    sum += l.ce * static_cast<double>(n);
    count += n;
  }
  return count > 0 ? sum / static_cast<double>(count) : -1;
}

// Checkpoint: magic, u32 version, u64 header length, JSON header (options, step, elapsed
// time, history), then parameters, AdamW m and v (float32, layout order).
void Trainer::save_checkpoint() const {
  json h;
  h["options"] = options_json(opt_);
  h["step"] = step_;
  h["elapsed_s"] = elapsed_s_;
  h["n_floats"] = layout_->total;
  json hist = json::array();
  for (const StepRecord& r : history_)
    hist.push_back({r.step, r.lr, r.loss, r.aux, r.z, r.grad_norm, r.tokens_per_s, r.elapsed_s, r.val_loss,
                    r.expert_share});
  h["history"] = hist;
  const std::string header = h.dump();
  const std::string path = opt_.out + "/checkpoint.bin", tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary);
    SMOE_CHECK(out, "cannot write checkpoint ", tmp);
    const uint64_t len = header.size();
    out.write(kMagic, 8);
    out.write(reinterpret_cast<const char*>(&kVersion), 4);
    out.write(reinterpret_cast<const char*>(&len), 8);
    out.write(header.data(), static_cast<std::streamsize>(len));
    for (const std::vector<float>* v : {&params_, &m_, &v_})
      out.write(reinterpret_cast<const char*>(v->data()), static_cast<std::streamsize>(v->size() * 4));
    SMOE_CHECK(out.good(), "writing checkpoint ", tmp, " failed (disk full?)");
  }
  fs::rename(tmp, path);
}

std::unique_ptr<Trainer> Trainer::resume(const std::string& out_dir, int threads) {
  const std::string path = out_dir + "/checkpoint.bin";
  std::ifstream in(path, std::ios::binary);
  SMOE_CHECK(in, "cannot resume: no checkpoint at ", path);
  char magic[8];
  uint32_t version = 0;
  uint64_t len = 0;
  in.read(magic, 8);
  in.read(reinterpret_cast<char*>(&version), 4);
  in.read(reinterpret_cast<char*>(&len), 8);
  SMOE_CHECK(in && std::memcmp(magic, kMagic, 8) == 0 && version == kVersion && len < (1ull << 32), path,
             ": not a smoe checkpoint (version ", kVersion, ")");
  std::string header(len, '\0');
  in.read(header.data(), static_cast<std::streamsize>(len));
  SMOE_CHECK(in, path, ": truncated header");
  const json h = json::parse(header);
  TrainOptions o = options_from(h.at("options"), out_dir);
  o.threads = threads;
  std::unique_ptr<Trainer> t(new Trainer(o, false));
  SMOE_CHECK(h.at("n_floats").get<size_t>() == t->layout_->total, path, ": holds ", h.at("n_floats").get<size_t>(),
             " parameters, the model needs ", t->layout_->total);
  for (std::vector<float>* v : {&t->params_, &t->m_, &t->v_})
    in.read(reinterpret_cast<char*>(v->data()), static_cast<std::streamsize>(v->size() * 4));
  SMOE_CHECK(in, path, ": truncated (expected ", 3 * t->layout_->total, " floats after the header)");
  t->step_ = h.at("step");
  t->elapsed_s_ = h.at("elapsed_s");
  for (const json& r : h.at("history")) {
    StepRecord s;
    s.step = r[0], s.lr = r[1], s.loss = r[2], s.aux = r[3], s.z = r[4], s.grad_norm = r[5];
    s.tokens_per_s = r[6], s.elapsed_s = r[7], s.val_loss = r[8];
    s.expert_share = r[9].get<std::vector<double>>();
    t->history_.push_back(s);
  }
  return t;
}

std::unique_ptr<Model> Trainer::to_model() const {
  std::unique_ptr<Model> m = train::to_model(config_, *layout_, params_.data());
  m->tokenizer = Tokenizer::from_spm_file(opt_.out + "/tokenizer.model");
  return m;
}

void Trainer::export_gguf(const std::string& path) const {
  GGUFSaveOptions o;
  o.name = "smoe-trained";
  save_gguf(*to_model(), path, o);
}

void Trainer::export_hf(const std::string& dir) const { save_hf(*to_model(), dir); }

}  // namespace smoe::train
