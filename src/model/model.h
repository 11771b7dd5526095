// model.h: a loaded model: its config, weight views (into mapped files or owned buffers)
// and tokenizer, whatever format it came from. Legend: V vocab, D dim, E experts,
// F expert hidden, H heads, KV kv heads, hd head dim. Linear weights are [out, in].
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "model/config.h"
#include "tokenizer/tokenizer.h"

namespace smoe {

struct ExpertWeights {
  TensorView w1;  // [F, D] gate projection (SiLU branch)
  TensorView w2;  // [D, F] down projection
  TensorView w3;  // [F, D] up projection
};

struct LayerWeights {
  TensorView attn_norm;  // [D]
  TensorView wq;         // [H*hd, D], rows in interleaved-RoPE order
  TensorView wk;         // [KV*hd, D], rows in interleaved-RoPE order
  TensorView wv;         // [KV*hd, D]
  TensorView wo;         // [D, H*hd]
  TensorView ffn_norm;   // [D]
  TensorView router;     // [E, D]; empty (data == nullptr) for dense models
  std::vector<ExpertWeights> experts;  // E entries
};

// What a model file holds besides the weights (owned storage behind the views).
struct ModelStorage {
  virtual ~ModelStorage() = default;
};

// Where the weights live (model/weight_memory.cpp). kMapped: views into the memory-mapped
// files (nothing copied, pages read in on first use). kMemory: copied once into one
// huge-page buffer and the files unmapped. kAuto: kMemory when the weights take at most
// 3/4 of available memory, else kMapped.
enum class WeightPlacement { kMapped, kMemory, kAuto };

struct LoadOptions {
  LoadOptions(WeightPlacement w = WeightPlacement::kMapped, bool r = true) : weights(w), repack(r) {}
  WeightPlacement weights;
  // In memory: q8_0/q4_0/q2_K..q6_K matrices repacked for the VNNI kernels where the
  // CPU has them.
  bool repack;
  // Called while weights move into memory (bytes done, bytes in all), from a worker thread.
  std::function<void(size_t, size_t)> progress;
};

struct Model {
  ModelConfig config;
  std::string path;    // what it was loaded from
  std::string format;  // "gguf", "hf", "mistral", "synthetic"
  TensorView tok_embd;  // [V, D]
  TensorView out_norm;  // [D]
  TensorView output;    // [V, D] (the embedding table when tied)
  std::vector<LayerWeights> layers;
  std::unique_ptr<Tokenizer> tokenizer;  // may be null (synthetic models)
  size_t file_bytes = 0;                 // size of the weight files on disk
  bool weights_in_memory = false;        // copied into huge-page memory (else mapped)

  // Every weight tensor (experts of stacked GGUF tensors appear one slice each).
  std::vector<const TensorView*> all_tensors() const;

  // Keeps mapped files and converted buffers alive.
  std::vector<std::unique_ptr<ModelStorage>> storage;
  std::vector<std::vector<uint8_t>> owned;
  // Copies bytes into an owned, 64-byte aligned buffer and returns a pointer to it.
  const uint8_t* own(const uint8_t* data, size_t n);
  uint8_t* own_zeroed(size_t n);
};

// Loads a model from a GGUF file, a Hugging Face folder (config.json + safetensors) or a
// Mistral consolidated folder (params.json + consolidated.safetensors), detected from the
// path. Throws smoe::Error naming the file, tensor or field on any problem.
std::unique_ptr<Model> load_model(const std::string& path, const LoadOptions& opts = {});

// "mmap" | "memory" | "auto" (throws naming the text and the choices otherwise), and back.
WeightPlacement parse_weight_placement(const std::string& text);
const char* weight_placement_name(WeightPlacement p);
// kAuto resolved for weights of `weight_bytes` with `available` bytes of memory free.
WeightPlacement resolve_weight_placement(WeightPlacement p, size_t weight_bytes, size_t available);
// Bytes of all distinct weight tensors.
size_t weight_bytes(const Model& m);
// Copies every weight into one huge-page buffer, repoints the views and releases the
// mapped files and other owned buffers. Decoding streams every active weight once per
// token; from 2 MiB pages it runs measurably faster than from 4 KiB file pages. With
// `repack`, q8_0/q4_0/q2_K..q6_K matrices (attention, experts, output) are stored in
// the 16-row groups of kernels/gemm_x16.h where this CPU runs those kernels (their views get
// x16). progress, when set, gets (bytes done, bytes in all) now and then and at the end.
void move_weights_to_memory(Model& m, bool repack = true,
                            const std::function<void(size_t, size_t)>& progress = {});

// Detects what `path` is: "gguf", "hf", "mistral", "hf-config", "mistral-config" or throws.
std::string detect_format(const std::string& path);

// Checks that a tensor has the expected shape (throws naming `where` and the tensor).
void expect_shape(const TensorView& t, const std::vector<int64_t>& shape, const std::string& where);

}  // namespace smoe
