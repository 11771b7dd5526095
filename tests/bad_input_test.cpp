// bad_input_test.cpp: corrupt, truncated and inconsistent model files and configs give a
// smoe::Error naming the file, tensor or field (never a crash or a bad read), and the CLI
// exits non-zero with that message.
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "formats/safetensors.h"
#include "model/config.h"
#include "model/model.h"
#include "test_util.h"

namespace smoe {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

std::string safetensors_bytes(const json& header, const std::string& data) {
  std::string h = header.dump();
  uint64_t n = h.size();
  std::string out(reinterpret_cast<const char*>(&n), 8);
  return out + h + data;
}

// Expects `fn` to throw smoe::Error whose message contains every string in `needles`.
template <typename Fn>
void expect_error(Fn fn, std::initializer_list<std::string> needles) {
  try {
    fn();
    ADD_FAILURE() << "no error thrown";
  } catch (const Error& e) {
    for (const std::string& n : needles)
      EXPECT_NE(std::string(e.what()).find(n), std::string::npos)
          << "message \"" << e.what() << "\" lacks \"" << n << "\"";
  }
}

std::string write_tmp(const std::string& dir, const std::string& name, const std::string& bytes) {
  std::string p = dir + "/" + name;
  test::write_file(p, bytes);
  return p;
}

TEST(SafetensorsBadInput, HeaderProblems) {
  const std::string dir = test::temp_dir("st_bad");
  const std::string data(16, '\0');
  const json good = {{"w", {{"dtype", "F32"}, {"shape", {2, 2}}, {"data_offsets", {0, 16}}}}};
  EXPECT_NO_THROW(SafetensorsFile(write_tmp(dir, "good.safetensors", safetensors_bytes(good, data))));

  expect_error([&] { SafetensorsFile(dir + "/missing.safetensors"); }, {"missing.safetensors", "cannot open"});
  expect_error([&] { SafetensorsFile(write_tmp(dir, "short", "abc")); }, {"short", "too short"});
  std::string big(8, '\0');
  big[0] = '\x7f';
  big[6] = '\x01';
  expect_error([&] { SafetensorsFile(write_tmp(dir, "len", big + "{}")); }, {"header length", "past the end"});
  std::string bad_json = safetensors_bytes(good, data);
  bad_json[9] = '#';
  expect_error([&] { SafetensorsFile(write_tmp(dir, "json", bad_json)); }, {"not valid JSON"});
  expect_error([&] { SafetensorsFile(write_tmp(dir, "arr", safetensors_bytes(json::array(), ""))); },
               {"JSON object"});

  json h = good;
  h["w"]["dtype"] = "I64";
  expect_error([&] { SafetensorsFile(write_tmp(dir, "dtype", safetensors_bytes(h, data))); },
               {"'w'", "I64", "F32, F16 or BF16"});
  h = good;
  h["w"]["data_offsets"] = {0, 64};
  expect_error([&] { SafetensorsFile(write_tmp(dir, "past", safetensors_bytes(h, data))); },
               {"'w'", "outside the data section"});
  h = good;
  h["w"]["shape"] = {2, 3};
  expect_error([&] { SafetensorsFile(write_tmp(dir, "size", safetensors_bytes(h, data))); },
               {"'w'", "16 bytes", "needs 24"});
  h = good;
  h["w"]["shape"] = {-2, 2};
  expect_error([&] { SafetensorsFile(write_tmp(dir, "neg", safetensors_bytes(h, data))); }, {"'w'", "non-negative"});
  h = good;
  h["w"]["data_offsets"] = {8, 4};
  expect_error([&] { SafetensorsFile(write_tmp(dir, "rev", safetensors_bytes(h, data))); }, {"'w'"});
  h = good;
  h["w"].erase("shape");
  expect_error([&] { SafetensorsFile(write_tmp(dir, "noshape", safetensors_bytes(h, data))); }, {"'w'", "shape"});
  h = good;
  h["v"] = {{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {4, 12}}};
  expect_error([&] { SafetensorsFile(write_tmp(dir, "overlap", safetensors_bytes(h, data))); }, {"overlap"});
  h = good;
  h["w"]["shape"] = {1ll << 40, 1ll << 40};
  expect_error([&] { SafetensorsFile(write_tmp(dir, "huge", safetensors_bytes(h, data))); }, {"'w'"});
}

// Every truncation of a real checkpoint fails cleanly.
TEST(SafetensorsBadInput, EveryTruncationOfARealFileFails) {
  SMOE_REQUIRE_FIXTURES();
  const std::string bytes = test::read_file(test::fixture("models/tiny-mixtral-B/consolidated.safetensors"));
  const std::string dir = test::temp_dir("st_trunc");
  uint64_t header_len;
  std::memcpy(&header_len, bytes.data(), 8);
  std::vector<size_t> cuts = {0, 1, 7, 8, 9, 100, header_len + 7, header_len + 8, header_len + 9,
                              bytes.size() / 2, bytes.size() - 1};
  for (size_t cut = 8; cut < header_len + 8; cut += 97) cuts.push_back(cut);
  for (size_t cut : cuts) {
    const std::string p = write_tmp(dir, "t.safetensors", bytes.substr(0, cut));
    EXPECT_THROW(SafetensorsFile{p}, Error) << "cut at " << cut;
  }
}

// A copy of tiny-mixtral-B whose files the test may change.
std::string copy_model_b(const std::string& name) {
  const std::string dir = test::temp_dir(name);
  for (const char* f : {"params.json", "consolidated.safetensors", "tokenizer.model"})
    fs::copy_file(test::fixture(std::string("models/tiny-mixtral-B/") + f), dir + "/" + f);
  return dir;
}

// Rewrites dir/consolidated.safetensors after `edit` changes its header.
void edit_header(const std::string& dir, const std::function<void(json&)>& edit) {
  const std::string path = dir + "/consolidated.safetensors";
  const std::string bytes = test::read_file(path);
  uint64_t n;
  std::memcpy(&n, bytes.data(), 8);
  json h = json::parse(bytes.substr(8, n));
  edit(h);
  test::write_file(path, safetensors_bytes(h, bytes.substr(8 + n)));
}

TEST(ModelBadInput, MissingAndMisshapenTensors) {
  SMOE_REQUIRE_FIXTURES();
  std::string dir = copy_model_b("model_missing");
  edit_header(dir, [](json& h) { h.erase("layers.1.feed_forward.experts.2.w3.weight"); });
  expect_error([&] { load_model(dir); }, {"layers.1.feed_forward.experts.2.w3.weight", "not found"});

  dir = copy_model_b("model_shape");
  edit_header(dir, [](json& h) {
    // Same bytes, different shape: [96, 16] instead of [16, 96].
    h["layers.0.attention.wk.weight"]["shape"] = {96, 16};
  });
  expect_error([&] { load_model(dir); }, {"layers.0.attention.wk.weight", "[96, 16]", "expected [16, 96]"});
}

TEST(ModelBadInput, ConfigProblems) {
  SMOE_REQUIRE_FIXTURES();
  std::string dir = copy_model_b("model_cfg");
  const std::string params = dir + "/params.json";
  json p = json::parse(test::read_file(params));

  json q = p;
  q.erase("dim");
  test::write_file(params, q.dump());
  expect_error([&] { load_model(dir); }, {"params.json", "\"dim\""});

  q = p;
  q["n_heads"] = "six";
  test::write_file(params, q.dump());
  expect_error([&] { load_model(dir); }, {"params.json", "\"n_heads\"", "integer"});

  q = p;
  q["moe"]["num_experts_per_tok"] = 9;
  test::write_file(params, q.dump());
  expect_error([&] { load_model(dir); }, {"params.json", "exceeds"});

  q = p;
  q["n_kv_heads"] = 4;  // 6 heads are not a multiple of 4
  test::write_file(params, q.dump());
  expect_error([&] { load_model(dir); }, {"n_heads", "multiple"});

  q = p;
  q["dim"] = 128;  // weights no longer match
  test::write_file(params, q.dump());
  expect_error([&] { load_model(dir); }, {"shape", "expected"});

  test::write_file(params, "{\"dim\": 96,");
  expect_error([&] { load_model(dir); }, {"params.json", "not valid JSON"});

  fs::remove(params);
  expect_error([&] { load_model(dir); }, {"neither config.json", "params.json"});
  expect_error([&] { load_model(dir + "/nope"); }, {"nope", "no such file"});
}

TEST(ModelBadInput, HfProblems) {
  SMOE_REQUIRE_FIXTURES();
  const std::string dir = test::temp_dir("hf_bad");
  for (const char* f : {"config.json", "model-00001-of-00002.safetensors", "model.safetensors.index.json"})
    fs::copy_file(test::fixture(std::string("models/tiny-mixtral-A/") + f), dir + "/" + f);
  // The second shard is missing.
  expect_error([&] { load_model(dir); }, {"model-00002-of-00002.safetensors", "cannot open"});
  json cfg = json::parse(test::read_file(dir + "/config.json"));
  cfg["architectures"] = {"GPT2LMHeadModel"};
  test::write_file(dir + "/config.json", cfg.dump());
  expect_error([&] { load_model(dir); }, {"config.json", "GPT2LMHeadModel", "not supported"});
  // An index naming a tensor its shard lacks.
  fs::copy_file(test::fixture("models/tiny-mixtral-A/model-00002-of-00002.safetensors"),
                dir + "/model-00002-of-00002.safetensors");
  json index = json::parse(test::read_file(dir + "/model.safetensors.index.json"));
  index["weight_map"]["model.extra.weight"] = "model-00001-of-00002.safetensors";
  test::write_file(dir + "/model.safetensors.index.json", index.dump());
  cfg["architectures"] = {"MixtralForCausalLM"};
  test::write_file(dir + "/config.json", cfg.dump());
  expect_error([&] { load_model(dir); }, {"model.extra.weight", "does not contain"});
  index["weight_map"]["model.extra.weight"] = "../../etc/passwd";
  test::write_file(dir + "/model.safetensors.index.json", index.dump());
  expect_error([&] { load_model(dir); }, {"plain file name"});
}

TEST(CliBadInput, ErrorsExitNonZeroWithAMessage) {
  SMOE_REQUIRE_FIXTURES();
  const std::string b = "'" + test::fixture("models/tiny-mixtral-B") + "'";
  struct Case {
    std::string args, needle;
  };
  const std::vector<Case> cases = {
      {"run -m /nonexistent/model -p hi", "no such file"},
      {"run -m " + b + " -p 'a long prompt that does not fit' --ctx 4", "context"},
      {"run -m " + b + " --prompt-tokens 1,2,5000", "out of range"},
      {"run -m " + b + " --prompt-tokens 1,x,3", "integer token ids"},
      {"run -m " + b + " -p hi --temp -1", "temperature"},
      {"run -m " + b + " -p hi --top-p 0", "top-p"},
      {"run -m " + b + " -p hi -n -5", "-n"},
      {"run -m " + b, "no prompt"},
      {"logits -m " + b + " --tokens 1,2,99999 --out /tmp/x.f32", "out of range"},
      {"logits -m " + b + " --tokens 1 --out /nonexistent/dir/x.f32", "cannot open"},
      {"info -m /nonexistent", "no such file"},
      {"tokenize -m /nonexistent", "no such file"},
  };
  for (const Case& c : cases) {
    test::CmdResult r = test::run_smoe(c.args);
    EXPECT_NE(r.exit_code, 0) << c.args;
    EXPECT_LT(r.exit_code, 128) << c.args << " crashed: " << r.err;
    EXPECT_NE(r.err.find(c.needle), std::string::npos) << c.args << " -> " << r.err;
  }
}

}  // namespace
}  // namespace smoe
