// cmd_info.cpp: `smoe info`: a model's (or a bare config file's) architecture, shape,
// expert counts, parameter counts, tensor types and file size, as text or JSON.
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>

#include "apps/commands.h"
#include "core/error.h"
#include "model/model.h"

namespace smoe {

namespace {

std::string human_count(int64_t n) {
  char buf[32];
  if (n >= 1000000000) std::snprintf(buf, sizeof buf, "%.2fB", n / 1e9);
  else if (n >= 1000000) std::snprintf(buf, sizeof buf, "%.2fM", n / 1e6);
  else if (n >= 1000) std::snprintf(buf, sizeof buf, "%.2fK", n / 1e3);
  else std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(n));
  return buf;
}

std::string human_bytes(double b) {
  char buf[32];
  if (b >= 1 << 30) std::snprintf(buf, sizeof buf, "%.2f GiB", b / (1 << 30));
  else if (b >= 1 << 20) std::snprintf(buf, sizeof buf, "%.2f MiB", b / (1 << 20));
  else std::snprintf(buf, sizeof buf, "%.1f KiB", b / 1024);
  return buf;
}

void run_info(const std::string& path, bool as_json) {
  const std::string format = detect_format(path);
  std::unique_ptr<Model> model;
  ModelConfig c;
  if (format == "hf-config") c = config_from_hf_json(path);
  else if (format == "mistral-config") c = config_from_mistral_json(path);
  else {
    model = load_model(path);
    c = model->config;
  }
  nlohmann::json j;
  j["path"] = path;
  j["format"] = format;
  j["architecture"] = c.arch;
  j["dim"] = c.dim;
  j["n_layers"] = c.n_layers;
  j["n_heads"] = c.n_heads;
  j["n_kv_heads"] = c.n_kv_heads;
  j["head_dim"] = c.head_dim;
  j["hidden_dim"] = c.hidden_dim;
  j["vocab_size"] = c.vocab_size;
  j["n_experts"] = c.n_experts;
  j["n_experts_used"] = c.n_experts_used;
  j["rope_theta"] = c.rope_theta;
  j["norm_eps"] = c.norm_eps;
  j["max_seq_len"] = c.max_seq_len;
  j["sliding_window"] = c.sliding_window;
  j["tie_embeddings"] = c.tie_embeddings;
  j["total_params"] = c.total_params();
  j["active_params"] = c.active_params();
  std::map<std::string, std::pair<int64_t, size_t>> types;  // dtype -> (tensors, bytes)
  if (model) {
    for (const TensorView* t : model->all_tensors()) {
      auto& e = types[dtype_name(t->dtype)];
      e.first += 1;
      e.second += t->nbytes;
    }
    j["file_bytes"] = model->file_bytes;
    for (const auto& [name, e] : types) j["tensor_types"][name] = {{"tensors", e.first}, {"bytes", e.second}};
    j["tokenizer"] = model->tokenizer ? nlohmann::json{{"vocab_size", model->tokenizer->vocab_size()},
                                                        {"bos_id", model->tokenizer->bos_id()},
                                                        {"eos_id", model->tokenizer->eos_id()}}
                                      : nlohmann::json(nullptr);
  }
  if (as_json) {
    std::printf("%s\n", j.dump(2).c_str());
    return;
  }
  std::printf("path:          %s (%s)\n", path.c_str(), format.c_str());
  std::printf("architecture:  %s\n", c.arch.c_str());
  std::printf("dims:          dim %lld, %lld layers, heads %lld / kv %lld, head_dim %lld, expert hidden %lld, vocab %lld\n",
              (long long)c.dim, (long long)c.n_layers, (long long)c.n_heads, (long long)c.n_kv_heads,
              (long long)c.head_dim, (long long)c.hidden_dim, (long long)c.vocab_size);
  std::printf("experts:       %lld, %lld used per token%s\n", (long long)c.n_experts,
              (long long)c.n_experts_used, c.has_router ? "" : " (dense feed-forward)");
  std::printf("rope theta:    %g, norm eps %g, context %lld%s\n", c.rope_theta, c.norm_eps,
              (long long)c.max_seq_len,
              c.sliding_window ? cat(", sliding window ", c.sliding_window).c_str() : "");
  std::printf("parameters:    %s total, %s active per token\n", human_count(c.total_params()).c_str(),
              human_count(c.active_params()).c_str());
  if (model) {
    std::printf("file size:     %s\n", human_bytes(static_cast<double>(model->file_bytes)).c_str());
    std::printf("tensor types: ");
    for (const auto& [name, e] : types)
      std::printf(" %s: %lld tensors, %s;", name.c_str(), (long long)e.first,
                  human_bytes(static_cast<double>(e.second)).c_str());
    std::printf("\n");
    if (model->tokenizer)
      std::printf("tokenizer:     %d pieces, bos %d, eos %d\n", model->tokenizer->vocab_size(),
                  model->tokenizer->bos_id(), model->tokenizer->eos_id());
  }
}

}  // namespace

void register_info(CLI::App& app) {
  auto path = std::make_shared<std::string>();
  auto as_json = std::make_shared<bool>(false);
  CLI::App* cmd = app.add_subcommand("info", "describe a model or a config.json / params.json file");
  add_model_option(*cmd, *path, "MODEL or config file");
  cmd->add_flag("--json", *as_json, "print JSON");
  cmd->callback([path, as_json] { run_info(*path, *as_json); });
}

}  // namespace smoe
