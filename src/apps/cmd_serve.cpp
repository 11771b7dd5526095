// cmd_serve.cpp: `smoe serve`: the OpenAI-compatible HTTP server (server/http_server.h).
// Prints "listening on http://HOST:PORT" to stderr once the port is bound, loads the model
// (GET /health answers 503 meanwhile), serves until SIGINT or SIGTERM, then drains and exits.
#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <cstdio>
#include <thread>

#include "apps/commands.h"
#include "core/error.h"
#include "server/http_server.h"

namespace smoe {

namespace {

void serve(const ServeOptions& opts) {
  opts.validate();
  // Only the signal thread below receives SIGINT/SIGTERM (threads inherit this mask); a
  // client that vanishes must not kill the server with SIGPIPE.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  ApiServer server(opts);
  const int port = server.bind();
  std::fprintf(stderr, "smoe serve: listening on http://%s:%d\n", opts.host.c_str(), port);
  server.start();
  std::atomic<bool> stopping{false};
  std::thread signal_thread([&server, &stopping, stop_signals] {
    int sig = 0;
    sigwait(&stop_signals, &sig);
    if (!stopping)
      std::fprintf(stderr, "smoe serve: %s: finishing running requests, then stopping\n",
                   sig == SIGINT ? "SIGINT" : "SIGTERM");
    server.shutdown();
  });
  // Wakes the signal thread if it still waits (the server stopped without a signal).
  auto stop_signal_thread = [&] {
    stopping = true;
    pthread_kill(signal_thread.native_handle(), SIGTERM);
    signal_thread.join();
  };
  try {
    server.load();
  } catch (...) {
    server.shutdown();
    server.wait();
    stop_signal_thread();
    throw;
  }
  std::fprintf(stderr, "smoe serve: model %s loaded; ready (--parallel %lld, %lld tokens of context each)\n",
               opts.model_path.c_str(), static_cast<long long>(opts.scheduler.n_slots),
               static_cast<long long>(opts.scheduler.n_ctx / opts.scheduler.n_slots));
  server.wait();
  stop_signal_thread();
  std::fprintf(stderr, "smoe serve: stopped\n");
}

}  // namespace

void register_serve(CLI::App& app) {
  auto opts = std::make_shared<ServeOptions>();
  CLI::App* cmd = app.add_subcommand("serve", "OpenAI-compatible HTTP server with continuous batching");
  add_model_option(*cmd, opts->model_path);
  add_load_option(*cmd, opts->load);
  cmd->add_option("--host", opts->host, "address to listen on")->capture_default_str();
  cmd->add_option("--port", opts->port, "port (0: any free port)")->capture_default_str();
  cmd->add_option("--parallel", opts->scheduler.n_slots, "sequences generated at once (slots)")->capture_default_str();
  cmd->add_option("--ctx-size", opts->scheduler.n_ctx,
                  "KV-cache tokens in all, shared equally by the slots (capped per slot at the model's context)")
      ->capture_default_str();
  cmd->add_option("--queue", opts->scheduler.max_queue,
                  "requests that may wait for a slot; more get 429")->capture_default_str();
  cmd->add_option("--batch", opts->scheduler.max_prefill_tokens,
                  "prompt tokens per forward pass (all slots together)")->capture_default_str();
  cmd->add_option("--alias", opts->model_name, "model id for clients (default: the model's file or folder name)");
  cmd->add_option("--api-key", opts->api_key, "require \"Authorization: Bearer KEY\" (all but /health)");
  cmd->add_option("-t,--threads", opts->threads, "forward-pass threads (0: all cores)")->capture_default_str();
  cmd->add_option("--max-body", opts->max_body_bytes, "largest request body in bytes (more: 413)")->capture_default_str();
  cmd->add_option("--timeout", opts->timeout_s, "socket read/write timeout in seconds")->capture_default_str();
  cmd->add_option("--shutdown-timeout", opts->shutdown_timeout_s,
                  "seconds running requests may finish after SIGINT/SIGTERM")->capture_default_str();
  cmd->add_option("--debug-load-delay-ms", opts->load_delay_ms, "(testing) wait before loading the model")
      ->group("");
  cmd->callback([opts] { serve(*opts); });
}

}  // namespace smoe
