// sampler_test.cpp: greedy, seeded and filtered sampling.
#include <cmath>
#include <map>

#include "core/error.h"
#include "runtime/sampler.h"
#include "test_util.h"

namespace smoe {
namespace {

TEST(Sampler, GreedyIsArgmax) {
  const std::vector<float> logits = {0.1f, 3.0f, -2.0f, 3.0f, 1.0f};
  SamplingParams p;
  p.temperature = 0;
  Sampler s(p);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(s.sample(logits.data(), 5), 1);
}

TEST(Sampler, SameSeedSameTokens) {
  std::vector<float> logits(100);
  for (int i = 0; i < 100; ++i) logits[i] = std::sin(i * 0.7f) * 3;
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_k = 0;
  p.top_p = 1.0f;
  p.min_p = 0;
  p.seed = 42;
  Sampler a(p), b(p);
  p.seed = 43;
  Sampler c(p);
  int differ = 0;
  for (int i = 0; i < 50; ++i) {
    const int32_t x = a.sample(logits.data(), 100);
    EXPECT_EQ(x, b.sample(logits.data(), 100));
    differ += x != c.sample(logits.data(), 100);
  }
  EXPECT_GT(differ, 0);
}

TEST(Sampler, FiltersKeepOnlyAllowedTokens) {
  const std::vector<float> logits = {5.0f, 4.9f, 4.8f, 0.0f, -1.0f, 4.85f};
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_p = 1.0f;
  p.min_p = 0;
  p.top_k = 2;
  Sampler topk(p);
  std::map<int32_t, int> seen;
  for (int i = 0; i < 400; ++i) ++seen[topk.sample(logits.data(), 6)];
  EXPECT_EQ(seen.size(), 2u);
  EXPECT_TRUE(seen.count(0) && seen.count(1));

  p.top_k = 0;
  p.min_p = 0.5f;  // tokens 3 and 4 have p < 0.5 p(best)
  Sampler minp(p);
  seen.clear();
  for (int i = 0; i < 400; ++i) ++seen[minp.sample(logits.data(), 6)];
  EXPECT_FALSE(seen.count(3) || seen.count(4));
  EXPECT_EQ(seen.size(), 4u);

  p.min_p = 0;
  p.top_p = 0.3f;  // token 0 alone has ~0.28 mass: tokens 0 and 1 are needed
  Sampler topp(p);
  seen.clear();
  for (int i = 0; i < 400; ++i) ++seen[topp.sample(logits.data(), 6)];
  EXPECT_EQ(seen.size(), 2u);

  // Temperature near zero behaves greedily; frequencies follow the softmax otherwise.
  p.top_p = 1.0f;
  p.temperature = 1.0f;
  const std::vector<float> two = {0.0f, std::log(3.0f)};
  Sampler soft(p);
  int ones = 0;
  for (int i = 0; i < 4000; ++i) ones += soft.sample(two.data(), 2);
  EXPECT_NEAR(ones / 4000.0, 0.75, 0.03);
}

TEST(Sampler, RejectsAbsurdParameters) {
  SamplingParams p;
  p.temperature = -1;
  EXPECT_THROW(p.validate(), Error);
  p = SamplingParams();
  p.top_p = 1.5f;
  EXPECT_THROW(p.validate(), Error);
  p = SamplingParams();
  p.min_p = NAN;
  EXPECT_THROW(p.validate(), Error);
  p = SamplingParams();
  p.top_k = -3;
  EXPECT_THROW(p.validate(), Error);
}

}  // namespace
}  // namespace smoe
