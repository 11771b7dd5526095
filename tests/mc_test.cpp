// mc_test.cpp: `smoe mc`: task-file parsing and each choice's log-likelihood, recomputed
// here on one forward pass over the whole sequence (the tool reuses the context's KV cache).
#include <nlohmann/json.hpp>

#include "analysis/mc.h"
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

const char* kTask =
    "{\"context\": \"ROMEO:\\nBut soft, what light through yonder window\", \"choices\": [\" breaks\", \" sings\", \" falls\"], \"label\": 0}\n"
    "{\"question\": \"The capital of France is\", \"choices\": [\" Paris\", \" Rome\"], \"answer\": \"B\"}\n"
    "\n"
    "{\"context\": \"To be, or not to be:\", \"choices\": [\" that is the question\", \" a cat\", \"!\"], \"label\": 2}\n"
    "{\"context\": \"\", \"choices\": [\"First Citizen\", \"KING RICHARD\"], \"label\": 1}\n";

// Each choice scored on one forward pass over BOS + context + choice.
std::vector<double> choice_logliks(const Model& m, const std::string& context, const std::vector<std::string>& choices) {
  const int64_t V = m.config.vocab_size;
  const std::vector<int32_t> ctx = m.tokenizer->encode(context, true);
  std::vector<double> out;
  for (const std::string& c : choices) {
    const std::vector<int32_t> full = m.tokenizer->encode(context + c, true);
    size_t first = 0;
    while (first < ctx.size() && first < full.size() && ctx[first] == full[first]) ++first;
    first = std::max<size_t>(first, 1);
    Session s(m, static_cast<int64_t>(full.size()));
    std::vector<float> logits;
    s.forward(full, true, logits);
    double ll = 0;
    for (size_t i = first; i < full.size(); ++i) ll += test::log_probs(&logits[(i - 1) * V], V)[full[i]];
    out.push_back(ll);
  }
  return out;
}

TEST(MultipleChoice, ScoresMatchWholeSequenceLogLikelihoods) {
  SMOE_REQUIRE_FIXTURES();
  const std::string dir = test::temp_dir("mc");
  const std::string file = test::put_file(dir, "task.jsonl", kTask);
  const std::vector<McQuestion> qs = parse_mc_jsonl(kTask, "task");
  ASSERT_EQ(qs.size(), 4u);
  EXPECT_EQ(qs[1].label, 1);  // "B"
  EXPECT_EQ(qs[2].line, 4);   // blank line skipped, numbering kept
  for (const std::string& mp : {test::kModelA, test::kModelB}) {
    test::CmdResult r = test::run_smoe("mc -m " + quoted(fixture(mp)) + " -f " + quoted(file) + " --json --details");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const json j = json::parse(r.out);
    auto model = load_model(fixture(mp));
    int64_t right = 0, right_norm = 0;
    ASSERT_EQ(j["questions"].size(), 4u);
    for (size_t i = 0; i < qs.size(); ++i) {
      const std::vector<double> ll = choice_logliks(*model, qs[i].context, qs[i].choices);
      const json& got = j["questions"][i];
      size_t best = 0, best_norm = 0;
      for (size_t k = 0; k < ll.size(); ++k) {
        EXPECT_NEAR(got["loglik"][k].get<double>(), ll[k], 1e-3) << mp << " question " << i << " choice " << k;
        const double chars = static_cast<double>(qs[i].choices[k].size());  // ASCII
        if (ll[k] > ll[best]) best = k;
        if (ll[k] / chars > ll[best_norm] / static_cast<double>(qs[i].choices[best_norm].size())) best_norm = k;
      }
      EXPECT_EQ(got["pred"].get<size_t>(), best) << mp << " question " << i;
      EXPECT_EQ(got["pred_norm"].get<size_t>(), best_norm) << mp << " question " << i;
      right += static_cast<int64_t>(best) == qs[i].label;
      right_norm += static_cast<int64_t>(best_norm) == qs[i].label;
    }
    EXPECT_DOUBLE_EQ(j["accuracy"].get<double>(), right / 4.0) << mp;
    EXPECT_DOUBLE_EQ(j["accuracy_norm"].get<double>(), right_norm / 4.0) << mp;
    EXPECT_NEAR(j["random_baseline"].get<double>(), (1.0 / 3 + 1.0 / 2 + 1.0 / 3 + 1.0 / 2) / 4, 1e-12);
  }
  test::CmdResult r = test::run_smoe("mc -m " + quoted(fixture(test::kModelB)) + " -f " + quoted(file) + " --limit 2");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("2 questions"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("accuracy"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace smoe
