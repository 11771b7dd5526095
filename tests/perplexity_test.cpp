// perplexity_test.cpp: `smoe perplexity` on the fixture models, recomputed here from the
// logits that `smoe logits` writes for each window, with the protocol's windows and
// scoring rule written out again; the validation split and the context-length sweep.
#include <nlohmann/json.hpp>

#include "analysis/perplexity.h"
#include "analysis_util.h"
#include "core/error.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

namespace smoe {
namespace {

using json = nlohmann::json;
using test::fixture;
using test::quoted;

// The protocol written out again, scored on the logits `smoe logits` writes for each window.
struct ExpectedPpl {
  double nll = 0;
  int64_t n = 0, windows = 0;
  double ppl() const { return std::exp(nll / n); }
};

// The CLI feeds a window's first token alone and the rest as one batch, `smoe logits` all at
// once: on CPUs with AMX-BF16 batches of 16+ tokens of float weights round differently from
// single tokens (gemm_amx.h, ~1e-5 relative), so the two agree to that, not bit for bit.
constexpr double kPplTol = 1e-5;

ExpectedPpl ppl_from_cli_logits(const std::string& model, const std::vector<int32_t>& tokens, int64_t ctx,
                                int64_t stride, int64_t V) {
  const std::string out = test::temp_dir("ppl_logits") + "/l.f32";
  const int64_t N = static_cast<int64_t>(tokens.size());
  ExpectedPpl x;
  int64_t prev_end = 0;
  for (int64_t begin = 0;; begin += stride) {
    const int64_t end = std::min(begin + ctx, N);
    const std::vector<int32_t> window(tokens.begin() + begin, tokens.begin() + end);
    test::CmdResult r = test::run_smoe("logits -m " + quoted(model) + " --tokens " + test::id_list(window) +
                                       " --out " + quoted(out));
    EXPECT_EQ(r.exit_code, 0) << r.err;
    const std::vector<float> logits = test::read_f32(out);
    if (static_cast<int64_t>(logits.size()) != (end - begin) * V) {
      ADD_FAILURE() << "smoe logits wrote " << logits.size() << " floats, expected " << (end - begin) * V;
      return x;
    }
    bool scored = false;
    for (int64_t i = std::max(begin + 1, prev_end); i < end; ++i) {
      x.nll -= test::log_probs(&logits[(i - 1 - begin) * V], V)[tokens[i]];
      ++x.n;
      scored = true;
    }
    x.windows += scored;
    prev_end = end;
    if (end == N) break;
  }
  return x;
}

TEST(Perplexity, MatchesSmoeLogitsWithStride) {
  SMOE_REQUIRE_FIXTURES();
  const std::string dir = test::temp_dir("ppl_b");
  const std::string text = test::shakespeare_val(0, 260);
  const std::string file = test::put_file(dir, "t.txt", text);
  const std::string m = fixture(test::kModelB);
  test::CmdResult r = test::run_smoe("perplexity -m " + quoted(m) + " -f " + quoted(file) + " --ctx 24 --stride 10 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(r.out);
  auto model = load_model(m);
  const std::vector<int32_t> tokens = model->tokenizer->encode(text, true);
  const ExpectedPpl x = ppl_from_cli_logits(m, tokens, 24, 10, model->config.vocab_size);
  EXPECT_EQ(j["n_tokens"].get<int64_t>(), static_cast<int64_t>(tokens.size()));
  EXPECT_EQ(j["n_scored"].get<int64_t>(), static_cast<int64_t>(tokens.size()) - 1);  // every token after BOS once
  EXPECT_EQ(j["n_scored"].get<int64_t>(), x.n);
  EXPECT_EQ(j["n_windows"].get<int64_t>(), x.windows);
  EXPECT_NEAR(j["ppl"].get<double>(), x.ppl(), kPplTol * x.ppl());
  EXPECT_NEAR(j["mean_nll"].get<double>(), x.nll / x.n, kPplTol);
  int64_t in_buckets = 0;
  for (const json& b : j["by_context"]) in_buckets += b["n"].get<int64_t>();
  EXPECT_EQ(in_buckets, x.n);
  std::printf("tiny-mixtral-B, %zu tokens, ctx 24 stride 10: perplexity %.4f (recomputed %.4f)\n", tokens.size(),
              j["ppl"].get<double>(), x.ppl());
}

TEST(Perplexity, ValidationSplitOneWindowAndSweep) {
  SMOE_REQUIRE_FIXTURES();
  const std::string m = fixture(test::kModelA);
  const std::string file = fixture("text/tinyshakespeare.txt");
  test::CmdResult r = test::run_smoe("perplexity -m " + quoted(m) + " -f " + quoted(file) +
                                     " --split val --max-tokens 60 --ctx 64 --sweep 8,16 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(r.out);
  auto model = load_model(m);
  const std::string all = test::read_file(file);
  std::vector<int32_t> tokens = model->tokenizer->encode(all.substr(all.size() * 9 / 10), true);
  tokens.resize(60);
  const int64_t V = model->config.vocab_size;
  // ctx 64 >= 60 tokens: one window, every token scored from all before it.
  const ExpectedPpl one = ppl_from_cli_logits(m, tokens, 64, 32, V);
  EXPECT_EQ(j["n_windows"], 1);
  EXPECT_EQ(j["split"], "val");
  EXPECT_NEAR(j["ppl"].get<double>(), one.ppl(), kPplTol * one.ppl());
  // The sweep keeps stride/ctx = 1/2.
  ASSERT_EQ(j["sweep"].size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    const int64_t ctx = i == 0 ? 8 : 16;
    const json& s = j["sweep"][i];
    EXPECT_EQ(s["ctx"].get<int64_t>(), ctx);
    EXPECT_EQ(s["stride"].get<int64_t>(), ctx / 2);
    const ExpectedPpl x = ppl_from_cli_logits(m, tokens, ctx, ctx / 2, V);
    EXPECT_NEAR(s["ppl"].get<double>(), x.ppl(), kPplTol * x.ppl()) << "ctx " << ctx;
  }
  // The text output says what was measured.
  r = test::run_smoe("perplexity -m " + quoted(m) + " -f " + quoted(file) + " --split val --max-tokens 60 --ctx 64");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("split val"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("by context length"), std::string::npos) << r.out;
  r = test::run_smoe("perplexity --help");
  EXPECT_NE(r.out.find("--split val"), std::string::npos) << r.out;
}

TEST(Perplexity, WindowsCoverEveryTokenOnce) {
  for (int64_t n : {2, 3, 17, 100})
    for (int64_t ctx : {2, 5, 16, 200})
      for (int64_t stride : {int64_t{1}, std::max<int64_t>(1, ctx / 2), ctx - 1}) {
        std::vector<int> seen(static_cast<size_t>(n), 0);
        for (const ScoredWindow& w : perplexity_windows(n, ctx, stride)) {
          EXPECT_LE(w.end - w.begin, ctx);
          EXPECT_GT(w.first_scored, w.begin);
          for (int64_t i = w.first_scored; i < w.end; ++i) ++seen[i];
        }
        EXPECT_EQ(seen[0], 0);
        for (int64_t i = 1; i < n; ++i) EXPECT_EQ(seen[i], 1) << n << " " << ctx << " " << stride << " " << i;
      }
  EXPECT_THROW(perplexity_windows(10, 1, 1), Error);
  EXPECT_THROW(perplexity_windows(10, 8, 8), Error);  // the first token of each window would go unscored
  EXPECT_THROW(perplexity_windows(10, 8, 0), Error);
  EXPECT_THROW(perplexity_windows(1, 8, 4), Error);
}

}  // namespace
}  // namespace smoe
