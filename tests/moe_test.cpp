// moe_test.cpp: the router follows Softmax(TopK) and unselected experts are never
// computed, on self-made (synthetic) models and on the fixture models.
#include <cmath>
#include <set>

#include "core/error.h"
#include "kernels/ops.h"
#include "model/synth.h"
#include "model/transformer.h"
#include "test_util.h"

namespace smoe {
namespace {

ModelConfig small_moe(int64_t n_experts, int64_t k) {
  ModelConfig c = test::tiny_moe_config();
  c.n_layers = 3;
  c.n_experts = n_experts;
  c.n_experts_used = k;
  return c;
}

TEST(Router, TopKSoftmaxByHand) {
  const float logits[6] = {0.5f, 2.0f, -1.0f, 2.0f, 1.5f, 0.0f};
  int32_t ids[3];
  float w[3];
  route_top_k(logits, 6, 3, ids, w);
  EXPECT_EQ(ids[0], 1);  // tie between 1 and 3 goes to the lower index first
  EXPECT_EQ(ids[1], 3);
  EXPECT_EQ(ids[2], 4);
  const double z = std::exp(2.0) * 2 + std::exp(1.5);
  EXPECT_NEAR(w[0], std::exp(2.0) / z, 1e-6);
  EXPECT_NEAR(w[1], std::exp(2.0) / z, 1e-6);
  EXPECT_NEAR(w[2], std::exp(1.5) / z, 1e-6);
  // Equivalent form: softmax over all n, keep top K, renormalise.
  std::vector<float> all(logits, logits + 6);
  softmax(all.data(), 6);
  const double kept = all[1] + all[3] + all[4];
  EXPECT_NEAR(w[2], all[4] / kept, 1e-6);
}

// Every token's recorded experts are the K largest router logits, and its gates are their
// softmax; expert compute counts equal routing counts.
void check_routing(const Model& model, const std::vector<int32_t>& tokens) {
  const ModelConfig& c = model.config;
  Session s(model, static_cast<int64_t>(tokens.size()));
  RouteRecord rec;
  s.route_record = &rec;
  std::vector<float> logits;
  s.forward(tokens, false, logits);
  const int64_t T = static_cast<int64_t>(tokens.size()), E = c.n_experts, K = c.n_experts_used;
  std::vector<int64_t> routed(static_cast<size_t>(c.n_layers * E), 0);
  for (int64_t l = 0; l < c.n_layers; ++l)
    for (int64_t t = 0; t < T; ++t) {
      const float* lg = &rec.router_logits[(l * T + t) * E];
      std::vector<int32_t> order(static_cast<size_t>(E));
      for (int64_t e = 0; e < E; ++e) order[e] = static_cast<int32_t>(e);
      std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return lg[a] > lg[b]; });
      double z = 0;
      for (int64_t j = 0; j < K; ++j) z += std::exp(static_cast<double>(lg[order[j]]) - lg[order[0]]);
      double sum = 0;
      for (int64_t j = 0; j < K; ++j) {
        ASSERT_EQ(rec.expert(l, t, j), order[j]) << "layer " << l << " token " << t;
        EXPECT_NEAR(rec.gate(l, t, j), std::exp(static_cast<double>(lg[order[j]]) - lg[order[0]]) / z, 1e-6);
        sum += rec.gate(l, t, j);
        ++routed[l * E + order[j]];
      }
      EXPECT_NEAR(sum, 1.0, 1e-6);
    }
  EXPECT_EQ(s.expert_tokens(), routed);
}

TEST(Router, FollowsSoftmaxTopKOnSyntheticModel) {
  auto model = synth_model(small_moe(8, 2), 7);
  check_routing(*model, {1, 5, 9, 33, 2, 96, 40, 41, 42, 0});
  auto top1 = synth_model(small_moe(4, 1), 8);
  check_routing(*top1, {3, 4, 5, 6});
  auto top3 = synth_model(small_moe(16, 3), 9);
  check_routing(*top3, {3, 4, 5, 6, 7, 8});
}

TEST(Router, FollowsSoftmaxTopKOnFixtureModels) {
  SMOE_REQUIRE_FIXTURES();
  check_routing(*load_model(test::fixture("models/tiny-mixtral-A")), {1, 415, 5565, 302, 4843, 349});
  check_routing(*load_model(test::fixture("models/tiny-mixtral-B")), {1, 870, 983, 13, 998, 295, 372});
}

// Poisons every expert that no token of the batch selects with NaN weights: if any of
// them were computed (even multiplied by a zero gate) the logits would turn NaN.
TEST(MoE, UnselectedExpertsAreNeverComputed) {
  auto model = synth_model(small_moe(8, 2), 11);
  const std::vector<int32_t> tokens = {4, 17, 23};
  RouteRecord rec;
  std::vector<float> clean, poisoned;
  {
    Session s(*model, 16);
    s.route_record = &rec;
    s.forward(tokens, true, clean);
  }
  const ModelConfig& c = model->config;
  int64_t n_poisoned = 0;
  for (int64_t l = 0; l < c.n_layers; ++l) {
    std::set<int32_t> used;
    for (int64_t t = 0; t < rec.n_tokens; ++t)
      for (int64_t j = 0; j < rec.k; ++j) used.insert(rec.expert(l, t, j));
    for (int64_t e = 0; e < c.n_experts; ++e) {
      if (used.count(static_cast<int32_t>(e))) continue;
      ExpertWeights& ex = model->layers[l].experts[e];
      for (TensorView* t : {&ex.w1, &ex.w2, &ex.w3}) {
        float* p = mutable_f32(*model, *t);
        std::fill(p, p + t->numel(), NAN);
      }
      ++n_poisoned;
    }
  }
  ASSERT_GT(n_poisoned, 0) << "the test needs some unselected experts";
  Session s(*model, 16);
  s.forward(tokens, true, poisoned);
  ASSERT_EQ(clean.size(), poisoned.size());
  for (size_t i = 0; i < clean.size(); ++i) ASSERT_EQ(clean[i], poisoned[i]) << "logit " << i;

  // And the check has teeth: poisoning a selected expert does change the output.
  ExpertWeights& ex = model->layers[0].experts[rec.expert(0, 0, 0)];
  float* p = mutable_f32(*model, ex.w2);
  std::fill(p, p + ex.w2.numel(), NAN);
  Session s2(*model, 16);
  s2.forward(tokens, true, poisoned);
  EXPECT_TRUE(std::isnan(poisoned[0]));
}

// Batched prefill (tokens grouped by expert) equals feeding the tokens one at a time.
TEST(MoE, BatchedPrefillEqualsTokenByToken) {
  auto model = synth_model(small_moe(8, 2), 12);
  const std::vector<int32_t> tokens = {4, 17, 23, 23, 90, 1, 2, 3};
  std::vector<float> batched, single;
  Session a(*model, 16);
  a.forward(tokens, true, batched);
  Session b(*model, 16);
  const int64_t V = model->config.vocab_size;
  for (size_t t = 0; t < tokens.size(); ++t) {
    b.forward(std::span<const int32_t>(&tokens[t], 1), false, single);
    for (int64_t v = 0; v < V; ++v) ASSERT_NEAR(single[v], batched[t * V + v], 1e-4) << t;
  }
}

// Several sequences in one pass (one prefilling, others decoding at other positions)
// give the same logits as running each alone: what continuous batching relies on.
TEST(MoE, MultiSequenceBatchEqualsSeparateRuns) {
  auto model = synth_model(small_moe(8, 2), 13);
  const ModelConfig& c = model->config;
  const int64_t V = c.vocab_size;
  const std::vector<int32_t> a_prompt = {1, 2, 3, 4}, b_prompt = {9, 8}, c_prompt = {50, 51, 52, 53, 54};
  // Reference: each sequence alone.
  auto alone = [&](const std::vector<int32_t>& prompt, int32_t next, std::vector<float>& last) {
    Session s(*model, 16);
    std::vector<float> lg;
    s.forward(prompt, false, lg);
    const int32_t one[1] = {next};
    s.forward(one, false, last);
  };
  std::vector<float> ra, rb, rc_all;
  alone(a_prompt, 7, ra);
  alone(b_prompt, 11, rb);
  {
    Session s(*model, 16);
    s.forward(c_prompt, true, rc_all);
  }
  // Batched: a and b prefilled first, then one pass with a and b decoding and c prefilling.
  Transformer tf(*model);
  KVCache ka(c, 16), kb(c, 16), kc(c, 16);
  std::vector<float> lg;
  const BatchSeq first[2] = {{&ka, a_prompt, false}, {&kb, b_prompt, false}};
  tf.forward(first, lg);
  ASSERT_EQ(lg.size(), static_cast<size_t>(2 * V));
  const int32_t na[1] = {7}, nb[1] = {11};
  const BatchSeq step[3] = {{&ka, na, false}, {&kc, c_prompt, true}, {&kb, nb, false}};
  tf.forward(step, lg);
  ASSERT_EQ(lg.size(), static_cast<size_t>((1 + 5 + 1) * V));
  for (int64_t v = 0; v < V; ++v) {
    ASSERT_NEAR(lg[v], ra[v], 1e-5);
    ASSERT_NEAR(lg[6 * V + v], rb[v], 1e-5);
  }
  for (int64_t i = 0; i < 5 * V; ++i) ASSERT_NEAR(lg[V + i], rc_all[i], 1e-5);
  EXPECT_EQ(ka.n_past(), 5);
  EXPECT_EQ(kb.n_past(), 3);
  EXPECT_EQ(kc.n_past(), 5);
  // A bad sequence in a batch changes nothing.
  const int32_t bad[1] = {static_cast<int32_t>(V)};
  const BatchSeq wrong[2] = {{&ka, na, false}, {&kb, bad, false}};
  EXPECT_THROW(tf.forward(wrong, lg), Error);
  EXPECT_EQ(ka.n_past(), 5);
  const BatchSeq shared[2] = {{&ka, na, false}, {&ka, nb, false}};
  EXPECT_THROW(tf.forward(shared, lg), Error);
}

TEST(MoE, DenseModelIsOneExpert) {
  ModelConfig c = small_moe(1, 1);
  c.has_router = false;
  c.arch = "mistral";
  auto model = synth_model(c, 3);
  Session s(*model, 8);
  std::vector<float> logits;
  const std::vector<int32_t> tokens = {1, 2, 3};
  s.forward(tokens, true, logits);
  EXPECT_EQ(s.expert_tokens()[0], 3);
  for (float v : logits) ASSERT_TRUE(std::isfinite(v));
}

TEST(Attention, SlidingWindowLimitsContext) {
  // With a window of 2, the logits at position 3 must not depend on token 0.
  ModelConfig c = small_moe(4, 2);
  c.sliding_window = 2;
  c.n_layers = 1;  // with more layers information flows further back through the residual
  auto model = synth_model(c, 5);
  std::vector<float> a, b;
  Session s1(*model, 8), s2(*model, 8);
  const std::vector<int32_t> t1 = {5, 6, 7, 8}, t2 = {50, 6, 7, 8};
  s1.forward(t1, true, a);
  s2.forward(t2, true, b);
  const int64_t V = c.vocab_size;
  // Equal up to summation order: token 0 changes how tokens group by expert, and with it
  // which matmul kernel (decode dot products or batch tiles) a group runs through.
  for (int64_t v = 0; v < V; ++v) ASSERT_NEAR(a[3 * V + v], b[3 * V + v], 1e-5f);
  bool differs = false;
  for (int64_t v = 0; v < V; ++v) differs |= a[1 * V + v] != b[1 * V + v];
  EXPECT_TRUE(differs);
}

}  // namespace
}  // namespace smoe
