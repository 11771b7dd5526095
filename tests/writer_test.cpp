// writer_test.cpp: the GGUF and safetensors writers (every metadata type, tensor layout,
// errors naming the file) and the model writers: synthetic dense and MoE models (MHA, GQA,
// MQA) saved as GGUF (both expert layouts) and as HF folders load back with identical
// weights and logits; the fixture models re-written in every layout match the reference.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "formats/gguf.h"
#include "formats/gguf_writer.h"
#include "formats/safetensors.h"
#include "formats/safetensors_writer.h"
#include "model/model_writer.h"
#include "model/synth.h"
#include "model/transformer.h"
#include "test_util.h"
#include "tokenizer/spm_vocab.h"
#include "tokenizer/tokenizer.h"

namespace smoe {
namespace {

namespace fs = std::filesystem;
using test::fixture;

// A path in a fresh folder of the running test (created on first use in each test).
std::string tmp(const std::string& name) {
  static std::string test_name, dir;
  const std::string current = ::testing::UnitTest::GetInstance()->current_test_info()->name();
  if (current != test_name) {
    test_name = current;
    dir = test::temp_dir("writer_" + current);
  }
  return dir + "/" + name;
}

template <typename T>
std::vector<uint8_t> bytes_of(const std::vector<T>& v) {
  std::vector<uint8_t> b(v.size() * sizeof(T));
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

// Expects `fn` to throw smoe::Error whose message contains every one of `parts`.
template <typename Fn>
void expect_error(Fn fn, const std::vector<std::string>& parts) {
  try {
    fn();
    ADD_FAILURE() << "expected smoe::Error containing '" << parts.at(0) << "'";
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const auto& part : parts)
      EXPECT_NE(msg.find(part), std::string::npos) << "missing '" << part << "' in: " << msg;
  }
}

// ---------------------------------------------------------------------------------------
// GGUF writer.

TEST(GGUFWriter, EveryMetadataTypeRoundTrips) {
  GGUFWriter w;
  w.set_string("general.architecture", "llama");
  w.set_u8("t.u8", 255);
  w.set_i8("t.i8", -128);
  w.set_u16("t.u16", 65535);
  w.set_i16("t.i16", -32768);
  w.set_u32("t.u32", 4000000000u);
  w.set_i32("t.i32", std::numeric_limits<int32_t>::min());
  w.set_u64("t.u64", std::numeric_limits<uint64_t>::max());
  w.set_i64("t.i64", std::numeric_limits<int64_t>::min());
  w.set_f32("t.f32", 1e-5f);
  w.set_f64("t.f64", -0.1);
  w.set_bool("t.true", true);
  w.set_bool("t.false", false);
  w.set_string("t.str", std::string("h\xc3\xa9llo\0x", 8));
  w.set_string("t.empty", "");
  w.set_array("t.au8", std::vector<uint8_t>{0, 7, 255});
  w.set_array("t.ai8", std::vector<int8_t>{-128, 0, 127});
  w.set_array("t.au16", std::vector<uint16_t>{1, 65535});
  w.set_array("t.ai16", std::vector<int16_t>{-32768, 5});
  w.set_array("t.au32", std::vector<uint32_t>{4000000000u});
  w.set_array("t.ai32", std::vector<int32_t>{-7, 3, 6});
  w.set_array("t.au64", std::vector<uint64_t>{1ull << 50});
  w.set_array("t.ai64", std::vector<int64_t>{-(1ll << 50), 9});
  w.set_array("t.af32", std::vector<float>{0.5f, -2.25f, 1e-30f});
  w.set_array("t.af64", std::vector<double>{0.1, -1e300});
  w.set_array("t.aempty", std::vector<float>{});
  w.set_bool_array("t.abool", {true, false, true});
  w.set_string_array("t.astr", {"a", "", "\xe2\x96\x81the"});
  w.set_u32("t.replaced", 1);
  w.set_u32("t.replaced", 2);  // replaces the value, keeps one entry
  const std::string path = tmp("meta.gguf");
  w.write(path);

  GGUFFile f(path);
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.metadata().size(), 29u);
  EXPECT_EQ(f.alignment(), 32u);
  EXPECT_FALSE(f.has("general.alignment"));  // the default is not recorded, as llama.cpp does
  EXPECT_EQ(f.get_string("general.architecture"), "llama");
  auto type = [&](const char* k) { return f.find(k)->type; };
  EXPECT_EQ(type("t.u8"), GGUFType::U8);
  EXPECT_EQ(f.get_uint("t.u8"), 255u);
  EXPECT_EQ(type("t.i8"), GGUFType::I8);
  EXPECT_EQ(f.find("t.i8")->i, -128);
  EXPECT_EQ(type("t.u16"), GGUFType::U16);
  EXPECT_EQ(f.get_uint("t.u16"), 65535u);
  EXPECT_EQ(type("t.i16"), GGUFType::I16);
  EXPECT_EQ(f.find("t.i16")->i, -32768);
  EXPECT_EQ(type("t.u32"), GGUFType::U32);
  EXPECT_EQ(f.get_uint("t.u32"), 4000000000u);
  EXPECT_EQ(type("t.i32"), GGUFType::I32);
  EXPECT_EQ(f.find("t.i32")->i, std::numeric_limits<int32_t>::min());
  EXPECT_EQ(type("t.u64"), GGUFType::U64);
  EXPECT_EQ(f.get_uint("t.u64"), std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(type("t.i64"), GGUFType::I64);
  EXPECT_EQ(f.find("t.i64")->i, std::numeric_limits<int64_t>::min());
  EXPECT_EQ(type("t.f32"), GGUFType::F32);
  EXPECT_EQ(static_cast<float>(f.get_float("t.f32")), 1e-5f);
  EXPECT_EQ(type("t.f64"), GGUFType::F64);
  EXPECT_EQ(f.get_float("t.f64"), -0.1);
  EXPECT_TRUE(f.get_bool("t.true"));
  EXPECT_FALSE(f.get_bool("t.false"));
  EXPECT_EQ(f.get_string("t.str"), std::string("h\xc3\xa9llo\0x", 8));
  EXPECT_EQ(f.get_string("t.empty"), "");
  auto arr = [&](const char* k, GGUFType elem) {
    const GGUFValue* v = f.find(k);
    EXPECT_EQ(v->type, GGUFType::ARRAY) << k;
    EXPECT_EQ(v->elem_type, elem) << k;
    return v;
  };
  EXPECT_EQ(arr("t.au8", GGUFType::U8)->ints, (std::vector<int64_t>{0, 7, 255}));
  EXPECT_EQ(arr("t.ai8", GGUFType::I8)->ints, (std::vector<int64_t>{-128, 0, 127}));
  EXPECT_EQ(arr("t.au16", GGUFType::U16)->ints, (std::vector<int64_t>{1, 65535}));
  EXPECT_EQ(arr("t.ai16", GGUFType::I16)->ints, (std::vector<int64_t>{-32768, 5}));
  EXPECT_EQ(arr("t.au32", GGUFType::U32)->ints, (std::vector<int64_t>{4000000000ll}));
  EXPECT_EQ(arr("t.ai32", GGUFType::I32)->ints, (std::vector<int64_t>{-7, 3, 6}));
  EXPECT_EQ(arr("t.au64", GGUFType::U64)->ints, (std::vector<int64_t>{1ll << 50}));
  EXPECT_EQ(arr("t.ai64", GGUFType::I64)->ints, (std::vector<int64_t>{-(1ll << 50), 9}));
  EXPECT_EQ(arr("t.af32", GGUFType::F32)->nums,
            (std::vector<double>{0.5, -2.25, static_cast<double>(1e-30f)}));
  EXPECT_EQ(arr("t.af64", GGUFType::F64)->nums, (std::vector<double>{0.1, -1e300}));
  EXPECT_EQ(arr("t.aempty", GGUFType::F32)->array_len, 0u);
  EXPECT_EQ(arr("t.abool", GGUFType::BOOL)->ints, (std::vector<int64_t>{1, 0, 1}));
  EXPECT_EQ(arr("t.astr", GGUFType::STRING)->strs,
            (std::vector<std::string>{"a", "", "\xe2\x96\x81the"}));
  EXPECT_EQ(f.get_uint("t.replaced"), 2u);
  EXPECT_TRUE(f.tensor_infos().empty());
}

// Tensors of every type, from memory, chunks and a fill callback: shapes come back
// (ne[] reversed on disk), offsets and the data section are aligned, bytes are equal.
TEST(GGUFWriter, TensorsLayoutAndData) {
  std::vector<float> a = {1, 2, 3, 4, 5, 6};                                        // [2, 3]
  std::vector<uint16_t> h = {f32_to_f16(0.5f), f32_to_f16(-1.f), f32_to_f16(3.f)};  // [3]
  std::vector<uint16_t> bf(2 * 3 * 4);  // [2, 3, 4] in two chunks
  for (size_t k = 0; k < bf.size(); ++k) bf[k] = f32_to_bf16(static_cast<float>(k));
  std::vector<uint8_t> q8(2 * sizeof(BlockQ8_0));  // [2, 32]
  for (size_t k = 0; k < q8.size(); ++k) q8[k] = static_cast<uint8_t>(k * 7);
  std::vector<uint8_t> q4(2 * sizeof(BlockQ4_0), 0x5a);  // [1, 64], via fill

  for (uint32_t alignment : {32u, 64u}) {
    SCOPED_TRACE(alignment);
    GGUFWriter w;
    w.set_string("general.architecture", "llama");
    w.set_alignment(alignment);
    const std::vector<uint8_t> ab = bytes_of(a), hb = bytes_of(h), bfb = bytes_of(bf);
    w.add_tensor("a", DType::F32, {2, 3}, ab.data(), ab.size());
    w.add_tensor("h", DType::F16, {3}, hb.data(), hb.size());
    w.add_tensor(
        "bf", DType::BF16, {2, 3, 4},
        {std::span<const uint8_t>(bfb.data(), 24), std::span<const uint8_t>(bfb.data() + 24, 24)});
    w.add_tensor("q8", DType::Q8_0, {2, 32}, q8.data(), q8.size());
    w.add_tensor("q4", DType::Q4_0, {1, 64}, [&](uint8_t* dst, size_t n) {
      ASSERT_EQ(n, q4.size());
      std::memcpy(dst, q4.data(), n);
    });
    const std::string path = tmp("t" + std::to_string(alignment) + ".gguf");
    w.write(path);

    const std::string raw = test::read_file(path);
    ASSERT_GE(raw.size(), 24u);
    EXPECT_EQ(raw.substr(0, 4), "GGUF");
    uint32_t version;
    uint64_t n_tensors, n_kv;
    std::memcpy(&version, raw.data() + 4, 4);
    std::memcpy(&n_tensors, raw.data() + 8, 8);
    std::memcpy(&n_kv, raw.data() + 16, 8);
    EXPECT_EQ(version, 3u);
    EXPECT_EQ(n_tensors, 5u);
    EXPECT_EQ(n_kv, alignment == 32 ? 1u : 2u);
    EXPECT_EQ(raw.size() % alignment, 0u);  // the last tensor is padded too

    GGUFFile f(path);
    EXPECT_EQ(f.alignment(), alignment);
    if (alignment != 32) {
      EXPECT_EQ(f.find("general.alignment")->type, GGUFType::U32);
    }
    EXPECT_EQ(f.data_offset() % alignment, 0u);
    ASSERT_EQ(f.tensor_infos().size(), 5u);
    EXPECT_EQ(f.find_tensor("a")->ne, (std::vector<int64_t>{3, 2}));
    EXPECT_EQ(f.find_tensor("bf")->ne, (std::vector<int64_t>{4, 3, 2}));
    EXPECT_EQ(f.find_tensor("q8")->ne, (std::vector<int64_t>{32, 2}));
    EXPECT_EQ(f.find_tensor("q8")->ggml_type, 8u);
    EXPECT_EQ(f.find_tensor("bf")->ggml_type, 30u);
    uint64_t expected_offset = 0;
    for (const GGUFTensorInfo& info : f.tensor_infos()) {
      EXPECT_EQ(info.offset, expected_offset) << info.name;
      expected_offset = (info.offset + info.nbytes + alignment - 1) / alignment * alignment;
    }
    auto same = [&](const char* name, const void* want, size_t n, std::vector<int64_t> shape) {
      TensorView v = f.tensor(name);
      EXPECT_EQ(v.shape, shape) << name;
      ASSERT_EQ(v.nbytes, n) << name;
      EXPECT_EQ(std::memcmp(v.data, want, n), 0) << name;
    };
    same("a", a.data(), 24, {2, 3});
    same("h", h.data(), 6, {3});
    same("bf", bf.data(), 48, {2, 3, 4});
    same("q8", q8.data(), q8.size(), {2, 32});
    same("q4", q4.data(), q4.size(), {1, 64});
  }
}

TEST(GGUFWriter, RejectsBadTensorsAndKeys) {
  GGUFWriter w;
  std::vector<uint8_t> buf(4096);
  w.add_tensor("x", DType::F32, {2, 2}, buf.data(), 16);
  expect_error([&] { w.add_tensor("x", DType::F32, {1}, buf.data(), 4); }, {"'x'", "twice"});
  expect_error(
      [&] {
        w.add_tensor("y", DType::F32, {2, 2}, buf.data(), 12);
      },
      {"'y'", "needs 16 bytes, but 12 were given"});
  expect_error(
      [&] {
        w.add_tensor("z", DType::Q8_0, {2, 16}, buf.data(), 34);
      },
      {"'z'", "whole number of blocks of 32"});
  expect_error(
      [&] {
        w.add_tensor("d", DType::F32, {1, 1, 1, 1, 1}, buf.data(), 4);
      },
      {"'d'", "1 to 4 dimensions"});
  expect_error([&] { w.add_tensor("e", DType::F32, {0, 4}, buf.data(), 0); }, {"'e'", ">= 1"});
  expect_error([&] { w.add_tensor(std::string(64, 'n'), DType::F32, {1}, buf.data(), 4); },
               {"64 bytes, expected 1 to 63"});
  expect_error([&] { w.set_u32("", 1); }, {"metadata key"});
  expect_error([&] { w.set_u64("general.alignment", 64); }, {"set_alignment"});
  expect_error([&] { w.set_alignment(48); }, {"48", "power of two"});
  EXPECT_EQ(w.tensor_count(), 1u);  // the rejected tensors were not added
}

TEST(GGUFWriter, ErrorsNameTheFile) {
  GGUFWriter w;
  w.set_string("general.architecture", "llama");
  const std::string missing = test::temp_dir("writer_missing") + "/no/such/dir/m.gguf";
  expect_error([&] { w.write(missing); }, {missing, "does not exist"});
  EXPECT_FALSE(fs::exists(missing));
  if (fs::exists("/dev/full")) {  // every write fails with "No space left on device"
    std::vector<float> big(1 << 20, 1.f);
    w.add_tensor("big", DType::F32, {1 << 20}, reinterpret_cast<const uint8_t*>(big.data()),
                 big.size() * 4);
    expect_error([&] { w.write("/dev/full"); }, {"GGUF /dev/full", "write failed"});
    EXPECT_TRUE(fs::exists("/dev/full"));  // a device is never removed
  }
}

// ---------------------------------------------------------------------------------------
// Safetensors writer.

TEST(SafetensorsWriter, RoundTrip) {
  std::vector<float> a = {1.5f, -2, 3, 4, 5, 6};
  std::vector<uint16_t> h = {f32_to_f16(0.25f), f32_to_f16(-8.f)};
  std::vector<uint16_t> b = {f32_to_bf16(1.f), f32_to_bf16(2.f), f32_to_bf16(3.f)};
  const std::vector<uint8_t> ab = bytes_of(a), hb = bytes_of(h), bb = bytes_of(b);
  SafetensorsWriter w;
  w.set_metadata("format", "pt");
  w.add_tensor(
      "a.weight", DType::F32, {3, 2},
      {std::span<const uint8_t>(ab.data(), 8), std::span<const uint8_t>(ab.data() + 8, 16)});
  w.add_tensor("h", DType::F16, {2}, hb.data(), hb.size());
  w.add_tensor("b", DType::BF16, {1, 3}, bb.data(), bb.size());
  w.add_tensor("empty", DType::F32, {0, 4}, nullptr, 0);
  EXPECT_EQ(w.data_bytes(), 34u);
  const std::string path = tmp("t.safetensors");
  w.write(path);

  const std::string raw = test::read_file(path);
  uint64_t n;
  std::memcpy(&n, raw.data(), 8);
  EXPECT_EQ(n % 8, 0u);
  ASSERT_EQ(raw.size(), 8 + n + 34);
  const std::string header = raw.substr(8, n);
  EXPECT_EQ(header.find_last_not_of(' '), header.rfind('}'));  // padded with spaces
  const auto j = nlohmann::json::parse(header);
  EXPECT_EQ(j["__metadata__"]["format"], "pt");
  EXPECT_EQ(j["a.weight"]["data_offsets"], nlohmann::json({0, 24}));
  EXPECT_EQ(j["h"]["data_offsets"], nlohmann::json({24, 28}));
  EXPECT_EQ(j["b"]["data_offsets"], nlohmann::json({28, 34}));
  EXPECT_EQ(j["b"]["dtype"], "BF16");

  SafetensorsFile f(path);
  EXPECT_EQ(f.metadata().at("format"), "pt");
  ASSERT_EQ(f.tensors().size(), 4u);
  const TensorView& ta = f.tensors().at("a.weight");
  EXPECT_EQ(ta.dtype, DType::F32);
  EXPECT_EQ(ta.shape, (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(std::memcmp(ta.data, a.data(), 24), 0);
  EXPECT_EQ(f.tensors().at("h").dtype, DType::F16);
  EXPECT_EQ(std::memcmp(f.tensors().at("h").data, h.data(), 4), 0);
  EXPECT_EQ(f.tensors().at("b").shape, (std::vector<int64_t>{1, 3}));
  EXPECT_EQ(std::memcmp(f.tensors().at("b").data, b.data(), 6), 0);
  EXPECT_EQ(f.tensors().at("empty").nbytes, 0u);
}

TEST(SafetensorsWriter, Errors) {
  SafetensorsWriter w;
  std::vector<uint8_t> buf(64);
  expect_error(
      [&] {
        w.add_tensor("q", DType::Q8_0, {1, 32}, buf.data(), 34);
      },
      {"'q'", "q8_0", "f32, f16 or bf16"});
  w.add_tensor("x", DType::F32, {2}, buf.data(), 8);
  expect_error([&] { w.add_tensor("x", DType::F32, {2}, buf.data(), 8); }, {"'x'", "twice"});
  expect_error([&] { w.add_tensor("y", DType::F16, {3}, buf.data(), 8); },
               {"'y'", "needs 6 bytes, but 8"});
  const std::string missing = test::temp_dir("writer_missing_st") + "/nope/m.safetensors";
  expect_error([&] { w.write(missing); }, {"safetensors " + missing, "does not exist"});
}

// ---------------------------------------------------------------------------------------
// Model writers on synthetic models.

ModelConfig small_config(int64_t n_heads, int64_t n_kv_heads, bool moe) {
  ModelConfig c = test::tiny_moe_config();
  c.arch = moe ? "mixtral" : "mistral";
  c.n_heads = n_heads;
  c.n_kv_heads = n_kv_heads;
  c.vocab_size = 67;
  c.has_router = moe;
  c.n_experts = moe ? 4 : 1;
  c.n_experts_used = moe ? 2 : 1;
  c.max_seq_len = 128;
  c.norm_eps = 1e-6f;
  return c;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double d = 0;
  for (size_t k = 0; k < std::min(a.size(), b.size()); ++k)
    d = std::max(d, static_cast<double>(std::fabs(a[k] - b[k])));
  return d;
}

void expect_same_config(const ModelConfig& a, const ModelConfig& b) {
  EXPECT_EQ(a.arch, b.arch);
  EXPECT_EQ(a.dim, b.dim);
  EXPECT_EQ(a.n_layers, b.n_layers);
  EXPECT_EQ(a.n_heads, b.n_heads);
  EXPECT_EQ(a.n_kv_heads, b.n_kv_heads);
  EXPECT_EQ(a.head_dim, b.head_dim);
  EXPECT_EQ(a.hidden_dim, b.hidden_dim);
  EXPECT_EQ(a.vocab_size, b.vocab_size);
  EXPECT_EQ(a.n_experts, b.n_experts);
  EXPECT_EQ(a.n_experts_used, b.n_experts_used);
  EXPECT_EQ(a.has_router, b.has_router);
  EXPECT_EQ(a.norm_eps, b.norm_eps);
  EXPECT_EQ(a.rope_theta, b.rope_theta);
  EXPECT_EQ(a.max_seq_len, b.max_seq_len);
  EXPECT_EQ(a.sliding_window, b.sliding_window);
  EXPECT_EQ(a.tie_embeddings, b.tie_embeddings);
  EXPECT_EQ(a.bos_id, b.bos_id);
  EXPECT_EQ(a.eos_id, b.eos_id);
}

// Same weights (dtype, shape, bytes), in smoe's own (interleaved q/k) order.
void expect_same_weights(const Model& a, const Model& b) {
  const auto ta = a.all_tensors(), tb = b.all_tensors();
  ASSERT_EQ(ta.size(), tb.size());
  for (size_t k = 0; k < ta.size(); ++k) {
    SCOPED_TRACE(tb[k]->name);
    EXPECT_EQ(ta[k]->dtype, tb[k]->dtype);
    EXPECT_EQ(ta[k]->shape, tb[k]->shape);
    ASSERT_EQ(ta[k]->nbytes, tb[k]->nbytes);
    EXPECT_EQ(std::memcmp(ta[k]->data, tb[k]->data, ta[k]->nbytes), 0);
  }
}

struct Shape {
  const char* name;
  int64_t heads, kv_heads;
  bool moe, tied;
  int64_t sliding_window;
};

TEST(ModelWriter, SyntheticModelsRoundTripExactly) {
  for (const Shape& s : {Shape{"dense", 4, 2, false, false, 0}, Shape{"mha", 4, 4, true, false, 0},
                         Shape{"gqa", 4, 2, true, true, 0}, Shape{"mqa", 4, 1, true, false, 64}}) {
    SCOPED_TRACE(s.name);
    ModelConfig c = small_config(s.heads, s.kv_heads, s.moe);
    c.tie_embeddings = s.tied;
    c.sliding_window = s.sliding_window;
    std::unique_ptr<Model> m = synth_model(c, 42);
    const std::vector<float> want = test::prompt_logits(*m);
    const std::string dir = test::temp_dir(std::string("writer_synth_") + s.name);

    for (bool per_expert : {false, true}) {
      SCOPED_TRACE(per_expert ? "gguf, one tensor per expert" : "gguf, stacked experts");
      const std::string path = dir + (per_expert ? "/old.gguf" : "/new.gguf");
      GGUFSaveOptions o;
      o.per_expert_tensors = per_expert;
      save_gguf(*m, path, o);
      GGUFFile g(path);
      EXPECT_EQ(g.get_string("general.architecture"), "llama");
      EXPECT_EQ(g.has("llama.expert_count"), s.moe);
      EXPECT_EQ(g.has("llama.expert_used_count"), s.moe);
      EXPECT_EQ(g.find_tensor("output.weight") != nullptr, !s.tied);
      EXPECT_EQ(g.find_tensor("blk.1.ffn_gate_inp.weight") != nullptr, s.moe);
      EXPECT_EQ(g.find_tensor("blk.1.ffn_up_exps.weight") != nullptr, s.moe && !per_expert);
      EXPECT_EQ(g.find_tensor("blk.1.ffn_up.3.weight") != nullptr, s.moe && per_expert);
      EXPECT_EQ(g.find_tensor("blk.1.ffn_up.weight") != nullptr, !s.moe);
      if (s.moe && !per_expert) {
        EXPECT_EQ(g.tensor("blk.0.ffn_down_exps.weight").shape,
                  (std::vector<int64_t>{4, c.dim, c.hidden_dim}));
      }
      std::unique_ptr<Model> back = load_model(path);
      expect_same_config(m->config, back->config);
      expect_same_weights(*m, *back);
      EXPECT_LE(max_abs_diff(want, test::prompt_logits(*back)), 1e-5);
    }

    SCOPED_TRACE("hf");
    const std::string hf = dir + "/hf";
    save_hf(*m, hf);
    const auto config = nlohmann::json::parse(test::read_file(hf + "/config.json"));
    EXPECT_EQ(config["architectures"][0], s.moe ? "MixtralForCausalLM" : "MistralForCausalLM");
    EXPECT_EQ(config.contains("num_local_experts"), s.moe);
    EXPECT_EQ(config["rms_norm_eps"].get<double>(), 1e-6);
    EXPECT_FALSE(fs::exists(hf + "/tokenizer.model"));
    // The file holds q/k rows in HF's rotate-half order: within each head, the even RoPE
    // components, then the odd ones.
    SafetensorsFile st(hf + "/model.safetensors");
    EXPECT_EQ(st.tensors().count("lm_head.weight"), s.tied ? 0u : 1u);
    EXPECT_EQ(st.tensors().count("model.layers.0.mlp.up_proj.weight"), s.moe ? 0u : 1u);
    for (int64_t l = 0; l < c.n_layers; ++l) {
      const LayerWeights& lw = m->layers[static_cast<size_t>(l)];
      const std::string b = "model.layers." + std::to_string(l) + ".self_attn.";
      for (auto [hf_name, ours, heads] : {std::tuple{b + "q_proj.weight", &lw.wq, c.n_heads},
                                          std::tuple{b + "k_proj.weight", &lw.wk, c.n_kv_heads}}) {
        const TensorView& t = st.tensors().at(hf_name);
        const size_t rb = static_cast<size_t>(c.dim) * 4;
        for (int64_t h = 0; h < heads; ++h)
          for (int64_t i = 0; i < c.head_dim; ++i) {
            const int64_t hf_row = h * c.head_dim + i;
            const int64_t our_row =
                h * c.head_dim + (i < c.head_dim / 2 ? 2 * i : 2 * (i - c.head_dim / 2) + 1);
            EXPECT_EQ(std::memcmp(t.data + hf_row * rb, ours->data + our_row * rb, rb), 0)
                << hf_name << " row " << hf_row;
          }
      }
    }
    // ... and the loader un-permutes them back to the same weights and logits.
    std::unique_ptr<Model> back = load_model(hf);
    expect_same_config(m->config, back->config);
    expect_same_weights(*m, *back);
    EXPECT_LE(max_abs_diff(want, test::prompt_logits(*back)), 1e-5);
    // And saving the loaded HF model again gives the same file.
    save_hf(*back, dir + "/hf2");
    EXPECT_EQ(test::read_file(hf + "/model.safetensors"),
              test::read_file(dir + "/hf2/model.safetensors"));
  }
}

TEST(ModelWriter, WritingIntoAMissingFolderNamesThePath) {
  std::unique_ptr<Model> m = synth_model(small_config(4, 2, true), 1);
  const std::string base = test::temp_dir("writer_missing_model");
  const std::string gguf = base + "/no/such/m.gguf";
  expect_error([&] { save_gguf(*m, gguf); }, {gguf, "does not exist"});
  const std::string hf = base + "/no/such/hf";
  expect_error([&] { save_hf(*m, hf); }, {hf, "does not exist"});
  EXPECT_FALSE(fs::exists(base + "/no"));
  // A missing last folder is created.
  save_hf(*m, base + "/new_hf");
  EXPECT_TRUE(fs::exists(base + "/new_hf/model.safetensors"));
  EXPECT_TRUE(fs::exists(base + "/new_hf/config.json"));
}

// A hand-made SentencePiece ModelProto (protobuf wire format).
struct Proto {
  std::string b;
  void varint(uint64_t v) {
    for (; v >= 0x80; v >>= 7) b += static_cast<char>((v & 0x7f) | 0x80);
    b += static_cast<char>(v);
  }
  Proto& num(uint32_t field, uint64_t v) {
    varint(field << 3);
    varint(v);
    return *this;
  }
  Proto& bytes(uint32_t field, const std::string& s) {
    varint(field << 3 | 2);
    varint(s.size());
    b += s;
    return *this;
  }
  Proto& f32(uint32_t field, float f) {
    varint(field << 3 | 5);
    b.append(reinterpret_cast<const char*>(&f), 4);
    return *this;
  }
};

std::string piece(const std::string& p, float score, int type) {
  Proto x;
  x.bytes(1, p).f32(2, score);
  if (type != 1) x.num(3, static_cast<uint64_t>(type));  // NORMAL is the default
  return x.b;
}

TEST(SpmVocab, ParsesModelProtoAndGgufRejectsNonBpeTokenizers) {
  Proto trainer, norm, model;
  trainer.num(3, 1).num(99, 5).num(43, 3);  // unigram, an unknown field, pad id 3
  norm.bytes(1, "identity").num(4, 0);      // remove_extra_whitespaces off
  model.bytes(1, piece("<unk>", 0, 2)).bytes(1, piece("<s>", 0, 3)).bytes(1, piece("</s>", 0, 3));
  model.bytes(1, piece("<pad>", 0, 3))
      .bytes(1, piece("\xe2\x96\x81"
                      "a",
                      -1.5f, 1));
  model.bytes(1, piece("b", -2.f, 1)).bytes(2, trainer.b).bytes(3, norm.b);
  SpmVocab v = parse_spm_vocab(model.b, "hand-made");
  EXPECT_EQ(v.pieces, (std::vector<std::string>{"<unk>", "<s>", "</s>", "<pad>",
                                                "\xe2\x96\x81"
                                                "a",
                                                "b"}));
  EXPECT_EQ(v.scores, (std::vector<float>{0, 0, 0, 0, -1.5f, -2.f}));
  EXPECT_EQ(v.types, (std::vector<int32_t>{2, 3, 3, 3, 1, 1}));
  EXPECT_EQ(v.model_type, 1);
  EXPECT_EQ(v.pad_id, 3);
  EXPECT_EQ(v.unk_id, 0);  // proto defaults
  EXPECT_EQ(v.bos_id, 1);
  EXPECT_TRUE(v.add_dummy_prefix);
  EXPECT_FALSE(v.remove_extra_whitespaces);
  expect_error([&] { parse_spm_vocab(model.b.substr(0, model.b.size() - 3), "cut.model"); },
               {"cut.model", "malformed"});
  expect_error([&] { parse_spm_vocab("", "empty.model"); }, {"empty.model", "no pieces"});

  // A unigram tokenizer cannot go into GGUF's "llama" (BPE) vocabulary.
  const std::string path = tmp("unigram.model");
  test::write_file(path, model.b);
  std::unique_ptr<Model> m = synth_model(small_config(4, 2, true), 3);
  m->tokenizer = Tokenizer::from_spm_file(path);
  expect_error([&] { save_gguf(*m, tmp("u.gguf")); }, {"u.gguf", "type 1", "embed_vocab"});
  GGUFSaveOptions o;
  o.embed_vocab = false;
  save_gguf(*m, tmp("u.gguf"), o);
  EXPECT_FALSE(GGUFFile(tmp("u.gguf")).has("tokenizer.ggml.tokens"));
  // The HF folder gets the tokenizer.model bytes.
  save_hf(*m, tmp("u-hf"));
  std::unique_ptr<Model> back = load_model(tmp("u-hf"));
  ASSERT_TRUE(back->tokenizer);
  EXPECT_EQ(back->tokenizer->encode("ab a"), m->tokenizer->encode("ab a"));
  EXPECT_EQ(back->tokenizer->serialized_model(), m->tokenizer->serialized_model());
}

// ---------------------------------------------------------------------------------------
// Fixture models.

struct RefCheck {
  double max_abs_diff = 0;
  int64_t positions = 0;
};

// Logits of `model` against a fixture folder's reference logits at the stored positions.
RefCheck check_reference(const Model& model, const std::string& ref_dir) {
  const auto ref = nlohmann::json::parse(test::read_file(ref_dir + "/reference.json"));
  const std::string raw = test::read_file(ref_dir + "/reference_logits.f32");
  std::vector<float> want(raw.size() / 4);
  std::memcpy(want.data(), raw.data(), want.size() * 4);
  const int64_t V = ref["vocab_size"].get<int64_t>();
  EXPECT_EQ(model.config.vocab_size, V);
  RefCheck r;
  for (const auto& cs : ref["cases"]) {
    const auto tokens = cs["tokens"].get<std::vector<int32_t>>();
    Session s(model, static_cast<int64_t>(tokens.size()));
    std::vector<float> logits;
    s.forward(tokens, true, logits);
    const auto positions = cs["logit_positions"].get<std::vector<int64_t>>();
    const int64_t offset = cs["logits_offset_floats"].get<int64_t>();
    for (size_t i = 0; i < positions.size(); ++i, ++r.positions)
      for (int64_t v = 0; v < V; ++v)
        r.max_abs_diff =
            std::max(r.max_abs_diff, static_cast<double>(std::fabs(want[offset + i * V + v] -
                                                                   logits[positions[i] * V + v])));
  }
  return r;
}

void expect_same_tokenizer(const Model& a, const Model& b) {
  ASSERT_TRUE(a.tokenizer && b.tokenizer);
  EXPECT_EQ(a.tokenizer->vocab_size(), b.tokenizer->vocab_size());
  EXPECT_EQ(a.tokenizer->bos_id(), b.tokenizer->bos_id());
  EXPECT_EQ(a.tokenizer->eos_id(), b.tokenizer->eos_id());
  for (const char* text :
       {"Hello world", " two  spaces\nand a newline", "caf\xc3\xa9 \xe2\x82\xac 12345",
        "ROMEO:\nBut soft, what light through yonder window breaks?"})
    EXPECT_EQ(a.tokenizer->encode(text, true), b.tokenizer->encode(text, true)) << text;
  for (int32_t id = 0; id < a.tokenizer->vocab_size(); id += 97)
    EXPECT_EQ(a.tokenizer->id_to_piece(id), b.tokenizer->id_to_piece(id));
}

// The loader's support for the older GGUF layout (one tensor per expert), on llama.cpp's
// own file re-written that way.
TEST(ModelWriterFixtures, OldPerExpertGgufLayoutMatchesReference) {
  SMOE_REQUIRE_FIXTURES();
  std::unique_ptr<Model> src = load_model(fixture("models/tiny-mixtral-A-f32.gguf"));
  const std::string path = tmp("old-layout.gguf");
  GGUFSaveOptions o;
  o.per_expert_tensors = true;
  o.name = "Tiny Mixtral A";
  save_gguf(*src, path, o);
  {
    GGUFFile g(path);
    EXPECT_EQ(g.find_tensor("blk.0.ffn_gate_exps.weight"), nullptr);
    EXPECT_EQ(g.tensor("blk.1.ffn_down.7.weight").shape, (std::vector<int64_t>{32, 64}));
    EXPECT_EQ(g.tensor("blk.0.ffn_gate.0.weight").shape, (std::vector<int64_t>{64, 32}));
    EXPECT_EQ(g.tensor_infos().size(), 3u + 2 * (7 + 3 * 8));
    EXPECT_EQ(g.get_string("general.name"), "Tiny Mixtral A");
    EXPECT_EQ(g.get_uint("general.file_type"), 0u);
  }
  std::unique_ptr<Model> m = load_model(path);
  RefCheck r = check_reference(*m, fixture("models/tiny-mixtral-A"));
  EXPECT_GT(r.positions, 0);
  EXPECT_LT(r.max_abs_diff, 1e-3);
  expect_same_weights(*src, *m);
  expect_same_tokenizer(*src, *m);
}

// llama.cpp's files re-written in the current layout hold the same tensors and metadata
// (quantized ones included); a quantized model cannot be saved as safetensors.
TEST(ModelWriterFixtures, GgufRewriteKeepsTensorsAndVocabulary) {
  SMOE_REQUIRE_FIXTURES();
  for (const char* type : {"f32", "q8_0"}) {
    SCOPED_TRACE(type);
    const std::string orig_path = fixture(std::string("models/tiny-mixtral-A-") + type + ".gguf");
    std::unique_ptr<Model> src = load_model(orig_path);
    const std::string path = tmp(std::string(type) + ".gguf");
    save_gguf(*src, path);
    GGUFFile orig(orig_path), g(path);
    ASSERT_EQ(g.tensor_infos().size(), orig.tensor_infos().size());
    for (const GGUFTensorInfo& info : orig.tensor_infos()) {
      SCOPED_TRACE(info.name);
      const GGUFTensorInfo* w = g.find_tensor(info.name);
      ASSERT_NE(w, nullptr);
      EXPECT_EQ(w->ne, info.ne);
      EXPECT_EQ(w->ggml_type, info.ggml_type);
      TensorView a = orig.tensor(info.name), b = g.tensor(info.name);
      ASSERT_EQ(a.nbytes, b.nbytes);
      EXPECT_EQ(std::memcmp(a.data, b.data, a.nbytes), 0);
    }
    for (const char* key :
         {"llama.block_count", "llama.context_length", "llama.embedding_length",
          "llama.feed_forward_length", "llama.attention.head_count",
          "llama.attention.head_count_kv", "llama.expert_count", "llama.expert_used_count",
          "llama.attention.key_length", "llama.vocab_size", "llama.rope.dimension_count",
          "general.file_type", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"})
      EXPECT_EQ(g.get_uint(key), orig.get_uint(key)) << key;
    for (const char* key : {"llama.rope.freq_base", "llama.attention.layer_norm_rms_epsilon"})
      EXPECT_EQ(g.get_float(key), orig.get_float(key)) << key;
    EXPECT_EQ(g.find("tokenizer.ggml.tokens")->strs, orig.find("tokenizer.ggml.tokens")->strs);
    EXPECT_EQ(g.find("tokenizer.ggml.scores")->nums, orig.find("tokenizer.ggml.scores")->nums);
    EXPECT_EQ(g.find("tokenizer.ggml.token_type")->ints,
              orig.find("tokenizer.ggml.token_type")->ints);
    EXPECT_EQ(g.get_string("tokenizer.ggml.model"), "llama");
  }
  std::unique_ptr<Model> q = load_model(fixture("models/tiny-mixtral-A-q8_0.gguf"));
  const std::string dir = test::temp_dir("writer_q8_hf") + "/hf";
  expect_error([&] { save_hf(*q, dir); },
               {"model.embed_tokens.weight", "q8_0", "f32, f16 or bf16"});
  EXPECT_FALSE(fs::exists(dir));  // nothing was written
}

// HF (bf16, sharded) -> HF: every tensor comes back byte for byte, q/k permutation
// included; HF -> GGUF and Mistral (f32) -> GGUF / HF keep the reference logits and
// the tokenizer (embedded into GGUF from the tokenizer.model files).
TEST(ModelWriterFixtures, ConversionsKeepReferenceLogits) {
  SMOE_REQUIRE_FIXTURES();
  const std::string a_dir = fixture("models/tiny-mixtral-A");
  std::unique_ptr<Model> a = load_model(a_dir);
  const std::string a_hf = tmp("a-hf");
  save_hf(*a, a_hf);
  SafetensorsSet orig = SafetensorsSet::open_index(a_dir + "/model.safetensors.index.json");
  SafetensorsFile mine(a_hf + "/model.safetensors");
  ASSERT_EQ(mine.tensors().size(), orig.all().size());
  for (const auto& [name, t] : orig.all()) {
    SCOPED_TRACE(name);
    ASSERT_EQ(mine.tensors().count(name), 1u);
    const TensorView& w = mine.tensors().at(name);
    EXPECT_EQ(w.dtype, DType::BF16);
    EXPECT_EQ(w.shape, t->shape);
    ASSERT_EQ(w.nbytes, t->nbytes);
    EXPECT_EQ(std::memcmp(w.data, t->data, w.nbytes), 0);
  }
  const auto cfg = nlohmann::json::parse(test::read_file(a_hf + "/config.json"));
  EXPECT_EQ(cfg["torch_dtype"], "bfloat16");
  std::unique_ptr<Model> a2 = load_model(a_hf);
  expect_same_tokenizer(*a, *a2);
  EXPECT_LT(check_reference(*a2, a_dir).max_abs_diff, 1e-3);

  const std::string a_gguf = tmp("a-bf16.gguf");
  save_gguf(*a, a_gguf);
  std::unique_ptr<Model> a3 = load_model(a_gguf);
  EXPECT_EQ(GGUFFile(a_gguf).get_uint("general.file_type"), 32u);  // MOSTLY_BF16
  expect_same_weights(*a, *a3);
  expect_same_tokenizer(*a, *a3);
  EXPECT_LT(check_reference(*a3, a_dir).max_abs_diff, 1e-3);

  const std::string b_dir = fixture("models/tiny-mixtral-B");
  std::unique_ptr<Model> b = load_model(b_dir);
  for (const std::string& out : {tmp("b.gguf"), tmp("b-hf")}) {
    SCOPED_TRACE(out);
    if (out.ends_with(".gguf"))
      save_gguf(*b, out);
    else
      save_hf(*b, out);
    std::unique_ptr<Model> b2 = load_model(out);
    expect_same_config(b->config, b2->config);
    expect_same_weights(*b, *b2);
    expect_same_tokenizer(*b, *b2);
    RefCheck r = check_reference(*b2, b_dir);
    EXPECT_GT(r.positions, 0);
    EXPECT_LT(r.max_abs_diff, 1e-3);
  }
}

}  // namespace
}  // namespace smoe
