// reference_test.cpp: smoe's logits and greedy continuations against Mistral's reference
// implementation on the fixture models, in every format (HF, consolidated, GGUF).
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "model/model.h"
#include "model/transformer.h"
#include "runtime/generate.h"
#include "test_util.h"

namespace smoe {
namespace {

using json = nlohmann::json;

struct Reference {
  json cases;
  int64_t vocab = 0;
  std::vector<float> logits;
};

Reference load_reference(const std::string& dir) {
  Reference r;
  json j = json::parse(test::read_file(dir + "/reference.json"));
  r.cases = j["cases"];
  r.vocab = j["vocab_size"].get<int64_t>();
  std::string raw = test::read_file(dir + "/reference_logits.f32");
  r.logits.resize(raw.size() / 4);
  std::memcpy(r.logits.data(), raw.data(), r.logits.size() * 4);
  return r;
}

// log-softmax of row[V] in double.
std::vector<double> log_softmax(const float* row, int64_t V) {
  double mx = row[0];
  for (int64_t i = 1; i < V; ++i) mx = std::max(mx, static_cast<double>(row[i]));
  double sum = 0;
  for (int64_t i = 0; i < V; ++i) sum += std::exp(row[i] - mx);
  std::vector<double> out(static_cast<size_t>(V));
  for (int64_t i = 0; i < V; ++i) out[i] = row[i] - mx - std::log(sum);
  return out;
}

struct Comparison {
  double max_abs_diff = 0, mean_kl = 0, argmax_agreement = 0;
  int64_t positions = 0;
  bool greedy_equal = true;
};

Comparison compare(const std::string& model_path, const std::string& ref_dir, const LoadOptions& load = {}) {
  std::unique_ptr<Model> model = load_model(model_path, load);
  Reference ref = load_reference(ref_dir);
  EXPECT_EQ(model->config.vocab_size, ref.vocab);
  const int64_t V = ref.vocab;
  Comparison c;
  int64_t agree = 0;
  for (const json& cs : ref.cases) {
    std::vector<int32_t> tokens = cs["tokens"].get<std::vector<int32_t>>();
    Session session(*model, static_cast<int64_t>(tokens.size()) + 64);
    std::vector<float> logits;
    session.forward(tokens, /*all_logits=*/true, logits);
    const std::vector<int64_t> positions = cs["logit_positions"].get<std::vector<int64_t>>();
    const int64_t offset = cs["logits_offset_floats"].get<int64_t>();
    for (size_t i = 0; i < positions.size(); ++i) {
      const float* want = &ref.logits[offset + static_cast<int64_t>(i) * V];
      const float* got = &logits[positions[i] * V];
      for (int64_t v = 0; v < V; ++v)
        c.max_abs_diff = std::max(c.max_abs_diff, static_cast<double>(std::fabs(want[v] - got[v])));
      std::vector<double> lp = log_softmax(want, V), lq = log_softmax(got, V);
      double kl = 0;
      for (int64_t v = 0; v < V; ++v) kl += std::exp(lp[v]) * (lp[v] - lq[v]);
      c.mean_kl += kl;
      agree += argmax(want, V) == argmax(got, V);
      ++c.positions;
    }
    // Greedy continuation with the KV cache, from a fresh session.
    Session gen(*model, static_cast<int64_t>(tokens.size()) + 64);
    GenerateOptions opts;
    opts.sampling.temperature = 0;
    opts.stop_at_eos = false;
    const std::vector<int32_t> want_greedy = cs["greedy_tokens"].get<std::vector<int32_t>>();
    opts.max_tokens = static_cast<int64_t>(want_greedy.size());
    GenerateResult r = generate(gen, tokens, opts);
    if (r.tokens != want_greedy) c.greedy_equal = false;
  }
  c.mean_kl /= static_cast<double>(c.positions);
  c.argmax_agreement = static_cast<double>(agree) / static_cast<double>(c.positions);
  std::printf("%s: max |diff| %.2e, mean KL %.5f, argmax agreement %.3f over %lld positions, greedy %s\n",
              model_path.c_str(), c.max_abs_diff, c.mean_kl, c.argmax_agreement,
              static_cast<long long>(c.positions), c.greedy_equal ? "equal" : "DIFFERENT");
  return c;
}

const std::string kA = "models/tiny-mixtral-A";
const std::string kB = "models/tiny-mixtral-B";

TEST(Reference, HuggingFaceShardedBf16) {
  SMOE_REQUIRE_FIXTURES();
  Comparison c = compare(test::fixture(kA), test::fixture(kA));
  EXPECT_LT(c.max_abs_diff, 1e-3);
  EXPECT_TRUE(c.greedy_equal);
  EXPECT_GT(c.positions, 0);
}

TEST(Reference, MistralConsolidatedF32) {
  SMOE_REQUIRE_FIXTURES();
  Comparison c = compare(test::fixture(kB), test::fixture(kB));
  EXPECT_LT(c.max_abs_diff, 1e-3);
  EXPECT_TRUE(c.greedy_equal);
}

TEST(Reference, GgufF32) {
  SMOE_REQUIRE_FIXTURES();
  Comparison c = compare(test::fixture("models/tiny-mixtral-A-f32.gguf"), test::fixture(kA));
  EXPECT_LT(c.max_abs_diff, 1e-3);
  EXPECT_TRUE(c.greedy_equal);
}

TEST(Reference, GgufF16) {
  SMOE_REQUIRE_FIXTURES();
  Comparison c = compare(test::fixture("models/tiny-mixtral-A-f16.gguf"), test::fixture(kA));
  EXPECT_LT(c.max_abs_diff, 1e-3);
  EXPECT_TRUE(c.greedy_equal);
}

// Quantized files: mean KL(reference || smoe) no worse than llama.cpp's on the same files
// (fixtures README: q8_0 0.0016, q4_0 0.186).
// Also with the weights in memory, repacked for the x16 kernels where the CPU has them.
TEST(Reference, GgufQ8_0KLNoWorseThanLlamaCpp) {
  SMOE_REQUIRE_FIXTURES();
  for (WeightPlacement p : {WeightPlacement::kMapped, WeightPlacement::kMemory}) {
    Comparison c = compare(test::fixture("models/tiny-mixtral-A-q8_0.gguf"), test::fixture(kA), {p});
    EXPECT_LE(c.mean_kl, 0.0016) << weight_placement_name(p);
  }
}

TEST(Reference, GgufQ4_0KLNoWorseThanLlamaCpp) {
  SMOE_REQUIRE_FIXTURES();
  for (WeightPlacement p : {WeightPlacement::kMapped, WeightPlacement::kMemory}) {
    Comparison c = compare(test::fixture("models/tiny-mixtral-A-q4_0.gguf"), test::fixture(kA), {p});
    EXPECT_LE(c.mean_kl, 0.186) << weight_placement_name(p);
  }
}

// The CLI's logits and greedy run agree with the library (and so with the reference).
TEST(Reference, CliLogitsAndGreedyRun) {
  SMOE_REQUIRE_FIXTURES();
  Reference ref = load_reference(test::fixture(kB));
  const json& cs = ref.cases[0];
  std::vector<int32_t> tokens = cs["tokens"].get<std::vector<int32_t>>();
  std::string list;
  for (int32_t t : tokens) list += (list.empty() ? "" : ",") + std::to_string(t);
  const std::string out = test::temp_dir("cli_logits") + "/logits.f32";
  test::CmdResult r = test::run_smoe("logits -m '" + test::fixture(kB) + "' --tokens " + list + " --out '" + out + "'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::string raw = test::read_file(out);
  ASSERT_EQ(raw.size(), tokens.size() * ref.vocab * 4);
  std::vector<float> got(raw.size() / 4);
  std::memcpy(got.data(), raw.data(), raw.size());
  const std::vector<int64_t> positions = cs["logit_positions"].get<std::vector<int64_t>>();
  double max_diff = 0;
  for (size_t i = 0; i < positions.size(); ++i)
    for (int64_t v = 0; v < ref.vocab; ++v)
      max_diff = std::max(max_diff, static_cast<double>(std::fabs(
                                        got[positions[i] * ref.vocab + v] -
                                        ref.logits[cs["logits_offset_floats"].get<int64_t>() + i * ref.vocab + v])));
  EXPECT_LT(max_diff, 1e-3);

  const std::vector<int32_t> greedy = cs["greedy_tokens"].get<std::vector<int32_t>>();
  r = test::run_smoe("run -m '" + test::fixture(kB) + "' --prompt-tokens " + list +
                     " --temp 0 --ignore-eos --json -n " + std::to_string(greedy.size()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json j = json::parse(r.out);
  EXPECT_EQ(j["tokens"].get<std::vector<int32_t>>(), greedy);
  EXPECT_EQ(j["prompt_tokens"].get<std::vector<int32_t>>(), tokens);
  EXPECT_TRUE(j["timings"].contains("generate_tokens_per_s"));
}

}  // namespace
}  // namespace smoe
