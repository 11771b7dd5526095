// tokenizer_test.cpp: tests of the SentencePiece tokenizer: every stored case of the
// shared fixtures (ids from the sentencepiece library itself and llama.cpp's own
// tokenizer test), the same cases through a GGUF-embedded vocabulary, a self-made GGUF
// vocabulary, and bad inputs (each must give smoe::Error).
#include "tokenizer/tokenizer.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "formats/gguf.h"
#include "test_util.h"

namespace smoe {
namespace {

using test::fixture;

// Checks every case of a fixture file: encode(text) == ids and decode(ids) == decoded.
void check_cases(const Tokenizer& tok, const std::string& cases_file) {
  const auto j = nlohmann::json::parse(test::read_file(fixture(cases_file)));
  EXPECT_EQ(tok.vocab_size(), j.at("vocab_size").get<int32_t>());
  EXPECT_EQ(tok.bos_id(), j.at("bos_id").get<int32_t>());
  EXPECT_EQ(tok.eos_id(), j.at("eos_id").get<int32_t>());
  EXPECT_EQ(tok.unk_id(), j.at("unk_id").get<int32_t>());
  const auto& cases = j.at("cases");
  ASSERT_EQ(cases.size(), 57u);
  for (const auto& c : cases) {
    const std::string text = c.at("text");
    const auto ids = c.at("ids").get<std::vector<int32_t>>();
    EXPECT_EQ(tok.encode(text), ids) << "text: '" << text << "'";
    EXPECT_EQ(tok.decode(ids), c.at("decoded").get<std::string>()) << "text: '" << text << "'";
  }
}

TEST(TokenizerFixtures, MistralSpmModel) {
  SMOE_REQUIRE_FIXTURES();
  auto tok = Tokenizer::from_spm_file(fixture("tokenizers/mistral-v1.model"));
  check_cases(*tok, "tokenizers/mistral-v1-cases.json");
  EXPECT_EQ(tok->id_to_piece(1), "<s>");
  EXPECT_EQ(tok->id_to_piece(13), "<0x0A>");
}

TEST(TokenizerFixtures, ShakespeareSpmModel) {
  SMOE_REQUIRE_FIXTURES();
  auto tok = Tokenizer::from_spm_file(fixture("tokenizers/shakespeare-1k.model"));
  check_cases(*tok, "tokenizers/shakespeare-1k-cases.json");
}

TEST(TokenizerFixtures, MistralCasesThroughGGUFVocabulary) {
  SMOE_REQUIRE_FIXTURES();
  GGUFFile gguf(fixture("models/tiny-mixtral-A-f32.gguf"));
  auto tok = Tokenizer::from_gguf(gguf);
  check_cases(*tok, "tokenizers/mistral-v1-cases.json");
  // Same pieces as the original model file.
  auto spm = Tokenizer::from_spm_file(fixture("tokenizers/mistral-v1.model"));
  ASSERT_EQ(tok->vocab_size(), spm->vocab_size());
  int mismatches = 0;
  for (int32_t id = 0; id < tok->vocab_size(); ++id)
    mismatches += tok->id_to_piece(id) != spm->id_to_piece(id);
  EXPECT_EQ(mismatches, 0);
}

// llama.cpp's tokenizer test: strings separated by "\n__ggml_vocab_test__\n" (each string
// is followed by one separator), expected ids one line per string, no BOS.
TEST(TokenizerFixtures, LlamaCppVocabTest) {
  SMOE_REQUIRE_FIXTURES();
  GGUFFile gguf(fixture("tokenizers/llama-spm-vocab.gguf"));
  auto tok = Tokenizer::from_gguf(gguf);
  EXPECT_EQ(tok->vocab_size(), 32000);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  EXPECT_EQ(tok->unk_id(), 0);

  const std::string inp = test::read_file(fixture("tokenizers/llama-spm-vocab.gguf.inp"));
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::vector<std::string> texts;
  for (size_t pos = 0; pos < inp.size();) {
    const size_t next = inp.find(sep, pos);
    ASSERT_NE(next, std::string::npos) << "the .inp file must end with a separator";
    texts.push_back(inp.substr(pos, next - pos));
    pos = next + sep.size();
  }
  std::vector<std::vector<int32_t>> expected;
  std::istringstream out(test::read_file(fixture("tokenizers/llama-spm-vocab.gguf.out")));
  for (std::string line; std::getline(out, line);) {
    std::istringstream ls(line);
    std::vector<int32_t> ids;
    for (int32_t id; ls >> id;) ids.push_back(id);
    expected.push_back(ids);
  }
  ASSERT_EQ(texts.size(), 46u);
  ASSERT_EQ(expected.size(), texts.size());
  for (size_t k = 0; k < texts.size(); ++k) {
    EXPECT_EQ(tok->encode(texts[k]), expected[k]) << "case " << k << ": '" << texts[k] << "'";
    EXPECT_EQ(tok->decode(expected[k]), texts[k]) << "case " << k;
  }
}

TEST(TokenizerFixtures, BosControlTokensAndRangeChecks) {
  SMOE_REQUIRE_FIXTURES();
  auto tok = Tokenizer::from_spm_file(fixture("tokenizers/mistral-v1.model"));
  auto ids = tok->encode("Hello world", /*add_bos=*/true);
  ASSERT_EQ(ids, (std::vector<int32_t>{1, 22557, 1526}));
  ids.push_back(tok->eos_id());
  EXPECT_EQ(tok->decode(ids), "Hello world");  // BOS/EOS produce no text
  EXPECT_EQ(tok->decode({}), "");
  EXPECT_THROW(tok->decode({1, -1}), Error);
  EXPECT_THROW(tok->decode({32000}), Error);
  EXPECT_THROW(tok->id_to_piece(32000), Error);
  EXPECT_THROW(tok->id_to_piece(-5), Error);
}

// ---------------------------------------------------------------------------------------
// Self-made GGUF vocabularies (no fixtures needed).

void put_u32(std::string& b, uint32_t v) { b.append(reinterpret_cast<const char*>(&v), 4); }
void put_u64(std::string& b, uint64_t v) { b.append(reinterpret_cast<const char*>(&v), 8); }
void put_str(std::string& b, const std::string& s) {
  put_u64(b, s.size());
  b += s;
}

// A metadata-only GGUF file with string, u32, bool and array values.
struct VocabGGUF {
  std::vector<std::string> entries;
  void add(const std::string& key, GGUFType t, const std::string& value) {
    std::string e;
    put_str(e, key);
    put_u32(e, static_cast<uint32_t>(t));
    entries.push_back(e + value);
  }
  void str(const std::string& key, const std::string& s) {
    std::string v;
    put_str(v, s);
    add(key, GGUFType::STRING, v);
  }
  void u32(const std::string& key, uint32_t x) {
    std::string v;
    put_u32(v, x);
    add(key, GGUFType::U32, v);
  }
  void array(const std::string& key, GGUFType elem, size_t n, const std::string& elems) {
    std::string v;
    put_u32(v, static_cast<uint32_t>(elem));
    put_u64(v, n);
    add(key, GGUFType::ARRAY, v + elems);
  }
  std::string path(const std::string& name) const {
    std::string b = "GGUF";
    put_u32(b, 3);
    put_u64(b, 0);
    put_u64(b, entries.size());
    for (const auto& e : entries) b += e;
    const std::string p = test::temp_dir("tok_" + name) + "/" + name + ".gguf";
    test::write_file(p, b);
    return p;
  }
};

// <unk> <s> </s>, the 256 byte pieces, then a few merges.
VocabGGUF tiny_vocab(bool with_types = true, int drop_scores = 0) {
  std::vector<std::string> pieces = {"<unk>", "<s>", "</s>"};
  std::vector<int32_t> types = {2, 3, 3};
  for (int b = 0; b < 256; ++b) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "<0x%02X>", b);
    pieces.push_back(buf);
    types.push_back(6);
  }
  const std::vector<std::string> normal = {
      "\xe2\x96\x81", "h", "e", "l", "o", "\xe2\x96\x81h", "ll", "\xe2\x96\x81he"};
  const std::vector<float> normal_scores = {-10, -11, -12, -13, -14, -1, -2, -3};
  std::vector<float> scores(pieces.size(), 0.0f);
  for (size_t k = 0; k < normal.size(); ++k) {
    pieces.push_back(normal[k]);
    scores.push_back(normal_scores[k]);
    types.push_back(1);
  }
  scores.resize(scores.size() - drop_scores);
  VocabGGUF g;
  g.str("general.architecture", "llama");
  g.str("tokenizer.ggml.model", "llama");
  std::string e;
  for (const auto& p : pieces) put_str(e, p);
  g.array("tokenizer.ggml.tokens", GGUFType::STRING, pieces.size(), e);
  e.clear();
  for (float s : scores) e.append(reinterpret_cast<const char*>(&s), 4);
  g.array("tokenizer.ggml.scores", GGUFType::F32, scores.size(), e);
  if (with_types) {
    e.clear();
    for (int32_t t : types) e.append(reinterpret_cast<const char*>(&t), 4);
    g.array("tokenizer.ggml.token_type", GGUFType::I32, types.size(), e);
  }
  g.u32("tokenizer.ggml.bos_token_id", 1);
  g.u32("tokenizer.ggml.eos_token_id", 2);
  return g;
}

TEST(Tokenizer, SelfMadeGGUFVocabulary) {
  GGUFFile gguf(tiny_vocab().path("tiny"));
  auto tok = Tokenizer::from_gguf(gguf);
  EXPECT_EQ(tok->vocab_size(), 3 + 256 + 8);
  const int32_t base = 3 + 256;  // id of "▁"
  // BPE by score: "▁h" first, then "ll", then "▁he".
  EXPECT_EQ(tok->encode("hello"), (std::vector<int32_t>{base + 7, base + 6, base + 4}));
  // "x" is not in the vocabulary: byte fallback to <0x78>.
  EXPECT_EQ(tok->encode("hex"), (std::vector<int32_t>{base + 7, 3 + 0x78}));
  EXPECT_EQ(tok->encode("hello", true).front(), 1);
  EXPECT_EQ(tok->decode(tok->encode("hello hex")), "hello hex");
  EXPECT_EQ(tok->decode({1, base + 7, 2}), "he");
  EXPECT_EQ(tok->id_to_piece(base + 7), "\xe2\x96\x81he");
  EXPECT_THROW(tok->decode({3 + 256 + 8}), Error);
}

TEST(Tokenizer, AddSpacePrefixFalse) {
  VocabGGUF g = tiny_vocab();
  g.add("tokenizer.ggml.add_space_prefix", GGUFType::BOOL, std::string(1, '\0'));
  GGUFFile gguf(g.path("noprefix"));
  auto tok = Tokenizer::from_gguf(gguf);
  const int32_t base = 3 + 256;
  EXPECT_EQ(tok->encode("hello"), (std::vector<int32_t>{base + 1, base + 2, base + 6, base + 4}));
}

// Expects `f` to throw smoe::Error whose message contains `part`.
template <typename F>
void expect_error(F&& f, const std::string& part) {
  try {
    f();
    ADD_FAILURE() << "expected smoe::Error containing '" << part << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
  }
}

TEST(Tokenizer, RejectsBadInput) {
  const std::string dir = test::temp_dir("tok_bad");
  expect_error([&] { Tokenizer::from_spm_file(dir + "/missing.model"); }, "missing.model");
  test::write_file(dir + "/garbage.model", "this is not a sentencepiece model \x01\x02\xff");
  expect_error([&] { Tokenizer::from_spm_file(dir + "/garbage.model"); }, "garbage.model");
  test::write_file(dir + "/empty.model", "");
  expect_error([&] { Tokenizer::from_spm_file(dir + "/empty.model"); }, "empty.model");

  VocabGGUF no_vocab;
  no_vocab.str("general.architecture", "llama");
  GGUFFile a(no_vocab.path("novocab"));
  expect_error([&] { Tokenizer::from_gguf(a); }, "tokenizer.ggml.model");

  GGUFFile b(tiny_vocab(true, /*drop_scores=*/1).path("mismatch"));
  expect_error([&] { Tokenizer::from_gguf(b); },
               "tokenizer.ggml.scores has 266 entries but tokenizer.ggml.tokens has 267");

  VocabGGUF gpt2;
  gpt2.str("tokenizer.ggml.model", "gpt2");
  GGUFFile c(gpt2.path("gpt2"));
  expect_error([&] { Tokenizer::from_gguf(c); }, "expected 'llama'");

  VocabGGUF no_tokens;
  no_tokens.str("tokenizer.ggml.model", "llama");
  GGUFFile d(no_tokens.path("notokens"));
  expect_error([&] { Tokenizer::from_gguf(d); }, "tokenizer.ggml.tokens");

  VocabGGUF bad_bos = tiny_vocab();
  bad_bos.entries.pop_back();
  bad_bos.entries.pop_back();
  bad_bos.u32("tokenizer.ggml.bos_token_id", 100000);
  GGUFFile e(bad_bos.path("badbos"));
  expect_error([&] { Tokenizer::from_gguf(e); }, "tokenizer.ggml.bos_token_id");
}

TEST(Tokenizer, GGUFWithoutTokenTypesHasNoByteFallback) {
  GGUFFile gguf(tiny_vocab(/*with_types=*/false).path("notypes"));
  auto tok = Tokenizer::from_gguf(gguf);
  const int32_t base = 3 + 256;
  EXPECT_EQ(tok->encode("hello"), (std::vector<int32_t>{base + 7, base + 6, base + 4}));
  EXPECT_EQ(tok->encode("hex"), (std::vector<int32_t>{base + 7, 0}));  // unknown "x"
}

}  // namespace
}  // namespace smoe
