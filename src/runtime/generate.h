// generate.h: the one generation API the CLI and the server share: prefill a prompt,
// then sample tokens one at a time, reporting each through a callback.
#pragma once
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "model/transformer.h"
#include "runtime/sampler.h"

namespace smoe {

struct GenerateOptions {
  int64_t max_tokens = 128;  // tokens to generate at most
  SamplingParams sampling;
  bool stop_at_eos = true;
};

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated ids (EOS included when it ended the text)
  std::string stop_reason;      // "eos", "length", "context" or "callback"
  double prompt_ms = 0, generate_ms = 0;
  int64_t n_prompt = 0;
};

// Runs `prompt` through the session (which must be empty or hold its prefix) and generates.
// on_token(id) is called for each generated id; returning false stops generation.
GenerateResult generate(Session& session, std::span<const int32_t> prompt,
                        const GenerateOptions& opts,
                        const std::function<bool(int32_t)>& on_token = nullptr);

// Incremental detokenizer for streaming: push ids, get the newly completed text. Holds back
// an incomplete UTF-8 character (shown by SentencePiece as U+FFFD) until it completes.
class Tokenizer;
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

// Mistral instruct prompt: <s>[INST] user [/INST]
std::vector<int32_t> chat_prompt(const Tokenizer& tok, const std::string& user);

}  // namespace smoe
