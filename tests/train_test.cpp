// train_test.cpp: tests of `smoe train`'s pieces: every parameter's gradient against
// central finite differences (double precision, tiny model), the trained model's logits
// against the inference forward pass, data split, short-run loss, resume determinism,
// and export to GGUF that `smoe run` loads.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <random>

#include "model/transformer.h"
#include "test_util.h"
#include "train/params.h"
#include "train/data.h"
#include "train/train_model.h"
#include "train/trainer.h"

namespace smoe::train {
namespace {

ModelConfig tiny_config() {
  ModelConfig c = ::smoe::test::tiny_moe_config();  // mixtral, 2 layers, 4/2 heads, top-2
  c.dim = 8;
  c.head_dim = 4;
  c.hidden_dim = 12;
  c.vocab_size = 19;
  c.n_experts = 4;
  c.max_seq_len = 16;
  return c;
}

struct Batch {
  std::vector<int32_t> in, tgt;
};
Batch random_batch(int64_t B, int64_t T, int64_t V, uint64_t seed, bool no_targets = false) {
  std::mt19937_64 rng(seed);
  Batch b;
  for (int64_t i = 0; i < B * T; ++i) {
    b.in.push_back(static_cast<int32_t>(rng() % V));
    b.tgt.push_back(no_targets ? -1 : static_cast<int32_t>(rng() % V));
  }
  return b;
}

// Checks every parameter's analytic gradient against (L(p+e) - L(p-e)) / 2e, per tensor.
void check_gradients(const LossOptions& opt, bool no_targets) {
  const ModelConfig c = tiny_config();
  const Layout layout(c);
  std::vector<double> p;
  init_params(c, layout, 7, p);
  // Larger weights than training's init so every path carries a visible gradient.
  for (double& x : p) x *= 10.0;
  const int64_t B = 2, T = 5;
  const Batch b = random_batch(B, T, c.vocab_size, 3, no_targets);
  TrainModel<double> m(c, layout);
  m.forward(p.data(), b.in.data(), b.tgt.data(), B, T, opt, nullptr);
  std::vector<double> g(layout.total, 0.0);
  m.backward(p.data(), g.data(), nullptr);
  const double eps = 1e-6;
  for (const ParamTensor& t : layout.tensors) {
    double max_err = 0, max_g = 0;
    for (size_t i = t.offset; i < t.offset + t.size; ++i) {
      const double keep = p[i];
      p[i] = keep + eps;
      const double lp = m.forward(p.data(), b.in.data(), b.tgt.data(), B, T, opt, nullptr).total;
      p[i] = keep - eps;
      const double lm = m.forward(p.data(), b.in.data(), b.tgt.data(), B, T, opt, nullptr).total;
      p[i] = keep;
      const double fd = (lp - lm) / (2 * eps);
      max_err = std::max(max_err, std::abs(fd - g[i]));
      max_g = std::max(max_g, std::abs(g[i]));
    }
    EXPECT_LT(max_err, 1e-6 + 1e-5 * max_g) << t.name << ": max |analytic - finite difference| " << max_err
                                            << " (max |grad| " << max_g << ")";
    // Every tensor that the loss reaches has some non-zero gradient.
    if (!no_targets) {
      EXPECT_GT(max_g, 0.0) << t.name << " received no gradient";
    }
  }
}

TEST(TrainGrad, AllParametersCrossEntropyAuxAndZLoss) {
  check_gradients({.aux_coef = 0.3, .z_coef = 0.05}, false);
}

TEST(TrainGrad, AuxAndZLossAlone) {
  // No target tokens: only the router losses remain, so their gradient is checked on its own.
  check_gradients({.aux_coef = 1.0, .z_coef = 0.5}, true);
}

TEST(TrainGrad, CrossEntropyAlone) { check_gradients({.aux_coef = 0.0, .z_coef = 0.0}, false); }

// The training forward computes what the inference forward computes.
TEST(TrainModelTest, LogitsMatchInferenceForward) {
  ModelConfig c = tiny_config();
  c.dim = 32, c.head_dim = 8, c.hidden_dim = 48, c.vocab_size = 50, c.max_seq_len = 32;
  const Layout layout(c);
  std::vector<float> p;
  init_params(c, layout, 11, p);
  for (float& x : p) x *= 5.f;
  const int64_t B = 3, T = 20;
  const Batch b = random_batch(B, T, c.vocab_size, 5);
  TrainModel<float> m(c, layout);
  ThreadPool pool(2);
  m.forward(p.data(), b.in.data(), b.tgt.data(), B, T, {}, &pool);
  std::unique_ptr<Model> model = to_model(c, layout, p.data());
  double max_diff = 0;
  for (int64_t s = 0; s < B; ++s) {
    Session session(*model, T);
    std::vector<float> logits;
    session.forward(std::span<const int32_t>(&b.in[s * T], T), true, logits);
    for (int64_t i = 0; i < T * c.vocab_size; ++i)
      max_diff = std::max(max_diff, static_cast<double>(std::abs(logits[i] - m.logits()[s * T * c.vocab_size + i])));
  }
  std::printf("train vs inference forward: max |logit diff| %.2e\n", max_diff);
  EXPECT_LT(max_diff, 1e-4);
}

}  // namespace
}  // namespace smoe::train

// ---------------------------------------------------------------------------------------
// Whole runs on a small generated text (no fixtures needed).
// ---------------------------------------------------------------------------------------

namespace smoe::train {
namespace {

// A few kilobytes of play-like text with a learnable structure.
std::string toy_text() {
  const char* names[] = {"ROMEO", "JULIET", "NURSE", "FRIAR"};
  const char* lines[] = {"I will not go, my lord, until the morning comes.",
                         "What light is this that breaks upon the wall?",
                         "Good night, good night, and sleep upon thy bed.",
                         "The day is gone and all the stars are out."};
  std::string s;
  std::mt19937_64 rng(42);
  for (int i = 0; i < 400; ++i) {
    s += names[rng() % 4];
    s += ":\n";
    s += lines[rng() % 4];
    s += "\n\n";
  }
  return s;
}

TrainOptions toy_options(const std::string& dir) {
  const std::string data = dir + "/toy.txt";
  if (!std::filesystem::exists(data)) test::write_file(data, toy_text());
  TrainOptions o;
  o.data = {data};
  o.out = dir + "/run";
  o.vocab_size = 300;
  o.config.dim = 32;
  o.config.n_layers = 2;
  o.config.n_heads = 4;
  o.config.n_kv_heads = 2;
  o.config.head_dim = 8;
  o.config.hidden_dim = 48;
  o.config.n_experts = 4;
  o.config.n_experts_used = 2;
  o.config.rope_theta = 10000.f;
  o.steps = 60;
  o.batch = 8;
  o.ctx = 32;
  o.warmup = 10;
  o.lr = 1e-2f;
  o.eval_every = 20;
  o.eval_windows = 8;
  o.checkpoint_every = 0;
  o.threads = 2;
  return o;
}

TEST(TrainRun, ShortRunLossFallsBelowBound) {
  const std::string dir = test::temp_dir("train_short");
  TrainOptions o = toy_options(dir);
  o.threads = 1;
  Trainer t(o);
  double first = 0, last = 0;
  while (t.done_steps() < t.options().steps) {
    const StepRecord r = t.step();
    if (r.step == 1) first = r.loss;
    last = r.loss;
  }
  const double val = t.evaluate(0);
  std::printf("short run: loss %.3f -> %.3f, validation %.3f (uniform: %.3f)\n", first, last, val,
              std::log(static_cast<double>(t.config().vocab_size)));
  // From ln(V) = 5.7 at the start; the toy text is nearly deterministic given its line.
  EXPECT_GT(first, 5.0);
  EXPECT_LT(last, 2.0);
  EXPECT_LT(val, 2.0);
}

TEST(TrainRun, ResumedRunMatchesUninterruptedRun) {
  const std::string dir = test::temp_dir("train_resume");
  TrainOptions o = toy_options(dir);
  o.steps = 8;
  o.eval_every = 4;
  std::vector<double> straight;
  {
    Trainer t(o);
    while (t.done_steps() < o.steps) straight.push_back(t.step().loss);
  }
  o.tokenizer = o.out + "/tokenizer.model";  // the same tokenizer for the second run
  o.out = dir + "/run2";
  {
    Trainer t(o);
    for (int i = 0; i < 5; ++i) t.step();
    t.save_checkpoint();
    t.step();  // work after the checkpoint is lost, as in a crash
  }
  std::unique_ptr<Trainer> t = Trainer::resume(o.out, 2);
  EXPECT_EQ(t->done_steps(), 5);
  while (t->done_steps() < o.steps) t->step();
  ASSERT_EQ(t->history().size(), straight.size());
  for (size_t i = 0; i < straight.size(); ++i) EXPECT_EQ(t->history()[i].loss, straight[i]) << "step " << i + 1;
  EXPECT_GE(t->history()[3].val_loss, 0.0);
  EXPECT_GE(t->history()[7].val_loss, 0.0);
}

TEST(TrainRun, ExportedGGUFLoadsAndMatchesTrainingForward) {
  const std::string dir = test::temp_dir("train_export");
  TrainOptions o = toy_options(dir);
  o.steps = 10;
  Trainer t(o);
  while (t.done_steps() < o.steps) t.step();
  const std::string gguf = o.out + "/model.gguf";
  t.export_gguf(gguf);
  std::unique_ptr<Model> loaded = load_model(gguf);
  ASSERT_TRUE(loaded->tokenizer);
  EXPECT_EQ(loaded->config.n_experts, 4);
  EXPECT_EQ(loaded->config.n_experts_used, 2);
  const std::string text = "JULIET:\nWhat light is this";
  std::vector<int32_t> ids = loaded->tokenizer->encode(text, true);
  EXPECT_EQ(ids, t.tokenizer().encode(text, true));
  const int64_t T = static_cast<int64_t>(ids.size()), V = t.config().vocab_size;
  Session session(*loaded, T);
  std::vector<float> logits;
  session.forward(ids, true, logits);
  TrainModel<float> tm(t.config(), t.layout());
  std::vector<int32_t> targets(ids.size(), -1);
  tm.forward(t.params().data(), ids.data(), targets.data(), 1, T, {}, nullptr);
  double max_diff = 0;
  for (int64_t i = 0; i < T * V; ++i)
    max_diff = std::max(max_diff, static_cast<double>(std::abs(logits[i] - tm.logits()[i])));
  std::printf("GGUF in smoe vs training forward: max |logit diff| %.2e\n", max_diff);
  EXPECT_LT(max_diff, 1e-4);
  // And the CLI runs it.
  const test::CmdResult r = test::run_smoe("run -m " + gguf + " -p 'ROMEO:' -n 8 --seed 3");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  // The Hugging Face export loads too.
  t.export_hf(o.out + "/hf");
  std::unique_ptr<Model> hf = load_model(o.out + "/hf");
  Session s2(*hf, T);
  std::vector<float> logits2;
  s2.forward(ids, true, logits2);
  double hf_diff = 0;
  for (int64_t i = 0; i < T * V; ++i) hf_diff = std::max(hf_diff, static_cast<double>(std::abs(logits2[i] - logits[i])));
  EXPECT_LT(hf_diff, 1e-4);
}

TEST(TrainCli, StopResumeAndOutputs) {
  const std::string dir = test::temp_dir("train_cli");
  test::write_file(dir + "/toy.txt", toy_text());
  const std::string common = " --dim 32 --layers 2 --heads 4 --kv-heads 2 --hidden 32 --experts 4 --experts-used 2"
                             " --vocab 300 --ctx 16 --batch 4 --steps 4 --eval-every 2 --eval-windows 2 -t 2 -q";
  test::CmdResult r = test::run_smoe("train --data " + dir + "/toy.txt --out " + dir + "/out" + common + " --stop-after 2");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("--resume"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(dir + "/out/model.gguf"));
  r = test::run_smoe("train --out " + dir + "/out --resume -q");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("perplexity"), std::string::npos) << r.err;
  for (const char* f : {"model.gguf", "tokenizer.model", "train_log.csv", "loss.svg", "expert_load.svg", "summary.json"})
    EXPECT_TRUE(std::filesystem::exists(dir + "/out/" + f)) << f;
  const std::string csv = test::read_file(dir + "/out/train_log.csv");
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 5);  // header + 4 steps
  EXPECT_NE(test::read_file(dir + "/out/loss.svg").find("<polyline"), std::string::npos);
  // Errors: no data, bad split.
  r = test::run_smoe("train --out " + dir + "/bad");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--data"), std::string::npos) << r.err;
  r = test::run_smoe("train --data " + dir + "/toy.txt --out " + dir + "/bad --val-split 1.5");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--val-split"), std::string::npos) << r.err;
}

TEST(TrainData, ValidationSplitIsTheTailOfTinyShakespeare) {
  SMOE_REQUIRE_FIXTURES();
  const std::string text = test::read_file(test::fixture("text/tinyshakespeare.txt"));
  const size_t at = val_split_point(text, 0.1);
  EXPECT_EQ(at, 1003854u);
  EXPECT_EQ(text.substr(at, 19), "?\n\nGREMIO:\nGood mor");
  const TextSplit s = load_text({test::fixture("text/tinyshakespeare.txt")}, 0.1);
  EXPECT_EQ(s.train.size(), 1003854u);
  EXPECT_EQ(s.train + s.val, text);
}

TEST(TrainData, BatchesDependOnlyOnSeedAndStep) {
  std::vector<int32_t> toks(1000);
  for (int i = 0; i < 1000; ++i) toks[i] = 3 + i % 50;
  std::vector<int32_t> a_in, a_t, b_in, b_t;
  sample_batch(toks, 4, 16, 1, 7, 3, a_in, a_t);
  sample_batch(toks, 4, 16, 1, 7, 3, b_in, b_t);
  EXPECT_EQ(a_in, b_in);
  EXPECT_EQ(a_in[0], 1);                 // BOS first
  EXPECT_EQ(a_in[1], a_t[0]);            // inputs are targets shifted right
  std::vector<int32_t> in, tgt;
  EXPECT_EQ(eval_windows(toks, 64, 1, in, tgt), 16);  // 1000 tokens -> 16 windows of 64
  int64_t n = 0;
  for (int32_t x : tgt) n += x >= 0;
  EXPECT_EQ(n, 1000);
}

}  // namespace
}  // namespace smoe::train
