// cli_test.cpp: the CLI's tokenize/detokenize/run forms, on real files.
#include <nlohmann/json.hpp>

#include <algorithm>

#include "model/model.h"
#include "runtime/generate.h"
#include "tokenizer/tokenizer.h"
#include "test_util.h"

namespace smoe {
namespace {

using json = nlohmann::json;

TEST(Cli, TokenizeAndDetokenizeRoundTrip) {
  SMOE_REQUIRE_FIXTURES();
  const std::string text = "ROMEO:\nWhat light through yonder window breaks?";
  for (const std::string src : {"models/tiny-mixtral-B", "tokenizers/shakespeare-1k.model"}) {
    test::CmdResult r = test::run_smoe("tokenize -m '" + test::fixture(src) + "'", text);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    std::vector<int32_t> ids = json::parse(r.out).get<std::vector<int32_t>>();
    // reference.json of tiny-mixtral-B holds this text's tokens with BOS first.
    json ref = json::parse(test::read_file(test::fixture("models/tiny-mixtral-B/reference.json")));
    std::vector<int32_t> want = ref["cases"][0]["tokens"].get<std::vector<int32_t>>();
    want.erase(want.begin());
    EXPECT_EQ(ids, want) << src;
    r = test::run_smoe("detokenize -m '" + test::fixture(src) + "'", json(ids).dump());
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.out, text + "\n");
  }
  test::CmdResult r = test::run_smoe("tokenize -m '" + test::fixture("models/tiny-mixtral-A-q8_0.gguf") + "'",
                                     "The capital of France is");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out).get<std::vector<int32_t>>(), (std::vector<int32_t>{415, 5565, 302, 4843, 349}));
}

TEST(Cli, RunTextPromptMatchesTokenPrompt) {
  SMOE_REQUIRE_FIXTURES();
  const std::string m = "'" + test::fixture("models/tiny-mixtral-A") + "'";
  test::CmdResult a = test::run_smoe("run -m " + m + " -p 'The capital of France is' --temp 0 -n 8 --json");
  ASSERT_EQ(a.exit_code, 0) << a.err;
  test::CmdResult b = test::run_smoe("run -m " + m + " --prompt-tokens 1,415,5565,302,4843,349 --temp 0 -n 8 --json");
  ASSERT_EQ(b.exit_code, 0) << b.err;
  json ja = json::parse(a.out), jb = json::parse(b.out);
  EXPECT_EQ(ja["prompt_tokens"], jb["prompt_tokens"]);
  EXPECT_EQ(ja["tokens"], jb["tokens"]);
  EXPECT_EQ(ja["text"], jb["text"]);
  // Streaming prints the same text as --json reports.
  test::CmdResult s = test::run_smoe("run -m " + m + " -p 'The capital of France is' --temp 0 -n 8");
  ASSERT_EQ(s.exit_code, 0) << s.err;
  EXPECT_EQ(s.out, ja["text"].get<std::string>() + "\n");
}

TEST(Cli, SeededSamplingIsReproducible) {
  SMOE_REQUIRE_FIXTURES();
  const std::string m = "'" + test::fixture("models/tiny-mixtral-B") + "'";
  test::CmdResult a = test::run_smoe("run -m " + m + " -p ROMEO: --seed 5 -n 16 --json");
  test::CmdResult b = test::run_smoe("run -m " + m + " -p ROMEO: --seed 5 -n 16 --json");
  ASSERT_EQ(a.exit_code, 0) << a.err;
  EXPECT_EQ(json::parse(a.out)["tokens"], json::parse(b.out)["tokens"]);
}

TEST(Cli, ChatTemplate) {
  SMOE_REQUIRE_FIXTURES();
  auto tok = Tokenizer::from_spm_file(test::fixture("tokenizers/mistral-v1.model"));
  std::vector<int32_t> ids = chat_prompt(*tok, "Hello");
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(ids[0], 1);
  EXPECT_EQ(tok->decode(ids), "[INST] Hello [/INST]");
  const std::string m = "'" + test::fixture("models/tiny-mixtral-A") + "'";
  test::CmdResult r = test::run_smoe("run -m " + m + " -p Hello --chat --temp 0 -n 2 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["prompt_tokens"].get<std::vector<int32_t>>(), ids);
}

TEST(Cli, StreamerHoldsBackPartialUtf8) {
  SMOE_REQUIRE_FIXTURES();
  auto tok = Tokenizer::from_spm_file(test::fixture("tokenizers/mistral-v1.model"));
  // "é" is two byte-fallback pieces in many vocabularies; encode a rare character.
  std::vector<int32_t> ids = tok->encode("a 🦀 b");
  TextStreamer st(*tok);
  std::string out;
  for (int32_t id : ids) {
    std::string piece = st.push(id);
    EXPECT_EQ(piece.find("\xEF\xBF\xBD"), std::string::npos);
    out += piece;
  }
  out += st.flush();
  EXPECT_EQ(out, "a 🦀 b");
}

}  // namespace
}  // namespace smoe

namespace smoe {
namespace {

TEST(Cli, BenchReportsItsFigures) {
  SMOE_REQUIRE_FIXTURES();
  test::CmdResult r = test::run_smoe("bench -m '" + test::fixture("models/tiny-mixtral-A-q8_0.gguf") +
                                     "' -p 16 -n 8 --reps 2 -t 2 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::string out = r.out;
  while (!out.empty() && out.back() == '\n') out.pop_back();
  const std::string last = out.substr(out.rfind('\n') + 1);  // the JSON line
  nlohmann::json j = nlohmann::json::parse(last);
  for (const char* key : {"pp_tokens_per_s", "tg_tokens_per_s", "bytes_per_token", "read_GBps", "roofline_fraction",
                          "kernel_read_GBps"}) {
    ASSERT_TRUE(j.contains(key)) << key;
    EXPECT_GT(j[key].get<double>(), 0) << key;
  }
  // Per generated token: the 2 of 8 experts of each layer, attention, output matrix.
  auto model = load_model(test::fixture("models/tiny-mixtral-A-q8_0.gguf"));
  EXPECT_GT(j["weight_bytes_per_token"].get<double>(), static_cast<double>(model->output.nbytes));
  EXPECT_LT(j["weight_bytes_per_token"].get<double>(), static_cast<double>(model->file_bytes));
  // --profile: one more decode of n-gen steps with each phase timed; its matrix products
  // read the step's weights (all but the norms and the embedding row).
  r = test::run_smoe("bench -m '" + test::fixture("models/tiny-mixtral-A-q8_0.gguf") +
                     "' -p 0 -n 8 --reps 1 -t 2 --profile --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("decode profile:"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("experts w1 w3"), std::string::npos) << r.out;
  out = r.out;
  while (!out.empty() && out.back() == '\n') out.pop_back();
  j = nlohmann::json::parse(out.substr(out.rfind('\n') + 1));
  ASSERT_TRUE(j.contains("decode_profile")) << r.out;
  const nlohmann::json& prof = j["decode_profile"];
  EXPECT_EQ(prof["steps"].get<int64_t>(), 8);
  EXPECT_GT(prof["tokens_per_s"].get<double>(), 0);
  double share = 0, mb = 0;
  for (const auto& [name, phase] : prof["phases"].items()) {
    share += phase["share"].get<double>();
    mb += phase["weight_MB_per_step"].get<double>();
  }
  EXPECT_NEAR(share, 1.0, 1e-9);
  const double weights_mb = j["weight_bytes_per_token"].get<double>() / 1e6;
  EXPECT_LE(mb, weights_mb);
  EXPECT_GT(mb, 0.9 * weights_mb);
  EXPECT_GT(prof["phases"]["experts w2"]["weight_MB_per_step"].get<double>(), 0);
  r = test::run_smoe("bench -m '" + test::fixture("models/tiny-mixtral-A-q8_0.gguf") + "' -p 0 -n 0");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("not both 0"), std::string::npos) << r.err;
}

// scripts/speed_table.py (the README's speed table) end to end on a small synthetic
// model it makes itself: one markdown row per type with smoe's figures.
TEST(Cli, SpeedTableScript) {
  SMOE_REQUIRE_FIXTURES();
  if (test::run_command("command -v python3").exit_code != 0) GTEST_SKIP() << "python3 not found (test skipped)";
  const std::string dir = test::temp_dir("speed_table");
  nlohmann::json cfg = nlohmann::json::parse(test::read_file(test::fixture("configs/mixtral-8x7b-v0.1.config.json")));
  cfg["hidden_size"] = 256;  // K-quants need rows of whole 256-value super-blocks
  cfg["intermediate_size"] = 512;
  cfg["num_attention_heads"] = 4;
  cfg["num_key_value_heads"] = 2;
  test::write_file(dir + "/config.json", cfg.dump());
  const std::string script = "python3 '" SMOE_SOURCE_DIR "/scripts/speed_table.py' --smoe '" SMOE_BINARY "' --config '" +
                             dir + "/config.json' --tokenizer '" + test::fixture("tokenizers/mistral-v1.model") +
                             "' --dir '" + dir + "' --layers 1 --no-llama -p 16 -n 4 --reps 1";
  test::CmdResult r = test::run_command(script + " --types q8_0,q4_K");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const std::string t : {"q8_0", "q4_K"}) {
    const size_t at = r.out.find("| " + t + " | ");
    ASSERT_NE(at, std::string::npos) << r.out;
    // | type | pp | tg | GB per token | probe | roofline | kernels |: 7 cells, tg > 0.
    const std::string row = r.out.substr(at, r.out.find('\n', at) - at);
    EXPECT_EQ(std::count(row.begin(), row.end(), '|'), 8) << row;
    const size_t tg = row.find('|', row.find('|', 2) + 1) + 1;
    EXPECT_GT(std::stod(row.substr(tg)), 0) << row;
  }
  r = test::run_command(script + " --types q9_9");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("unknown type(s) q9_9"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace smoe
