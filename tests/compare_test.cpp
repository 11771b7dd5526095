// compare_test.cpp: `smoe compare` between tiny-mixtral-A and its GGUF files (f32, Q8_0,
// Q4_0): KL divergence, top-1 agreement, routing agreement and perplexities recomputed here
// from the tests' own forward passes of both models.
#include <nlohmann/json.hpp>

#include "analysis_util.h"
#include "core/error.h"
#include "model/model.h"
#include "model/transformer.h"
#include "tokenizer/tokenizer.h"

namespace smoe {
namespace {

using json = nlohmann::json;
using test::fixture;
using test::quoted;

struct ExpectedCompare {
  std::vector<double> kl;
  int64_t top1 = 0, n = 0, scored = 0;
  double nll_base = 0, nll_other = 0;
  std::vector<int64_t> same_set, same_first;
};

ExpectedCompare recompute_compare(const Model& base, const Model& other, const std::vector<int32_t>& tokens,
                                  int64_t ctx) {
  const int64_t V = base.config.vocab_size, L = base.config.n_layers, K = base.config.n_experts_used;
  const int64_t N = static_cast<int64_t>(tokens.size());
  ExpectedCompare x;
  x.same_set.assign(L, 0);
  x.same_first.assign(L, 0);
  for (int64_t b = 0; b < N; b += ctx) {
    const int64_t e = std::min(N, b + ctx), T = e - b;
    const std::span<const int32_t> win = std::span<const int32_t>(tokens).subspan(b, T);
    Session sb(base, T), so(other, T);
    RouteRecord rb, ro;
    sb.route_record = &rb;
    so.route_record = &ro;
    std::vector<float> lb, lo;
    sb.forward(win, true, lb);
    so.forward(win, true, lo);
    for (int64_t t = 0; t < T; ++t) {
      const std::vector<double> p = test::log_probs(&lb[t * V], V), q = test::log_probs(&lo[t * V], V);
      double kl = 0;
      for (int64_t v = 0; v < V; ++v) kl += std::exp(p[v]) * (p[v] - q[v]);
      x.kl.push_back(kl);
      x.top1 += test::index_of_max(&lb[t * V], V) == test::index_of_max(&lo[t * V], V);
      if (t + 1 < T) {
        x.nll_base -= p[win[t + 1]];
        x.nll_other -= q[win[t + 1]];
        ++x.scored;
      }
      for (int64_t l = 0; l < L; ++l) {
        std::vector<int32_t> a(rb.experts.begin() + (l * T + t) * K, rb.experts.begin() + (l * T + t + 1) * K);
        std::vector<int32_t> c(ro.experts.begin() + (l * T + t) * K, ro.experts.begin() + (l * T + t + 1) * K);
        x.same_first[l] += a[0] == c[0];
        std::sort(a.begin(), a.end());
        std::sort(c.begin(), c.end());
        x.same_set[l] += a == c;
      }
    }
    x.n += T;
  }
  return x;
}

TEST(Compare, QuantizedModelsAgainstFloatRecomputed) {
  SMOE_REQUIRE_FIXTURES();
  const std::string dir = test::temp_dir("compare_a");
  const std::string text = test::shakespeare_val(0, 500);
  const std::string file = test::put_file(dir, "t.txt", text);
  const std::vector<std::string> others = {"models/tiny-mixtral-A-q4_0.gguf", "models/tiny-mixtral-A-q8_0.gguf",
                                           "models/tiny-mixtral-A-f32.gguf"};
  std::string vs;
  for (const std::string& o : others) vs += " --vs " + quoted(fixture(o));
  test::CmdResult r = test::run_smoe("compare -m " + quoted(fixture(test::kModelA)) + vs + " -f " + quoted(file) +
                                     " --ctx 50 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(r.out);
  auto base = load_model(fixture(test::kModelA));
  const std::vector<int32_t> tokens = base->tokenizer->encode(text, true);
  ASSERT_GT(tokens.size(), 100u);  // several windows of 50
  EXPECT_EQ(j["n_positions"].get<size_t>(), tokens.size());
  ASSERT_EQ(j["others"].size(), 3u);
  for (size_t i = 0; i < others.size(); ++i) {
    auto other = load_model(fixture(others[i]));
    const ExpectedCompare x = recompute_compare(*base, *other, tokens, 50);
    const json& o = j["others"][i];
    double mean = 0, mx = 0;
    for (double k : x.kl) mean += k / static_cast<double>(x.kl.size());
    for (double k : x.kl) mx = std::max(mx, k);
    EXPECT_NEAR(o["mean_kl"].get<double>(), mean, 1e-9 + 1e-7 * mean) << others[i];
    EXPECT_NEAR(o["max_kl"].get<double>(), mx, 1e-9 + 1e-7 * mx) << others[i];
    EXPECT_LE(o["median_kl"].get<double>(), o["p99_kl"].get<double>());
    EXPECT_LE(o["p99_kl"].get<double>(), o["max_kl"].get<double>());
    EXPECT_DOUBLE_EQ(o["top1_agreement"].get<double>(), static_cast<double>(x.top1) / x.n) << others[i];
    for (size_t l = 0; l < x.same_set.size(); ++l) {
      EXPECT_DOUBLE_EQ(o["routing_agreement"][l].get<double>(), static_cast<double>(x.same_set[l]) / x.n);
      EXPECT_DOUBLE_EQ(o["first_choice_agreement"][l].get<double>(), static_cast<double>(x.same_first[l]) / x.n);
    }
    const double ppl = std::exp(x.nll_other / x.scored), base_ppl = std::exp(x.nll_base / x.scored);
    EXPECT_NEAR(o["ppl"].get<double>(), ppl, 1e-7 * ppl);
    EXPECT_NEAR(j["base_ppl"].get<double>(), base_ppl, 1e-7 * base_ppl);
    std::printf("tiny-mixtral-A vs %s on %zu tokens: mean KL %.5f, top-1 %.3f, same experts %.3f / %.3f\n",
                others[i].c_str(), tokens.size(), mean, static_cast<double>(x.top1) / x.n,
                static_cast<double>(x.same_set[0]) / x.n, static_cast<double>(x.same_set[1]) / x.n);
  }
  // The f32 GGUF holds the same weights: nothing differs. Q4_0 is further away than Q8_0.
  const json& f32 = j["others"][2];
  EXPECT_LT(f32["mean_kl"].get<double>(), 1e-6);
  EXPECT_EQ(f32["top1_agreement"].get<double>(), 1.0);
  EXPECT_EQ(f32["mean_routing_agreement"].get<double>(), 1.0);
  EXPECT_GT(j["others"][0]["mean_kl"].get<double>(), j["others"][1]["mean_kl"].get<double>());
  // The table form names every model.
  r = test::run_smoe("compare -m " + quoted(fixture(test::kModelA)) + vs + " -f " + quoted(file) + " --ctx 50");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const std::string& o : others) EXPECT_NE(r.out.find(o), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("routing agreement per layer"), std::string::npos);
}

}  // namespace
}  // namespace smoe
