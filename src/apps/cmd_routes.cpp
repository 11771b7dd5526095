// cmd_routes.cpp: `smoe routes`: routing statistics of a model over texts grouped into
// domains: expert shares per layer (first choice, second choice, any of the K chosen),
// repetition between consecutive tokens next to random routing, and a page colouring
// each token by its expert. Writes DIR/routes.json, routes.md, routes.html and SVG charts.
#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "analysis/eval_common.h"
#include "analysis/routes_report.h"
#include "analysis/routing.h"
#include "apps/commands.h"
#include "core/error.h"
#include "model/model.h"

namespace smoe {

namespace {

struct RoutesArgs {
  LoadOptions load;
  std::string model, out, split = "all", layers;
  std::vector<std::string> files, domains;
  int64_t ctx = 0, max_tokens = 0, html_tokens = 1000;
  int threads = 0;
};

// One --domain NAME=FILE or -f FILE, in the order given.
struct DomainSpec {
  std::string name;
  std::vector<std::string> files;
};

std::vector<DomainSpec> domain_specs(const RoutesArgs& a) {
  std::vector<DomainSpec> out;
  auto add = [&](const std::string& name, const std::string& file) {
    for (DomainSpec& d : out)
      if (d.name == name) {
        d.files.push_back(file);
        return;
      }
    out.push_back({name, {file}});
  };
  for (const std::string& spec : a.domains) {
    const size_t eq = spec.find('=');
    SMOE_CHECK(eq != std::string::npos && eq > 0 && eq + 1 < spec.size(), "--domain \"", spec,
               "\": expected NAME=FILE");
    add(spec.substr(0, eq), spec.substr(eq + 1));
  }
  // -f files are domains of their own, named after the file (or its path when two share a name).
  for (const std::string& f : a.files) {
    const std::string name = std::filesystem::path(f).filename().string();
    const bool taken = std::any_of(out.begin(), out.end(), [&](const DomainSpec& d) { return d.name == name; });
    add(taken ? f : name, f);
  }
  SMOE_CHECK(!out.empty(), "no text given: use -f FILE or --domain NAME=FILE");
  return out;
}

std::vector<int64_t> shown_layers(const RoutesArgs& a, int64_t n_layers) {
  std::vector<int64_t> layers;
  if (!a.layers.empty()) {
    layers = parse_int_list(a.layers, "--layers");
    for (int64_t l : layers)
      SMOE_CHECK(l >= 0 && l < n_layers, "--layers: layer ", l, " is out of range (expected 0..", n_layers - 1,
                 " for this model)");
  } else {
    layers = {0, (n_layers - 1) / 2, n_layers - 1};  // first, middle, last
  }
  std::vector<int64_t> unique;
  for (int64_t l : layers)
    if (std::find(unique.begin(), unique.end(), l) == unique.end()) unique.push_back(l);
  return unique;
}

void run_routes(const RoutesArgs& a) {
  const TextSplit split = parse_split(a.split);
  const std::vector<DomainSpec> specs = domain_specs(a);
  SMOE_CHECK(!a.out.empty(), "--out: give the output folder");
  SMOE_CHECK(a.max_tokens >= 0, "--max-tokens ", a.max_tokens, " must be >= 0 (0: the whole text)");
  SMOE_CHECK(a.html_tokens >= 0 && a.html_tokens <= 1000000, "--html-tokens ", a.html_tokens,
             " is out of range (expected 0..1000000)");
  SMOE_CHECK(a.threads >= 0 && a.threads <= 1024, "-t ", a.threads, " is out of range (expected 1..1024; 0 = all cores)");
  // Read every text before the (slower) model load, so that bad paths fail at once.
  std::vector<std::vector<std::string>> texts;
  for (const DomainSpec& d : specs) {
    texts.emplace_back();
    for (const std::string& f : d.files) texts.back().push_back(select_split(read_eval_text(f), split, f));
  }
  std::unique_ptr<Model> model = load_model(a.model, a.load);
  const ModelConfig& c = model->config;
  SMOE_CHECK(c.has_router && c.n_experts >= 2, a.model, ": a dense model (", c.n_experts,
             " expert, no router) has no routing to analyse");
  const int64_t ctx = a.ctx == 0 ? c.max_seq_len : a.ctx;
  SMOE_CHECK(ctx >= 1 && ctx <= c.max_seq_len, "--ctx ", a.ctx, " is out of range (expected 1..", c.max_seq_len,
             " for this model)");
  const std::vector<int64_t> layers = shown_layers(a, c.n_layers);
  ThreadPool pool(a.threads);

  RoutesReport report;
  report.model = a.model;
  report.n_layers = c.n_layers;
  report.n_experts = c.n_experts;
  report.k = c.n_experts_used;
  report.ctx = ctx;
  for (size_t d = 0; d < specs.size(); ++d) {
    DomainRouting dom{specs[d].name, specs[d].files, RoutingStats(c.n_layers, c.n_experts, c.n_experts_used), {}};
    for (size_t f = 0; f < specs[d].files.size(); ++f) {
      std::vector<int32_t> tokens = tokenize_with_bos(*model, texts[d][f], specs[d].files[f]);
      if (a.max_tokens > 0 && static_cast<int64_t>(tokens.size()) > a.max_tokens) tokens.resize(a.max_tokens);
      progress("routes", cat("domain ", dom.name, ": ", specs[d].files[f], ", ", tokens.size(), " tokens"), true);
      route_text(*model, tokens, ctx, &pool, dom.stats, f == 0 ? &dom.sample : nullptr, a.html_tokens);
    }
    report.domains.push_back(std::move(dom));
  }
  std::printf("%s\n", repetition_table(report, layers).c_str());
  const std::vector<std::string> written = write_routes_report(report, model->tokenizer.get(), layers, a.out);
  for (const std::string& p : written) std::fprintf(stderr, "smoe routes: wrote %s\n", p.c_str());
}

}  // namespace

void register_routes(CLI::App& app) {
  auto args = std::make_shared<RoutesArgs>();
  CLI::App* cmd = app.add_subcommand("routes", "routing statistics per layer and domain, with HTML and SVG reports");
  cmd->footer(
      "routing statistics over texts: expert shares per layer (first choice, second choice, any of the K "
      "chosen) and repetition between consecutive tokens next to random routing, per domain. Each text is "
      "tokenized with BOS first and run as one sequence (in windows of --ctx tokens when longer). Writes "
      "DIR/routes.json (every figure), routes.md, routes.html (tokens coloured by first-choice expert) and "
      "SVG charts; prints the repetition table");
  add_model_option(*cmd, args->model);
  add_load_option(*cmd, args->load);
  cmd->add_option("-f,--file", args->files, "text file(s); each is a domain named after the file");
  cmd->add_option("--domain", args->domains, "NAME=FILE: add FILE to domain NAME (repeat for more files or domains)");
  cmd->add_option("--out", args->out, "output folder (created if missing)")->required();
  cmd->add_option("--ctx", args->ctx, "window length in tokens (default: the model's context length)");
  cmd->add_option("--split", args->split,
                  "part of each text: all, train (first 90% of characters) or val (last 10%, from "
                  "character len*9//10)")
      ->capture_default_str();
  cmd->add_option("--max-tokens", args->max_tokens, "use at most this many tokens of each text (0: all)")
      ->capture_default_str();
  cmd->add_option("--layers", args->layers, "layers for the table and the HTML page, e.g. 0,15,31 (default: first, middle, last)");
  cmd->add_option("--html-tokens", args->html_tokens, "tokens of each domain's first text shown in routes.html")
      ->capture_default_str();
  cmd->add_option("-t,--threads", args->threads, "threads (0: all cores)")->capture_default_str();
  cmd->callback([args] { run_routes(*args); });
}

}  // namespace smoe
