// gguf_test.cpp: tests of the GGUF reader: the shared fixture files (llama.cpp's own
// converter output) and self-made files from a small in-memory GGUF writer, including
// every kind of malformed input (each must give smoe::Error, never a crash).
#include "formats/gguf.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>

#include "core/error.h"
#include "test_util.h"

namespace smoe {
namespace {

using test::fixture;

// ---------------------------------------------------------------------------------------
// A tiny GGUF writer for tests. Values are appended as raw bytes so that tests can also
// write malformed files (wrong counts, bad types, offsets...).
void put_u32(std::string& b, uint32_t v) { b.append(reinterpret_cast<const char*>(&v), 4); }
void put_u64(std::string& b, uint64_t v) { b.append(reinterpret_cast<const char*>(&v), 8); }
void put_str(std::string& b, const std::string& s) {
  put_u64(b, s.size());
  b += s;
}
template <typename T>
std::string raw(T v) {
  return std::string(reinterpret_cast<const char*>(&v), sizeof(T));
}

struct TestTensor {
  std::string name;
  std::vector<uint64_t> ne;  // GGUF order
  uint32_t type = 0;
  std::string data;                // bytes placed in the data section
  std::optional<uint64_t> offset;  // default: next aligned position
};

struct GGUFBuilder {
  std::string magic = "GGUF";
  uint32_t version = 3;
  uint64_t alignment = 32;  // used for layout (set the key separately to change the file's)
  std::optional<uint64_t> tensor_count, kv_count;  // overrides
  std::vector<std::string> kvs;                    // serialized entries
  std::vector<TestTensor> tensors;

  void kv(const std::string& key, GGUFType type, const std::string& value_bytes) {
    std::string e;
    put_str(e, key);
    put_u32(e, static_cast<uint32_t>(type));
    e += value_bytes;
    kvs.push_back(e);
  }
  void kv_u32(const std::string& key, uint32_t v) { kv(key, GGUFType::U32, raw(v)); }
  void kv_str(const std::string& key, const std::string& s) {
    std::string v;
    put_str(v, s);
    kv(key, GGUFType::STRING, v);
  }
  void kv_array(const std::string& key, GGUFType elem, uint64_t n, const std::string& elems) {
    std::string v;
    put_u32(v, static_cast<uint32_t>(elem));
    put_u64(v, n);
    kv(key, GGUFType::ARRAY, v + elems);
  }
  void kv_str_array(const std::string& key, const std::vector<std::string>& strs) {
    std::string e;
    for (const auto& s : strs) put_str(e, s);
    kv_array(key, GGUFType::STRING, strs.size(), e);
  }
  void kv_f32_array(const std::string& key, const std::vector<float>& xs) {
    std::string e;
    for (float x : xs) e += raw(x);
    kv_array(key, GGUFType::F32, xs.size(), e);
  }
  void kv_i32_array(const std::string& key, const std::vector<int32_t>& xs) {
    std::string e;
    for (int32_t x : xs) e += raw(x);
    kv_array(key, GGUFType::I32, xs.size(), e);
  }
  void tensor(const std::string& name, std::vector<uint64_t> ne, uint32_t type, std::string data) {
    tensors.push_back({name, std::move(ne), type, std::move(data), std::nullopt});
  }

  std::string build() const {
    std::string b = magic;
    put_u32(b, version);
    put_u64(b, tensor_count.value_or(tensors.size()));
    put_u64(b, kv_count.value_or(kvs.size()));
    for (const auto& e : kvs) b += e;
    // Tensors without an offset override are laid out one after the other; the data of
    // tensors with an override is not written at all.
    std::vector<uint64_t> offsets;
    uint64_t next = 0;
    for (const auto& t : tensors) {
      if (t.offset) {
        offsets.push_back(*t.offset);
        continue;
      }
      next = (next + alignment - 1) / alignment * alignment;
      offsets.push_back(next);
      next += t.data.size();
    }
    for (size_t k = 0; k < tensors.size(); ++k) {
      const auto& t = tensors[k];
      put_str(b, t.name);
      put_u32(b, static_cast<uint32_t>(t.ne.size()));
      for (uint64_t d : t.ne) put_u64(b, d);
      put_u32(b, t.type);
      put_u64(b, offsets[k]);
    }
    if (tensors.empty()) return b;
    b.resize((b.size() + alignment - 1) / alignment * alignment, '\0');
    const size_t data_start = b.size();
    for (size_t k = 0; k < tensors.size(); ++k) {
      if (tensors[k].offset) continue;
      b.resize(data_start + offsets[k], '\0');
      b += tensors[k].data;
    }
    return b;
  }
};

std::string f32_bytes(std::vector<float> xs) {
  std::string s;
  for (float x : xs) s += raw(x);
  return s;
}

// A small valid file with a bit of everything.
GGUFBuilder sample_builder() {
  GGUFBuilder g;
  g.kv_str("general.architecture", "llama");
  g.kv_u32("llama.expert_count", 8);
  g.kv("test.u8", GGUFType::U8, raw<uint8_t>(200));
  g.kv("test.i8", GGUFType::I8, raw<int8_t>(-5));
  g.kv("test.u16", GGUFType::U16, raw<uint16_t>(60000));
  g.kv("test.i16", GGUFType::I16, raw<int16_t>(-30000));
  g.kv("test.i32", GGUFType::I32, raw<int32_t>(-7));
  g.kv("test.f32", GGUFType::F32, raw<float>(1.5f));
  g.kv("test.bool", GGUFType::BOOL, raw<uint8_t>(1));
  g.kv("test.u64", GGUFType::U64, raw<uint64_t>(1ull << 40));
  g.kv("test.i64", GGUFType::I64, raw<int64_t>(-(1ll << 40)));
  g.kv("test.f64", GGUFType::F64, raw<double>(0.25));
  g.kv_str_array("test.strs", {"a", "", "ccc"});
  g.kv_f32_array("test.f32s", {0.5f, -2.0f});
  g.kv_i32_array("test.i32s", {3, -4, 5});
  g.tensor("w", {3, 2}, 0, f32_bytes({1, 2, 3, 4, 5, 6}));  // row-major [2, 3]
  std::string q8(34, '\0');
  q8[0] = 0x00, q8[1] = 0x3c;  // d = 1.0 as half
  for (int k = 0; k < 32; ++k) q8[2 + k] = static_cast<char>(k - 16);
  g.tensor("q", {32, 1}, 8, q8);
  g.tensor("k", {32}, 3, std::string(20, '\x01'));  // q4_1: known size, not supported
  return g;
}

// Writes `bytes` to a fresh file (in a folder of the running test, so that tests can run
// in parallel) and opens it.
std::unique_ptr<GGUFFile> open_bytes(const std::string& bytes, const std::string& name = "t.gguf") {
  const std::string test_name = ::testing::UnitTest::GetInstance()->current_test_info()->name();
  const std::string path = test::temp_dir("gguf_" + test_name) + "/" + name;
  test::write_file(path, bytes);
  return std::make_unique<GGUFFile>(path);
}

// Expects opening `bytes` to throw smoe::Error whose message contains every `parts`.
void expect_error(const std::string& bytes, const std::vector<std::string>& parts) {
  try {
    open_bytes(bytes, "bad.gguf");
    ADD_FAILURE() << "expected smoe::Error containing '" << parts.at(0) << "'";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("bad.gguf"), std::string::npos) << "message does not name the file: " << msg;
    for (const auto& part : parts)
      EXPECT_NE(msg.find(part), std::string::npos) << "missing '" << part << "' in: " << msg;
  }
}

// ---------------------------------------------------------------------------------------
// Self-made files.

TEST(GGUF, ReadsSelfMadeFile) {
  auto f = open_bytes(sample_builder().build());
  EXPECT_EQ(f->version(), 3u);
  EXPECT_EQ(f->get_string("general.architecture"), "llama");
  EXPECT_EQ(f->get_uint("llama.expert_count"), 8u);
  EXPECT_EQ(f->get_uint("test.u8"), 200u);
  EXPECT_EQ(f->find("test.i8")->i, -5);
  EXPECT_EQ(f->get_uint("test.u16"), 60000u);
  EXPECT_EQ(f->find("test.i16")->i, -30000);
  EXPECT_EQ(f->find("test.i32")->i, -7);
  EXPECT_EQ(f->get_float("test.i32"), -7.0);
  EXPECT_EQ(f->get_float("test.f32"), 1.5);
  EXPECT_TRUE(f->get_bool("test.bool"));
  EXPECT_EQ(f->get_uint("test.u64"), 1ull << 40);
  EXPECT_EQ(f->find("test.i64")->i, -(1ll << 40));
  EXPECT_EQ(f->get_float("test.f64"), 0.25);
  const GGUFValue* strs = f->find("test.strs");
  ASSERT_NE(strs, nullptr);
  EXPECT_EQ(strs->type, GGUFType::ARRAY);
  EXPECT_EQ(strs->elem_type, GGUFType::STRING);
  EXPECT_EQ(strs->array_len, 3u);
  EXPECT_EQ(strs->strs, (std::vector<std::string>{"a", "", "ccc"}));
  EXPECT_EQ(f->find("test.f32s")->nums, (std::vector<double>{0.5, -2.0}));
  EXPECT_EQ(f->find("test.i32s")->ints, (std::vector<int64_t>{3, -4, 5}));
  EXPECT_EQ(f->find("test.i32s")->nums, (std::vector<double>{3, -4, 5}));
  EXPECT_EQ(f->find("missing"), nullptr);
  EXPECT_FALSE(f->has("missing"));

  ASSERT_EQ(f->tensor_infos().size(), 3u);
  TensorView w = f->tensor("w");
  EXPECT_EQ(w.dtype, DType::F32);
  EXPECT_EQ(w.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(w.nbytes, 24u);
  float vals[6];
  std::memcpy(vals, w.data, 24);
  EXPECT_EQ(vals[0], 1.0f);
  EXPECT_EQ(vals[5], 6.0f);
  EXPECT_EQ(f->data_offset() % 32, 0u);

  TensorView q = f->tensor("q");
  EXPECT_EQ(q.dtype, DType::Q8_0);
  EXPECT_EQ(q.shape, (std::vector<int64_t>{1, 32}));
  EXPECT_EQ(q.nbytes, 34u);
  BlockQ8_0 blk;
  std::memcpy(&blk, q.data, sizeof blk);
  EXPECT_EQ(f16_to_f32(blk.d), 1.0f);
  EXPECT_EQ(blk.qs[0], -16);
  EXPECT_EQ(f->find_tensor("k")->nbytes, 20u);
  EXPECT_EQ(shape_str(w.shape), "[2, 3]");
}

TEST(GGUF, MetadataHelpersRejectWrongTypes) {
  auto f = open_bytes(sample_builder().build());
  EXPECT_THROW(f->get_string("llama.expert_count"), Error);
  EXPECT_THROW(f->get_uint("general.architecture"), Error);
  EXPECT_THROW(f->get_uint("test.i8"), Error);  // negative
  EXPECT_THROW(f->get_uint("test.f32"), Error);
  EXPECT_THROW(f->get_bool("test.u8"), Error);
  EXPECT_THROW(f->get_float("test.strs"), Error);
  try {
    f->get_uint("no.such.key");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no.such.key"), std::string::npos);
  }
  EXPECT_THROW(f->tensor("nope"), Error);
}

TEST(GGUF, ReadsVersion2AndCustomAlignment) {
  GGUFBuilder g = sample_builder();
  g.version = 2;
  g.alignment = 64;
  g.kv_u32("general.alignment", 64);
  auto f = open_bytes(g.build());
  EXPECT_EQ(f->version(), 2u);
  EXPECT_EQ(f->alignment(), 64u);
  EXPECT_EQ(f->data_offset() % 64, 0u);
  EXPECT_EQ(f->tensor("w").shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(f->tensor("q").nbytes, 34u);
}

TEST(GGUF, VocabOnlyFileWithoutPadding) {
  GGUFBuilder g;
  g.kv_str("general.architecture", "llama");
  auto f = open_bytes(g.build());
  EXPECT_TRUE(f->tensor_infos().empty());
}

TEST(GGUF, UnsupportedTypeOnlyFailsWhenRequested) {
  auto f = open_bytes(sample_builder().build());
  try {
    f->tensor("k");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("tensor 'k' has type q4_1, which smoe does not support yet; supported: f32, "
                       "f16, bf16, q8_0, q4_0, q2_K, q3_K, q4_K"),
              std::string::npos)
        << msg;
  }
}

TEST(GGUF, RejectsWrongMagicAndVersions) {
  GGUFBuilder g = sample_builder();
  g.magic = "GGML";
  expect_error(g.build(), {"not a GGUF file", "GGML"});
  expect_error("", {"not a GGUF file"});
  expect_error("GG", {"not a GGUF file"});
  g = sample_builder();
  g.version = 1;
  expect_error(g.build(), {"unsupported GGUF version 1"});
  g.version = 4;
  expect_error(g.build(), {"unsupported GGUF version 4"});
  g.version = 0x03000000;  // a big-endian v3 file
  expect_error(g.build(), {"unsupported GGUF version", "big-endian"});
}

TEST(GGUF, EveryTruncationThrows) {
  const std::string full = sample_builder().build();
  ASSERT_NO_THROW(open_bytes(full));
  const std::string path = test::temp_dir("gguf_trunc") + "/trunc.gguf";
  for (size_t n = 0; n < full.size(); ++n) {
    test::write_file(path, full.substr(0, n));
    EXPECT_THROW(GGUFFile{path}, Error) << "prefix of " << n << " of " << full.size() << " bytes";
  }
}

// Overwriting any single byte of the header, metadata or tensor infos must either give a
// file that still reads consistently or a smoe::Error (run under the sanitizers too).
TEST(GGUF, CorruptedBytesNeverCrash) {
  const std::string full = sample_builder().build();
  const std::string path = test::temp_dir("gguf_corrupt") + "/corrupt.gguf";
  size_t opened = 0, rejected = 0;
  for (size_t pos = 0; pos < full.size(); ++pos) {
    for (uint8_t value : {0x00, 0x01, 0x7f, 0x80, 0xff}) {
      std::string bytes = full;
      if (static_cast<uint8_t>(bytes[pos]) == value) continue;
      bytes[pos] = static_cast<char>(value);
      test::write_file(path, bytes);
      try {
        GGUFFile f(path);
        ++opened;
        for (const auto& info : f.tensor_infos()) {
          EXPECT_LE(f.data_offset() + info.offset + info.nbytes, f.file_size());
          try {
            TensorView v = f.tensor(info.name);
            EXPECT_EQ(v.nbytes, row_bytes(v.dtype, v.shape.back()) *
                                    static_cast<size_t>(v.numel() / v.shape.back()));
          } catch (const Error&) {
          }
        }
      } catch (const Error&) {
        ++rejected;
      }
    }
  }
  EXPECT_GT(opened, 0u);
  EXPECT_GT(rejected, 0u);
}

TEST(GGUF, RejectsImpossibleCounts) {
  GGUFBuilder g = sample_builder();
  g.tensor_count = 1ull << 60;
  expect_error(g.build(), {"tensor count 1152921504606846976"});
  g = sample_builder();
  g.kv_count = 1ull << 60;
  expect_error(g.build(), {"metadata entry count"});
  g = sample_builder();
  g.kv_count = ~0ull;
  expect_error(g.build(), {"metadata entry count"});
  g = sample_builder();
  g.tensors.clear();
  g.kv_count = g.kvs.size() + 1;  // one more entry than present
  expect_error(g.build(), {"file ends inside the key of metadata entry 15 (of 16)"});
  g = sample_builder();
  g.kv_array("huge", GGUFType::U32, 1ull << 62, raw<uint32_t>(1));
  expect_error(g.build(), {"metadata key 'huge'", "array length"});
  g = sample_builder();
  g.kv_array("huge_strs", GGUFType::STRING, 1ull << 40, "");
  expect_error(g.build(), {"metadata key 'huge_strs'", "array length"});
}

TEST(GGUF, RejectsStringsPastTheEnd) {
  GGUFBuilder g = sample_builder();
  std::string v;
  put_u64(v, 1ull << 50);  // string length past the end
  g.kv("long", GGUFType::STRING, v + "abc");
  expect_error(g.build(), {"metadata key 'long'", "has length 1125899906842624"});
  // A key whose own length runs past the end.
  g = sample_builder();
  std::string e;
  put_u64(e, ~0ull);
  g.kvs.insert(g.kvs.begin(), e);
  expect_error(g.build(), {"key", "metadata entry 0", "has length"});
  // A tensor name past the end.
  g = sample_builder();
  g.tensors[0].name = std::string(10, 'x');
  std::string b = g.build();
  const size_t at = b.find(std::string(10, 'x')) - 8;
  const uint64_t bad = 1ull << 33;
  std::memcpy(&b[at], &bad, 8);
  expect_error(b, {"tensor name", "tensor info 0", "has length"});
}

TEST(GGUF, RejectsTensorDataPastTheEnd) {
  GGUFBuilder g = sample_builder();
  g.tensors[0].offset = 1ull << 20;
  expect_error(g.build(), {"tensor 'w' data [", "runs past the end of the file (size"});
  g = sample_builder();
  g.tensors[2].offset = ~0ull - 31;  // aligned, but the addition overflows
  expect_error(g.build(), {"tensor 'k' data [", "runs past the end"});
  g = sample_builder();
  std::string b = g.build();
  expect_error(b.substr(0, b.size() - 1), {"tensor 'k' data [", "runs past the end"});
}

// q2_K / q3_K tensors load (type, shape, size), and a q3_K tensor whose data the file
// cuts short is named in the error.
TEST(GGUF, LowBitKQuantTensorsLoadAndTruncationIsReported) {
  GGUFBuilder g = sample_builder();
  g.tensor("q2", {512, 2}, 10, std::string(4 * 84, '\x02'));
  g.tensor("q3", {512}, 11, std::string(2 * 110, '\x03'));
  std::string b = g.build();
  auto f = open_bytes(b);
  const TensorView q2 = f->tensor("q2"), q3 = f->tensor("q3");
  EXPECT_EQ(q2.dtype, DType::Q2_K);
  EXPECT_EQ(q2.shape, (std::vector<int64_t>{2, 512}));
  EXPECT_EQ(q2.nbytes, 4u * 84u);
  EXPECT_EQ(q3.dtype, DType::Q3_K);
  EXPECT_EQ(q3.nbytes, 220u);
  expect_error(b.substr(0, b.size() - 1), {"tensor 'q3' data [", "+220)", "runs past the end"});
  expect_error(b.substr(0, b.size() - 110), {"tensor 'q3' data [", "runs past the end"});
  // A row that is not a whole number of 256-value blocks.
  g = sample_builder();
  g.tensor("q3", {128}, 11, std::string(55, '\x03'));
  expect_error(g.build(), {"q3", "not a whole number of blocks of 256"});
}

TEST(GGUF, RejectsMisalignedOffsetAndBadAlignment) {
  GGUFBuilder g = sample_builder();
  g.tensors[1].offset = 36;
  expect_error(g.build(), {"tensor 'q'", "data offset 36", "not a multiple of the alignment 32"});
  for (uint32_t a : {0u, 3u, 48u}) {
    g = sample_builder();
    g.kv_u32("general.alignment", a);
    expect_error(g.build(), {"general.alignment is " + std::to_string(a), "power of two"});
  }
  g = sample_builder();
  g.kv_str("general.alignment", "32");
  expect_error(g.build(), {"general.alignment", "string"});
}

TEST(GGUF, RejectsDuplicates) {
  GGUFBuilder g = sample_builder();
  g.kv_u32("llama.expert_count", 4);
  expect_error(g.build(), {"metadata key 'llama.expert_count' appears more than once"});
  g = sample_builder();
  g.tensor("w", {3, 2}, 0, f32_bytes({1, 2, 3, 4, 5, 6}));
  expect_error(g.build(), {"tensor 'w' appears more than once"});
}

TEST(GGUF, RejectsBadDimensions) {
  GGUFBuilder g = sample_builder();
  g.tensors[0].ne = {3, 0};
  expect_error(g.build(), {"tensor 'w'", "ne[1] = 0"});
  g = sample_builder();
  g.tensors[0].ne = {};
  expect_error(g.build(), {"tensor 'w' has 0 dimensions, expected 1 to 4"});
  g = sample_builder();
  g.tensors[0].ne = {1, 1, 1, 1, 1};
  expect_error(g.build(), {"tensor 'w' has 5 dimensions"});
  g = sample_builder();
  g.tensors[0].ne = {~0ull, 1};  // "negative" as int64
  expect_error(g.build(), {"tensor 'w'", "ne[0] = -1"});
  g = sample_builder();
  g.tensors[0].ne = {1ull << 32, 1ull << 32};  // the product overflows
  expect_error(g.build(), {"tensor 'w'", "overflows"});
  g = sample_builder();
  g.tensors[1].ne = {33, 1};  // q8_0 rows must be whole blocks
  expect_error(g.build(), {"tensor 'q'", "whole number of blocks of 32"});
  g = sample_builder();
  g.tensors[0].type = 99;
  expect_error(g.build(), {"tensor 'w' has unknown ggml type 99"});
}

TEST(GGUF, RejectsBadValueTypes) {
  GGUFBuilder g = sample_builder();
  g.kv("weird", static_cast<GGUFType>(13), raw<uint32_t>(0));
  expect_error(g.build(), {"metadata key 'weird' has unknown value type 13"});
  g = sample_builder();
  std::string inner;
  put_u32(inner, static_cast<uint32_t>(GGUFType::U8));
  put_u64(inner, 1);
  inner += '\x01';
  g.kv_array("nested", GGUFType::ARRAY, 1, inner);
  expect_error(g.build(), {"metadata key 'nested'", "array of arrays"});
  g = sample_builder();
  g.kv_array("badelem", static_cast<GGUFType>(77), 1, "x");
  expect_error(g.build(), {"metadata key 'badelem'", "unknown array element type 77"});
}

// ---------------------------------------------------------------------------------------
// Fixture files (llama.cpp's converter and quantizer output).

TEST(GGUFFixtures, TinyMixtralMetadata) {
  SMOE_REQUIRE_FIXTURES();
  GGUFFile f(fixture("models/tiny-mixtral-A-f32.gguf"));
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.get_string("general.architecture"), "llama");
  EXPECT_EQ(f.get_string("general.name"), "Tiny Mixtral A");
  EXPECT_EQ(f.get_uint("llama.expert_count"), 8u);
  EXPECT_EQ(f.get_uint("llama.expert_used_count"), 2u);
  EXPECT_EQ(f.get_uint("llama.embedding_length"), 32u);
  EXPECT_EQ(f.get_uint("llama.feed_forward_length"), 64u);
  EXPECT_EQ(f.get_uint("llama.block_count"), 2u);
  EXPECT_EQ(f.get_uint("llama.attention.head_count"), 4u);
  EXPECT_EQ(f.get_uint("llama.attention.head_count_kv"), 2u);
  EXPECT_EQ(f.get_uint("llama.vocab_size"), 32000u);
  EXPECT_EQ(f.get_float("llama.rope.freq_base"), 1e6);
  EXPECT_NEAR(f.get_float("llama.attention.layer_norm_rms_epsilon"), 1e-5, 1e-12);
  EXPECT_EQ(f.get_string("tokenizer.ggml.model"), "llama");
  const GGUFValue* tokens = f.find("tokenizer.ggml.tokens");
  ASSERT_NE(tokens, nullptr);
  ASSERT_EQ(tokens->strs.size(), 32000u);
  EXPECT_EQ(tokens->strs[1], "<s>");
  EXPECT_EQ(tokens->strs[3], "<0x00>");
  EXPECT_EQ(f.find("tokenizer.ggml.token_type")->ints[3], 6);
  EXPECT_EQ(f.find("tokenizer.ggml.scores")->nums.size(), 32000u);
  EXPECT_EQ(f.tensor_infos().size(), 23u);
}

struct FixtureCase {
  const char* file;
  DType expert_type;  // stacked expert weights
  DType embd_type;
};

TEST(GGUFFixtures, TinyMixtralTensors) {
  SMOE_REQUIRE_FIXTURES();
  for (const FixtureCase& c :
       {FixtureCase{"f32", DType::F32, DType::F32}, FixtureCase{"f16", DType::F16, DType::F16},
        FixtureCase{"q8_0", DType::Q8_0, DType::Q8_0},
        FixtureCase{"q4_0", DType::Q4_0, DType::Q4_0}}) {
    SCOPED_TRACE(c.file);
    GGUFFile f(fixture(std::string("models/tiny-mixtral-A-") + c.file + ".gguf"));
    ASSERT_EQ(f.tensor_infos().size(), 23u);
    for (int layer = 0; layer < 2; ++layer) {
      const std::string b = "blk." + std::to_string(layer) + ".";
      TensorView gate = f.tensor(b + "ffn_gate_exps.weight");
      EXPECT_EQ(gate.shape, (std::vector<int64_t>{8, 64, 32}));
      EXPECT_EQ(gate.dtype, c.expert_type);
      EXPECT_EQ(gate.nbytes, row_bytes(c.expert_type, 32) * 8 * 64);
      EXPECT_EQ(f.tensor(b + "ffn_up_exps.weight").shape, (std::vector<int64_t>{8, 64, 32}));
      TensorView down = f.tensor(b + "ffn_down_exps.weight");
      EXPECT_EQ(down.shape, (std::vector<int64_t>{8, 32, 64}));
      EXPECT_EQ(down.nbytes, row_bytes(c.expert_type, 64) * 8 * 32);
      TensorView router = f.tensor(b + "ffn_gate_inp.weight");
      EXPECT_EQ(router.shape, (std::vector<int64_t>{8, 32}));
      EXPECT_EQ(router.dtype, DType::F32);
      EXPECT_EQ(f.tensor(b + "attn_q.weight").shape, (std::vector<int64_t>{32, 32}));
      EXPECT_EQ(f.tensor(b + "attn_k.weight").shape, (std::vector<int64_t>{16, 32}));
      EXPECT_EQ(f.tensor(b + "attn_v.weight").shape, (std::vector<int64_t>{16, 32}));
      EXPECT_EQ(f.tensor(b + "attn_output.weight").shape, (std::vector<int64_t>{32, 32}));
      TensorView norm = f.tensor(b + "attn_norm.weight");
      EXPECT_EQ(norm.shape, (std::vector<int64_t>{32}));
      EXPECT_EQ(norm.dtype, DType::F32);
      EXPECT_EQ(norm.nbytes, 128u);
    }
    TensorView embd = f.tensor("token_embd.weight");
    EXPECT_EQ(embd.shape, (std::vector<int64_t>{32000, 32}));
    EXPECT_EQ(embd.dtype, c.embd_type);
    EXPECT_EQ(f.tensor("output_norm.weight").shape, (std::vector<int64_t>{32}));
    EXPECT_EQ(f.tensor("output.weight").shape, (std::vector<int64_t>{32000, 32}));
    for (const auto& info : f.tensor_infos()) {
      TensorView v = f.tensor(info.name);
      EXPECT_EQ(reinterpret_cast<uintptr_t>(v.data) % 32, 0u)
          << info.name;  // the mapping is page aligned
      EXPECT_EQ(v.nbytes, info.nbytes);
      EXPECT_LE(f.data_offset() + info.offset + info.nbytes, f.file_size()) << info.name;
    }
  }
}

TEST(GGUFFixtures, QuantizedFileMixesTypes) {
  SMOE_REQUIRE_FIXTURES();
  GGUFFile f(fixture("models/tiny-mixtral-A-q4_0.gguf"));
  EXPECT_EQ(f.tensor("blk.0.ffn_gate_exps.weight").dtype, DType::Q4_0);
  EXPECT_EQ(f.tensor("blk.0.attn_k.weight").dtype,
            DType::Q8_0);  // llama.cpp keeps k/v at q8_0 here
  EXPECT_EQ(f.tensor("output.weight").dtype, DType::Q8_0);
  EXPECT_EQ(f.tensor("blk.0.ffn_norm.weight").dtype, DType::F32);
}

// The f32 GGUF holds exactly the bf16 values of the Hugging Face checkpoint.
TEST(GGUFFixtures, TensorDataMatchesSafetensors) {
  SMOE_REQUIRE_FIXTURES();
  const std::string shard =
      test::read_file(fixture("models/tiny-mixtral-A/model-00001-of-00002.safetensors"));
  ASSERT_GT(shard.size(), 8u);
  uint64_t header_len;
  std::memcpy(&header_len, shard.data(), 8);
  const auto header = nlohmann::json::parse(shard.substr(8, header_len));
  const size_t base = 8 + header_len;
  GGUFFile f32(fixture("models/tiny-mixtral-A-f32.gguf"));
  GGUFFile f16(fixture("models/tiny-mixtral-A-f16.gguf"));
  struct Pair {
    const char* hf;
    const char* gguf;
  };
  for (const Pair& p :
       {Pair{"model.embed_tokens.weight", "token_embd.weight"},
        Pair{"model.layers.0.block_sparse_moe.gate.weight", "blk.0.ffn_gate_inp.weight"},
        Pair{"model.layers.0.input_layernorm.weight", "blk.0.attn_norm.weight"}}) {
    SCOPED_TRACE(p.gguf);
    const auto& h = header.at(p.hf);
    ASSERT_EQ(h.at("dtype"), "BF16");
    const size_t begin = base + h.at("data_offsets")[0].get<size_t>();
    const size_t n =
        (h.at("data_offsets")[1].get<size_t>() - h.at("data_offsets")[0].get<size_t>()) / 2;
    TensorView a = f32.tensor(p.gguf), b = f16.tensor(p.gguf);
    EXPECT_EQ(a.shape, h.at("shape").get<std::vector<int64_t>>());
    ASSERT_EQ(static_cast<size_t>(a.numel()), n);
    size_t mismatches = 0;
    for (size_t k = 0; k < n; ++k) {
      uint16_t bf;
      std::memcpy(&bf, shard.data() + begin + 2 * k, 2);
      float x;
      std::memcpy(&x, a.data + 4 * k, 4);
      mismatches += x != bf16_to_f32(bf);
      if (b.dtype == DType::F16) {
        uint16_t hv;
        std::memcpy(&hv, b.data + 2 * k, 2);
        mismatches += std::fabs(f16_to_f32(hv) - x) > 1e-3f * std::fabs(x) + 1e-7f;
      }
    }
    EXPECT_EQ(mismatches, 0u);
  }
}

TEST(GGUFFixtures, VocabOnlyFile) {
  SMOE_REQUIRE_FIXTURES();
  GGUFFile f(fixture("tokenizers/llama-spm-vocab.gguf"));
  EXPECT_EQ(f.version(), 3u);
  EXPECT_TRUE(f.tensor_infos().empty());
  EXPECT_EQ(f.get_string("general.name"), "llama-spm");
  EXPECT_EQ(f.find("tokenizer.ggml.tokens")->strs.size(), 32000u);
  EXPECT_EQ(f.get_uint("tokenizer.ggml.unknown_token_id"), 0u);
  EXPECT_TRUE(f.get_bool("tokenizer.ggml.add_bos_token"));
  EXPECT_FALSE(f.get_bool("tokenizer.ggml.add_eos_token"));
}

}  // namespace
}  // namespace smoe
