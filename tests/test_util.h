// test_util.h: shared helpers for smoe's tests: fixture paths (skipping when the shared
// fixtures are absent), temporary files, running the smoe CLI, a small model shape, random
// test data.
#pragma once
#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "kernels/quantize.h"
#include "model/config.h"
#include "model/transformer.h"

namespace smoe::test {

// n values drawn from N(0, sd^2), deterministic in seed.
inline std::vector<float> randn(size_t n, uint64_t seed, float sd = 1.f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.f, sd);
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

// `rows` rows of D Gaussian values quantized to type t, stored at byte offset `misalign` of the
// returned buffer (one spare byte after them).
inline std::vector<uint8_t> quantized_rows(DType t, int64_t rows, int64_t D, size_t misalign, uint64_t seed) {
  const size_t rb = row_bytes(t, D);
  std::vector<uint8_t> buf(misalign + rb * static_cast<size_t>(rows) + 1);
  const std::vector<float> w = randn(static_cast<size_t>(rows * D), seed);
  for (int64_t r = 0; r < rows; ++r) quantize_row(t, w.data() + r * D, buf.data() + misalign + r * rb, D);
  return buf;
}

// The small Mixtral-shaped model most synthetic-model tests start from (they change the
// fields they care about): D 32, 2 layers, 4/2 heads of 8, F 48, vocab 97, 8 experts, top-2.
inline ModelConfig tiny_moe_config() {
  ModelConfig c;
  c.dim = 32;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 8;
  c.hidden_dim = 48;
  c.vocab_size = 97;
  c.n_experts = 8;
  c.n_experts_used = 2;
  c.has_router = true;
  c.max_seq_len = 256;
  c.rope_theta = 10000;
  return c;
}

// All logits of a fixed 12-token prompt (tests comparing two copies of one model).
inline std::vector<float> prompt_logits(const Model& m) {
  const std::vector<int32_t> tokens = {1, 5, 9, 33, 2, 66, 17, 40, 3, 12, 7, 0};
  Session s(m, 64);
  std::vector<float> logits;
  s.forward(tokens, /*all_logits=*/true, logits);
  return logits;
}

// Path under ../shared/fixtures; the calling test is skipped (GTEST_SKIP) by the macro
// below when the folder is absent.
inline std::string fixture(const std::string& rel) { return std::string(SMOE_FIXTURES_DIR) + "/" + rel; }
inline bool have_fixtures() { return std::filesystem::exists(SMOE_FIXTURES_DIR); }
#define SMOE_REQUIRE_FIXTURES()                                                             \
  do {                                                                                      \
    if (!::smoe::test::have_fixtures())                                                     \
      GTEST_SKIP() << "shared fixtures not found at " SMOE_FIXTURES_DIR " (test skipped)"; \
  } while (0)

// A fresh empty directory for this test under the build tree.
std::string temp_dir(const std::string& name);
std::string read_file(const std::string& path);
void write_file(const std::string& path, const std::string& bytes);

struct CmdResult {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};
// Runs a shell command line (its stdout and stderr captured), optional stdin text.
CmdResult run_command(const std::string& cmd, const std::string& stdin_text = "");
// Runs the smoe binary with `args` (a shell-quoted string), optional stdin text.
CmdResult run_smoe(const std::string& args, const std::string& stdin_text = "");

}  // namespace smoe::test
