// model_writer.h: saves a Model (loaded from any format, or synthetic) as a GGUF file in
// llama.cpp's layout or as a Hugging Face folder (config.json + model.safetensors).
// Weights are written in their stored dtype unless GGUFSaveOptions asks for a conversion
// (quantization), done row by row while the file is written.
#pragma once
#include <functional>
#include <optional>
#include <string>

#include "core/thread_pool.h"

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
  // When set, each tensor is written as target_type(gguf name, view): rows are converted
  // to float32 and quantized to that type, in parallel on `pool`, one tensor at a time.
  std::function<DType(const std::string& name, const TensorView& t)> target_type;
  // When set, a tensor's float32 rows come from here instead of its data (which may then
  // be null): rows [row0, row0 + n) of t into out[n, cols]. E.g. weights generated on the fly.
  std::function<void(const TensorView& t, int64_t row0, int64_t n, float* out)> source_rows;
  ThreadPool* pool = nullptr;
  // general.file_type is taken from this type when set (else from the first expert).
  std::optional<DType> file_type;
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
