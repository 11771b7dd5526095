// passkey.h: passkey retrieval, the long-context test of the Mixtral paper: a random
// number (the pass key) is hidden at a chosen depth of a long, repetitive filler text, and
// the model is asked for it at the end. This file builds such prompts to a target length
// in tokens and scores greedy answers over a grid of lengths and depths.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/thread_pool.h"
#include "model/model.h"

namespace smoe {

class Tokenizer;

struct PasskeyPrompt {
  std::string text;              // the prompt (without BOS)
  std::vector<int32_t> tokens;   // BOS + the prompt's tokens; at most the requested length
  std::string key;
  int64_t n_filler = 0;          // filler sentences in all
  int64_t n_before = 0;          // filler sentences before the key
  int64_t key_token = 0;         // index in tokens where the key sentence starts
};

// The prompt of at most `length` tokens (BOS included) holding as much filler as fits,
// with the key after a share `depth` (0: right after the instructions, 1: right before the
// question) of the filler sentences. Throws when even a prompt without filler is longer
// than `length`, naming the shortest possible length.
PasskeyPrompt build_passkey_prompt(const Tokenizer& tok, int64_t length, double depth, const std::string& key);

// The first run of decimal digits in `text` ("" when there is none).
std::string first_number(const std::string& text);

struct PasskeyCase {
  int64_t length = 0;   // requested prompt length
  double depth = 0;
  int64_t n_tokens = 0; // actual prompt length
  int64_t key_token = 0;
  std::string key, output, answer;  // output: the generated text; answer: its first number
  bool correct = false;
};

struct PasskeyOptions {
  std::vector<int64_t> lengths;  // prompt lengths in tokens
  std::vector<double> depths;    // key positions in [0, 1]
  int64_t trials = 1;            // random keys per (length, depth)
  int64_t digits = 5;            // digits of each key
  uint64_t seed = 0;
  ThreadPool* pool = nullptr;
  const char* progress_tool = nullptr;
};

struct PasskeyGrid {
  std::vector<int64_t> lengths;
  std::vector<double> depths;
  int64_t trials = 0;
  std::vector<PasskeyCase> cases;  // length-major, then depth, then trial
  // Share of correct answers for lengths[li], depths[di].
  double accuracy(size_t li, size_t di) const;
  double overall() const;
};

// Builds and runs every prompt of the grid: greedy decoding of digits + 4 tokens after the
// prompt; an answer is correct when the first number in the output is the key.
PasskeyGrid run_passkey(const Model& model, const PasskeyOptions& opts);

}  // namespace smoe
