// routes_report.h: what `smoe routes` writes from routing statistics: routes.json (every
// figure), routes.md and the stdout table (repetition per domain and layer next to random
// routing, the Mixtral paper's Table 5 layout), SVG bar charts of the expert shares and a
// line chart of the repetition (Figures 7 and 9), and routes.html, which colours each token
// of a text by its first-choice expert (Figure 8). Formatting only; the counting is in
// routing.h.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "analysis/routing.h"

namespace smoe {

class Tokenizer;

struct DomainRouting {
  std::string name;
  std::vector<std::string> files;
  RoutingStats stats;
  TokenRoutes sample;  // the first tokens of the domain's first text, for routes.html
};

struct RoutesReport {
  std::string model;
  int64_t n_layers = 0, n_experts = 0, k = 0, ctx = 0;
  std::vector<DomainRouting> domains;
};

// {"model", "n_layers", "n_experts", "experts_per_token", "ctx", "random_baseline":
//  {"repeat_first", "repeat_either", "share"}, "domains": [{"name", "files", "n_tokens",
//  "layers": [...RoutingStats::layers_json()]}]}
nlohmann::ordered_json routes_json(const RoutesReport& report);

// Markdown: repetition between consecutive tokens at `layers` per domain, with a row for
// random routing (Table 5 layout), then what independent tokens with each domain's measured
// shares would give.
std::string repetition_table(const RoutesReport& report, const std::vector<int64_t>& layers);
// Markdown: expert shares (first choice and any of the K) per domain at `layers`.
std::string shares_table(const RoutesReport& report, const std::vector<int64_t>& layers);

// choice: "first", "second" or "either". One panel per layer, bars per domain per expert.
std::string shares_svg(const RoutesReport& report, const std::string& choice);
// Two panels (same first expert; K chosen intersect) against the layer index.
std::string repetition_svg(const RoutesReport& report);
// Each domain's sample text, tokens coloured by first-choice expert, once per layer.
std::string routes_html(const RoutesReport& report, const Tokenizer& tokenizer, const std::vector<int64_t>& layers);

// Writes routes.json, routes.md, routes.html (when a tokenizer is given) and the SVG
// charts into `dir` (created if missing); returns the paths written.
std::vector<std::string> write_routes_report(const RoutesReport& report, const Tokenizer* tokenizer,
                                             const std::vector<int64_t>& layers, const std::string& dir);

}  // namespace smoe
