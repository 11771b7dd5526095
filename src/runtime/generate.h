// generate.h: the one generation API the CLI and the server share. A Generation holds one
// sequence's decoding state (sampler, stop rules, streamed text, log-probabilities) and
// turns each logits row into the next token. The Scheduler (runtime/scheduler.h) runs many
// Generations in one batch; `smoe run` and `smoe serve` both go through it. generate()
// runs one Generation on a Session (a single sequence, for library users and tests).
// Also: streaming detokenization (with stop strings) and the Mistral instruct template.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "model/transformer.h"
#include "runtime/sampler.h"

namespace smoe {

class Tokenizer;

struct GenerateOptions {
  int64_t max_tokens = 128;  // tokens to generate at most
  SamplingParams sampling;
  bool stop_at_eos = true;
  // Generation ends when the text contains one of these; the text returned stops before
  // it. Needs a tokenizer.
  std::vector<std::string> stop;
  // < 0: no log-probabilities; N >= 0: the logprob of each generated token and of its N
  // most likely alternatives (at most 20).
  int32_t logprobs = -1;
  bool prompt_logprobs = false;  // also each prompt token's logprob (echo, scoring)
  // Throws smoe::Error naming the option when a value is out of range.
  void validate() const;
};

enum class FinishReason {
  Eos,        // the model produced end-of-sequence
  Stop,       // a stop string appeared in the text
  Length,     // max_tokens reached
  Context,    // the sequence filled its context
  Cancelled,  // the caller stopped it (callback returned false, client disconnected)
  Error,      // something failed while it ran
};
const char* finish_reason_name(FinishReason r);  // "eos", "stop", "length", ...

// One generated token as reported to callers.
struct TokenOut {
  int32_t id = 0;
  std::string text;  // text that became final with this token (may be empty: see StopStreamer)
  std::optional<TokenLogprob> logprob;  // when GenerateOptions::logprobs >= 0
};

// Incremental detokenizer for streaming: push ids, get the newly completed text. Holds back
// an incomplete UTF-8 character (shown by SentencePiece as U+FFFD) until it completes.
class TextStreamer {
 public:
  explicit TextStreamer(const Tokenizer& tok) : tok_(tok) {}
  std::string push(int32_t id);
  std::string flush();  // whatever is still held back
  const std::string& text() const { return emitted_; }

 private:
  const Tokenizer& tok_;
  std::vector<int32_t> ids_;
  std::string emitted_;
};

// TextStreamer with stop strings: also holds back text that could be the start of a stop
// string, and once one appears emits only the text before it and stops.
class StopStreamer {
 public:
  StopStreamer(const Tokenizer& tok, std::vector<std::string> stop);
  std::string push(int32_t id);
  std::string flush();  // held-back text at the end (none after a stop string)
  bool stopped() const { return stopped_; }

 private:
  std::string release();  // moves what can no longer start a stop string out of pending_
  TextStreamer text_;
  std::vector<std::string> stop_;
  std::string pending_;  // decoded, not yet emitted
  bool stopped_ = false;
};

// One sequence's decoding state.
class Generation {
 public:
  // tok may be null (then no text, and no stop strings). prompt feeds the repetition penalty.
  Generation(const ModelConfig& config, const Tokenizer* tok, const GenerateOptions& opts,
             std::span<const int32_t> prompt);
  // Picks the next token from logits[V] and applies the stop rules (EOS, stop strings,
  // max_tokens). Call only while !done().
  TokenOut next(const float* logits);
  bool done() const { return reason_.has_value(); }
  FinishReason reason() const { return reason_.value_or(FinishReason::Length); }
  // Ends the generation for a reason found outside (context full, cancelled, error); keeps
  // an earlier reason.
  void finish(FinishReason r) {
    if (!reason_) reason_ = r;
  }
  // Text still held back (a partial character, an unfinished stop-string prefix); call once
  // at the end. Empty when a stop string ended the text.
  std::string flush();
  const std::vector<int32_t>& tokens() const { return tokens_; }
  const std::string& text() const { return text_; }  // everything emitted, flush included
  int64_t max_tokens() const { return opts_.max_tokens; }

 private:
  const ModelConfig& config_;
  GenerateOptions opts_;
  Sampler sampler_;
  std::unique_ptr<StopStreamer> streamer_;
  std::vector<int32_t> tokens_;
  std::string text_;
  std::optional<FinishReason> reason_;
};

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated ids (EOS included when it ended the text)
  std::string stop_reason;      // "eos", "stop", "length", "context" or "callback"
  double prompt_ms = 0, generate_ms = 0;
  int64_t n_prompt = 0;
};

// Runs `prompt` through the session (which must be empty or hold its prefix) and generates.
// on_token(id) is called for each generated id; returning false stops generation.
GenerateResult generate(Session& session, std::span<const int32_t> prompt,
                        const GenerateOptions& opts,
                        const std::function<bool(int32_t)>& on_token = nullptr);

// Mistral instruct prompt: <s>[INST] user [/INST]
std::vector<int32_t> chat_prompt(const Tokenizer& tok, const std::string& user);

struct ChatMessage {
  std::string role;  // "system", "user" or "assistant"
  std::string content;
};
// A conversation in the Mistral instruct format:
//   <s>[INST] user1 [/INST] answer1</s>[INST] user2 [/INST]
// System messages (only before the first user message) go in front of the first user
// message, followed by a blank line. Throws smoe::Error when the roles do not alternate
// user/assistant or the last message is not the user's. One user message gives exactly
// chat_prompt(tok, user).
std::vector<int32_t> chat_prompt(const Tokenizer& tok, std::span<const ChatMessage> messages);

}  // namespace smoe
