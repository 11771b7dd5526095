// sampler.h: choosing the next token from logits: greedy, or temperature with top-k,
// top-p (nucleus) and min-p filtering, from a seeded generator (same seed, same tokens).
#pragma once
#include <cstdint>
#include <random>
#include <vector>

namespace smoe {

struct SamplingParams {
  float temperature = 0.8f;  // <= 0: greedy (argmax)
  int32_t top_k = 40;        // <= 0: off
  float top_p = 0.95f;       // >= 1: off
  float min_p = 0.05f;       // <= 0: off; keep tokens with p >= min_p * p(best)
  uint64_t seed = 0;
  // Throws smoe::Error naming the parameter when a value is out of range.
  void validate() const;
};

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);
  // Picks a token id from logits[V].
  int32_t sample(const float* logits, int64_t vocab_size);

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int32_t>> cand_;  // (logit or prob, id), reused
};

// Index of the largest logit (the lower index on ties).
int32_t argmax(const float* logits, int64_t n);

}  // namespace smoe
