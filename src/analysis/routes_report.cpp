// routes_report.cpp: routes.json, Markdown tables, SVG charts and the coloured-token HTML
// page of `smoe routes` (see routes_report.h).
#include "analysis/routes_report.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "analysis/svg.h"
#include "core/error.h"
#include "runtime/generate.h"
#include "tokenizer/tokenizer.h"

namespace smoe {

namespace {

std::string pct(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f%%", 100 * v);
  return buf;
}

// "first or second choice" when K = 2, else "any of the K chosen".
std::string either_name(int64_t k) {
  if (k == 2) return "first or second choice";
  return "any of the " + std::to_string(k) + " chosen";
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  SMOE_CHECK(out, path, ": cannot open for writing");
  out << text;
  SMOE_CHECK(out.good(), path, ": write failed");
}

}  // namespace

nlohmann::ordered_json routes_json(const RoutesReport& r) {
  nlohmann::ordered_json j;
  j["model"] = r.model;
  j["n_layers"] = r.n_layers;
  j["n_experts"] = r.n_experts;
  j["experts_per_token"] = r.k;
  j["ctx"] = r.ctx;
  j["random_baseline"] = {{"repeat_first", random_repeat_first(r.n_experts)},
                          {"repeat_either", random_repeat_either(r.n_experts, r.k)},
                          {"share", 1.0 / static_cast<double>(r.n_experts)}};
  j["domains"] = nlohmann::ordered_json::array();
  for (const DomainRouting& d : r.domains)
    j["domains"].push_back({{"name", d.name},
                            {"files", d.files},
                            {"n_tokens", d.stats.n_tokens()},
                            {"layers", d.stats.layers_json()}});
  return j;
}

std::string repetition_table(const RoutesReport& r, const std::vector<int64_t>& layers) {
  std::ostringstream os;
  const bool two = r.k >= 2;  // with K = 1 the second figure equals the first
  os << "Consecutive tokens sent to the same expert (share of token pairs):\n\n| domain | tokens |";
  for (int64_t l : layers) os << " first choice, layer " << l << " |";
  if (two)
    for (int64_t l : layers) os << " " << either_name(r.k) << ", layer " << l << " |";
  os << "\n|---|---:|";
  for (size_t i = 0; i < layers.size() * (two ? 2 : 1); ++i) os << "---:|";
  os << "\n";
  for (const DomainRouting& d : r.domains) {
    os << "| " << d.name << " | " << d.stats.n_tokens() << " |";
    for (int64_t l : layers) os << " " << pct(d.stats.repeat_first(l)) << " |";
    if (two)
      for (int64_t l : layers) os << " " << pct(d.stats.repeat_either(l)) << " |";
    os << "\n";
  }
  os << "| random routing | |";
  for (size_t i = 0; i < layers.size(); ++i) os << " " << pct(random_repeat_first(r.n_experts)) << " |";
  if (two)
    for (size_t i = 0; i < layers.size(); ++i) os << " " << pct(random_repeat_either(r.n_experts, r.k)) << " |";
  os << "\n\nThe same if consecutive tokens were routed independently, each like a random token of its domain "
        "(uneven shares alone repeat more than uniform routing; locality is repetition above this):\n\n"
        "| domain | |";
  for (int64_t l : layers) os << " first choice, layer " << l << " |";
  if (two)
    for (int64_t l : layers) os << " " << either_name(r.k) << ", layer " << l << " |";
  os << "\n|---|---|";
  for (size_t i = 0; i < layers.size() * (two ? 2 : 1); ++i) os << "---:|";
  os << "\n";
  for (const DomainRouting& d : r.domains) {
    os << "| " << d.name << " | independent |";
    for (int64_t l : layers) os << " " << pct(d.stats.repeat_first_independent(l)) << " |";
    if (two)
      for (int64_t l : layers) {
        const double v = d.stats.repeat_either_independent(l);
        os << " " << (v < 0 ? std::string("n/a") : pct(v)) << " |";
      }
    os << "\n";
  }
  return os.str();
}

std::string shares_table(const RoutesReport& r, const std::vector<int64_t>& layers) {
  std::ostringstream os;
  for (const char* choice : {"first", "either"}) {
    const bool first = std::string(choice) == "first";
    if (!first && r.k == 1) break;  // identical to the first-choice table
    os << "Share of tokens per expert, " << (first ? "first choice" : either_name(r.k))
       << " (uniform: " << pct(1.0 / static_cast<double>(r.n_experts)) << "):\n\n| layer | domain |";
    for (int64_t e = 0; e < r.n_experts; ++e) os << " " << e << " |";
    os << "\n|---:|---|";
    for (int64_t e = 0; e < r.n_experts; ++e) os << "---:|";
    os << "\n";
    for (int64_t l : layers)
      for (const DomainRouting& d : r.domains) {
        os << "| " << l << " | " << d.name << " |";
        for (double s : first ? d.stats.first_share(l) : d.stats.either_share(l)) os << " " << pct(s) << " |";
        os << "\n";
      }
    os << "\n";
  }
  return os.str();
}

std::string shares_svg(const RoutesReport& r, const std::string& choice) {
  ChartStyle style;
  const std::string what = choice == "first" ? "first choice" : choice == "second" ? "second choice" : either_name(r.k);
  style.title = "Share of tokens per expert, " + what + " (dashed: uniform 1/" + std::to_string(r.n_experts) + ")";
  for (const DomainRouting& d : r.domains) style.series.push_back(d.name);
  for (int64_t e = 0; e < r.n_experts; ++e) style.x_labels.push_back(std::to_string(e));
  style.x_name = "expert";
  style.y_name = "share";
  style.reference = 1.0 / static_cast<double>(r.n_experts);
  style.reference_label = "uniform";
  style.columns = r.n_layers <= 4 ? r.n_layers : 4;
  std::vector<BarPanel> panels;
  for (int64_t l = 0; l < r.n_layers; ++l) {
    BarPanel p;
    p.title = "layer " + std::to_string(l);
    for (const DomainRouting& d : r.domains)
      p.values.push_back(choice == "first"    ? d.stats.first_share(l)
                         : choice == "second" ? d.stats.second_share(l)
                                              : d.stats.either_share(l));
    panels.push_back(std::move(p));
  }
  return bar_chart_svg(panels, style);
}

std::string repetition_svg(const RoutesReport& r) {
  ChartStyle style;
  style.title = "Consecutive tokens sent to the same expert, per layer (dashed: random routing)";
  for (const DomainRouting& d : r.domains) style.series.push_back(d.name);
  for (int64_t l = 0; l < r.n_layers; ++l) style.x_labels.push_back(std::to_string(l));
  style.x_name = "layer";
  style.y_name = "share of pairs";
  style.reference_label = "random";
  style.columns = 2;
  std::vector<BarPanel> panels(r.k >= 2 ? 2 : 1);
  panels[0].title = "same first-choice expert";
  if (r.k >= 2) panels[1].title = "same expert among the " + std::string(r.k == 2 ? "first two" : "K") + " choices";
  for (const DomainRouting& d : r.domains) {
    std::vector<double> first, either;
    for (int64_t l = 0; l < r.n_layers; ++l) {
      first.push_back(d.stats.repeat_first(l));
      either.push_back(d.stats.repeat_either(l));
    }
    panels[0].values.push_back(first);
    if (r.k >= 2) panels[1].values.push_back(either);
  }
  std::vector<double> refs = {random_repeat_first(r.n_experts)};
  if (r.k >= 2) refs.push_back(random_repeat_either(r.n_experts, r.k));
  return line_chart_svg(panels, style, refs);
}

std::string routes_html(const RoutesReport& r, const Tokenizer& tok, const std::vector<int64_t>& layers) {
  std::ostringstream os;
  os << "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>smoe routes</title>\n<style>\n"
        "body{font-family:sans-serif;margin:2em;max-width:70em}\n"
        ".text{font-family:monospace;white-space:pre-wrap;line-height:1.7;border:1px solid #ccc;padding:0.8em}\n"
        ".text span{border-radius:2px}\n.legend span{display:inline-block;padding:0 0.6em;margin:0 0.2em}\n"
        "</style></head><body>\n<h1>Expert routing by token</h1>\n<p>Model <code>"
     << xml_escape(r.model) << "</code>: " << r.n_layers << " layers, " << r.n_experts << " experts, " << r.k
     << " per token. Each token is coloured by the expert its router ranked first at the given layer; hover "
        "for the chosen experts and their gates.</p>\n<p class=\"legend\">Experts: ";
  for (int64_t e = 0; e < r.n_experts; ++e)
    os << "<span style=\"background:" << series_colour(e, r.n_experts) << "80\">" << e << "</span>";
  os << "</p>\n";
  for (const DomainRouting& d : r.domains) {
    const TokenRoutes& s = d.sample;
    const int64_t T = static_cast<int64_t>(s.tokens.size());
    if (T == 0) continue;
    // Each token's text as the streaming detokenizer completes it (a partial UTF-8 character
    // shows with the token that completes it).
    std::vector<std::string> pieces;
    TextStreamer streamer(tok);
    for (int32_t id : s.tokens) pieces.push_back(streamer.push(id));
    pieces.back() += streamer.flush();
    for (int64_t l : layers) {
      os << "<h2>" << xml_escape(d.name) << ", layer " << l << "</h2>\n<p>The first " << T
         << " tokens of <code>" << xml_escape(d.files.empty() ? "" : d.files[0]) << "</code>.</p>\n<div class=\"text\">";
      for (int64_t t = 0; t < T; ++t) {
        if (pieces[static_cast<size_t>(t)].empty()) continue;
        const size_t base = static_cast<size_t>((l * T + t) * r.k);
        const int32_t e0 = s.experts[base];
        std::ostringstream title;
        title << "layer " << l << ":";
        for (int64_t j = 0; j < r.k; ++j) {
          char g[16];
          std::snprintf(g, sizeof g, "%.2f", s.gates[base + static_cast<size_t>(j)]);
          title << (j ? ", " : " ") << "expert " << s.experts[base + static_cast<size_t>(j)] << " (gate " << g << ")";
        }
        os << "<span style=\"background:" << series_colour(e0, r.n_experts) << "80\" title=\""
           << xml_escape(title.str()) << "\">" << xml_escape(pieces[static_cast<size_t>(t)]) << "</span>";
      }
      os << "</div>\n";
    }
  }
  os << "</body></html>\n";
  return os.str();
}

std::vector<std::string> write_routes_report(const RoutesReport& r, const Tokenizer* tok,
                                             const std::vector<int64_t>& layers, const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(dir, ec);
  SMOE_CHECK(fs::is_directory(dir), dir, ": cannot create the output folder",
             ec ? " (" + ec.message() + ")" : std::string());
  std::vector<std::string> written;
  auto put = [&](const std::string& name, const std::string& text) {
    const std::string path = (fs::path(dir) / name).string();
    write_text(path, text);
    written.push_back(path);
  };
  put("routes.json", routes_json(r).dump(1) + "\n");
  put("routes.md", repetition_table(r, layers) + "\n" + shares_table(r, layers));
  put("shares_first.svg", shares_svg(r, "first"));
  if (r.k >= 2) {
    put("shares_second.svg", shares_svg(r, "second"));
    put("shares_either.svg", shares_svg(r, "either"));
  }
  put("repetition.svg", repetition_svg(r));
  if (tok) put("routes.html", routes_html(r, *tok, layers));
  return written;
}

}  // namespace smoe
