// quantize_test.cpp: the reference quantizers: round-trip error of every type (printed),
// q8_0/q4_0 rounding as llama.cpp's reference does, the K-quant block layouts decoded
// from hand-made blocks, and smoe synth / smoe quantize end to end.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/dequant.h"
#include "kernels/quantize.h"
#include "model/model.h"
#include "test_util.h"

namespace smoe {
namespace {

double rel_rms_error(DType t, const std::vector<float>& x) {
  const int64_t n = static_cast<int64_t>(x.size());
  std::vector<uint8_t> q(row_bytes(t, n));
  std::vector<float> y(x.size());
  quantize_row(t, x.data(), q.data(), n);
  dequantize_row(t, q.data(), y.data(), n);
  double e = 0, s = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    e += (x[i] - y[i]) * (x[i] - y[i]);
    s += x[i] * x[i];
  }
  return std::sqrt(e / s);
}

TEST(Quantize, RoundTripErrorPerType) {
  std::mt19937_64 rng(1);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<float> x(256 * 64);
  for (float& v : x) v = normal(rng);
  const struct {
    DType t;
    double max_err;
  } cases[] = {{DType::F32, 0},       {DType::F16, 1e-3},   {DType::BF16, 5e-3},
               {DType::Q8_0, 0.01},   {DType::Q6_K, 0.04},  {DType::Q5_K, 0.07},
               {DType::Q4_K, 0.13},   {DType::Q4_0, 0.13}};
  for (const auto& c : cases) {
    const double e = rel_rms_error(c.t, x);
    std::printf("quantize %s: relative RMS error %.4f on N(0,1) data\n", dtype_name(c.t), e);
    EXPECT_LE(e, c.max_err) << dtype_name(c.t);
  }
}

TEST(Quantize, Q8_0AndQ4_0RoundLikeTheReference) {
  std::vector<float> x(32);
  for (int i = 0; i < 32; ++i) x[i] = static_cast<float>(i - 16) * 0.5f;  // max |x| = 8 at i = 0
  BlockQ8_0 b8;
  quantize_row(DType::Q8_0, x.data(), reinterpret_cast<uint8_t*>(&b8), 32);
  EXPECT_EQ(f16_to_f32(b8.d), f16_to_f32(f32_to_f16(8.f / 127.f)));
  EXPECT_EQ(b8.qs[0], -127);
  EXPECT_EQ(b8.qs[16], 0);
  BlockQ4_0 b4;
  quantize_row(DType::Q4_0, x.data(), reinterpret_cast<uint8_t*>(&b4), 32);
  EXPECT_EQ(f16_to_f32(b4.d), 1.f);      // d = max / -8 = -8 / -8
  EXPECT_EQ(b4.qs[0] & 15, 0);           // -8 / 1 + 8
  EXPECT_EQ(b4.qs[0] >> 4, 8);           // x[16] = 0
}

TEST(Quantize, KQuantLayoutsDecodeAsSpecified) {
  // Q4_K: d = 1, dmin = 0.5; sub-block j has scale j + 1 and min j; q = l % 16.
  BlockQ4_K k4{};
  k4.d = f32_to_f16(1.f);
  k4.dmin = f32_to_f16(0.5f);
  uint8_t sc[8], mn[8];
  for (int j = 0; j < 8; ++j) sc[j] = static_cast<uint8_t>(j + 1 + (j == 7 ? 40 : 0)), mn[j] = static_cast<uint8_t>(j + (j == 6 ? 50 : 0));
  for (int j = 0; j < 8; ++j) {
    if (j < 4) {
      k4.scales[j] = sc[j];
      k4.scales[j + 4] = mn[j];
    } else {
      k4.scales[j + 4] = static_cast<uint8_t>((sc[j] & 15) | (mn[j] & 15) << 4);
      k4.scales[j - 4] |= static_cast<uint8_t>((sc[j] >> 4) << 6);
      k4.scales[j] |= static_cast<uint8_t>((mn[j] >> 4) << 6);
    }
  }
  for (int c = 0; c < 4; ++c)
    for (int l = 0; l < 32; ++l) k4.qs[32 * c + l] = static_cast<uint8_t>((l % 16) | ((15 - l % 16) << 4));
  std::vector<float> y(256);
  dequantize_row(DType::Q4_K, reinterpret_cast<const uint8_t*>(&k4), y.data(), 256);
  for (int i = 0; i < 256; ++i) {
    const int j = i / 32, l = i % 32;
    const int q = (j % 2 == 0) ? l % 16 : 15 - l % 16;
    ASSERT_FLOAT_EQ(y[i], static_cast<float>(sc[j]) * q - 0.5f * mn[j]) << i;
  }
  // Q6_K: d = 0.25, scales[s] = s - 8, q of value i = i % 64.
  BlockQ6_K k6{};
  k6.d = f32_to_f16(0.25f);
  for (int s = 0; s < 16; ++s) k6.scales[s] = static_cast<int8_t>(s - 8);
  for (int h = 0; h < 2; ++h)
    for (int j = 0; j < 4; ++j)
      for (int l = 0; l < 32; ++l) {
        const int i = 128 * h + 32 * j + l, q = i % 64;
        k6.ql[64 * h + l + 32 * (j & 1)] |= static_cast<uint8_t>((q & 15) << (j < 2 ? 0 : 4));
        k6.qh[32 * h + l] |= static_cast<uint8_t>((q >> 4) << (2 * j));
      }
  dequantize_row(DType::Q6_K, reinterpret_cast<const uint8_t*>(&k6), y.data(), 256);
  for (int i = 0; i < 256; ++i) ASSERT_FLOAT_EQ(y[i], 0.25f * (i / 16 - 8) * (i % 64 - 32)) << i;
  // Q5_K: the fifth bit of value 64c + l is bit 2c of qh[l], of 64c + 32 + l bit 2c + 1.
  BlockQ5_K k5{};
  k5.d = f32_to_f16(1.f);
  k5.dmin = 0;
  for (int j = 0; j < 4; ++j) k5.scales[j] = 1;
  for (int j = 4; j < 8; ++j) k5.scales[j + 4] = 1;
  for (int l = 0; l < 32; ++l) k5.qh[l] = static_cast<uint8_t>(l % 2 ? 0xAA : 0x55);
  dequantize_row(DType::Q5_K, reinterpret_cast<const uint8_t*>(&k5), y.data(), 256);
  for (int i = 0; i < 256; ++i) {
    const int c = i / 64, second = (i % 64) / 32, l = i % 32;
    const int bit = ((l % 2 ? 0xAA : 0x55) >> (2 * c + second)) & 1;
    ASSERT_FLOAT_EQ(y[i], 16.f * bit) << i;
  }
}

TEST(Quantize, SynthAndQuantizeCommandsRoundTrip) {
  const std::string dir = test::temp_dir("synth_quantize");
  const std::string cfg = dir + "/config.json";
  test::write_file(cfg, R"({"architectures":["MixtralForCausalLM"],"hidden_size":256,"intermediate_size":512,
    "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"vocab_size":300,
    "num_local_experts":8,"num_experts_per_tok":2,"rms_norm_eps":1e-5,"rope_theta":1e6,
    "max_position_embeddings":512})");
  auto r = test::run_smoe("synth --config " + cfg + " --layers 1 --type f32 --out " + dir + "/f32.gguf -t 2");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::vector<std::vector<float>> logits;
  for (const char* t : {"f32", "q8_0", "q6_K", "q4_K", "q5_K", "q4_0", "f16", "bf16"}) {
    const std::string out = dir + "/" + t + ".gguf";
    if (std::string(t) != "f32") {
      r = test::run_smoe("quantize " + dir + "/f32.gguf " + out + " --type " + t);
      ASSERT_EQ(r.exit_code, 0) << r.err;
    }
    auto m = load_model(out);
    EXPECT_EQ(m->config.n_layers, 1);
    EXPECT_EQ(m->layers[0].router.dtype, DType::F32) << t;  // router and norms stay f32
    EXPECT_EQ(m->layers[0].attn_norm.dtype, DType::F32) << t;
    r = test::run_smoe("logits -m " + out + " --tokens 1,5,7,200,3 --out " + dir + "/" + t + ".f32");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const std::string bytes = test::read_file(dir + "/" + t + ".f32");
    std::vector<float> v(bytes.size() / 4);
    std::memcpy(v.data(), bytes.data(), v.size() * 4);
    logits.push_back(v);
  }
  // Quantized logits stay close to the f32 model's.
  for (size_t i = 1; i < logits.size(); ++i) {
    ASSERT_EQ(logits[i].size(), logits[0].size());
    double e = 0, s = 0;
    for (size_t k = 0; k < logits[0].size(); ++k) {
      e += std::pow(logits[i][k] - logits[0][k], 2);
      s += std::pow(logits[0][k], 2);
    }
    EXPECT_LT(std::sqrt(e / s), 0.3) << "type #" << i;
  }
  r = test::run_smoe("quantize " + dir + "/f32.gguf " + dir + "/x.gguf --type q4_1");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("q4_1"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("q2_K, q3_K"), std::string::npos) << r.err;  // the list of types
}

// synth --tokenizer embeds a vocabulary (so llama.cpp can load the file); a tokenizer of
// another size is refused with both sizes named.
TEST(Quantize, SynthEmbedsAGivenTokenizer) {
  SMOE_REQUIRE_FIXTURES();
  const std::string dir = test::temp_dir("synth_tokenizer");
  const std::string tok = test::fixture("tokenizers/shakespeare-1k.model");
  auto config = [&](int vocab) {
    const std::string cfg = dir + "/config" + std::to_string(vocab) + ".json";
    test::write_file(cfg, R"({"architectures":["MixtralForCausalLM"],"hidden_size":64,"intermediate_size":128,
      "num_hidden_layers":1,"num_attention_heads":4,"num_key_value_heads":2,"vocab_size":)" +
                              std::to_string(vocab) + R"(,"num_local_experts":4,"num_experts_per_tok":2,
      "rms_norm_eps":1e-5,"rope_theta":1e6,"max_position_embeddings":128})");
    return cfg;
  };
  auto r = test::run_smoe("synth --config " + config(1024) + " --type q8_0 --tokenizer " + tok + " --out " + dir +
                          "/m.gguf");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto m = load_model(dir + "/m.gguf");
  ASSERT_NE(m->tokenizer, nullptr);
  auto ref = Tokenizer::from_spm_file(tok);
  EXPECT_EQ(m->tokenizer->encode("ROMEO: What light through yonder window"),
            ref->encode("ROMEO: What light through yonder window"));
  r = test::run_smoe("synth --config " + config(1024) + " --type q8_0 --out " + dir + "/bare.gguf");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(load_model(dir + "/bare.gguf")->tokenizer, nullptr);
  r = test::run_smoe("synth --config " + config(300) + " --type q8_0 --tokenizer " + tok + " --out " + dir +
                     "/bad.gguf");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("1024"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("300"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace smoe
