// model_writer.h: saves a Model (loaded from any format, or synthetic) as a GGUF file in
// llama.cpp's layout or as a Hugging Face folder (config.json + model.safetensors).
// Weights are written in their stored dtype; nothing is converted.
#pragma once
#include <string>

#include "model/model.h"

namespace smoe {

struct GGUFSaveOptions {
  // false: llama.cpp's current layout, experts stacked per layer in
  //   blk.N.ffn_{gate,down,up}_exps.weight [E, F, D] / [E, D, F];
  // true: the older layout, one tensor per expert: blk.N.ffn_{gate,down,up}.M.weight.
  bool per_expert_tensors = false;
  // general.name; empty: "smoe model".
  std::string name;
  // Writes the tokenizer's vocabulary (tokenizer.ggml.*) when the model has a tokenizer.
  bool embed_vocab = true;
};

// Writes `model` to `path` as GGUF v3: architecture "llama", llama.* hyperparameters
// (expert_count / expert_used_count only for models with a router), tensors token_embd,
// output_norm, output (omitted when tied), blk.N.attn_{norm,q,k,v,output}, ffn_norm,
// ffn_gate_inp (router) and the experts (or ffn_{gate,down,up} for dense models).
// q/k rows are already in GGUF's interleaved-RoPE order. Throws smoe::Error naming the
// file or tensor on any problem.
void save_gguf(const Model& model, const std::string& path, const GGUFSaveOptions& options = {});

// Writes `model` into the folder `dir` (created when missing; its parent must exist) as a
// Hugging Face checkpoint: config.json (MixtralForCausalLM, or MistralForCausalLM for a
// dense model), model.safetensors with q/k rows permuted into HF's rotate-half order, and
// tokenizer.model when the model has a tokenizer. Only f32/f16/bf16 weights can be saved
// this way: throws smoe::Error naming the first other tensor (before writing anything).
void save_hf(const Model& model, const std::string& dir);

}  // namespace smoe
