// server_test.cpp: `smoe serve` over real HTTP on loopback, on the fixture models: greedy
// output equals `smoe run --temp 0` (streamed or not, completions and chat), 16 concurrent
// streaming clients, disconnects, the queue limit, metrics, echo + logprobs scoring,
// stop strings, API keys, loading and graceful shutdown. Bad input: server_bad_input_test.
#include <signal.h>

#include <atomic>
#include <cmath>
#include <thread>

#include "server_util.h"
#include "test_util.h"

namespace smoe {
namespace {

using json = nlohmann::json;
using test::ServerProcess;

const std::string kA = "models/tiny-mixtral-A";  // 32000-piece Mistral tokenizer, 8 experts top-2
const std::string kB = "models/tiny-mixtral-B";  // small and fast: 4 experts top-1

std::string model_arg(const std::string& rel) { return "-m '" + test::fixture(rel) + "'"; }

// `smoe run --json` on the same model, the reference the server must reproduce.
json run_json(const std::string& model, const std::string& args) {
  test::CmdResult r = test::run_smoe("run " + model_arg(model) + " --json " + args);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return json::parse(r.out);
}

TEST(Server, GreedyOutputEqualsSmoeRun) {
  SMOE_REQUIRE_FIXTURES();
  ServerProcess server(model_arg(kA) + " --parallel 2 --ctx-size 512");
  ASSERT_TRUE(server.ok()) << server.log();
  const int port = server.port();
  // Models.
  test::HttpResult models = test::get(port, "/v1/models");
  ASSERT_EQ(models.status, 200);
  EXPECT_EQ(models.body["data"][0]["id"], "tiny-mixtral-A");
  EXPECT_EQ(test::get(port, "/v1/models/tiny-mixtral-A").status, 200);

  // Completions, text prompt: non-streamed and streamed.
  const json want = run_json(kA, "-p 'The capital of France is' --temp 0 -n 24");
  const json req = {{"model", "tiny-mixtral-A"}, {"prompt", "The capital of France is"}, {"max_tokens", 24}, {"temperature", 0}};
  test::HttpResult r = test::post_json(port, "/v1/completions", req.dump());
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.body["object"], "text_completion");
  EXPECT_EQ(r.body["choices"][0]["text"], want["text"]);
  EXPECT_EQ(r.body["choices"][0]["finish_reason"], want["stop_reason"] == "length" ? "length" : "stop");
  EXPECT_EQ(r.body["usage"]["prompt_tokens"], want["prompt_tokens"].size());
  EXPECT_EQ(r.body["usage"]["completion_tokens"], want["tokens"].size());
  json sreq = req;
  sreq["stream"] = true;
  sreq["stream_options"] = {{"include_usage", true}};
  test::StreamResult s = test::post_stream(port, "/v1/completions", sreq.dump());
  ASSERT_EQ(s.status, 200) << s.raw;
  EXPECT_TRUE(s.done);
  EXPECT_EQ(test::stream_text(s), want["text"].get<std::string>());
  ASSERT_GE(s.chunks.size(), 2u);
  EXPECT_EQ(s.chunks.back()["usage"]["completion_tokens"], want["tokens"].size());
  EXPECT_TRUE(s.chunks.back()["choices"].empty());
  EXPECT_EQ(s.chunks[s.chunks.size() - 2]["choices"][0]["finish_reason"], "length");

  // Completions, token-id prompt.
  const json want_ids = run_json(kA, "--prompt-tokens 1,415,5565,302,4843,349 --temp 0 -n 12");
  r = test::post_json(port, "/v1/completions",
                      json{{"prompt", {1, 415, 5565, 302, 4843, 349}}, {"max_tokens", 12}, {"temperature", 0}}.dump());
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.body["choices"][0]["text"], want_ids["text"]);

  // Chat: the Mistral instruct template, as `smoe run --chat`.
  const json want_chat = run_json(kA, "-p 'Hello there' --chat --temp 0 -n 20");
  const json chat = {{"messages", {{{"role", "user"}, {"content", "Hello there"}}}}, {"max_tokens", 20}, {"temperature", 0}};
  r = test::post_json(port, "/v1/chat/completions", chat.dump());
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.body["object"], "chat.completion");
  EXPECT_EQ(r.body["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(r.body["choices"][0]["message"]["content"], want_chat["text"]);
  EXPECT_EQ(r.body["usage"]["prompt_tokens"], want_chat["prompt_tokens"].size());
  json schat = chat;
  schat["stream"] = true;
  s = test::post_stream(port, "/v1/chat/completions", schat.dump());
  ASSERT_EQ(s.status, 200);
  EXPECT_TRUE(s.done);
  EXPECT_EQ(s.chunks.front()["object"], "chat.completion.chunk");
  EXPECT_EQ(s.chunks.front()["choices"][0]["delta"]["role"], "assistant");
  EXPECT_EQ(test::stream_text(s), want_chat["text"].get<std::string>());
}

TEST(Server, SixteenConcurrentStreamingClients) {
  SMOE_REQUIRE_FIXTURES();
  // 8 slots for 16 clients: half of them wait in the queue and join as others finish.
  ServerProcess server(model_arg(kB) + " --parallel 8 --ctx-size 2048 --queue 16");
  ASSERT_TRUE(server.ok()) << server.log();
  const std::vector<std::string> words = {"ROMEO", "JULIET", "KING", "QUEEN", "First Citizen", "MENENIUS",
                                          "HAMLET", "Nurse", "CORIOLANUS", "Second Servant", "LEAR", "FOOL",
                                          "BRUTUS", "OTHELLO", "IAGO", "PROSPERO"};
  const int n_clients = 16;
  std::vector<std::string> want(n_clients);
  std::vector<int64_t> n_want(n_clients);
  for (int i = 0; i < n_clients; ++i) {
    // Different prompt lengths and lengths of output, so sequences join and leave at different steps.
    const json w = run_json(kB, "-p '" + words[i] + ":' --temp 0 -n " + std::to_string(16 + 2 * i));
    want[i] = w["text"];
    n_want[i] = static_cast<int64_t>(w["tokens"].size());
  }
  std::vector<test::StreamResult> got(n_clients);
  std::vector<std::thread> clients;
  for (int i = 0; i < n_clients; ++i)
    clients.emplace_back([&, i] {
      const json body = {{"prompt", words[i] + ":"}, {"max_tokens", 16 + 2 * i}, {"temperature", 0}, {"stream", true},
                         {"stream_options", {{"include_usage", true}}}};
      got[i] = test::post_stream(server.port(), "/v1/completions", body.dump());
    });
  for (std::thread& t : clients) t.join();
  for (int i = 0; i < n_clients; ++i) {
    EXPECT_EQ(got[i].status, 200) << i;
    EXPECT_TRUE(got[i].done) << i;
    EXPECT_EQ(test::stream_text(got[i]), want[i]) << "client " << i;
    ASSERT_FALSE(got[i].chunks.empty());
    EXPECT_EQ(got[i].chunks.back()["usage"]["completion_tokens"], n_want[i]) << i;
  }
  const std::string m = test::get(server.port(), "/metrics").raw;
  EXPECT_EQ(test::metric(m, "smoe_requests_finished_total{reason=\"length\"}") +
                test::metric(m, "smoe_requests_finished_total{reason=\"eos\"}"),
            n_clients);
  // Batching: far fewer forward passes than tokens generated.
  EXPECT_LT(test::metric(m, "smoe_forward_passes_total"), 0.5 * test::metric(m, "smoe_generated_tokens_total"));
  EXPECT_EQ(test::metric(m, "smoe_slots_busy"), 0);
  EXPECT_EQ(server.stop(SIGTERM), 0) << server.log();
}

TEST(Server, DisconnectStopsGenerationAndFreesTheSlot) {
  SMOE_REQUIRE_FIXTURES();
  ServerProcess server(model_arg(kB) + " --parallel 1 --ctx-size 4096");
  ASSERT_TRUE(server.ok()) << server.log();
  const int port = server.port();
  const json endless = {{"prompt", "ROMEO:"}, {"max_tokens", 100000}, {"ignore_eos", true}, {"stream", true}};
  // A streaming client that leaves after three chunks.
  test::StreamResult s = test::post_stream(port, "/v1/completions", endless.dump(),
                                           [](const std::vector<json>& chunks) { return chunks.size() < 3; });
  EXPECT_EQ(s.status, 200);
  EXPECT_FALSE(s.done);
  // The only slot is free again: this request is answered long before the other one
  // could have reached its 4096-token context.
  const auto t0 = std::chrono::steady_clock::now();
  test::HttpResult r = test::post_json(port, "/v1/completions", json{{"prompt", "KING:"}, {"max_tokens", 8}}.dump());
  EXPECT_EQ(r.status, 200) << r.raw;
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 2.0);

  // A non-streaming client that gives up (read timeout) and closes the connection.
  {
    httplib::Client c("127.0.0.1", port);
    c.set_read_timeout(0, 300000);
    json body = endless;
    body.erase("stream");
    httplib::Result res = c.Post("/v1/completions", body.dump(), "application/json");
    EXPECT_FALSE(res);
  }
  r = test::post_json(port, "/v1/completions", json{{"prompt", "KING:"}, {"max_tokens", 8}}.dump());
  EXPECT_EQ(r.status, 200) << r.raw;
  const std::string m = test::get(port, "/metrics").raw;
  EXPECT_EQ(test::metric(m, "smoe_requests_finished_total{reason=\"cancelled\"}"), 2) << m;
  EXPECT_LT(test::metric(m, "smoe_generated_tokens_total"), 3000);
}

TEST(Server, FullQueueAnswers429) {
  SMOE_REQUIRE_FIXTURES();
  ServerProcess server(model_arg(kB) + " --parallel 1 --queue 0 --ctx-size 4096");
  ASSERT_TRUE(server.ok()) << server.log();
  const int port = server.port();
  std::atomic<bool> started{false}, leave{false};
  std::thread holder([&] {
    const json body = {{"prompt", "ROMEO:"}, {"max_tokens", 100000}, {"ignore_eos", true}, {"stream", true}};
    test::post_stream(port, "/v1/completions", body.dump(), [&](const std::vector<json>&) {
      started = true;
      return !leave.load();
    });
  });
  while (!started) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  test::HttpResult r = test::post_json(port, "/v1/completions", json{{"prompt", "KING:"}}.dump());
  EXPECT_EQ(r.status, 429) << r.raw;
  EXPECT_EQ(r.body["error"]["type"], "rate_limit_exceeded");
  leave = true;
  holder.join();
  EXPECT_TRUE(server.wait_ready());
  EXPECT_GE(test::metric(test::get(port, "/metrics").raw, "smoe_requests_rejected_total"), 1);
}

TEST(Server, MetricsMoveAsRequestsAreServed) {
  SMOE_REQUIRE_FIXTURES();
  ServerProcess server(model_arg(kA) + " --parallel 2 --ctx-size 512");
  ASSERT_TRUE(server.ok()) << server.log();
  const int port = server.port();
  auto expert_total = [](const std::string& m) {
    double sum = 0;
    for (int l = 0; l < 2; ++l)
      for (int e = 0; e < 8; ++e)
        sum += test::metric(m, "smoe_expert_tokens_total{layer=\"" + std::to_string(l) + "\",expert=\"" + std::to_string(e) + "\"}");
    return sum;
  };
  const std::string before = test::get(port, "/metrics").raw;
  EXPECT_EQ(test::metric(before, "smoe_generated_tokens_total"), 0);
  EXPECT_EQ(test::metric(before, "smoe_kv_cache_capacity_tokens"), 512);
  EXPECT_EQ(expert_total(before), 0);
  int64_t prompt = 0, generated = 0;
  for (int i = 0; i < 3; ++i) {
    test::HttpResult r = test::post_json(
        port, "/v1/completions", json{{"prompt", "Hello number " + std::to_string(i)}, {"max_tokens", 5 + i}, {"temperature", 0}}.dump());
    ASSERT_EQ(r.status, 200);
    prompt += r.body["usage"]["prompt_tokens"].get<int64_t>();
    generated += r.body["usage"]["completion_tokens"].get<int64_t>();
  }
  EXPECT_EQ(test::get(port, "/no/such/path").status, 404);
  const std::string after = test::get(port, "/metrics").raw;
  // Counted before the response is sent, so a client sees its own request counted.
  EXPECT_EQ(test::metric(after, "smoe_http_requests_total{path=\"other\",status=\"404\"}"), 1);
  EXPECT_EQ(test::metric(after, "smoe_prompt_tokens_total"), prompt);
  EXPECT_EQ(test::metric(after, "smoe_generated_tokens_total"), generated);
  EXPECT_EQ(test::metric(after, "smoe_requests_submitted_total"), 3);
  EXPECT_EQ(test::metric(after, "smoe_requests_finished_total{reason=\"length\"}"), 3);
  EXPECT_EQ(test::metric(after, "smoe_http_requests_total{path=\"/v1/completions\",status=\"200\"}"), 3);
  EXPECT_GT(test::metric(after, "smoe_generated_tokens_per_second"), 0);
  EXPECT_EQ(test::metric(after, "smoe_queue_depth"), 0);
  EXPECT_EQ(test::metric(after, "smoe_kv_cache_tokens"), 0);
  // Every token run through the model (the last generated one of each request is not)
  // went to K = 2 experts in each of the 2 layers.
  EXPECT_EQ(expert_total(after), static_cast<double>(prompt + generated - 3) * 2 * 2);
}

// Log-likelihood scoring as lm-eval-harness does it: echo the prompt with its logprobs.
TEST(Server, EchoLogprobsScoreThePrompt) {
  SMOE_REQUIRE_FIXTURES();
  ServerProcess server(model_arg(kB));
  ASSERT_TRUE(server.ok()) << server.log();
  const std::vector<int32_t> tokens = {1, 870, 983, 537, 353, 617, 396};
  const std::string dir = test::temp_dir("serve_echo");
  test::CmdResult lr = test::run_smoe("logits " + model_arg(kB) + " --tokens 1,870,983,537,353,617,396 --out '" + dir + "/l.f32'");
  ASSERT_EQ(lr.exit_code, 0) << lr.err;
  const std::string raw = test::read_file(dir + "/l.f32");
  const int64_t V = 1024;
  ASSERT_EQ(raw.size(), tokens.size() * V * sizeof(float));
  const float* logits = reinterpret_cast<const float*>(raw.data());
  const json body = {{"prompt", tokens}, {"echo", true}, {"logprobs", 1}, {"max_tokens", 1}, {"temperature", 0}};
  test::HttpResult r = test::post_json(server.port(), "/v1/completions", body.dump());
  ASSERT_EQ(r.status, 200) << r.raw;
  const json& lp = r.body["choices"][0]["logprobs"];
  ASSERT_EQ(lp["token_logprobs"].size(), tokens.size() + 1);
  EXPECT_TRUE(lp["token_logprobs"][0].is_null());
  for (size_t t = 1; t < tokens.size(); ++t) {
    const float* row = logits + (t - 1) * V;
    double z = 0;
    for (int64_t v = 0; v < V; ++v) z += std::exp(static_cast<double>(row[v]));
    EXPECT_NEAR(lp["token_logprobs"][t].get<double>(), row[tokens[t]] - std::log(z), 1e-4) << t;
    EXPECT_EQ(lp["top_logprobs"][t].size(), 1u);
  }
  // The generated token is the greedy one, and its top alternative is itself.
  const json& last_top = lp["top_logprobs"][tokens.size()];
  EXPECT_EQ(last_top.begin().key(), lp["tokens"][tokens.size()].get<std::string>());
}

TEST(Server, StopStringsSeedsAndChoices) {
  SMOE_REQUIRE_FIXTURES();
  ServerProcess server(model_arg(kB));
  ASSERT_TRUE(server.ok()) << server.log();
  const int port = server.port();
  const json want = run_json(kB, "-p 'ROMEO:' --temp 0 -n 20");
  const std::string text = want["text"];
  const std::string stop = text.substr(8, 3);  // from the middle of the greedy text
  json body = {{"prompt", "ROMEO:"}, {"max_tokens", 20}, {"temperature", 0}, {"stop", {stop}}};
  test::HttpResult r = test::post_json(port, "/v1/completions", body.dump());
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.body["choices"][0]["text"], text.substr(0, text.find(stop)));
  EXPECT_EQ(r.body["choices"][0]["finish_reason"], "stop");
  body["stream"] = true;
  EXPECT_EQ(test::stream_text(test::post_stream(port, "/v1/completions", body.dump())), text.substr(0, text.find(stop)));
  // Seeded sampling repeats itself; two choices (seed, seed + 1) and two prompts.
  const json sampled = {{"prompt", {"ROMEO:", "JULIET:"}}, {"max_tokens", 12}, {"temperature", 1.0}, {"top_k", 40},
                        {"seed", 7}, {"n", 2}, {"presence_penalty", 0.5}};
  test::HttpResult a = test::post_json(port, "/v1/completions", sampled.dump());
  test::HttpResult b = test::post_json(port, "/v1/completions", sampled.dump());
  ASSERT_EQ(a.status, 200) << a.raw;
  ASSERT_EQ(a.body["choices"].size(), 4u);
  EXPECT_EQ(a.body["choices"], b.body["choices"]);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(a.body["choices"][i]["index"], i);
  EXPECT_NE(a.body["choices"][0]["text"], a.body["choices"][1]["text"]);
  // Chat logprobs: one entry per generated token, with the asked-for alternatives.
  const json chat = {{"messages", {{{"role", "user"}, {"content", "hi"}}}}, {"max_tokens", 4}, {"temperature", 0},
                     {"logprobs", true}, {"top_logprobs", 3}};
  r = test::post_json(port, "/v1/chat/completions", chat.dump());
  ASSERT_EQ(r.status, 200) << r.raw;
  const json& content = r.body["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(content.size(), 4u);
  EXPECT_EQ(content[0]["top_logprobs"].size(), 3u);
  EXPECT_EQ(content[0]["top_logprobs"][0]["token"], content[0]["token"]);  // greedy
}

TEST(Server, ApiKeyIsRequiredWhenSet) {
  SMOE_REQUIRE_FIXTURES();
  ServerProcess server(model_arg(kB) + " --api-key s3cret");
  ASSERT_TRUE(server.ok()) << server.log();
  const int port = server.port();
  const std::string body = json{{"prompt", "ROMEO:"}, {"max_tokens", 2}}.dump();
  test::HttpResult r = test::post_json(port, "/v1/completions", body);
  EXPECT_EQ(r.status, 401);
  EXPECT_EQ(r.body["error"]["code"], "invalid_api_key");
  EXPECT_EQ(test::post_json(port, "/v1/completions", body, {{"Authorization", "Bearer wrong"}}).status, 401);
  EXPECT_EQ(test::get(port, "/v1/models").status, 401);
  EXPECT_EQ(test::get(port, "/metrics").status, 401);
  EXPECT_EQ(test::post_json(port, "/v1/completions", body, {{"Authorization", "Bearer s3cret"}}).status, 200);
  EXPECT_EQ(test::get(port, "/health").status, 200);
}

TEST(Server, HealthIs503WhileLoadingAndShutdownIsGraceful) {
  SMOE_REQUIRE_FIXTURES();
  ServerProcess server(model_arg(kB) + " --parallel 2 --debug-load-delay-ms 1500", /*wait_ready=*/false);
  ASSERT_TRUE(server.ok()) << server.log();
  const int port = server.port();
  test::HttpResult h = test::get(port, "/health");
  EXPECT_EQ(h.status, 503);
  EXPECT_EQ(h.body["status"], "loading");
  test::HttpResult r = test::post_json(port, "/v1/completions", json{{"prompt", "x"}}.dump());
  EXPECT_EQ(r.status, 503);
  EXPECT_TRUE(r.body["error"].contains("message"));
  ASSERT_TRUE(server.wait_ready());

  // SIGTERM while a request streams: it still completes, then the server exits 0.
  std::atomic<bool> streaming{false};
  test::StreamResult s;
  std::thread client([&] {
    const json body = {{"prompt", "ROMEO:"}, {"max_tokens", 400}, {"ignore_eos", true}, {"stream", true},
                       {"stream_options", {{"include_usage", true}}}};
    s = test::post_stream(port, "/v1/completions", body.dump(), [&](const std::vector<json>&) {
      streaming = true;
      return true;
    });
  });
  while (!streaming) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  const int code = server.stop(SIGTERM, 30);
  client.join();
  EXPECT_EQ(code, 0) << server.log();
  EXPECT_TRUE(s.done);
  ASSERT_EQ(s.chunks.size(), 402u);  // a chunk per token, the finish, the usage
  EXPECT_EQ(s.chunks.back()["usage"]["completion_tokens"], 400);
  EXPECT_NE(server.log().find("SIGTERM"), std::string::npos);
}

TEST(Server, BadModelPathExitsWithAnError) {
  ServerProcess server("-m /nonexistent/model", /*wait_ready=*/false);
  const int code = server.stop(0, 10);  // signal 0: just wait for it to exit
  EXPECT_EQ(code, 1) << server.log();
  EXPECT_NE(server.log().find("no such file"), std::string::npos) << server.log();
}

}  // namespace
}  // namespace smoe
