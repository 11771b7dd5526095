// config.h: the one in-memory description of a model's shape, whatever file it came from
// (Hugging Face config.json, Mistral params.json, GGUF metadata), with parameter counts.
#pragma once
#include <cstdint>
#include <string>

namespace smoe {

class GGUFFile;

struct ModelConfig {
  std::string arch = "mixtral";  // "mixtral" (MoE) or "mistral" (dense: one expert, K = 1)
  int64_t dim = 0;               // D
  int64_t n_layers = 0;          // L
  int64_t n_heads = 0;           // H
  int64_t n_kv_heads = 0;        // KV heads (H % KV == 0: MHA, GQA or MQA)
  int64_t head_dim = 0;          // hd
  int64_t hidden_dim = 0;        // F, per expert
  int64_t vocab_size = 0;        // V
  int64_t n_experts = 1;         // E
  int64_t n_experts_used = 1;    // K
  bool has_router = false;       // false only for dense models (E == 1 without a router)
  float norm_eps = 1e-5f;
  float rope_theta = 1e6f;
  int64_t max_seq_len = 32768;   // the model's trained context
  int64_t sliding_window = 0;    // 0: full attention
  bool tie_embeddings = false;
  int32_t bos_id = 1, eos_id = 2;

  int64_t q_dim() const { return n_heads * head_dim; }
  int64_t kv_dim() const { return n_kv_heads * head_dim; }
  // Parameters stored / used per token (router counted as active).
  int64_t total_params() const;
  int64_t active_params() const;
  // Throws smoe::Error naming `source` and the field when a value is impossible.
  void validate(const std::string& source) const;
  std::string summary() const;  // one line: "mixtral D=32 L=2 H=4/2 ..."
};

ModelConfig config_from_hf_json(const std::string& path);      // config.json
ModelConfig config_from_mistral_json(const std::string& path); // params.json
ModelConfig config_from_gguf(const GGUFFile& gguf);

}  // namespace smoe
