// scheduler_test.cpp: continuous batching in process: batched greedy output equals one
// sequence at a time, queueing, cancellation, prompt logprobs, stop strings, the chat
// template and the sampler's penalties.
#include <algorithm>
#include <cmath>
#include <map>

#include "core/error.h"
#include "model/synth.h"
#include "runtime/generate.h"
#include "runtime/scheduler.h"
#include "tokenizer/tokenizer.h"
#include "test_util.h"

namespace smoe {
namespace {

ModelConfig small_moe() { return test::tiny_moe_config(); }

std::vector<int32_t> greedy_alone(const Model& model, const std::vector<int32_t>& prompt, int64_t n) {
  Session s(model, 64);
  GenerateOptions o;
  o.sampling.temperature = 0;
  o.max_tokens = n;
  o.stop_at_eos = false;
  return generate(s, prompt, o).tokens;
}

// Runs requests through a scheduler until all are done; returns their results by index.
std::vector<RequestResult> run_all(Scheduler& sched, const std::vector<std::vector<int32_t>>& prompts,
                                   const GenerateOptions& o) {
  std::vector<RequestResult> results(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    RequestCallbacks cb;
    cb.on_done = [&results, i](const RequestResult& r) { results[i] = r; };
    sched.submit(prompts[i], o, cb);
  }
  while (sched.step()) {
  }
  return results;
}

TEST(Scheduler, BatchedGreedyEqualsOneSequenceAtATime) {
  auto model = synth_model(small_moe(), 7);
  const std::vector<std::vector<int32_t>> prompts = {
      {1, 2, 3}, {9}, {40, 41, 42, 43, 44, 45, 46, 47, 48, 49}, {5, 5, 5, 5}, {60, 61}, {3, 1, 4, 1, 5, 9, 2, 6}};
  SchedulerOptions so;
  so.n_slots = 3;  // fewer slots than requests: some wait and join later
  so.n_ctx = 3 * 40;
  so.max_prefill_tokens = 4;  // prompts are split over several steps
  ThreadPool pool(2);
  Scheduler sched(*model, so, &pool);
  GenerateOptions o;
  o.sampling.temperature = 0;
  o.max_tokens = 12;
  o.stop_at_eos = false;
  std::vector<RequestResult> results = run_all(sched, prompts, o);
  for (size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_EQ(results[i].reason, FinishReason::Length);
    EXPECT_EQ(results[i].tokens, greedy_alone(*model, prompts[i], 12)) << "request " << i;
  }
  SchedulerStats st = sched.stats();
  EXPECT_EQ(st.generated_tokens, 6u * 12u);
  EXPECT_EQ(st.prompt_tokens, 3u + 1u + 10u + 4u + 2u + 8u);
  EXPECT_EQ(st.finished["length"], 6u);
  EXPECT_EQ(st.slots_busy, 0);
  EXPECT_EQ(st.kv_tokens, 0);
  // Fewer steps than running the requests one after another: they advanced together.
  EXPECT_LT(st.steps, 6u * 12u);
  int64_t routed = 0;
  for (int64_t n : st.expert_tokens) routed += n;
  EXPECT_EQ(routed, static_cast<int64_t>(st.prompt_tokens + st.generated_tokens - 6) * 2 * 2);  // K=2, L=2
  EXPECT_TRUE(sched.idle());
}

TEST(Scheduler, ContextLimitAndBadRequests) {
  auto model = synth_model(small_moe(), 8);
  SchedulerOptions so;
  so.n_slots = 2;
  so.n_ctx = 16;  // 8 per slot
  so.max_queue = 1;
  Scheduler sched(*model, so, nullptr);
  GenerateOptions o;
  o.sampling.temperature = 0;
  o.stop_at_eos = false;
  o.max_tokens = 100;
  EXPECT_THROW(sched.submit({}, o, {}), Error);
  EXPECT_THROW(sched.submit({1, 2, 3, 4, 5, 6, 7, 8, 9}, o, {}), Error);  // 9 > 8
  EXPECT_THROW(sched.submit({1, 97}, o, {}), Error);
  GenerateOptions bad = o;
  bad.sampling.top_p = 0;
  EXPECT_THROW(sched.submit({1}, bad, {}), Error);
  bad = o;
  bad.stop = {"x"};  // no tokenizer
  EXPECT_THROW(sched.submit({1}, bad, {}), Error);
  // The prompt fills 5 of 8 positions: 4 tokens are generated, the last without a cache slot.
  std::vector<RequestResult> r = run_all(sched, {{1, 2, 3, 4, 5}}, o);
  EXPECT_EQ(r[0].reason, FinishReason::Context);
  EXPECT_EQ(r[0].tokens.size(), 4u);
  // Two slots and a queue of one: the fourth request is refused.
  sched.submit({1}, o, {});
  sched.submit({2}, o, {});
  sched.submit({3}, o, {});
  EXPECT_THROW(sched.submit({4}, o, {}), QueueFull);
  EXPECT_EQ(sched.stats().rejected, 1u);
  sched.cancel_all();
  while (sched.step()) {
  }
  EXPECT_EQ(sched.stats().finished["cancelled"], 3u);
}

TEST(Scheduler, CancelFreesTheSlotForTheNextRequest) {
  auto model = synth_model(small_moe(), 9);
  SchedulerOptions so;
  so.n_slots = 1;
  so.n_ctx = 64;
  Scheduler sched(*model, so, nullptr);
  GenerateOptions o;
  o.sampling.temperature = 0;
  o.stop_at_eos = false;
  o.max_tokens = 50;
  std::vector<RequestResult> results(3);
  int tokens_seen = 0;
  RequestCallbacks stopper;  // stops itself after 3 tokens
  stopper.on_token = [&](const TokenOut&) { return ++tokens_seen < 3; };
  stopper.on_done = [&](const RequestResult& r) { results[0] = r; };
  sched.submit({1, 2}, o, stopper);
  RequestCallbacks waiting;
  waiting.on_done = [&](const RequestResult& r) { results[1] = r; };
  const Scheduler::RequestId id = sched.submit({3, 4}, o, waiting);
  RequestCallbacks last;
  last.on_done = [&](const RequestResult& r) { results[2] = r; };
  o.max_tokens = 5;
  sched.submit({5, 6}, o, last);
  sched.cancel(id);  // while it waits in the queue
  while (sched.step()) {
  }
  EXPECT_EQ(results[0].reason, FinishReason::Cancelled);
  EXPECT_EQ(results[0].tokens.size(), 3u);
  EXPECT_EQ(results[1].reason, FinishReason::Cancelled);
  EXPECT_TRUE(results[1].tokens.empty());
  EXPECT_EQ(results[2].reason, FinishReason::Length);
  EXPECT_EQ(results[2].tokens, greedy_alone(*model, {5, 6}, 5));
}

TEST(Scheduler, PromptLogprobsMatchTheLogits) {
  auto model = synth_model(small_moe(), 10);
  const std::vector<int32_t> prompt = {4, 8, 15, 16, 23, 42, 7};
  Session s(*model, 16);
  std::vector<float> logits;
  s.forward(prompt, true, logits);
  const int64_t V = model->config.vocab_size;
  SchedulerOptions so;
  so.n_slots = 2;
  so.n_ctx = 32;
  so.max_prefill_tokens = 3;
  Scheduler sched(*model, so, nullptr);
  GenerateOptions o;
  o.sampling.temperature = 0;
  o.max_tokens = 1;
  o.logprobs = 2;
  o.prompt_logprobs = true;
  std::vector<TokenLogprob> got;
  std::vector<TokenOut> generated;
  RequestCallbacks cb;
  cb.on_prompt = [&](std::span<const TokenLogprob> lps) { got.assign(lps.begin(), lps.end()); };
  cb.on_token = [&](const TokenOut& t) {
    generated.push_back(t);
    return true;
  };
  sched.submit(prompt, o, cb);
  while (sched.step()) {
  }
  ASSERT_EQ(got.size(), prompt.size() - 1);
  for (size_t i = 0; i < got.size(); ++i) {
    const float* row = &logits[i * V];
    double z = 0;
    for (int64_t v = 0; v < V; ++v) z += std::exp(static_cast<double>(row[v]));
    EXPECT_EQ(got[i].id, prompt[i + 1]);
    EXPECT_NEAR(got[i].logprob, row[prompt[i + 1]] - std::log(z), 1e-4);
    ASSERT_EQ(got[i].top.size(), 2u);
    EXPECT_EQ(got[i].top[0].first, argmax(row, V));
    EXPECT_GE(got[i].top[0].second, got[i].top[1].second);
  }
  ASSERT_EQ(generated.size(), 1u);
  ASSERT_TRUE(generated[0].logprob.has_value());
  EXPECT_EQ(generated[0].id, argmax(&logits[(prompt.size() - 1) * V], V));
  EXPECT_EQ(generated[0].logprob->top[0].first, generated[0].id);
}

TEST(Generation, StopStringsCutAndHoldBackText) {
  SMOE_REQUIRE_FIXTURES();
  auto tok = Tokenizer::from_spm_file(test::fixture("tokenizers/mistral-v1.model"));
  const std::vector<int32_t> ids = tok->encode("Hello world, this is the end. More text");
  auto stream = [&](std::vector<std::string> stop, bool& stopped) {
    StopStreamer st(*tok, stop);
    std::string out;
    for (int32_t id : ids) {
      std::string piece = st.push(id);
      out += piece;
      if (st.stopped()) break;
    }
    out += st.flush();
    stopped = st.stopped();
    return out;
  };
  bool stopped = false;
  EXPECT_EQ(stream({"the end"}, stopped), "Hello world, this is ");
  EXPECT_TRUE(stopped);
  EXPECT_EQ(stream({"nothing", "xyz"}, stopped), "Hello world, this is the end. More text");
  EXPECT_FALSE(stopped);
  EXPECT_EQ(stream({".", ","}, stopped), "Hello world");
  // A stop-string prefix at the very end is released by flush().
  EXPECT_EQ(stream({"text!"}, stopped), "Hello world, this is the end. More text");
  EXPECT_FALSE(stopped);
  // While the text could still become "is the end", nothing past "this " is emitted.
  StopStreamer st(*tok, {"is the end"});
  std::string so_far;
  for (int32_t id : tok->encode("Hello world, this is the")) so_far += st.push(id);
  EXPECT_EQ(so_far, "Hello world, this ");
}

TEST(Generation, ChatTemplateForConversations) {
  SMOE_REQUIRE_FIXTURES();
  auto tok = Tokenizer::from_spm_file(test::fixture("tokenizers/mistral-v1.model"));
  const std::vector<ChatMessage> one = {{"user", "Hello"}};
  EXPECT_EQ(chat_prompt(*tok, one), chat_prompt(*tok, "Hello"));
  const std::vector<ChatMessage> talk = {
      {"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello!"}, {"user", "Bye"}};
  std::vector<int32_t> ids = chat_prompt(*tok, talk);
  EXPECT_EQ(ids.front(), tok->bos_id());
  EXPECT_EQ(std::count(ids.begin(), ids.end(), tok->eos_id()), 1);
  EXPECT_EQ(tok->decode(ids), "[INST] Be brief.\n\nHi [/INST] Hello! [INST] Bye [/INST]");
  EXPECT_THROW(chat_prompt(*tok, std::vector<ChatMessage>{{"assistant", "x"}}), Error);
  EXPECT_THROW(chat_prompt(*tok, std::vector<ChatMessage>{{"user", "a"}, {"user", "b"}}), Error);
  EXPECT_THROW(chat_prompt(*tok, std::vector<ChatMessage>{{"user", "a"}, {"assistant", "b"}}), Error);
  EXPECT_THROW(chat_prompt(*tok, std::vector<ChatMessage>{{"tool", "a"}}), Error);
  EXPECT_THROW(chat_prompt(*tok, std::vector<ChatMessage>{{"system", "a"}}), Error);
}

TEST(Sampler, PenaltiesDiscourageRepeats) {
  const std::vector<float> logits = {2.0f, 1.9f, 0.0f};
  SamplingParams p;
  p.temperature = 0;
  Sampler plain(p);
  EXPECT_EQ(plain.sample(logits.data(), 3), 0);
  EXPECT_EQ(plain.sample(logits.data(), 3), 0);
  p.presence_penalty = 0.5f;
  Sampler presence(p);
  EXPECT_EQ(presence.sample(logits.data(), 3), 0);
  EXPECT_EQ(presence.sample(logits.data(), 3), 1);  // 2.0 - 0.5 < 1.9
  EXPECT_EQ(presence.sample(logits.data(), 3), 0);  // both seen once: 1.5 > 1.4
  p.presence_penalty = 0;
  p.repetition_penalty = 1.2f;
  Sampler rep(p);
  rep.add_context(std::vector<int32_t>{0});
  EXPECT_EQ(rep.sample(logits.data(), 3), 1);  // 2.0 / 1.2 < 1.9
  p.repetition_penalty = 1;
  p.frequency_penalty = 3;
  EXPECT_THROW(Sampler{p}, Error);
}

}  // namespace
}  // namespace smoe
