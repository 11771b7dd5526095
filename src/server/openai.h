// openai.h: the OpenAI API's request and response shapes for /v1/completions and
// /v1/chat/completions: parsing and validating a request body into generation requests,
// and building the JSON of responses, stream chunks, logprobs and errors.
// Not here: HTTP (server/http_server.h) or running anything (runtime/scheduler.h).
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "core/error.h"
#include "model/model.h"
#include "runtime/generate.h"
#include "runtime/scheduler.h"

namespace smoe::api {

using json = nlohmann::json;

// A request the server refuses, with its HTTP status and OpenAI error fields.
class ApiError : public Error {
 public:
  ApiError(int status, std::string type, std::string code, std::string param, const std::string& msg)
      : Error(msg), status(status), type(std::move(type)), code(std::move(code)), param(std::move(param)) {}
  int status;
  std::string type, code, param;
};
// {"error": {"message", "type", "param", "code"}} (param and code null when empty).
json error_body(const std::string& message, const std::string& type, const std::string& param = "",
                const std::string& code = "");

enum class Endpoint { Completions, Chat };

// What one request asks for, validated.
struct ApiRequest {
  Endpoint endpoint = Endpoint::Completions;
  std::vector<std::vector<int32_t>> prompts;  // token ids per prompt (BOS included for text)
  std::vector<std::string> prompt_texts;      // for echo: the text of each prompt
  int64_t n = 1;                              // choices per prompt
  GenerateOptions gen;                        // per choice (choice j uses seed + j)
  bool stream = false, include_usage = false;
  bool echo = false;           // completions: the prompt in front of the text (and its logprobs)
  bool want_logprobs = false;  // logprobs in the response
  int64_t n_choices() const { return static_cast<int64_t>(prompts.size()) * n; }
};

// Limits that depend on the server.
struct RequestLimits {
  std::string model_name;  // requests naming another model get 404
  int64_t slot_ctx = 0;    // prompt tokens at most
  int64_t max_choices = 16;
};

// Parses and validates a request body (already parsed as JSON). Throws ApiError (400 with
// the offending param, 404 for an unknown model) on anything wrong; unknown fields are
// ignored. The model provides the tokenizer and vocabulary size.
ApiRequest parse_request(const json& body, Endpoint endpoint, const Model& model, const RequestLimits& limits);

// The text a token stands for in logprobs ("▁the" -> " the", "<0x0A>" -> "\n").
std::string token_text(const Tokenizer* tok, int32_t id);

// One choice's output, gathered while it runs.
struct ChoiceOutput {
  std::vector<TokenLogprob> prompt_logprobs;  // prompt tokens 1..n-1, for echo
  std::vector<TokenOut> tokens;               // generated
  RequestResult result;
  bool done = false;
};

// OpenAI's finish_reason: "stop" (EOS or a stop string) or "length" (max_tokens, context).
const char* finish_reason(FinishReason r);

// Response objects. `id` like "cmpl-..." / "chatcmpl-...", `created` in Unix seconds.
struct ResponseMeta {
  std::string id, model;
  int64_t created = 0;
};
json completion_response(const ApiRequest& req, const ResponseMeta& meta, const Tokenizer* tok,
                         const std::vector<ChoiceOutput>& choices);
// A streamed chunk with one choice's piece of text (and its tokens' logprobs); finish set on
// the last chunk of that choice.
json completion_chunk(const ApiRequest& req, const ResponseMeta& meta, const Tokenizer* tok, int64_t index,
                      const std::string& text, std::span<const TokenOut> tokens,
                      std::optional<FinishReason> finish);
// Completions with echo: the prompt's text (and its tokens' logprobs when asked) as the
// first chunk of a choice.
json echo_chunk(const ApiRequest& req, const ResponseMeta& meta, const Tokenizer* tok, int64_t index,
                std::span<const TokenLogprob> prompt_logprobs);
// Chat: the first chunk of each choice carries the role.
json chat_chunk(const ApiRequest& req, const ResponseMeta& meta, const Tokenizer* tok, int64_t index,
                bool first, const std::string& text, std::span<const TokenOut> tokens,
                std::optional<FinishReason> finish);
// The last chunk when stream_options.include_usage: no choices, the usage of all of them.
json usage_chunk(const ApiRequest& req, const ResponseMeta& meta, const std::vector<ChoiceOutput>& choices);
json usage(const ApiRequest& req, const std::vector<ChoiceOutput>& choices);

}  // namespace smoe::api
