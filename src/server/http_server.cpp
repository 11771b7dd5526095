// http_server.cpp: routes, authentication, OpenAI error objects, server-sent events,
// disconnect detection, model loading and graceful shutdown for `smoe serve`.
#include "server/http_server.h"

#include <dirent.h>
#include <httplib.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <ctime>
#include <deque>
#include <filesystem>
#include <random>

#include "model/model.h"
#include "server/openai.h"
#include "tokenizer/tokenizer.h"

namespace smoe {

namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using api::ApiError;

// httplib::Server with a deeper listen backlog: the library listens with a backlog of 5, so
// many clients connecting at once would wait a second for SYN retries.
class HttpServer : public httplib::Server {
 public:
  void raise_backlog(int n) { ::listen(svr_sock_, n); }
};

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(dump(body), "application/json");
}

void send_error(httplib::Response& res, int status, const std::string& message, const std::string& type,
                const std::string& param = "", const std::string& code = "") {
  send_json(res, status, api::error_body(message, type, param, code));
}

// Numeric host and port of a socket address (as httplib reports them in Request).
std::pair<std::string, int> host_port(const sockaddr_storage& addr, socklen_t len) {
  char host[NI_MAXHOST], port[NI_MAXSERV];
  if (getnameinfo(reinterpret_cast<const sockaddr*>(&addr), len, host, sizeof host, port, sizeof port,
                  NI_NUMERICHOST | NI_NUMERICSERV) != 0)
    return {"", -1};
  return {host, std::atoi(port)};
}

// The socket `req` arrived on. httplib does not expose it, so look for the descriptor whose
// local port and peer address and port are the request's; -1 if none matches.
int connection_fd(const httplib::Request& req) {
  DIR* dir = opendir("/proc/self/fd");
  if (!dir) return -1;
  int found = -1;
  while (dirent* e = readdir(dir)) {
    char* end = nullptr;
    const long fd = std::strtol(e->d_name, &end, 10);
    if (end == e->d_name || *end != '\0') continue;
    sockaddr_storage local{}, peer{};
    socklen_t local_len = sizeof local, peer_len = sizeof peer;
    if (getsockname(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&local), &local_len) != 0 ||
        getpeername(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&peer), &peer_len) != 0)
      continue;
    if (host_port(local, local_len).second == req.local_port &&
        host_port(peer, peer_len) == std::make_pair(req.remote_addr, req.remote_port)) {
      found = static_cast<int>(fd);
      break;
    }
  }
  closedir(dir);
  return found;
}

// Whether the client closed its side of the connection (or it failed).
bool peer_gone(int fd) {
  if (fd < 0) return false;
  pollfd p{fd, POLLRDHUP, 0};
  return ::poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

bool equal_constant_time(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i % std::max<size_t>(1, b.size())]);
  return diff == 0;
}

std::string random_id(const char* prefix) {
  static std::mutex mu;
  static std::mt19937_64 rng(std::random_device{}());
  std::lock_guard<std::mutex> lock(mu);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(rng()));
  return std::string(prefix) + buf;
}

// The label /metrics counts a path under (a fixed set, so the series stay bounded).
std::string path_label(const std::string& path) {
  for (const char* known : {"/v1/completions", "/v1/chat/completions", "/v1/models", "/health", "/metrics"})
    if (path == known) return known;
  if (path.rfind("/v1/models/", 0) == 0) return "/v1/models/{id}";
  return "other";
}

// One HTTP generation request in flight: its choices run as separate scheduler requests,
// whose callbacks (on the scheduler thread) fill this and wake the HTTP thread.
struct Call {
  api::ApiRequest req;
  api::ResponseMeta meta;
  std::vector<Scheduler::RequestId> ids;
  std::mutex mu;
  std::condition_variable cv;
  std::vector<api::ChoiceOutput> choices;
  int64_t n_done = 0;
  struct Event {
    enum Kind { Prompt, Token, Done } kind;
    int64_t index;
    TokenOut token;
  };
  std::deque<Event> events;  // streaming only
};

}  // namespace

void ServeOptions::validate() const {
  scheduler.validate();
  SMOE_CHECK(port >= 0 && port <= 65535, "--port ", port, " is out of range (0..65535; 0 picks a free port)");
  SMOE_CHECK(threads >= 0 && threads <= 1024, "-t ", threads, " is out of range (expected 1..1024; 0 = all cores)");
  SMOE_CHECK(timeout_s >= 1 && timeout_s <= 86400, "--timeout ", timeout_s, " is out of range (1..86400 s)");
  SMOE_CHECK(max_body_bytes >= 1024, "--max-body ", max_body_bytes, " is too small (at least 1024 bytes)");
  SMOE_CHECK(shutdown_timeout_s >= 0, "shutdown timeout must be >= 0");
}

struct ApiServer::Impl {
  ServeOptions opts;
  std::string name;  // model id
  int64_t created_unix = std::time(nullptr);
  Clock::time_point started = Clock::now();

  // Declared before `http` so they outlive its handlers.
  std::unique_ptr<Model> model;
  std::unique_ptr<ThreadPool> pool;
  std::unique_ptr<Scheduler> scheduler;
  std::atomic<bool> ready{false}, draining{false}, engine_stop{false}, listening_done{false};
  std::atomic<int64_t> active_calls{0};
  std::mutex counts_mu;
  HttpCounts counts;
  std::once_flag shutdown_once;
  std::thread listen_thread, engine_thread;
  HttpServer http;

  explicit Impl(const ServeOptions& o);
  void routes();
  bool authorized(const httplib::Request& req) const;
  void health(httplib::Response& res);
  void metrics(httplib::Response& res);
  void models(const httplib::Request& req, httplib::Response& res);
  void generate(const httplib::Request& req, httplib::Response& res, api::Endpoint endpoint);
  void submit(const std::shared_ptr<Call>& call);
  void cancel(const Call& call);
  void respond(const std::shared_ptr<Call>& call, int fd, httplib::Response& res);
  void stream(const std::shared_ptr<Call>& call, int fd, std::shared_ptr<void> active, httplib::Response& res);
};

ApiServer::Impl::Impl(const ServeOptions& o) : opts(o) {
  opts.validate();
  name = opts.model_name;
  if (name.empty()) {
    std::filesystem::path p(opts.model_path);
    if (p.filename().empty()) p = p.parent_path();
    name = p.filename().string();
  }
  // Each running or queued request holds an HTTP thread while it waits or streams.
  const size_t n_threads = static_cast<size_t>(
      std::min<int64_t>(1024, opts.scheduler.n_slots + opts.scheduler.max_queue + 16));
  http.new_task_queue = [n_threads] { return new httplib::ThreadPool(n_threads); };
  http.set_tcp_nodelay(true);
  http.set_read_timeout(opts.timeout_s, 0);
  http.set_write_timeout(opts.timeout_s, 0);
  http.set_payload_max_length(opts.max_body_bytes);
  http.set_keep_alive_max_count(1000);
  routes();
}

bool ApiServer::Impl::authorized(const httplib::Request& req) const {
  return opts.api_key.empty() || equal_constant_time(req.get_header_value("Authorization"), "Bearer " + opts.api_key);
}

void ApiServer::Impl::routes() {
  // Every handler turns errors into OpenAI error objects; none escapes to httplib.
  auto guarded = [this](bool auth, std::function<void(const httplib::Request&, httplib::Response&)> fn) {
    return [this, auth, fn](const httplib::Request& req, httplib::Response& res) {
      try {
        if (auth && !authorized(req))
          throw ApiError(401, "invalid_request_error", "invalid_api_key", "",
                         "invalid or missing API key: send the header \"Authorization: Bearer KEY\"");
        fn(req, res);
      } catch (const ApiError& e) {
        send_error(res, e.status, e.what(), e.type, e.param, e.code);
      } catch (const QueueFull& e) {
        send_error(res, 429, e.what(), "rate_limit_exceeded", "", "server_busy");
        res.set_header("Retry-After", "1");
      } catch (const Error& e) {
        send_error(res, 400, e.what(), "invalid_request_error");
      } catch (const std::exception& e) {
        send_error(res, 500, std::string("internal error: ") + e.what(), "server_error");
      }
    };
  };
  http.Get("/health", [this](const httplib::Request&, httplib::Response& res) { health(res); });
  http.Get("/metrics", guarded(true, [this](const httplib::Request&, httplib::Response& res) { metrics(res); }));
  http.Get("/v1/models", guarded(true, [this](const httplib::Request& q, httplib::Response& r) { models(q, r); }));
  http.Get(R"(/v1/models/(.+))", guarded(true, [this](const httplib::Request& q, httplib::Response& r) { models(q, r); }));
  http.Post("/v1/completions", guarded(true, [this](const httplib::Request& q, httplib::Response& r) {
              generate(q, r, api::Endpoint::Completions);
            }));
  http.Post("/v1/chat/completions", guarded(true, [this](const httplib::Request& q, httplib::Response& r) {
              generate(q, r, api::Endpoint::Chat);
            }));
  // Errors httplib answers itself (unknown path, body too large, malformed HTTP) get an
  // OpenAI error object too.
  http.set_error_handler(httplib::Server::HandlerWithResponse([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty() || res.content_provider_) return httplib::Server::HandlerResponse::Unhandled;
    std::string message;
    switch (res.status) {
      case 404: message = "not found: " + req.method + " " + req.path; break;
      case 413: message = "the request body is too large (see --max-body)"; break;
      case 400: message = "malformed HTTP request"; break;
      default: message = "HTTP error " + std::to_string(res.status); break;
    }
    send_error(res, res.status, message, res.status >= 500 ? "server_error" : "invalid_request_error");
    return httplib::Server::HandlerResponse::Handled;
  }));
  http.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
    send_error(res, 500, "internal error", "server_error");
  });
  // Counted before the response is written (the logger runs after, so a client could read
  // /metrics before its own request was counted).
  http.set_post_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    std::lock_guard<std::mutex> lock(counts_mu);
    ++counts[{path_label(req.path), res.status}];
  });
}

void ApiServer::Impl::health(httplib::Response& res) {
  if (draining) return send_json(res, 503, {{"status", "shutting down"}});
  if (!ready) return send_json(res, 503, {{"status", "loading"}});
  const SchedulerStats s = scheduler->stats();
  send_json(res, 200, {{"status", "ok"}, {"slots", s.n_slots}, {"slots_busy", s.slots_busy}, {"queue_depth", s.queue_depth}});
}

void ApiServer::Impl::metrics(httplib::Response& res) {
  const SchedulerStats stats = ready ? scheduler->stats() : SchedulerStats{};
  HttpCounts http_counts;
  {
    std::lock_guard<std::mutex> lock(counts_mu);
    http_counts = counts;
  }
  const double uptime = std::chrono::duration<double>(Clock::now() - started).count();
  res.set_content(prometheus_metrics(stats, http_counts, uptime), "text/plain; version=0.0.4");
}

void ApiServer::Impl::models(const httplib::Request& req, httplib::Response& res) {
  const json entry = {{"id", name}, {"object", "model"}, {"created", created_unix}, {"owned_by", "smoe"}};
  if (req.matches.size() > 1) {
    if (req.matches[1].str() != name)
      throw ApiError(404, "invalid_request_error", "model_not_found", "model",
                     "the model `" + req.matches[1].str() + "` does not exist; this server serves `" + name + "`");
    return send_json(res, 200, entry);
  }
  send_json(res, 200, {{"object", "list"}, {"data", json::array({entry})}});
}

void ApiServer::Impl::generate(const httplib::Request& req, httplib::Response& res, api::Endpoint endpoint) {
  // Counted from here until the response is written, so that shutdown waits for it.
  ++active_calls;
  std::shared_ptr<void> active(nullptr, [this](void*) { --active_calls; });
  if (draining) throw ApiError(503, "server_error", "shutting_down", "", "the server is shutting down");
  if (!ready) throw ApiError(503, "server_error", "loading", "", "the model is still loading; retry when GET /health answers 200");
  json body;
  try {
    body = json::parse(req.body);
  } catch (const json::exception& e) {
    throw ApiError(400, "invalid_request_error", "invalid_json", "", std::string("the body is not valid JSON: ") + e.what());
  }
  auto call = std::make_shared<Call>();
  call->req = api::parse_request(body, endpoint, *model, {name, scheduler->slot_ctx(), 16});
  call->meta = {random_id(endpoint == api::Endpoint::Chat ? "chatcmpl-" : "cmpl-"), name, std::time(nullptr)};
  call->choices.resize(static_cast<size_t>(call->req.n_choices()));
  submit(call);
  const int fd = connection_fd(req);
  if (call->req.stream) stream(call, fd, std::move(active), res);
  else respond(call, fd, res);
}

void ApiServer::Impl::submit(const std::shared_ptr<Call>& call) {
  const api::ApiRequest& r = call->req;
  const bool stream = r.stream, keep_tokens = r.want_logprobs;
  try {
    for (int64_t index = 0; index < r.n_choices(); ++index) {
      GenerateOptions opts = r.gen;
      opts.sampling.seed += static_cast<uint64_t>(index % r.n);
      RequestCallbacks cb;
      cb.on_prompt = [call, index, stream](std::span<const TokenLogprob> lps) {
        std::lock_guard<std::mutex> lock(call->mu);
        call->choices[static_cast<size_t>(index)].prompt_logprobs.assign(lps.begin(), lps.end());
        if (stream) call->events.push_back({Call::Event::Prompt, index, {}});
        call->cv.notify_all();
      };
      cb.on_token = [call, index, stream, keep_tokens](const TokenOut& t) {
        std::lock_guard<std::mutex> lock(call->mu);
        if (stream) call->events.push_back({Call::Event::Token, index, t});
        else if (keep_tokens) call->choices[static_cast<size_t>(index)].tokens.push_back(t);
        call->cv.notify_all();
        return true;
      };
      cb.on_done = [call, index, stream](const RequestResult& result) {
        std::lock_guard<std::mutex> lock(call->mu);
        api::ChoiceOutput& c = call->choices[static_cast<size_t>(index)];
        c.result = result;
        c.done = true;
        ++call->n_done;
        if (stream) call->events.push_back({Call::Event::Done, index, {}});
        call->cv.notify_all();
      };
      const auto& prompt = r.prompts[static_cast<size_t>(index / r.n)];
      call->ids.push_back(scheduler->submit(prompt, opts, std::move(cb)));
    }
  } catch (...) {
    cancel(*call);  // the choices already queued
    throw;
  }
}

void ApiServer::Impl::cancel(const Call& call) {
  for (Scheduler::RequestId id : call.ids) scheduler->cancel(id);
}

// Non-streamed: wait for every choice (cancelling them if the client goes away), then
// answer with one JSON object.
void ApiServer::Impl::respond(const std::shared_ptr<Call>& call, int fd, httplib::Response& res) {
  std::unique_lock<std::mutex> lock(call->mu);
  const int64_t n = call->req.n_choices();
  while (call->n_done < n) {
    call->cv.wait_for(lock, std::chrono::milliseconds(100));
    if (call->n_done < n && peer_gone(fd)) {
      lock.unlock();
      cancel(*call);
      send_error(res, 499, "the client closed the connection", "invalid_request_error");
      return;
    }
  }
  for (const api::ChoiceOutput& c : call->choices) {
    if (c.result.reason == FinishReason::Error)
      return send_error(res, 500, "generation failed: " + c.result.error, "server_error");
    if (c.result.reason == FinishReason::Cancelled)
      return send_error(res, 503, "generation was cancelled: the server is shutting down", "server_error");
  }
  send_json(res, 200, api::completion_response(call->req, call->meta, model->tokenizer.get(), call->choices));
}

// Streamed: server-sent events, one `data: {...}` chunk per generated token (its text may be
// empty: part of a character, or held back as the start of a stop string), a last chunk per
// choice with its finish_reason and any held-back text, the usage when asked, `data: [DONE]`.
void ApiServer::Impl::stream(const std::shared_ptr<Call>& call, int fd, std::shared_ptr<void> active,
                             httplib::Response& res) {
  struct State {
    bool prologue_sent = false;
  };
  auto state = std::make_shared<State>();
  const Tokenizer* tok = model->tokenizer.get();
  res.set_header("Cache-Control", "no-cache");
  auto provider = [this, call, fd, state, tok](size_t, httplib::DataSink& sink) {
    const api::ApiRequest& r = call->req;
    const bool chat = r.endpoint == api::Endpoint::Chat;
    std::string out;
    auto emit = [&out](const json& j) { out += "data: " + dump(j) + "\n\n"; };
    if (!state->prologue_sent) {
      state->prologue_sent = true;
      for (int64_t i = 0; i < r.n_choices(); ++i) {
        if (chat) emit(api::chat_chunk(r, call->meta, tok, i, true, "", {}, std::nullopt));
        else if (r.echo && !r.gen.prompt_logprobs) emit(api::echo_chunk(r, call->meta, tok, i, {}));
      }
    }
    std::deque<Call::Event> events;
    bool all_done = false;
    {
      std::unique_lock<std::mutex> lock(call->mu);
      if (out.empty()) call->cv.wait_for(lock, std::chrono::milliseconds(100), [&] { return !call->events.empty(); });
      events.swap(call->events);
      all_done = call->n_done == r.n_choices();
    }
    for (Call::Event& e : events) {
      const api::ChoiceOutput& c = call->choices[static_cast<size_t>(e.index)];  // written before the event
      if (e.kind == Call::Event::Prompt) {
        if (r.echo) emit(api::echo_chunk(r, call->meta, tok, e.index, c.prompt_logprobs));
      } else if (e.kind == Call::Event::Token) {
        const std::span<const TokenOut> tokens(&e.token, 1);
        emit(chat ? api::chat_chunk(r, call->meta, tok, e.index, false, e.token.text, tokens, std::nullopt)
                  : api::completion_chunk(r, call->meta, tok, e.index, e.token.text, tokens, std::nullopt));
      } else if (c.result.reason == FinishReason::Error || c.result.reason == FinishReason::Cancelled) {
        const std::string why = c.result.reason == FinishReason::Error ? "generation failed: " + c.result.error
                                                                        : "generation was cancelled: the server is shutting down";
        emit(api::error_body(why, "server_error"));
      } else {
        emit(chat ? api::chat_chunk(r, call->meta, tok, e.index, false, c.result.tail, {}, c.result.reason)
                  : api::completion_chunk(r, call->meta, tok, e.index, c.result.tail, {}, c.result.reason));
      }
    }
    if (all_done) {
      if (r.include_usage) emit(api::usage_chunk(r, call->meta, call->choices));
      out += "data: [DONE]\n\n";
    }
    if (out.empty()) {
      if (!peer_gone(fd)) return true;  // nothing new yet; called again
      cancel(*call);
      return false;
    }
    if (!sink.write(out.data(), out.size())) {
      cancel(*call);
      return false;
    }
    if (all_done) sink.done();
    return true;
  };
  // Runs when the response is gone (sent, or the connection dropped): stops what still runs.
  auto release = [this, call, active](bool) { cancel(*call); };
  res.set_chunked_content_provider("text/event-stream", provider, release);
}

ApiServer::ApiServer(const ServeOptions& opts) : impl_(std::make_unique<Impl>(opts)) {}

ApiServer::~ApiServer() {
  shutdown();
  wait();
}

int ApiServer::bind() {
  Impl& m = *impl_;
  int port = m.opts.port;
  if (port == 0) port = m.http.bind_to_any_port(m.opts.host);
  else if (!m.http.bind_to_port(m.opts.host, port)) port = -1;
  SMOE_CHECK(port > 0, "cannot listen on ", m.opts.host, ":", m.opts.port,
             " (the port is in use, or the host is not an address of this machine)");
  m.http.raise_backlog(512);
  return port;
}

void ApiServer::start() {
  Impl& m = *impl_;
  m.listen_thread = std::thread([&m] {
    m.http.listen_after_bind();
    m.listening_done = true;
  });
  // Return once it accepts connections, so that a shutdown() right after is not lost.
  while (!m.http.is_running() && !m.listening_done) std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

void ApiServer::load() {
  Impl& m = *impl_;
  if (m.opts.load_delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(m.opts.load_delay_ms));
  m.model = load_model(m.opts.model_path, m.opts.load);
  m.pool = std::make_unique<ThreadPool>(m.opts.threads);
  m.scheduler = std::make_unique<Scheduler>(*m.model, m.opts.scheduler, m.pool.get());
  m.ready = true;
  m.engine_thread = std::thread([&m] { m.scheduler->run(m.engine_stop); });
}

void ApiServer::shutdown() {
  Impl& m = *impl_;
  std::call_once(m.shutdown_once, [&m] {
    m.draining = true;
    auto drained = [&m] { return m.active_calls == 0 && (!m.ready || m.scheduler->idle()); };
    auto wait_until = [](const std::function<bool()>& done, double seconds) {
      const auto deadline = Clock::now() + std::chrono::duration<double>(seconds);
      while (!done() && Clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(10));
      return done();
    };
    if (!wait_until(drained, m.opts.shutdown_timeout_s) && m.ready) {
      m.scheduler->cancel_all();
      wait_until([&m] { return m.active_calls == 0; }, 2.0);
    }
    m.http.stop();
  });
}

void ApiServer::wait() {
  Impl& m = *impl_;
  if (m.listen_thread.joinable()) m.listen_thread.join();
  m.engine_stop = true;
  if (m.scheduler) m.scheduler->wake();
  if (m.engine_thread.joinable()) m.engine_thread.join();
}

}  // namespace smoe
