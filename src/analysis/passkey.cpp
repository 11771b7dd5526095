// passkey.cpp: passkey prompts fitted to a token budget, and the retrieval grid (see
// passkey.h).
#include "analysis/passkey.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <random>

#include "analysis/eval_common.h"
#include "core/error.h"
#include "model/transformer.h"
#include "runtime/generate.h"
#include "tokenizer/tokenizer.h"

namespace smoe {

namespace {

const char* kInstructions = "A pass key is hidden in the text below. Find it and remember it.";
const char* kFiller[] = {
    "The wind moves over the fields and the river runs on.",
    "A cart goes down the road to the market and back again.",
    "The evening is quiet and the lamps are lit one by one.",
    "Nothing new happens here; the day is like the day before.",
    "Birds rest on the wall, then fly off across the hills.",
};
const char* kQuestion = "What is the pass key? The pass key is";

std::string key_sentence(const std::string& key) {
  return "The pass key is " + key + ". Remember it. " + key + " is the pass key.";
}

// The prompt text with n filler sentences, the key after n_before of them. When
// up_to_key, the text stops where the key sentence starts.
std::string prompt_text(int64_t n, int64_t n_before, const std::string& key, bool up_to_key = false) {
  std::string s = kInstructions;
  for (int64_t i = 0; i <= n; ++i) {
    if (i == n_before) {
      if (up_to_key) return s + " ";
      s += " " + key_sentence(key);
    }
    if (i < n) s += std::string(" ") + kFiller[i % 5];
  }
  return s + "\n" + kQuestion;
}

int64_t before_count(int64_t n, double depth) { return std::llround(depth * static_cast<double>(n)); }

}  // namespace

PasskeyPrompt build_passkey_prompt(const Tokenizer& tok, int64_t length, double depth, const std::string& key) {
  SMOE_CHECK(depth >= 0 && depth <= 1, "passkey depth ", depth, " is out of range (expected 0..1)");
  SMOE_CHECK(!key.empty(), "passkey: empty key");
  auto count = [&](int64_t n) {
    return static_cast<int64_t>(tok.encode(prompt_text(n, before_count(n, depth), key), true).size());
  };
  const int64_t shortest = count(0);
  SMOE_CHECK(shortest <= length, "passkey length ", length, " is too short: the prompt without filler already takes ",
             shortest, " tokens (expected at least ", shortest, ")");
  // The most filler sentences that fit: grow, then bisect. Every sentence adds tokens.
  int64_t lo = 0, hi = 1;
  while (hi <= length && count(hi) <= length) {
    lo = hi;
    hi *= 2;
  }
  while (hi - lo > 1) {
    const int64_t mid = lo + (hi - lo) / 2;
    (count(mid) <= length ? lo : hi) = mid;
  }
  PasskeyPrompt p;
  p.key = key;
  p.n_filler = lo;
  p.n_before = before_count(lo, depth);
  p.text = prompt_text(lo, p.n_before, key);
  p.tokens = tok.encode(p.text, true);
  p.key_token = static_cast<int64_t>(tok.encode(prompt_text(lo, p.n_before, key, true), true).size());
  return p;
}

std::string first_number(const std::string& text) {
  size_t i = 0;
  while (i < text.size() && !std::isdigit(static_cast<unsigned char>(text[i]))) ++i;
  size_t j = i;
  while (j < text.size() && std::isdigit(static_cast<unsigned char>(text[j]))) ++j;
  return text.substr(i, j - i);
}

double PasskeyGrid::accuracy(size_t li, size_t di) const {
  int64_t ok = 0, n = 0;
  for (const PasskeyCase& c : cases)
    if (c.length == lengths[li] && c.depth == depths[di]) {
      ok += c.correct;
      ++n;
    }
  return n ? static_cast<double>(ok) / static_cast<double>(n) : 0.0;
}

double PasskeyGrid::overall() const {
  int64_t ok = 0;
  for (const PasskeyCase& c : cases) ok += c.correct;
  return cases.empty() ? 0.0 : static_cast<double>(ok) / static_cast<double>(cases.size());
}

PasskeyGrid run_passkey(const Model& model, const PasskeyOptions& opts) {
  const ModelConfig& c = model.config;
  SMOE_CHECK(model.tokenizer, model.path, ": the model has no tokenizer, cannot build passkey prompts");
  SMOE_CHECK(!opts.lengths.empty() && !opts.depths.empty(), "passkey: no lengths or positions given");
  SMOE_CHECK(opts.trials >= 1 && opts.trials <= 10000, "--trials ", opts.trials, " is out of range (expected 1..10000)");
  SMOE_CHECK(opts.digits >= 1 && opts.digits <= 18, "--digits ", opts.digits, " is out of range (expected 1..18)");
  const int64_t n_new = opts.digits + 4;
  for (int64_t len : opts.lengths)
    SMOE_CHECK(len >= 1 && len + n_new <= c.max_seq_len, "--lengths: ", len, " is out of range (expected 1..",
               c.max_seq_len - n_new, ": the model's context length ", c.max_seq_len, " minus ", n_new,
               " tokens for the answer)");
  for (double d : opts.depths)
    SMOE_CHECK(d >= 0 && d <= 1, "--positions: ", d, " is out of range (expected depths 0..1)");
  PasskeyGrid grid;
  grid.lengths = opts.lengths;
  grid.depths = opts.depths;
  grid.trials = opts.trials;
  std::mt19937_64 rng(opts.seed);
  int64_t lo = 1;
  for (int64_t i = 1; i < opts.digits; ++i) lo *= 10;
  std::uniform_int_distribution<int64_t> pick(opts.digits == 1 ? 0 : lo, lo * 10 - 1);
  const size_t total = opts.lengths.size() * opts.depths.size() * static_cast<size_t>(opts.trials);
  for (int64_t len : opts.lengths)
    for (double depth : opts.depths)
      for (int64_t t = 0; t < opts.trials; ++t) {
        PasskeyCase pc;
        pc.length = len;
        pc.depth = depth;
        pc.key = std::to_string(pick(rng));
        const PasskeyPrompt p = build_passkey_prompt(*model.tokenizer, len, depth, pc.key);
        pc.n_tokens = static_cast<int64_t>(p.tokens.size());
        pc.key_token = p.key_token;
        Session session(model, pc.n_tokens + n_new);
        session.pool = opts.pool;
        GenerateOptions g;
        g.max_tokens = n_new;
        g.sampling.temperature = 0;
        const GenerateResult r = generate(session, p.tokens, g);
        std::vector<int32_t> out;
        for (int32_t id : r.tokens)
          if (id != c.eos_id) out.push_back(id);
        pc.output = model.tokenizer->decode(out);
        pc.answer = first_number(pc.output);
        pc.correct = pc.answer == pc.key;
        grid.cases.push_back(pc);
        if (opts.progress_tool)
          progress(opts.progress_tool,
                   cat(grid.cases.size(), "/", total, ": length ", len, ", depth ", depth, ", key ", pc.key,
                       ", answer \"", pc.answer, "\""),
                   grid.cases.size() == total);
      }
  return grid;
}

}  // namespace smoe
