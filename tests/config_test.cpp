// config_test.cpp: configs from every format describe the same model; parameter counts
// match the published figures; `smoe info` reports them.
#include <nlohmann/json.hpp>

#include "model/config.h"
#include "model/model.h"
#include "test_util.h"

namespace smoe {
namespace {

TEST(Config, PublishedParameterCounts) {
  SMOE_REQUIRE_FIXTURES();
  ModelConfig hf = config_from_hf_json(test::fixture("configs/mixtral-8x7b-v0.1.config.json"));
  EXPECT_NEAR(hf.total_params() / 1e9, 46.70, 0.005);
  EXPECT_NEAR(hf.active_params() / 1e9, 12.88, 0.005);
  EXPECT_EQ(hf.n_experts, 8);
  EXPECT_EQ(hf.n_experts_used, 2);
  ModelConfig mi = config_from_mistral_json(test::fixture("configs/mixtral-8x7b-v0.1.params.json"));
  EXPECT_EQ(mi.total_params(), hf.total_params());
  EXPECT_EQ(mi.active_params(), hf.active_params());
  ModelConfig big = config_from_hf_json(test::fixture("configs/mixtral-8x22b-v0.1.config.json"));
  EXPECT_NEAR(big.total_params() / 1e9, 140.6, 0.05);
  EXPECT_NEAR(big.active_params() / 1e9, 39.2, 0.05);
  ModelConfig dense = config_from_hf_json(test::fixture("configs/mistral-7b-v0.1.config.json"));
  EXPECT_FALSE(dense.has_router);
  EXPECT_EQ(dense.n_experts, 1);
  EXPECT_EQ(dense.sliding_window, 4096);
  EXPECT_EQ(dense.total_params(), dense.active_params());
}

TEST(Config, InfoCommandOnConfigAlone) {
  SMOE_REQUIRE_FIXTURES();
  test::CmdResult r = test::run_smoe("info -m '" + test::fixture("configs/mixtral-8x7b-v0.1.config.json") + "'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("46.70B total"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("12.88B active"), std::string::npos) << r.out;
  r = test::run_smoe("info --json -m '" + test::fixture("configs/mixtral-8x7b-v0.1.params.json") + "'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["n_experts"], 8);
  EXPECT_EQ(j["dim"], 4096);
  EXPECT_NEAR(j["total_params"].get<double>() / 1e9, 46.70, 0.005);
}

TEST(Config, InfoCommandOnModels) {
  SMOE_REQUIRE_FIXTURES();
  for (const std::string m : {"models/tiny-mixtral-A", "models/tiny-mixtral-B", "models/tiny-mixtral-A-q4_0.gguf"}) {
    test::CmdResult r = test::run_smoe("info --json -m '" + test::fixture(m) + "'");
    ASSERT_EQ(r.exit_code, 0) << m << ": " << r.err;
    auto j = nlohmann::json::parse(r.out);
    EXPECT_GT(j["file_bytes"].get<int64_t>(), 0);
    EXPECT_TRUE(j["tensor_types"].is_object());
    EXPECT_GT(j["total_params"].get<int64_t>(), j["active_params"].get<int64_t>());
  }
  test::CmdResult r = test::run_smoe("info --json -m '" + test::fixture("models/tiny-mixtral-A-q4_0.gguf") + "'");
  auto j = nlohmann::json::parse(r.out);
  EXPECT_TRUE(j["tensor_types"].contains("q4_0"));
  EXPECT_TRUE(j["tensor_types"].contains("q8_0"));
  EXPECT_EQ(j["n_experts_used"], 2);
}

TEST(Config, SameModelFromHfAndGguf) {
  SMOE_REQUIRE_FIXTURES();
  auto hf = load_model(test::fixture("models/tiny-mixtral-A"));
  auto gg = load_model(test::fixture("models/tiny-mixtral-A-f32.gguf"));
  const ModelConfig &a = hf->config, &b = gg->config;
  EXPECT_EQ(a.dim, b.dim);
  EXPECT_EQ(a.n_layers, b.n_layers);
  EXPECT_EQ(a.n_heads, b.n_heads);
  EXPECT_EQ(a.n_kv_heads, b.n_kv_heads);
  EXPECT_EQ(a.head_dim, b.head_dim);
  EXPECT_EQ(a.hidden_dim, b.hidden_dim);
  EXPECT_EQ(a.n_experts, b.n_experts);
  EXPECT_EQ(a.n_experts_used, b.n_experts_used);
  EXPECT_FLOAT_EQ(a.rope_theta, b.rope_theta);
  EXPECT_EQ(a.total_params(), b.total_params());
}

}  // namespace
}  // namespace smoe
