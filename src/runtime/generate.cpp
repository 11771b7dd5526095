// generate.cpp: one sequence's decoding state (sampling, stop rules, streamed text),
// generation on a Session, streaming detokenization and the chat template.
#include "runtime/generate.h"

#include <algorithm>
#include <chrono>

#include "core/error.h"
#include "tokenizer/tokenizer.h"

namespace smoe {

namespace {
double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

void GenerateOptions::validate() const {
  sampling.validate();
  SMOE_CHECK(max_tokens >= 0, "number of tokens to generate ", max_tokens, " must be >= 0");
  SMOE_CHECK(logprobs >= -1 && logprobs <= 20, "logprobs ", logprobs,
             " is out of range (expected 0..20 alternatives)");
  for (const std::string& s : stop) SMOE_CHECK(!s.empty(), "stop strings must not be empty");
}

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::Eos: return "eos";
    case FinishReason::Stop: return "stop";
    case FinishReason::Length: return "length";
    case FinishReason::Context: return "context";
    case FinishReason::Cancelled: return "cancelled";
    case FinishReason::Error: return "error";
  }
  return "unknown";
}

// ---------------------------------------------------------------------------------------
// Streaming text

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

StopStreamer::StopStreamer(const Tokenizer& tok, std::vector<std::string> stop)
    : text_(tok), stop_(std::move(stop)) {}

std::string StopStreamer::release() {
  // A stop string inside the pending text ends the stream there.
  size_t first = std::string::npos;
  for (const std::string& s : stop_) first = std::min(first, pending_.find(s));
  if (first != std::string::npos) {
    std::string out = pending_.substr(0, first);
    pending_.clear();
    stopped_ = true;
    return out;
  }
  // Keep the longest suffix that is a proper prefix of some stop string.
  size_t hold = 0;
  for (const std::string& s : stop_)
    for (size_t k = std::min(s.size() - 1, pending_.size()); k > hold; --k)
      if (pending_.compare(pending_.size() - k, k, s, 0, k) == 0) {
        hold = k;
        break;
      }
  std::string out = pending_.substr(0, pending_.size() - hold);
  pending_.erase(0, pending_.size() - hold);
  return out;
}

std::string StopStreamer::push(int32_t id) {
  if (stopped_) return "";
  pending_ += text_.push(id);
  return release();
}

std::string StopStreamer::flush() {
  if (stopped_) return "";
  pending_ += text_.flush();
  std::string out = release();
  if (!stopped_) {
    out += pending_;
    pending_.clear();
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// One sequence's decoding state

Generation::Generation(const ModelConfig& config, const Tokenizer* tok, const GenerateOptions& opts,
                       std::span<const int32_t> prompt)
    : config_(config), opts_(opts), sampler_(opts.sampling) {
  opts_.validate();
  SMOE_CHECK(tok || opts_.stop.empty(), "stop strings need a model with a tokenizer");
  if (tok) streamer_ = std::make_unique<StopStreamer>(*tok, opts_.stop);
  sampler_.add_context(prompt);
}

TokenOut Generation::next(const float* logits) {
  SMOE_CHECK(!done(), "generation already finished (", finish_reason_name(reason()), ")");
  TokenOut out;
  out.id = sampler_.sample(logits, config_.vocab_size);
  if (opts_.logprobs >= 0) out.logprob = token_logprob(logits, config_.vocab_size, out.id, opts_.logprobs);
  tokens_.push_back(out.id);
  const bool eos = opts_.stop_at_eos && out.id == config_.eos_id;
  if (streamer_ && !eos) {
    out.text = streamer_->push(out.id);
    text_ += out.text;
    if (streamer_->stopped()) reason_ = FinishReason::Stop;
  }
  if (!reason_ && eos) reason_ = FinishReason::Eos;
  if (!reason_ && static_cast<int64_t>(tokens_.size()) >= opts_.max_tokens) reason_ = FinishReason::Length;
  return out;
}

std::string Generation::flush() {
  if (!streamer_) return "";
  std::string tail = streamer_->flush();
  text_ += tail;
  return tail;
}

// ---------------------------------------------------------------------------------------
// Generation on one Session

GenerateResult generate(Session& session, std::span<const int32_t> prompt,
                        const GenerateOptions& opts, const std::function<bool(int32_t)>& on_token) {
  SMOE_CHECK(!prompt.empty(), "the prompt is empty: give at least one token");
  opts.validate();
  SMOE_CHECK(session.n_past() + static_cast<int64_t>(prompt.size()) <= session.n_ctx(),
             "the prompt has ", prompt.size(), " tokens but the context holds ", session.n_ctx(),
             " (raise --ctx, at most ", session.model().config.max_seq_len,
             " for this model, or shorten the prompt)");
  const Model& model = session.model();
  Generation gen(model.config, opts.stop.empty() ? nullptr : model.tokenizer.get(), opts, prompt);
  GenerateResult r;
  r.n_prompt = static_cast<int64_t>(prompt.size());
  std::vector<float> logits;
  auto t0 = std::chrono::steady_clock::now();
  session.forward(prompt, false, logits);
  r.prompt_ms = ms_since(t0);
  t0 = std::chrono::steady_clock::now();
  r.stop_reason = "length";
  if (opts.max_tokens == 0) gen.finish(FinishReason::Length);
  while (!gen.done()) {
    const int32_t id = gen.next(logits.data()).id;
    r.tokens.push_back(id);
    if (on_token && !on_token(id)) {
      gen.finish(FinishReason::Cancelled);
      r.stop_reason = "callback";
      break;
    }
    if (gen.done()) {
      r.stop_reason = finish_reason_name(gen.reason());
      break;
    }
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

// ---------------------------------------------------------------------------------------
// Chat template

std::vector<int32_t> chat_prompt(const Tokenizer& tok, const std::string& user) {
  return tok.encode("[INST] " + user + " [/INST]", /*add_bos=*/true);
}

std::vector<int32_t> chat_prompt(const Tokenizer& tok, std::span<const ChatMessage> messages) {
  std::string system;
  size_t i = 0;
  for (; i < messages.size() && messages[i].role == "system"; ++i)
    system += (system.empty() ? "" : "\n\n") + messages[i].content;
  SMOE_CHECK(i < messages.size(), "messages: no user message");
  std::vector<int32_t> ids = {tok.bos_id()};
  bool user_turn = true;
  for (size_t first_user = i; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (m.role == "user") {
      SMOE_CHECK(user_turn, "messages[", i, "]: two user messages in a row (roles must alternate user/assistant)");
      std::string text = m.content;
      if (i == first_user && !system.empty()) text = system + "\n\n" + text;
      std::vector<int32_t> part = tok.encode("[INST] " + text + " [/INST]");
      ids.insert(ids.end(), part.begin(), part.end());
    } else if (m.role == "assistant") {
      SMOE_CHECK(!user_turn, "messages[", i, "]: an assistant message must follow a user message");
      std::vector<int32_t> part = tok.encode(m.content);
      ids.insert(ids.end(), part.begin(), part.end());
      ids.push_back(tok.eos_id());
    } else if (m.role == "system") {
      fail("messages[", i, "]: a system message may only come before the first user message");
    } else {
      fail("messages[", i, "]: unknown role \"", m.role, "\" (expected system, user or assistant)");
    }
    user_turn = !user_turn;
  }
  SMOE_CHECK(!user_turn, "messages: the last message must be the user's");
  return ids;
}

}  // namespace smoe
