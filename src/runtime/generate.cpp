// generate.cpp: prompt prefill, the sampling loop and streaming detokenization.
#include "runtime/generate.h"

#include <chrono>

#include "core/error.h"
#include "tokenizer/tokenizer.h"

namespace smoe {

namespace {
double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

GenerateResult generate(Session& session, std::span<const int32_t> prompt,
                        const GenerateOptions& opts, const std::function<bool(int32_t)>& on_token) {
  SMOE_CHECK(!prompt.empty(), "the prompt is empty: give at least one token");
  SMOE_CHECK(opts.max_tokens >= 0, "number of tokens to generate ", opts.max_tokens,
             " must be >= 0");
  SMOE_CHECK(session.n_past() + static_cast<int64_t>(prompt.size()) <= session.n_ctx(),
             "the prompt has ", prompt.size(), " tokens but the context holds ", session.n_ctx(),
             " (raise --ctx, at most ", session.model().config.max_seq_len,
             " for this model, or shorten the prompt)");
  const int64_t V = session.model().config.vocab_size;
  const int32_t eos = session.model().config.eos_id;
  Sampler sampler(opts.sampling);
  GenerateResult r;
  r.n_prompt = static_cast<int64_t>(prompt.size());
  std::vector<float> logits;
  auto t0 = std::chrono::steady_clock::now();
  session.forward(prompt, false, logits);
  r.prompt_ms = ms_since(t0);
  t0 = std::chrono::steady_clock::now();
  r.stop_reason = "length";
  for (int64_t i = 0; i < opts.max_tokens; ++i) {
    const int32_t id = sampler.sample(logits.data(), V);
    r.tokens.push_back(id);
    if (on_token && !on_token(id)) {
      r.stop_reason = "callback";
      break;
    }
    if (opts.stop_at_eos && id == eos) {
      r.stop_reason = "eos";
      break;
    }
    if (i + 1 == opts.max_tokens) break;
    if (session.n_past() >= session.n_ctx()) {
      r.stop_reason = "context";
      break;
    }
    const int32_t next[1] = {id};
    session.forward(next, false, logits);
  }
  r.generate_ms = ms_since(t0);
  return r;
}

std::string TextStreamer::push(int32_t id) {
  ids_.push_back(id);
  std::string full = tok_.decode(ids_);
  // Hold back trailing replacement characters: they may be a partial UTF-8 sequence.
  static const std::string kReplacement = "\xEF\xBF\xBD";
  size_t end = full.size();
  while (end >= kReplacement.size() &&
         full.compare(end - kReplacement.size(), kReplacement.size(), kReplacement) == 0)
    end -= kReplacement.size();
  if (end <= emitted_.size() || full.compare(0, emitted_.size(), emitted_) != 0) return "";
  std::string fresh = full.substr(emitted_.size(), end - emitted_.size());
  emitted_ += fresh;
  return fresh;
}

std::string TextStreamer::flush() {
  std::string full = tok_.decode(ids_);
  if (full.size() <= emitted_.size() || full.compare(0, emitted_.size(), emitted_) != 0) return "";
  std::string fresh = full.substr(emitted_.size());
  emitted_ += fresh;
  return fresh;
}

std::vector<int32_t> chat_prompt(const Tokenizer& tok, const std::string& user) {
  return tok.encode("[INST] " + user + " [/INST]", /*add_bos=*/true);
}

}  // namespace smoe
