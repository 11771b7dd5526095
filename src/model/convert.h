// convert.h: writing models to GGUF in another type: `smoe quantize` (any loaded model)
// and `smoe synth` (random weights of any shape, generated and quantized tensor by tensor
// while the file is written, so even an 8x7B-shaped model never sits in memory as f32).
#pragma once
#include <cstdint>
#include <string>

#include "core/thread_pool.h"
#include "model/model.h"

namespace smoe {

// The type a tensor gets when a model is quantized to `requested`, following llama.cpp's
// choices where they make sense: norms (1-D) and the router (ffn_gate_inp) stay f32;
// output.weight gets q6_K for 2/3/4/5-bit requests; attn_k/attn_v of models with 8+
// experts get q8_0 for 2/3/4/5/6-bit requests; a type whose block does not divide the row falls back
// to q8_0, then f16.
DType quant_type_for(const std::string& gguf_name, const TensorView& t, DType requested,
                     int64_t n_experts);

// Converts `model` to a GGUF file of type `requested` (see quant_type_for).
void quantize_model(const Model& model, const std::string& path, DType requested, ThreadPool* pool);

// Writes a random-weight model of shape `config` as GGUF of type `requested`: weights
// ~ N(0, 1/sqrt(fan_in)) (embeddings N(0, 1), norms 1), deterministic in `seed`, generated
// row by row on `pool` (approximately normal: a scaled sum of four uniforms). With a
// tokenizer (its vocab_size must equal the config's) its vocabulary is embedded, so that
// engines that need one (llama.cpp) load the file too.
void synth_gguf(const ModelConfig& config, uint64_t seed, DType requested, const std::string& path,
                ThreadPool* pool, std::unique_ptr<Tokenizer> tokenizer = nullptr);

}  // namespace smoe
