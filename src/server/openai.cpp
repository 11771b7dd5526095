// openai.cpp: parsing and validating OpenAI requests; building OpenAI responses.
#include "server/openai.h"

#include <random>

#include "tokenizer/tokenizer.h"

namespace smoe::api {

namespace {

[[noreturn]] void bad(const std::string& param, const std::string& msg, const std::string& code = "invalid_value") {
  throw ApiError(400, "invalid_request_error", code, param, msg);
}

std::string type_name(const json& v) { return v.type_name(); }

// Field getters: absent or null gives nullopt; a value of the wrong type is a 400.
const json* field(const json& body, const char* key) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return nullptr;
  return &*it;
}
std::optional<double> get_number(const json& body, const char* key) {
  const json* v = field(body, key);
  if (!v) return std::nullopt;
  if (!v->is_number()) bad(key, cat("`", key, "` must be a number, not ", type_name(*v)), "invalid_type");
  return v->get<double>();
}
std::optional<int64_t> get_int(const json& body, const char* key) {
  const json* v = field(body, key);
  if (!v) return std::nullopt;
  if (!v->is_number_integer()) bad(key, cat("`", key, "` must be an integer, not ", type_name(*v)), "invalid_type");
  if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))
    bad(key, cat("`", key, "` is too large"));
  return v->get<int64_t>();
}
std::optional<bool> get_bool(const json& body, const char* key) {
  const json* v = field(body, key);
  if (!v) return std::nullopt;
  if (!v->is_boolean()) bad(key, cat("`", key, "` must be true or false, not ", type_name(*v)), "invalid_type");
  return v->get<bool>();
}
std::optional<std::string> get_string(const json& body, const char* key) {
  const json* v = field(body, key);
  if (!v) return std::nullopt;
  if (!v->is_string()) bad(key, cat("`", key, "` must be a string, not ", type_name(*v)), "invalid_type");
  return v->get<std::string>();
}
void check_range(const char* key, double v, double lo, double hi, bool lo_open = false) {
  if (!(lo_open ? v > lo : v >= lo) || !(v <= hi))
    bad(key, cat("`", key, "` is ", v, "; expected ", lo_open ? "more than " : "", lo, lo_open ? " and at most " : " to ", hi));
}
void unsupported(const json& body, const char* key, const std::string& why) {
  const json* v = field(body, key);
  if (v && !(v->is_array() && v->empty()) && !(v->is_object() && v->empty()))
    throw ApiError(400, "invalid_request_error", "unsupported_parameter", key, cat("`", key, "` is not supported: ", why));
}

void check_tokens(const std::vector<int32_t>& ids, const Model& model, const RequestLimits& limits,
                  const std::string& param) {
  if (ids.empty()) bad(param, "the prompt is empty");
  for (int32_t id : ids)
    if (id < 0 || id >= model.config.vocab_size)
      bad(param, cat("token id ", id, " is out of range (vocabulary of ", model.config.vocab_size, ")"));
  if (static_cast<int64_t>(ids.size()) > limits.slot_ctx)
    bad(param, cat("the prompt has ", ids.size(), " tokens but a request's context holds ", limits.slot_ctx,
                   " (the server's --ctx-size divided by --parallel); shorten the prompt"),
        "context_length_exceeded");
}

const Tokenizer& need_tokenizer(const Model& model, const std::string& param) {
  if (!model.tokenizer) bad(param, "this model has no tokenizer: send the prompt as token ids to /v1/completions");
  return *model.tokenizer;
}

// A JSON array of integers as token ids (nullopt when it is not one).
std::optional<std::vector<int32_t>> as_ids(const json& v) {
  if (!v.is_array() || v.empty()) return std::nullopt;
  std::vector<int32_t> ids;
  for (const json& x : v) {
    if (!x.is_number_integer()) return std::nullopt;
    const int64_t id = x.get<int64_t>();
    ids.push_back(id < INT32_MIN || id > INT32_MAX ? -1 : static_cast<int32_t>(id));
  }
  return ids;
}

void parse_prompt(const json& body, const Model& model, const RequestLimits& limits, ApiRequest& r) {
  const json* p = field(body, "prompt");
  if (!p) bad("prompt", "`prompt` is required (a string, an array of strings, or token ids)", "missing_field");
  auto add_text = [&](const json& s, const std::string& param) {
    const std::string text = s.get<std::string>();
    if (text.empty()) bad(param, "the prompt is empty");
    r.prompts.push_back(need_tokenizer(model, param).encode(text, /*add_bos=*/true));
    check_tokens(r.prompts.back(), model, limits, param);
    r.prompt_texts.push_back(text);
  };
  auto add_ids = [&](std::vector<int32_t> ids, const std::string& param) {
    check_tokens(ids, model, limits, param);
    r.prompt_texts.push_back(model.tokenizer ? model.tokenizer->decode(ids) : "");
    r.prompts.push_back(std::move(ids));
  };
  if (p->is_string()) {
    add_text(*p, "prompt");
  } else if (auto ids = as_ids(*p)) {
    add_ids(std::move(*ids), "prompt");
  } else if (p->is_array() && !p->empty()) {
    for (size_t i = 0; i < p->size(); ++i) {
      const json& e = (*p)[i];
      const std::string param = cat("prompt[", i, "]");
      if (e.is_string()) add_text(e, param);
      else if (auto ids2 = as_ids(e)) add_ids(std::move(*ids2), param);
      else bad(param, "each prompt must be a non-empty string or a non-empty array of token ids");
    }
  } else {
    bad("prompt", cat("`prompt` must be a non-empty string, array of strings or array of token ids, not ",
                      p->is_array() ? "an empty array" : type_name(*p)));
  }
}

void parse_messages(const json& body, const Model& model, const RequestLimits& limits, ApiRequest& r) {
  const json* m = field(body, "messages");
  if (!m) bad("messages", "`messages` is required", "missing_field");
  if (!m->is_array() || m->empty()) bad("messages", "`messages` must be a non-empty array");
  std::vector<ChatMessage> messages;
  for (size_t i = 0; i < m->size(); ++i) {
    const json& e = (*m)[i];
    const std::string param = cat("messages[", i, "]");
    if (!e.is_object()) bad(param, param + " must be an object with `role` and `content`");
    auto role = e.find("role");
    if (role == e.end() || !role->is_string()) bad(param + ".role", param + ".role must be a string");
    ChatMessage msg;
    msg.role = role->get<std::string>();
    auto content = e.find("content");
    if (content == e.end() || content->is_null()) {
      if (msg.role != "assistant") bad(param + ".content", param + ".content is required");
    } else if (content->is_string()) {
      msg.content = content->get<std::string>();
    } else if (content->is_array()) {
      for (const json& part : *content) {
        if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") || !part["text"].is_string())
          bad(param + ".content", "only text content parts ({\"type\": \"text\", \"text\": ...}) are supported");
        msg.content += part["text"].get<std::string>();
      }
    } else {
      bad(param + ".content", param + ".content must be a string or an array of text parts");
    }
    messages.push_back(std::move(msg));
  }
  const Tokenizer& tok = need_tokenizer(model, "messages");
  try {
    r.prompts.push_back(chat_prompt(tok, messages));
  } catch (const ApiError&) {
    throw;
  } catch (const Error& e) {
    bad("messages", e.what());
  }
  r.prompt_texts.push_back("");
  check_tokens(r.prompts.back(), model, limits, "messages");
}

}  // namespace

json error_body(const std::string& message, const std::string& type, const std::string& param,
                const std::string& code) {
  return {{"error",
           {{"message", message},
            {"type", type},
            {"param", param.empty() ? json(nullptr) : json(param)},
            {"code", code.empty() ? json(nullptr) : json(code)}}}};
}

ApiRequest parse_request(const json& body, Endpoint endpoint, const Model& model, const RequestLimits& limits) {
  if (!body.is_object()) bad("", cat("the request body must be a JSON object, not ", type_name(body)), "invalid_type");
  ApiRequest r;
  r.endpoint = endpoint;
  const bool chat = endpoint == Endpoint::Chat;
  if (auto name = get_string(body, "model"); name && *name != limits.model_name)
    throw ApiError(404, "invalid_request_error", "model_not_found", "model",
                   cat("the model `", *name, "` does not exist; this server serves `", limits.model_name, "`"));

  // What is not supported is refused rather than ignored.
  unsupported(body, "logit_bias", "token biases are not implemented");
  unsupported(body, "tools", "tool calls are not implemented");
  unsupported(body, "functions", "function calls are not implemented");
  if (auto s = get_string(body, "suffix"); s && !s->empty())
    throw ApiError(400, "invalid_request_error", "unsupported_parameter", "suffix", "`suffix` is not supported");
  if (auto b = get_int(body, "best_of"); b && *b != 1)
    throw ApiError(400, "invalid_request_error", "unsupported_parameter", "best_of", "`best_of` must be 1");
  if (const json* f = field(body, "response_format")) {
    if (!f->is_object() || f->value("type", "") != "text")
      throw ApiError(400, "invalid_request_error", "unsupported_parameter", "response_format",
                     "only {\"type\": \"text\"} is supported for `response_format`");
  }

  if (chat) parse_messages(body, model, limits, r);
  else parse_prompt(body, model, limits, r);

  GenerateOptions& g = r.gen;
  SamplingParams& s = g.sampling;
  // OpenAI's defaults: temperature 1, no top-p/top-k/min-p filtering.
  s.temperature = 1.0f;
  s.top_p = 1.0f;
  s.top_k = 0;
  s.min_p = 0.0f;
  // A number field within [lo, hi] (lo excluded when lo_open) into `dst`.
  auto number = [&](const char* key, double lo, double hi, bool lo_open, float& dst) {
    if (auto v = get_number(body, key)) {
      check_range(key, *v, lo, hi, lo_open);
      dst = static_cast<float>(*v);
    }
  };
  number("temperature", 0, 2, false, s.temperature);
  number("top_p", 0, 1, true, s.top_p);
  number("presence_penalty", -2, 2, false, s.presence_penalty);
  number("frequency_penalty", -2, 2, false, s.frequency_penalty);
  number("repetition_penalty", 0, 10, true, s.repetition_penalty);
  if (auto v = get_number(body, "min_p")) {
    if (!(*v >= 0 && *v < 1)) bad("min_p", cat("`min_p` is ", *v, "; expected 0 <= min_p < 1"));
    s.min_p = static_cast<float>(*v);
  }
  if (auto v = get_int(body, "top_k")) {
    check_range("top_k", static_cast<double>(*v), 0, 1e9);
    s.top_k = static_cast<int32_t>(*v);
  }
  if (auto v = get_int(body, "seed")) s.seed = static_cast<uint64_t>(*v);
  else s.seed = std::random_device{}();

  std::optional<int64_t> max_tokens = get_int(body, "max_tokens");
  if (chat && !max_tokens) max_tokens = get_int(body, "max_completion_tokens");
  if (max_tokens && *max_tokens <= 0)
    bad(chat && !field(body, "max_tokens") ? "max_completion_tokens" : "max_tokens",
        cat("`max_tokens` is ", *max_tokens, "; it must be at least 1"));
  // OpenAI's defaults: 16 for completions; for chat, as many as the context holds.
  g.max_tokens = max_tokens.value_or(chat ? limits.slot_ctx : 16);
  if (auto v = get_bool(body, "ignore_eos")) g.stop_at_eos = !*v;

  if (const json* stop = field(body, "stop")) {
    std::vector<std::string> list;
    if (stop->is_string()) list.push_back(stop->get<std::string>());
    else if (stop->is_array()) {
      for (const json& e : *stop) {
        if (!e.is_string()) bad("stop", "`stop` must be a string or an array of strings");
        list.push_back(e.get<std::string>());
      }
    } else {
      bad("stop", cat("`stop` must be a string or an array of strings, not ", type_name(*stop)), "invalid_type");
    }
    if (list.size() > 16) bad("stop", "at most 16 stop strings");
    for (const std::string& x : list)
      if (x.empty()) bad("stop", "stop strings must not be empty");
    if (!list.empty()) need_tokenizer(model, "stop");
    g.stop = std::move(list);
  }

  if (auto v = get_int(body, "n")) {
    check_range("n", static_cast<double>(*v), 1, static_cast<double>(limits.max_choices));
    r.n = *v;
  }
  if (r.n_choices() > limits.max_choices)
    bad(chat ? "n" : "prompt", cat("at most ", limits.max_choices, " choices per request (prompts x n)"));

  if (chat) {
    r.want_logprobs = get_bool(body, "logprobs").value_or(false);
    if (auto top = get_int(body, "top_logprobs")) {
      check_range("top_logprobs", static_cast<double>(*top), 0, 20);
      if (!r.want_logprobs) bad("top_logprobs", "`top_logprobs` needs `logprobs`: true");
      g.logprobs = static_cast<int32_t>(*top);
    } else if (r.want_logprobs) {
      g.logprobs = 0;
    }
    if (field(body, "echo")) bad("echo", "`echo` is only for /v1/completions", "unsupported_parameter");
  } else {
    if (auto lp = get_int(body, "logprobs")) {
      check_range("logprobs", static_cast<double>(*lp), 0, 20);
      r.want_logprobs = true;
      g.logprobs = static_cast<int32_t>(*lp);
    }
    r.echo = get_bool(body, "echo").value_or(false);
    g.prompt_logprobs = r.echo && r.want_logprobs;
  }

  r.stream = get_bool(body, "stream").value_or(false);
  if (const json* so = field(body, "stream_options")) {
    if (!r.stream) bad("stream_options", "`stream_options` is only allowed with `stream`: true");
    if (!so->is_object()) bad("stream_options", "`stream_options` must be an object", "invalid_type");
    r.include_usage = get_bool(*so, "include_usage").value_or(false);
  }
  try {
    g.validate();
  } catch (const Error& e) {
    bad("", e.what());
  }
  return r;
}

std::string token_text(const Tokenizer* tok, int32_t id) {
  if (!tok) return "";
  std::string piece = tok->id_to_piece(id);
  if (piece.size() == 6 && piece.compare(0, 3, "<0x") == 0 && piece[5] == '>') {
    const int byte = std::stoi(piece.substr(3, 2), nullptr, 16);
    return std::string(1, static_cast<char>(byte));
  }
  static const std::string kSpace = "\xE2\x96\x81";  // ▁
  std::string out;
  for (size_t i = 0; i < piece.size();) {
    if (piece.compare(i, kSpace.size(), kSpace) == 0) {
      out += ' ';
      i += kSpace.size();
    } else {
      out += piece[i++];
    }
  }
  return out;
}

const char* finish_reason(FinishReason r) {
  switch (r) {
    case FinishReason::Eos:
    case FinishReason::Stop: return "stop";
    case FinishReason::Length:
    case FinishReason::Context: return "length";
    case FinishReason::Cancelled: return "cancelled";
    case FinishReason::Error: return "error";
  }
  return "stop";
}

namespace {

json bytes_of(const std::string& s) {
  json b = json::array();
  for (unsigned char c : s) b.push_back(static_cast<int>(c));
  return b;
}

// Completions' logprobs object over `entries` (a prompt token without a logprob has none).
struct LogprobEntry {
  int32_t id;
  const TokenLogprob* lp;  // null: no logprob (the first prompt token)
};
json completion_logprobs(const Tokenizer* tok, const std::vector<LogprobEntry>& entries, int64_t offset) {
  json tokens = json::array(), lps = json::array(), tops = json::array(), offsets = json::array();
  for (const LogprobEntry& e : entries) {
    const std::string text = token_text(tok, e.id);
    tokens.push_back(text);
    offsets.push_back(offset);
    offset += static_cast<int64_t>(text.size());
    if (!e.lp) {
      lps.push_back(nullptr);
      tops.push_back(nullptr);
      continue;
    }
    lps.push_back(e.lp->logprob);
    json top = json::object();
    for (const auto& [id, lp] : e.lp->top) {
      const std::string t = token_text(tok, id);
      if (!top.contains(t)) top[t] = lp;
    }
    tops.push_back(top);
  }
  return {{"tokens", tokens}, {"token_logprobs", lps}, {"top_logprobs", tops}, {"text_offset", offsets}};
}

json chat_logprobs(const Tokenizer* tok, std::span<const TokenOut> tokens) {
  json content = json::array();
  for (const TokenOut& t : tokens) {
    if (!t.logprob) continue;
    const std::string text = token_text(tok, t.id);
    json top = json::array();
    for (const auto& [id, lp] : t.logprob->top) {
      const std::string alt = token_text(tok, id);
      top.push_back({{"token", alt}, {"logprob", lp}, {"bytes", bytes_of(alt)}});
    }
    content.push_back({{"token", text}, {"logprob", t.logprob->logprob}, {"bytes", bytes_of(text)}, {"top_logprobs", top}});
  }
  return {{"content", content}};
}

std::vector<LogprobEntry> generated_entries(std::span<const TokenOut> tokens) {
  std::vector<LogprobEntry> e;
  for (const TokenOut& t : tokens) e.push_back({t.id, t.logprob ? &*t.logprob : nullptr});
  return e;
}

const std::vector<int32_t>& prompt_of(const ApiRequest& req, int64_t index) {
  return req.prompts[static_cast<size_t>(index / req.n)];
}

}  // namespace

json usage(const ApiRequest& req, const std::vector<ChoiceOutput>& choices) {
  int64_t prompt = 0, completion = 0;
  for (const auto& p : req.prompts) prompt += static_cast<int64_t>(p.size());
  for (const ChoiceOutput& c : choices) completion += static_cast<int64_t>(c.result.tokens.size());
  return {{"prompt_tokens", prompt}, {"completion_tokens", completion}, {"total_tokens", prompt + completion}};
}

json completion_response(const ApiRequest& req, const ResponseMeta& meta, const Tokenizer* tok,
                         const std::vector<ChoiceOutput>& choices) {
  const bool chat = req.endpoint == Endpoint::Chat;
  json out_choices = json::array();
  for (size_t i = 0; i < choices.size(); ++i) {
    const ChoiceOutput& c = choices[i];
    json choice = {{"index", i}, {"finish_reason", finish_reason(c.result.reason)}};
    if (chat) {
      choice["message"] = {{"role", "assistant"}, {"content", c.result.text}};
      choice["logprobs"] = req.want_logprobs ? chat_logprobs(tok, c.tokens) : json(nullptr);
    } else {
      const std::string& prompt_text = req.prompt_texts[i / static_cast<size_t>(req.n)];
      choice["text"] = req.echo ? prompt_text + c.result.text : c.result.text;
      if (req.want_logprobs) {
        std::vector<LogprobEntry> entries;
        if (req.echo) {
          const std::vector<int32_t>& prompt = prompt_of(req, static_cast<int64_t>(i));
          for (size_t t = 0; t < prompt.size(); ++t)
            entries.push_back({prompt[t], t > 0 && t - 1 < c.prompt_logprobs.size() ? &c.prompt_logprobs[t - 1] : nullptr});
        }
        std::vector<LogprobEntry> gen = generated_entries(c.tokens);
        entries.insert(entries.end(), gen.begin(), gen.end());
        choice["logprobs"] = completion_logprobs(tok, entries, req.echo ? 0 : static_cast<int64_t>(prompt_text.size()));
      } else {
        choice["logprobs"] = nullptr;
      }
    }
    out_choices.push_back(std::move(choice));
  }
  return {{"id", meta.id},
          {"object", chat ? "chat.completion" : "text_completion"},
          {"created", meta.created},
          {"model", meta.model},
          {"choices", out_choices},
          {"usage", usage(req, choices)}};
}

json completion_chunk(const ApiRequest& req, const ResponseMeta& meta, const Tokenizer* tok, int64_t index,
                      const std::string& text, std::span<const TokenOut> tokens, std::optional<FinishReason> finish) {
  json choice = {{"index", index}, {"text", text}, {"finish_reason", finish ? json(finish_reason(*finish)) : json(nullptr)}};
  choice["logprobs"] = req.want_logprobs ? completion_logprobs(tok, generated_entries(tokens), 0) : json(nullptr);
  return {{"id", meta.id}, {"object", "text_completion"}, {"created", meta.created}, {"model", meta.model},
          {"choices", json::array({choice})}};
}

json echo_chunk(const ApiRequest& req, const ResponseMeta& meta, const Tokenizer* tok, int64_t index,
                std::span<const TokenLogprob> prompt_logprobs) {
  const std::vector<int32_t>& prompt = prompt_of(req, index);
  json choice = {{"index", index}, {"text", req.prompt_texts[static_cast<size_t>(index / req.n)]}, {"finish_reason", nullptr}};
  if (req.want_logprobs) {
    std::vector<LogprobEntry> entries;
    for (size_t t = 0; t < prompt.size(); ++t)
      entries.push_back({prompt[t], t > 0 && t - 1 < prompt_logprobs.size() ? &prompt_logprobs[t - 1] : nullptr});
    choice["logprobs"] = completion_logprobs(tok, entries, 0);
  } else {
    choice["logprobs"] = nullptr;
  }
  return {{"id", meta.id}, {"object", "text_completion"}, {"created", meta.created}, {"model", meta.model},
          {"choices", json::array({choice})}};
}

json chat_chunk(const ApiRequest& req, const ResponseMeta& meta, const Tokenizer* tok, int64_t index, bool first,
                const std::string& text, std::span<const TokenOut> tokens, std::optional<FinishReason> finish) {
  json delta = json::object();
  if (first) delta["role"] = "assistant";
  if (!finish || !text.empty()) delta["content"] = text;  // the last chunk: only held-back text
  json choice = {{"index", index}, {"delta", delta}, {"finish_reason", finish ? json(finish_reason(*finish)) : json(nullptr)}};
  choice["logprobs"] = req.want_logprobs && !tokens.empty() ? chat_logprobs(tok, tokens) : json(nullptr);
  return {{"id", meta.id}, {"object", "chat.completion.chunk"}, {"created", meta.created}, {"model", meta.model},
          {"choices", json::array({choice})}};
}

json usage_chunk(const ApiRequest& req, const ResponseMeta& meta, const std::vector<ChoiceOutput>& choices) {
  const bool chat = req.endpoint == Endpoint::Chat;
  return {{"id", meta.id}, {"object", chat ? "chat.completion.chunk" : "text_completion"},
          {"created", meta.created}, {"model", meta.model}, {"choices", json::array()},
          {"usage", usage(req, choices)}};
}

}  // namespace smoe::api
