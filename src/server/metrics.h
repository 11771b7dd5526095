// metrics.h: the server's /metrics page in the Prometheus text format: requests, prompt and
// generated tokens, tokens/s, queue depth, KV-cache use and the tokens routed to each expert
// of each layer (from the scheduler), and HTTP requests by path and status.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <utility>

#include "runtime/scheduler.h"

namespace smoe {

// (path, HTTP status) -> responses sent.
using HttpCounts = std::map<std::pair<std::string, int>, uint64_t>;

std::string prometheus_metrics(const SchedulerStats& s, const HttpCounts& http, double uptime_s);

}  // namespace smoe
