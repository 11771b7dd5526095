// config.cpp: parsing model shapes from HF config.json, Mistral params.json and GGUF
// metadata into ModelConfig, validation and parameter counts.
#include "model/config.h"

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/mapped_file.h"
#include "formats/gguf.h"

namespace smoe {

using json = nlohmann::json;

int64_t ModelConfig::total_params() const {
  const int64_t attn = dim * q_dim() + 2 * dim * kv_dim() + q_dim() * dim;
  const int64_t expert = 3 * dim * hidden_dim;
  const int64_t router = has_router ? n_experts * dim : 0;
  const int64_t layer = attn + 2 * dim + router + n_experts * expert;
  const int64_t embed = vocab_size * dim * (tie_embeddings ? 1 : 2);
  return n_layers * layer + embed + dim;
}

int64_t ModelConfig::active_params() const {
  const int64_t expert = 3 * dim * hidden_dim;
  return total_params() - n_layers * (n_experts - n_experts_used) * expert;
}

void ModelConfig::validate(const std::string& source) const {
  auto positive = [&](const char* field, int64_t v, int64_t max) {
    SMOE_CHECK(v > 0 && v <= max, source, ": ", field, " = ", v, " is out of range (expected 1..",
               max, ")");
  };
  positive("dim", dim, 1 << 20);
  positive("n_layers", n_layers, 4096);
  positive("n_heads", n_heads, 4096);
  positive("n_kv_heads", n_kv_heads, 4096);
  positive("head_dim", head_dim, 1 << 16);
  positive("hidden_dim", hidden_dim, 1 << 22);
  positive("vocab_size", vocab_size, 1 << 24);
  positive("n_experts", n_experts, 4096);
  positive("n_experts_used", n_experts_used, 4096);
  positive("max_seq_len", max_seq_len, int64_t(1) << 24);
  SMOE_CHECK(n_heads % n_kv_heads == 0, source, ": n_heads (", n_heads,
             ") must be a multiple of n_kv_heads (", n_kv_heads, ")");
  SMOE_CHECK(head_dim % 2 == 0, source, ": head_dim ", head_dim, " must be even for RoPE");
  SMOE_CHECK(n_experts_used <= n_experts, source, ": experts per token (", n_experts_used,
             ") exceeds the number of experts (", n_experts, ")");
  SMOE_CHECK(has_router || n_experts == 1, source, ": a model without a router has one expert");
  SMOE_CHECK(norm_eps > 0 && norm_eps < 1, source, ": norm eps ", norm_eps,
             " is out of range (expected 0 < eps < 1)");
  SMOE_CHECK(rope_theta > 1, source, ": rope theta ", rope_theta, " must be > 1");
  SMOE_CHECK(sliding_window >= 0, source, ": sliding window ", sliding_window, " must be >= 0");
}

std::string ModelConfig::summary() const {
  return cat(arch, " dim=", dim, " layers=", n_layers, " heads=", n_heads, "/", n_kv_heads,
             " head_dim=", head_dim, " hidden=", hidden_dim, " experts=", n_experts_used, "/",
             n_experts, " vocab=", vocab_size);
}

namespace {

json parse_json_file(const std::string& path) {
  try {
    return json::parse(read_text_file(path));
  } catch (const json::exception& e) {
    fail(path, ": not valid JSON (", e.what(), ")");
  }
}

// Reads an integer field; `fallback` < 0 means required.
int64_t get_int(const json& j, const std::string& path, const char* key, int64_t fallback = -1) {
  if (!j.contains(key) || j[key].is_null()) {
    SMOE_CHECK(fallback >= 0, path, ": missing required field \"", key, "\"");
    return fallback;
  }
  SMOE_CHECK(j[key].is_number_integer(), path, ": field \"", key, "\" must be an integer, found ",
             j[key].dump());
  return j[key].get<int64_t>();
}

double get_num(const json& j, const std::string& path, const char* key, double fallback) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  SMOE_CHECK(j[key].is_number(), path, ": field \"", key, "\" must be a number, found ",
             j[key].dump());
  return j[key].get<double>();
}

}  // namespace

ModelConfig config_from_hf_json(const std::string& path) {
  json j = parse_json_file(path);
  SMOE_CHECK(j.is_object(), path, ": expected a JSON object");
  std::string arch;
  if (j.contains("architectures") && j["architectures"].is_array() && !j["architectures"].empty() &&
      j["architectures"][0].is_string())
    arch = j["architectures"][0].get<std::string>();
  else if (j.contains("model_type") && j["model_type"].is_string())
    arch = j["model_type"].get<std::string>();
  ModelConfig c;
  if (arch == "MixtralForCausalLM" || arch == "mixtral") {
    c.arch = "mixtral";
    c.has_router = true;
    c.n_experts = get_int(j, path, "num_local_experts");
    c.n_experts_used = get_int(j, path, "num_experts_per_tok");
  } else if (arch == "MistralForCausalLM" || arch == "mistral" || arch == "LlamaForCausalLM" ||
             arch == "llama") {
    c.arch = "mistral";
  } else {
    fail(path, ": architecture \"", arch,
         "\" is not supported (expected MixtralForCausalLM, MistralForCausalLM or LlamaForCausalLM)");
  }
  c.dim = get_int(j, path, "hidden_size");
  c.n_layers = get_int(j, path, "num_hidden_layers");
  c.n_heads = get_int(j, path, "num_attention_heads");
  c.n_kv_heads = get_int(j, path, "num_key_value_heads", c.n_heads);
  c.head_dim = get_int(j, path, "head_dim", c.n_heads > 0 ? c.dim / c.n_heads : 0);
  c.hidden_dim = get_int(j, path, "intermediate_size");
  c.vocab_size = get_int(j, path, "vocab_size");
  c.max_seq_len = get_int(j, path, "max_position_embeddings", 32768);
  c.sliding_window = get_int(j, path, "sliding_window", 0);
  c.norm_eps = static_cast<float>(get_num(j, path, "rms_norm_eps", 1e-5));
  c.rope_theta = static_cast<float>(get_num(j, path, "rope_theta", 1e4));
  c.tie_embeddings = j.value("tie_word_embeddings", false);
  c.bos_id = static_cast<int32_t>(get_int(j, path, "bos_token_id", 1));
  c.eos_id = static_cast<int32_t>(get_int(j, path, "eos_token_id", 2));
  if (j.contains("hidden_act") && j["hidden_act"].is_string()) {
    std::string act = j["hidden_act"].get<std::string>();
    SMOE_CHECK(act == "silu" || act == "swish", path, ": hidden_act \"", act,
               "\" is not supported (expected silu)");
  }
  c.validate(path);
  return c;
}

ModelConfig config_from_mistral_json(const std::string& path) {
  json j = parse_json_file(path);
  SMOE_CHECK(j.is_object(), path, ": expected a JSON object");
  ModelConfig c;
  c.dim = get_int(j, path, "dim");
  c.n_layers = get_int(j, path, "n_layers");
  c.n_heads = get_int(j, path, "n_heads");
  c.n_kv_heads = get_int(j, path, "n_kv_heads", c.n_heads);
  c.head_dim = get_int(j, path, "head_dim", c.n_heads > 0 ? c.dim / c.n_heads : 0);
  c.hidden_dim = get_int(j, path, "hidden_dim");
  c.vocab_size = get_int(j, path, "vocab_size");
  c.norm_eps = static_cast<float>(get_num(j, path, "norm_eps", 1e-5));
  c.rope_theta = static_cast<float>(get_num(j, path, "rope_theta", 1e4));
  c.max_seq_len = get_int(j, path, "max_seq_len", 32768);
  c.sliding_window = get_int(j, path, "sliding_window", 0);
  if (j.contains("moe") && !j["moe"].is_null()) {
    const json& moe = j["moe"];
    SMOE_CHECK(moe.is_object(), path, ": field \"moe\" must be an object");
    c.arch = "mixtral";
    c.has_router = true;
    c.n_experts = get_int(moe, path + " (moe)", "num_experts");
    c.n_experts_used = get_int(moe, path + " (moe)", "num_experts_per_tok");
  } else {
    c.arch = "mistral";
  }
  c.validate(path);
  return c;
}

ModelConfig config_from_gguf(const GGUFFile& g) {
  const std::string arch = g.get_string("general.architecture");
  SMOE_CHECK(arch == "llama" || arch == "mistral", g.path(), ": general.architecture \"", arch,
             "\" is not supported (expected \"llama\", as llama.cpp writes Mixtral and Mistral)");
  const std::string p = arch + ".";
  auto opt_uint = [&](const std::string& key, int64_t fallback) {
    return g.has(key) ? static_cast<int64_t>(g.get_uint(key)) : fallback;
  };
  ModelConfig c;
  c.dim = static_cast<int64_t>(g.get_uint(p + "embedding_length"));
  c.n_layers = static_cast<int64_t>(g.get_uint(p + "block_count"));
  c.n_heads = static_cast<int64_t>(g.get_uint(p + "attention.head_count"));
  c.n_kv_heads = opt_uint(p + "attention.head_count_kv", c.n_heads);
  c.head_dim = opt_uint(p + "attention.key_length", c.n_heads > 0 ? c.dim / c.n_heads : 0);
  c.hidden_dim = static_cast<int64_t>(g.get_uint(p + "feed_forward_length"));
  c.max_seq_len = opt_uint(p + "context_length", 32768);
  c.n_experts = opt_uint(p + "expert_count", 0);
  c.n_experts_used = opt_uint(p + "expert_used_count", 0);
  if (c.n_experts > 0) {
    c.arch = "mixtral";
    c.has_router = true;
  } else {
    c.arch = "mistral";
    c.n_experts = c.n_experts_used = 1;
  }
  c.norm_eps = static_cast<float>(g.has(p + "attention.layer_norm_rms_epsilon")
                                      ? g.get_float(p + "attention.layer_norm_rms_epsilon")
                                      : 1e-5);
  c.rope_theta = static_cast<float>(g.has(p + "rope.freq_base") ? g.get_float(p + "rope.freq_base")
                                                                  : 1e4);
  c.sliding_window = opt_uint(p + "attention.sliding_window", 0);
  if (g.has(p + "vocab_size")) {
    c.vocab_size = static_cast<int64_t>(g.get_uint(p + "vocab_size"));
  } else if (const GGUFValue* toks = g.find("tokenizer.ggml.tokens")) {
    c.vocab_size = static_cast<int64_t>(toks->array_len);
  }
  if (g.has("tokenizer.ggml.bos_token_id"))
    c.bos_id = static_cast<int32_t>(g.get_uint("tokenizer.ggml.bos_token_id"));
  if (g.has("tokenizer.ggml.eos_token_id"))
    c.eos_id = static_cast<int32_t>(g.get_uint("tokenizer.ggml.eos_token_id"));
  if (g.has(p + "rope.dimension_count")) {
    int64_t rd = static_cast<int64_t>(g.get_uint(p + "rope.dimension_count"));
    SMOE_CHECK(rd == c.head_dim, g.path(), ": ", p, "rope.dimension_count = ", rd,
               " but head_dim is ", c.head_dim, "; partial RoPE is not supported");
  }
  c.validate(g.path());
  return c;
}

}  // namespace smoe
