// passkey_test.cpp: passkey prompts (length, position of the key, wording) and
// `smoe passkey`'s grid, its answers recomputed by the test's own greedy decoding.
#include <nlohmann/json.hpp>

#include "analysis/passkey.h"
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

TEST(Passkey, PromptsFitTheLengthAndHideTheKeyAtTheDepth) {
  SMOE_REQUIRE_FIXTURES();
  auto tok = Tokenizer::from_spm_file(fixture("tokenizers/shakespeare-1k.model"));
  for (int64_t len : {100, 300, 1500})
    for (double depth : {0.0, 0.5, 1.0}) {
      const PasskeyPrompt p = build_passkey_prompt(*tok, len, depth, "73915");
      const int64_t n = static_cast<int64_t>(p.tokens.size());
      EXPECT_LE(n, len);
      EXPECT_GT(n, len - 40) << "filler should fill the length";  // one filler sentence < 40 tokens
      EXPECT_EQ(p.tokens, tok->encode(p.text, true));
      // The key appears twice, in its sentence, before the question at the end.
      const size_t k1 = p.text.find("73915"), k2 = p.text.find("73915", k1 + 1);
      ASSERT_NE(k2, std::string::npos);
      EXPECT_EQ(p.text.find("73915", k2 + 1), std::string::npos);
      const size_t q = p.text.rfind("What is the pass key?");
      ASSERT_NE(q, std::string::npos);
      EXPECT_LT(k2, q);
      EXPECT_EQ(p.text.substr(p.text.size() - 15), "The pass key is");  // the answer follows
      EXPECT_EQ(p.n_before, std::llround(depth * static_cast<double>(p.n_filler)));
      if (len == 1500) {
        const double at = static_cast<double>(p.key_token) / static_cast<double>(n);
        EXPECT_NEAR(at, depth, 0.1) << "key token " << p.key_token << " of " << n;
      }
    }
  EXPECT_THROW(build_passkey_prompt(*tok, 20, 0.5, "1"), Error);
  EXPECT_THROW(build_passkey_prompt(*tok, 500, 1.5, "1"), Error);
  EXPECT_EQ(first_number(" 12345. The"), "12345");
  EXPECT_EQ(first_number("key: 07a9"), "07");
  EXPECT_EQ(first_number("none"), "");
}

TEST(Passkey, GridAnswersAreGreedyContinuations) {
  SMOE_REQUIRE_FIXTURES();
  const std::string m = fixture(test::kModelB);
  test::CmdResult r = test::run_smoe("passkey -m " + quoted(m) +
                                     " --lengths 100,160 --positions 0,1 --trials 2 --seed 3 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(r.out);
  EXPECT_EQ(j["lengths"], json({100, 160}));
  ASSERT_EQ(j["accuracy"].size(), 2u);
  ASSERT_EQ(j["accuracy"][0].size(), 2u);
  ASSERT_EQ(j["cases"].size(), 8u);
  auto model = load_model(m);
  const int64_t V = model->config.vocab_size;
  int64_t right = 0;
  for (const json& c : j["cases"]) {
    right += c["correct"].get<bool>();
    EXPECT_EQ(c["correct"].get<bool>(), c["answer"] == c["key"]);
    EXPECT_EQ(c["key"].get<std::string>().size(), 5u);
    EXPECT_LE(c["n_tokens"].get<int64_t>(), c["length"].get<int64_t>());
  }
  EXPECT_DOUBLE_EQ(j["overall"].get<double>(), right / 8.0);
  // Recompute two cases: the prompt's greedy continuation, token by token, without the
  // library's generate().
  for (size_t ci : {size_t{0}, size_t{7}}) {
    const json& c = j["cases"][ci];
    const PasskeyPrompt p = build_passkey_prompt(*model->tokenizer, c["length"].get<int64_t>(),
                                                 c["position"].get<double>(), c["key"].get<std::string>());
    ASSERT_EQ(static_cast<int64_t>(p.tokens.size()), c["n_tokens"].get<int64_t>());
    Session s(*model, static_cast<int64_t>(p.tokens.size()) + 9);
    std::vector<float> logits;
    s.forward(p.tokens, false, logits);
    std::vector<int32_t> out;
    for (int i = 0; i < 9; ++i) {
      const int32_t id = static_cast<int32_t>(test::index_of_max(logits.data(), V));
      if (id == model->config.eos_id) break;
      out.push_back(id);
      const int32_t next[1] = {id};
      s.forward(next, false, logits);
    }
    EXPECT_EQ(c["output"].get<std::string>(), model->tokenizer->decode(out)) << "case " << ci;
  }
  // The table form: one row per length, one column per depth.
  r = test::run_smoe("passkey -m " + quoted(m) + " --lengths 100 --positions 0,0.5 --trials 1");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("| length | 0% | 50% |"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("| 100 |"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace smoe
