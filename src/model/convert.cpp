// convert.cpp: quantize_model and synth_gguf (see convert.h), both through save_gguf's
// row-by-row conversion.
#include "model/convert.h"

#include <cmath>

#include "core/error.h"
#include "model/model_writer.h"

namespace smoe {

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool divides(DType t, int64_t cols) { return cols % static_cast<int64_t>(dtype_info(t).block_elems) == 0; }

bool low_bit(DType t) {
  return t == DType::Q4_0 || t == DType::Q2_K || t == DType::Q3_K || t == DType::Q4_K ||
         t == DType::Q5_K || t == DType::Q6_K;
}

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t hash_name(const std::string& s, uint64_t seed) {
  uint64_t h = 1469598103934665603ull ^ seed;
  for (unsigned char ch : s) h = (h ^ ch) * 1099511628211ull;
  return h;
}

// A Model whose tensors have names, shapes and dtype F32 but no data (synth_gguf's
// source_rows produces them). stddev per tensor is kept in a side table by name.
struct Skeleton {
  Model model;
  std::vector<std::pair<std::string, float>> stddev;
};

TensorView shell(Skeleton& s, const std::string& name, std::vector<int64_t> shape, float sd) {
  TensorView t;
  t.name = name;
  t.dtype = DType::F32;
  t.shape = std::move(shape);
  s.stddev.emplace_back(name, sd);
  return t;
}

}  // namespace

DType quant_type_for(const std::string& name, const TensorView& t, DType requested,
                     int64_t n_experts) {
  if (t.shape.size() < 2 || ends_with(name, "ffn_gate_inp.weight")) return DType::F32;
  DType want = requested;
  if (name == "output.weight" && low_bit(requested) && requested != DType::Q6_K) want = DType::Q6_K;
  if (n_experts >= 8 && low_bit(requested) &&
      (ends_with(name, "attn_k.weight") || ends_with(name, "attn_v.weight")))
    want = DType::Q8_0;
  const int64_t cols = t.shape.back();
  if (!divides(want, cols)) want = DType::Q8_0;
  if (!divides(want, cols)) want = DType::F16;
  return want;
}

void quantize_model(const Model& model, const std::string& path, DType requested, ThreadPool* pool) {
  GGUFSaveOptions o;
  o.pool = pool;
  o.file_type = requested;
  const int64_t E = model.config.n_experts;
  o.target_type = [requested, E](const std::string& name, const TensorView& t) {
    return quant_type_for(name, t, requested, E);
  };
  save_gguf(model, path, o);
}

void synth_gguf(const ModelConfig& config, uint64_t seed, DType requested, const std::string& path,
                ThreadPool* pool, std::unique_ptr<Tokenizer> tokenizer) {
  config.validate("synthetic model");
  Skeleton s;
  Model& m = s.model;
  m.config = config;
  m.path = "(synthetic)";
  m.format = "synthetic";
  const ModelConfig& c = m.config;
  const float sd_d = 1.f / std::sqrt(static_cast<float>(c.dim));
  const float sd_f = 1.f / std::sqrt(static_cast<float>(c.hidden_dim));
  const float sd_q = 1.f / std::sqrt(static_cast<float>(c.q_dim()));
  m.tok_embd = shell(s, "tok_embd", {c.vocab_size, c.dim}, 1.f);
  m.out_norm = shell(s, "out_norm", {c.dim}, 0.f);
  m.output = c.tie_embeddings ? m.tok_embd : shell(s, "output", {c.vocab_size, c.dim}, sd_d);
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const std::string b = cat("layer", l, ".");
    LayerWeights lw;
    lw.attn_norm = shell(s, b + "attn_norm", {c.dim}, 0.f);
    lw.ffn_norm = shell(s, b + "ffn_norm", {c.dim}, 0.f);
    lw.wq = shell(s, b + "wq", {c.q_dim(), c.dim}, sd_d);
    lw.wk = shell(s, b + "wk", {c.kv_dim(), c.dim}, sd_d);
    lw.wv = shell(s, b + "wv", {c.kv_dim(), c.dim}, sd_d);
    lw.wo = shell(s, b + "wo", {c.dim, c.q_dim()}, sd_q);
    if (c.has_router) lw.router = shell(s, b + "router", {c.n_experts, c.dim}, sd_d);
    for (int64_t e = 0; e < c.n_experts; ++e) {
      const std::string x = cat(b, "expert", e, ".");
      lw.experts.push_back({shell(s, x + "w1", {c.hidden_dim, c.dim}, sd_d),
                            shell(s, x + "w2", {c.dim, c.hidden_dim}, sd_f),
                            shell(s, x + "w3", {c.hidden_dim, c.dim}, sd_d)});
    }
    m.layers.push_back(std::move(lw));
  }
  GGUFSaveOptions o;
  o.pool = pool;
  o.file_type = requested;
  if (tokenizer) {
    SMOE_CHECK(tokenizer->vocab_size() == c.vocab_size, "synth: the tokenizer has ", tokenizer->vocab_size(),
               " pieces, the config's vocab_size is ", c.vocab_size, " (they must be equal)");
    m.tokenizer = std::move(tokenizer);
  }
  o.embed_vocab = m.tokenizer != nullptr;
  o.name = "smoe synthetic model";
  const int64_t E = c.n_experts;
  o.target_type = [requested, E](const std::string& name, const TensorView& t) {
    return quant_type_for(name, t, requested, E);
  };
  o.source_rows = [&s, seed](const TensorView& t, int64_t row0, int64_t n, float* out) {
    float sd = 0.f;
    for (const auto& [name, v] : s.stddev)
      if (name == t.name) sd = v;
    const int64_t cols = t.shape.back();
    for (int64_t r = 0; r < n; ++r) {
      float* dst = out + r * cols;
      if (sd == 0.f) {
        for (int64_t i = 0; i < cols; ++i) dst[i] = 1.f;
        continue;
      }
      uint64_t state = hash_name(t.name, seed) ^ static_cast<uint64_t>(row0 + r) * 0xd1b54a32d192ed03ull;
      // Sum of four uniforms in [0, 1): mean 2, variance 1/3.
      const float k = sd * std::sqrt(3.f) / 65536.f;
      for (int64_t i = 0; i < cols; ++i) {
        const uint64_t z = splitmix64(state);
        const float sum = static_cast<float>((z & 0xffff) + ((z >> 16) & 0xffff) +
                                             ((z >> 32) & 0xffff) + (z >> 48)) -
                          2.f * 65536.f;
        dst[i] = sum * k;
      }
    }
  };
  save_gguf(m, path, o);
}

}  // namespace smoe
