// http_server.h: `smoe serve`'s HTTP front (cpp-httplib): OpenAI-compatible endpoints over
// one Scheduler, which a thread of its own steps (continuous batching). It listens before
// the model is loaded (/health answers 503 until it is ready), turns every bad request into
// a 4xx with an OpenAI error object, notices clients that disconnect (their generation is
// cancelled and the slot freed), and shuts down gracefully (drains running requests).
//   POST /v1/completions, POST /v1/chat/completions (stream with server-sent events),
//   GET /v1/models, GET /health, GET /metrics (Prometheus text).
// Not here: request/response shapes (server/openai.h), batching (runtime/scheduler.h).
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "model/model.h"
#include "runtime/scheduler.h"
#include "server/metrics.h"

namespace smoe {

struct ServeOptions {
  std::string model_path;
  LoadOptions load;  // where the weights live
  std::string model_name;  // the id clients use; default: the model file or folder name
  std::string host = "127.0.0.1";
  int port = 8080;         // 0: any free port (see bind())
  std::string api_key;     // when set, /v1/* and /metrics need "Authorization: Bearer KEY"
  int threads = 0;         // forward-pass threads (0: all cores)
  SchedulerOptions scheduler;
  size_t max_body_bytes = size_t(8) << 20;  // larger bodies get 413
  int timeout_s = 30;                       // per socket read/write
  double shutdown_timeout_s = 10;           // how long running requests may finish at shutdown
  int load_delay_ms = 0;                    // test hook: wait before loading the model
  void validate() const;
};

class ApiServer {
 public:
  explicit ApiServer(const ServeOptions& opts);
  ~ApiServer();
  ApiServer(const ApiServer&) = delete;
  ApiServer& operator=(const ApiServer&) = delete;

  // Binds host:port and returns the port; throws smoe::Error when it cannot.
  int bind();
  // Accepts connections on a background thread (/health says 503 until load() is done).
  void start();
  // Loads the model and starts the scheduler thread; throws smoe::Error on failure.
  void load();
  // Blocks until shutdown() has finished serving.
  void wait();
  // Graceful stop, from any thread, once: refuses new requests (503), lets running ones
  // finish for up to shutdown_timeout_s (then cancels them), closes the listener.
  void shutdown();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace smoe
