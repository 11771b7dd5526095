// train_test.cpp: tests of `smoe train`'s pieces: every parameter's gradient against
// central finite differences (double precision, tiny model), the trained model's logits
// against the inference forward pass, data split, short-run loss, resume determinism,
// and export to GGUF that `smoe run` loads.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <random>

#include "model/transformer.h"
#include "test_util.h"
#include "train/params.h"
#include "train/train_model.h"

namespace smoe::train {
namespace {

ModelConfig tiny_config() {
  ModelConfig c;
  c.arch = "mixtral";
  c.dim = 8;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 4;
  c.hidden_dim = 12;
  c.vocab_size = 19;
  c.n_experts = 4;
  c.n_experts_used = 2;
  c.has_router = true;
  c.rope_theta = 10000.f;
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
