// server_bad_input_test.cpp: every kind of bad request to a running `smoe serve` gets a 4xx
// with an OpenAI error object, and the server keeps serving: malformed JSON, wrong types,
// bad values, unknown model, empty and over-long prompts, max_tokens <= 0, oversized
// bodies, malformed HTTP, slow and half-closed clients.
#include <poll.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "server_util.h"
#include "test_util.h"

namespace smoe {
namespace {

using json = nlohmann::json;
using test::ServerProcess;

struct BadCase {
  std::string path, body;
  int status;
  std::string param;   // the error's param ("" to skip the check)
  std::string needle;  // in the error message
};

TEST(ServerBadInput, EveryBadRequestGets4xxWithAnErrorObject) {
  SMOE_REQUIRE_FIXTURES();
  // A small context (64 per slot) and body limit (4 KiB) to reach those limits cheaply.
  ServerProcess server("-m '" + test::fixture("models/tiny-mixtral-B") +
                       "' --parallel 2 --ctx-size 128 --max-body 4096");
  ASSERT_TRUE(server.ok()) << server.log();
  const int port = server.port();
  const std::string C = "/v1/completions", H = "/v1/chat/completions";
  const std::string long_prompt(300, 'a');  // well over 64 tokens
  std::vector<int> many_ids(65, 5);
  const std::vector<BadCase> cases = {
      {C, "{\"prompt\": ", 400, "", "not valid JSON"},
      {C, "not json at all", 400, "", "not valid JSON"},
      {C, "[1, 2, 3]", 400, "", "JSON object"},
      {C, "{\"prompt\": \"\\ud800\"}", 400, "", "JSON"},  // lone surrogate
      {C, "{}", 400, "prompt", "required"},
      {C, R"({"prompt": ""})", 400, "prompt", "empty"},
      {C, R"({"prompt": []})", 400, "prompt", ""},
      {C, R"({"prompt": [[]]})", 400, "prompt[0]", ""},
      {C, R"({"prompt": 42})", 400, "prompt", ""},
      {C, R"({"prompt": [1, "a"]})", 400, "prompt[0]", ""},
      {C, R"({"prompt": [1, 99999]})", 400, "prompt", "out of range"},
      {C, R"({"prompt": [-1]})", 400, "prompt", "out of range"},
      {C, json{{"prompt", long_prompt}}.dump(), 400, "prompt", "context"},
      {C, json{{"prompt", many_ids}}.dump(), 400, "prompt", "context"},
      {C, R"({"prompt": "hi", "max_tokens": 0})", 400, "max_tokens", "at least 1"},
      {C, R"({"prompt": "hi", "max_tokens": -5})", 400, "max_tokens", "at least 1"},
      {C, R"({"prompt": "hi", "max_tokens": 1.5})", 400, "max_tokens", "integer"},
      {C, R"({"prompt": "hi", "max_tokens": "10"})", 400, "max_tokens", "integer"},
      {C, R"({"prompt": "hi", "max_tokens": 99999999999999999999})", 400, "max_tokens", ""},
      {C, R"({"prompt": "hi", "temperature": "hot"})", 400, "temperature", "number"},
      {C, R"({"prompt": "hi", "temperature": 5})", 400, "temperature", ""},
      {C, R"({"prompt": "hi", "temperature": -0.1})", 400, "temperature", ""},
      {C, R"({"prompt": "hi", "top_p": 0})", 400, "top_p", ""},
      {C, R"({"prompt": "hi", "top_p": 1.5})", 400, "top_p", ""},
      {C, R"({"prompt": "hi", "top_k": -1})", 400, "top_k", ""},
      {C, R"({"prompt": "hi", "min_p": 1})", 400, "min_p", ""},
      {C, R"({"prompt": "hi", "presence_penalty": 3})", 400, "presence_penalty", ""},
      {C, R"({"prompt": "hi", "frequency_penalty": -2.5})", 400, "frequency_penalty", ""},
      {C, R"({"prompt": "hi", "repetition_penalty": 0})", 400, "repetition_penalty", ""},
      {C, R"({"prompt": "hi", "seed": "abc"})", 400, "seed", "integer"},
      {C, R"({"prompt": "hi", "stream": "yes"})", 400, "stream", "true or false"},
      {C, R"({"prompt": "hi", "stream_options": {"include_usage": true}})", 400, "stream_options", ""},
      {C, R"({"prompt": "hi", "stop": 5})", 400, "stop", ""},
      {C, R"({"prompt": "hi", "stop": [""]})", 400, "stop", "empty"},
      {C, R"({"prompt": "hi", "stop": ["a", 1]})", 400, "stop", ""},
      {C, R"({"prompt": "hi", "logprobs": 50})", 400, "logprobs", ""},
      {C, R"({"prompt": "hi", "logprobs": true})", 400, "logprobs", "integer"},
      {C, R"({"prompt": "hi", "echo": 1})", 400, "echo", ""},
      {C, R"({"prompt": "hi", "n": 0})", 400, "n", ""},
      {C, R"({"prompt": "hi", "n": 100})", 400, "n", ""},
      {C, R"({"prompt": "hi", "best_of": 3})", 400, "best_of", ""},
      {C, R"({"prompt": "hi", "suffix": "x"})", 400, "suffix", ""},
      {C, R"({"prompt": "hi", "logit_bias": {"5": 10}})", 400, "logit_bias", "not supported"},
      {C, R"({"prompt": "hi", "model": "gpt-4"})", 404, "model", "does not exist"},
      {H, R"({"prompt": "hi"})", 400, "messages", "required"},
      {H, R"({"messages": []})", 400, "messages", ""},
      {H, R"({"messages": "hi"})", 400, "messages", ""},
      {H, R"({"messages": [{"content": "hi"}]})", 400, "messages[0].role", ""},
      {H, R"({"messages": [{"role": "user", "content": 5}]})", 400, "messages[0].content", ""},
      {H, R"({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})", 400, "messages[0].content", ""},
      {H, R"({"messages": [{"role": "wizard", "content": "hi"}]})", 400, "messages", "role"},
      {H, R"({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})", 400, "messages", "last"},
      {H, R"({"messages": [{"role": "user", "content": "hi"}], "top_logprobs": 2})", 400, "top_logprobs", "logprobs"},
      {H, R"({"messages": [{"role": "user", "content": "hi"}], "logprobs": 1})", 400, "logprobs", ""},
      {H, R"({"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]})", 400, "tools", ""},
      {H, R"({"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_object"}})", 400, "response_format", ""},
      {H, R"({"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 0})", 400, "max_completion_tokens", ""},
      {H, json{{"messages", {{{"role", "user"}, {"content", long_prompt}}}}}.dump(), 400, "messages", "context"},
      {C, json{{"prompt", std::string(5000, 'a')}}.dump(), 413, "", "too large"},
      {"/v1/nothing", "{}", 404, "", "not found"},
  };
  for (const BadCase& c : cases) {
    test::HttpResult r = test::post_json(port, c.path, c.body);
    SCOPED_TRACE(c.path + " " + c.body.substr(0, 120) + " -> " + r.raw);
    EXPECT_EQ(r.status, c.status);
    ASSERT_TRUE(r.body.is_object() && r.body.contains("error"));
    const json& e = r.body["error"];
    EXPECT_TRUE(e["message"].is_string() && !e["message"].get<std::string>().empty());
    EXPECT_TRUE(e["type"].is_string());
    if (!c.param.empty()) {
      EXPECT_EQ(e["param"], c.param);
    }
    if (!c.needle.empty()) {
      EXPECT_NE(e["message"].get<std::string>().find(c.needle), std::string::npos);
    }
  }
  EXPECT_EQ(test::get(port, "/v1/models/other").status, 404);
  EXPECT_EQ(test::get(port, "/v1/completions").status, 404);

  // Still serving, with nothing left running.
  test::HttpResult ok = test::post_json(port, C, R"({"prompt": "ROMEO:", "max_tokens": 3})");
  EXPECT_EQ(ok.status, 200) << ok.raw;
  const std::string m = test::get(port, "/metrics").raw;
  EXPECT_EQ(test::metric(m, "smoe_requests_submitted_total"), 1);
  EXPECT_EQ(test::metric(m, "smoe_slots_busy"), 0);
}

TEST(ServerBadInput, MalformedSlowAndHalfClosedClients) {
  SMOE_REQUIRE_FIXTURES();
  ServerProcess server("-m '" + test::fixture("models/tiny-mixtral-B") + "' --timeout 1");
  ASSERT_TRUE(server.ok()) << server.log();
  const int port = server.port();
  // Not HTTP at all.
  std::string out = test::raw_exchange(port, "HELLO THERE\r\n\r\n", false, 3);
  EXPECT_NE(out.find("HTTP/1.1 400"), std::string::npos) << out;
  // A header line longer than the server accepts.
  out = test::raw_exchange(port, "GET /health HTTP/1.1\r\nX: " + std::string(20000, 'x') + "\r\n\r\n", false, 3);
  EXPECT_EQ(out.find("HTTP/1.1 200"), std::string::npos) << out.substr(0, 200);
  // Half-closed: the body is shorter than announced and the client shuts its side. httplib
  // takes a half-closed socket for a closed one: the server closes it without an answer
  // (nothing was generated) and carries on.
  const auto t0 = std::chrono::steady_clock::now();
  out = test::raw_exchange(port,
                           "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                           "Content-Length: 100\r\n\r\n{\"prompt\": \"ROM",
                           /*shutdown_write=*/true, 3);
  EXPECT_EQ(out.find("HTTP/1.1 200"), std::string::npos) << out;
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 2.5);
  // Slow clients: one sends half its headers, another half its body, then both stall.
  // Meanwhile everyone else is served; the stalled ones time out (--timeout 1).
  const int slow_headers = test::connect_to(port), slow_body = test::connect_to(port);
  ASSERT_GE(slow_headers, 0);
  ASSERT_GE(slow_body, 0);
  const std::string partial_headers = "POST /v1/completions HTTP/1.1\r\nHost: x\r\n";
  const std::string partial_body = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{\"pro";
  (void)!::write(slow_headers, partial_headers.data(), partial_headers.size());
  (void)!::write(slow_body, partial_body.data(), partial_body.size());
  for (int i = 0; i < 3; ++i) {
    test::HttpResult r = test::post_json(port, "/v1/completions", R"({"prompt": "KING:", "max_tokens": 4})");
    EXPECT_EQ(r.status, 200) << r.raw;
  }
  // The server gives up on the stalled body within its timeout: it answers 400 or closes.
  pollfd p{slow_body, POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 5000), 1);
  char buf[512];
  const ssize_t n = ::read(slow_body, buf, sizeof buf);
  EXPECT_TRUE(n <= 0 || std::string(buf, static_cast<size_t>(n)).find(" 400") != std::string::npos);
  ::close(slow_headers);
  ::close(slow_body);
  EXPECT_EQ(test::get(port, "/health").status, 200);
}

}  // namespace
}  // namespace smoe
