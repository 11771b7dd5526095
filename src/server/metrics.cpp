// metrics.cpp: Prometheus text exposition of the server's counters and gauges.
#include "server/metrics.h"

#include <cstdio>
#include <sstream>

namespace smoe {

namespace {

class Writer {
 public:
  // Starts a metric family: its HELP and TYPE lines.
  void family(const char* name, const char* type, const char* help) {
    os_ << "# HELP " << name << ' ' << help << "\n# TYPE " << name << ' ' << type << '\n';
  }
  void sample(const std::string& name, double value, const std::string& labels = "") {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.17g", value);
    os_ << name;
    if (!labels.empty()) os_ << '{' << labels << '}';
    os_ << ' ' << buf << '\n';
  }
  std::string str() const { return os_.str(); }

 private:
  std::ostringstream os_;
};

}  // namespace

std::string prometheus_metrics(const SchedulerStats& s, const HttpCounts& http, double uptime_s) {
  Writer w;
  w.family("smoe_requests_submitted_total", "counter", "Generation requests accepted into the queue.");
  w.sample("smoe_requests_submitted_total", static_cast<double>(s.submitted));
  w.family("smoe_requests_rejected_total", "counter", "Generation requests refused because the queue was full.");
  w.sample("smoe_requests_rejected_total", static_cast<double>(s.rejected));
  w.family("smoe_requests_finished_total", "counter", "Generation requests finished, by reason.");
  for (const char* reason : {"eos", "stop", "length", "context", "cancelled", "error"}) {
    auto it = s.finished.find(reason);
    w.sample("smoe_requests_finished_total", it == s.finished.end() ? 0.0 : static_cast<double>(it->second),
             std::string("reason=\"") + reason + "\"");
  }
  w.family("smoe_prompt_tokens_total", "counter", "Prompt tokens processed.");
  w.sample("smoe_prompt_tokens_total", static_cast<double>(s.prompt_tokens));
  w.family("smoe_generated_tokens_total", "counter", "Tokens generated.");
  w.sample("smoe_generated_tokens_total", static_cast<double>(s.generated_tokens));
  w.family("smoe_generated_tokens_per_second", "gauge", "Tokens generated per second over the last 10 s.");
  w.sample("smoe_generated_tokens_per_second", s.generated_per_s);
  w.family("smoe_forward_passes_total", "counter", "Batched forward passes (scheduler steps).");
  w.sample("smoe_forward_passes_total", static_cast<double>(s.steps));
  w.family("smoe_queue_depth", "gauge", "Requests waiting for a slot.");
  w.sample("smoe_queue_depth", static_cast<double>(s.queue_depth));
  w.family("smoe_queue_capacity", "gauge", "Requests that may wait for a slot (--queue).");
  w.sample("smoe_queue_capacity", static_cast<double>(s.max_queue));
  w.family("smoe_slots_busy", "gauge", "Slots running a request.");
  w.sample("smoe_slots_busy", static_cast<double>(s.slots_busy));
  w.family("smoe_slots", "gauge", "Slots (--parallel).");
  w.sample("smoe_slots", static_cast<double>(s.n_slots));
  w.family("smoe_kv_cache_tokens", "gauge", "KV-cache positions in use, all slots.");
  w.sample("smoe_kv_cache_tokens", static_cast<double>(s.kv_tokens));
  w.family("smoe_kv_cache_capacity_tokens", "gauge", "KV-cache positions in all (--ctx-size).");
  w.sample("smoe_kv_cache_capacity_tokens", static_cast<double>(s.kv_capacity));
  w.family("smoe_kv_cache_usage_ratio", "gauge", "Share of the KV cache in use.");
  w.sample("smoe_kv_cache_usage_ratio",
           s.kv_capacity > 0 ? static_cast<double>(s.kv_tokens) / static_cast<double>(s.kv_capacity) : 0.0);
  w.family("smoe_kv_cache_bytes", "gauge", "Memory held by the KV caches.");
  w.sample("smoe_kv_cache_bytes", s.kv_bytes);
  w.family("smoe_expert_tokens_total", "counter", "Tokens routed to each expert of each layer.");
  for (int64_t l = 0; l < s.n_layers; ++l)
    for (int64_t e = 0; e < s.n_experts; ++e)
      w.sample("smoe_expert_tokens_total", static_cast<double>(s.expert_tokens[static_cast<size_t>(l * s.n_experts + e)]),
               "layer=\"" + std::to_string(l) + "\",expert=\"" + std::to_string(e) + "\"");
  w.family("smoe_http_requests_total", "counter", "HTTP responses, by path and status.");
  for (const auto& [key, n] : http)
    w.sample("smoe_http_requests_total", static_cast<double>(n),
             "path=\"" + key.first + "\",status=\"" + std::to_string(key.second) + "\"");
  w.family("smoe_uptime_seconds", "gauge", "Seconds since the server started.");
  w.sample("smoe_uptime_seconds", uptime_s);
  return w.str();
}

}  // namespace smoe
