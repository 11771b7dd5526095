// data.cpp: text loading with the validation hold-out, tokenizer training, batching.
#include "train/data.h"

#include <sentencepiece_trainer.h>

#include <cmath>
#include <fstream>
#include <random>
#include <sstream>

#include "core/error.h"

namespace smoe::train {

size_t val_split_point(const std::string& text, double val_frac) {
  SMOE_CHECK(val_frac >= 0 && val_frac < 1, "--val-split ", val_frac, " must be in [0, 1)");
  const uint64_t keep = 1000 - static_cast<uint64_t>(std::llround(val_frac * 1000));
  size_t at = static_cast<size_t>(static_cast<uint64_t>(text.size()) * keep / 1000);
  while (at < text.size() && (static_cast<unsigned char>(text[at]) & 0xC0) == 0x80) ++at;
  return at;
}

TextSplit load_text(const std::vector<std::string>& files, double val_frac) {
  SMOE_CHECK(!files.empty(), "no training data: give --data FILE");
  TextSplit out;
  for (const std::string& f : files) {
    std::ifstream in(f, std::ios::binary);
    SMOE_CHECK(in, "cannot read training data ", f);
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string text = ss.str();
    SMOE_CHECK(!text.empty(), "training data ", f, " is empty");
    const size_t at = val_split_point(text, val_frac);
    out.train += text.substr(0, at);
    out.val += text.substr(at);
  }
  return out;
}

void train_tokenizer(const std::string& text, int vocab_size, const std::string& prefix, int threads) {
  const std::string input = prefix + ".train.txt";
  {
    std::ofstream out(input, std::ios::binary);
    SMOE_CHECK(out, "cannot write ", input);
    out << text;
  }
  const std::string args = cat("--input=", input, " --model_prefix=", prefix, " --vocab_size=", vocab_size,
                               " --model_type=bpe --byte_fallback=true --split_digits=true",
                               " --character_coverage=1.0 --normalization_rule_name=identity",
                               " --remove_extra_whitespaces=false --unk_id=0 --bos_id=1 --eos_id=2 --pad_id=-1",
                               " --max_sentence_length=16384 --num_threads=", std::max(1, threads),
                               " --minloglevel=2");
  const auto status = sentencepiece::SentencePieceTrainer::Train(args);
  std::remove(input.c_str());
  SMOE_CHECK(status.ok(), "tokenizer training failed: ", status.ToString(),
             " (a smaller --vocab may help on little data)");
}

void sample_batch(const std::vector<int32_t>& tokens, int64_t B, int64_t T, int32_t bos, uint64_t seed,
                  int64_t step, std::vector<int32_t>& inputs, std::vector<int32_t>& targets) {
  const int64_t n = static_cast<int64_t>(tokens.size());
  SMOE_CHECK(n > T, "training data has ", n, " tokens, fewer than the context ", T, " + 1");
  std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(step) + 1);
  inputs.resize(static_cast<size_t>(B * T));
  targets.resize(static_cast<size_t>(B * T));
  for (int64_t b = 0; b < B; ++b) {
    const int64_t p = static_cast<int64_t>(rng() % static_cast<uint64_t>(n - T + 1));
    inputs[b * T] = bos;
    for (int64_t t = 0; t < T; ++t) {
      if (t > 0) inputs[b * T + t] = tokens[p + t - 1];
      targets[b * T + t] = tokens[p + t];
    }
  }
}

int64_t eval_windows(const std::vector<int32_t>& tokens, int64_t T, int32_t bos, std::vector<int32_t>& inputs,
                     std::vector<int32_t>& targets) {
  const int64_t n = static_cast<int64_t>(tokens.size());
  const int64_t W = (n + T - 1) / T;
  inputs.assign(static_cast<size_t>(W * T), bos);
  targets.assign(static_cast<size_t>(W * T), -1);
  for (int64_t w = 0; w < W; ++w)
    for (int64_t t = 0; t < T && w * T + t < n; ++t) {
      if (t > 0) inputs[w * T + t] = tokens[w * T + t - 1];
      targets[w * T + t] = tokens[w * T + t];
    }
  return W;
}

}  // namespace smoe::train
