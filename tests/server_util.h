// server_util.h: helpers for the `smoe serve` tests: start the real server binary on a free
// loopback port and wait until it is ready, talk to it with httplib (JSON requests,
// server-sent event streams) or raw sockets, and stop it.
#pragma once
#include <httplib.h>
#include <sys/types.h>

#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace smoe::test {

using json = nlohmann::json;

class ServerProcess {
 public:
  // Runs `smoe serve --port 0 ARGS` (ARGS shell-quoted) with its stderr in a log file, waits
  // for the port it prints and, when wait_ready, for GET /health to answer 200.
  explicit ServerProcess(const std::string& args, bool wait_ready = true);
  ~ServerProcess();  // SIGTERM, then SIGKILL if it has not exited within 10 s
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  int port() const { return port_; }
  bool ok() const { return port_ > 0; }  // started and (when asked) ready
  std::string log() const;
  httplib::Client client() const;
  // Sends `sig` and waits for the exit; returns the exit code (128 + signal if killed by
  // one), or -1 on timeout.
  int stop(int sig, double timeout_s = 10);
  bool wait_ready(double timeout_s = 10);

 private:
  pid_t pid_ = -1;
  int port_ = -1;
  std::string log_path_;
};

struct HttpResult {
  int status = -1;  // -1: no response
  json body;        // parsed JSON (null when not JSON)
  std::string raw;
};
HttpResult post_json(int port, const std::string& path, const std::string& body,
                     const httplib::Headers& headers = {});
HttpResult get(int port, const std::string& path, const httplib::Headers& headers = {});

struct StreamResult {
  int status = -1;
  std::vector<json> chunks;  // each `data: {...}` event, in order
  bool done = false;         // `data: [DONE]` arrived
  std::string raw;
};
// POSTs a streaming request; keep_going(chunks so far) returning false drops the connection.
StreamResult post_stream(int port, const std::string& path, const std::string& body,
                         const std::function<bool(const std::vector<json>&)>& keep_going = nullptr);
// The text of a stream: completions' choices[0].text or chat's delta.content, concatenated.
std::string stream_text(const StreamResult& r, int64_t index = 0);

// Sends raw bytes on a new connection (then half-closes it when `shutdown_write`) and
// returns what the server answers within timeout_s (until 50 ms pass without more).
std::string raw_exchange(int port, const std::string& bytes, bool shutdown_write, double timeout_s);
// A connected socket to the server (closed by the caller), or -1.
int connect_to(int port);

// A Prometheus sample's value from /metrics text ("name" or "name{labels}"), or -1.
double metric(const std::string& text, const std::string& sample);

}  // namespace smoe::test
