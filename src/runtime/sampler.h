// sampler.h: choosing the next token from logits: greedy, or temperature with top-k,
// top-p (nucleus) and min-p filtering, from a seeded generator (same seed, same tokens);
// optional repetition/presence/frequency penalties; log-probabilities of tokens.
#pragma once
#include <cstdint>
#include <random>
#include <span>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace smoe {

struct SamplingParams {
  float temperature = 0.8f;  // <= 0: greedy (argmax)
  int32_t top_k = 40;        // <= 0: off
  float top_p = 0.95f;       // >= 1: off
  float min_p = 0.05f;       // <= 0: off; keep tokens with p >= min_p * p(best)
  uint64_t seed = 0;
  // Penalties on tokens already seen (all off by default). repetition_penalty (CTRL/HF):
  // logits of tokens in the prompt or the output are divided by it when positive and
  // multiplied when negative. presence/frequency (OpenAI): subtracted from the logits of
  // generated tokens, once / once per occurrence.
  float repetition_penalty = 1.0f;  // 1: off; 0 < r <= 10
  float presence_penalty = 0.0f;    // -2..2
  float frequency_penalty = 0.0f;   // -2..2
  bool has_penalties() const;
  // Throws smoe::Error naming the parameter when a value is out of range.
  void validate() const;
};

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);
  // Tokens the repetition penalty also applies to (the prompt); no effect without it.
  void add_context(std::span<const int32_t> ids);
  // Picks a token id from logits[V]. The pick counts as generated for later penalties.
  int32_t sample(const float* logits, int64_t vocab_size);

 private:
  int32_t pick(const float* logits, int64_t vocab_size);  // sampling without penalties
  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int32_t>> cand_;  // (logit or prob, id), reused
  std::vector<float> penalized_;                 // [V] logits after penalties, reused
  std::unordered_map<int32_t, int32_t> generated_;  // id -> times generated
  std::unordered_set<int32_t> context_;              // ids of the prompt
};

// The log-probability of token `id` under softmax(logits[V]) (the model's distribution,
// before temperature and filters), and the n_top most likely tokens with theirs (best
// first, lower id on ties).
struct TokenLogprob {
  int32_t id = 0;
  float logprob = 0;
  std::vector<std::pair<int32_t, float>> top;  // (id, logprob)
};
TokenLogprob token_logprob(const float* logits, int64_t vocab_size, int32_t id, int32_t n_top);

// Index of the largest logit (the lower index on ties).
int32_t argmax(const float* logits, int64_t n);

}  // namespace smoe
