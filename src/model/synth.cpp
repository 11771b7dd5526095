// synth.cpp: random-weight float32 models.
#include "model/synth.h"

#include <cmath>
#include <random>

#include "core/error.h"

namespace smoe {

namespace {

TensorView make(Model& m, const std::string& name, std::vector<int64_t> shape, std::mt19937_64& rng,
                float stddev) {
  TensorView t;
  t.name = name;
  t.dtype = DType::F32;
  t.shape = std::move(shape);
  t.nbytes = static_cast<size_t>(t.numel()) * 4;
  float* p = reinterpret_cast<float*>(m.own_zeroed(t.nbytes));
  std::normal_distribution<float> normal(0.f, stddev);
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = stddev > 0 ? normal(rng) : 1.f;
  t.data = reinterpret_cast<const uint8_t*>(p);
  return t;
}

}  // namespace

std::unique_ptr<Model> synth_model(const ModelConfig& config, uint64_t seed) {
  config.validate("synthetic model");
  auto model = std::make_unique<Model>();
  Model& m = *model;
  m.config = config;
  m.path = "(synthetic)";
  m.format = "synthetic";
  std::mt19937_64 rng(seed);
  const ModelConfig& c = m.config;
  const float sd_d = 1.f / std::sqrt(static_cast<float>(c.dim));
  const float sd_f = 1.f / std::sqrt(static_cast<float>(c.hidden_dim));
  const float sd_q = 1.f / std::sqrt(static_cast<float>(c.q_dim()));
  m.tok_embd = make(m, "tok_embd", {c.vocab_size, c.dim}, rng, 1.f);
  m.out_norm = make(m, "out_norm", {c.dim}, rng, 0.f);
  m.output = c.tie_embeddings ? m.tok_embd : make(m, "output", {c.vocab_size, c.dim}, rng, sd_d);
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const std::string b = cat("layer", l, ".");
    LayerWeights lw;
    lw.attn_norm = make(m, b + "attn_norm", {c.dim}, rng, 0.f);
    lw.ffn_norm = make(m, b + "ffn_norm", {c.dim}, rng, 0.f);
    lw.wq = make(m, b + "wq", {c.q_dim(), c.dim}, rng, sd_d);
    lw.wk = make(m, b + "wk", {c.kv_dim(), c.dim}, rng, sd_d);
    lw.wv = make(m, b + "wv", {c.kv_dim(), c.dim}, rng, sd_d);
    lw.wo = make(m, b + "wo", {c.dim, c.q_dim()}, rng, sd_q);
    if (c.has_router) lw.router = make(m, b + "router", {c.n_experts, c.dim}, rng, sd_d);
    for (int64_t e = 0; e < c.n_experts; ++e) {
      const std::string x = cat(b, "expert", e, ".");
      lw.experts.push_back({make(m, x + "w1", {c.hidden_dim, c.dim}, rng, sd_d),
                            make(m, x + "w2", {c.dim, c.hidden_dim}, rng, sd_f),
                            make(m, x + "w3", {c.hidden_dim, c.dim}, rng, sd_d)});
    }
    m.layers.push_back(std::move(lw));
  }
  return model;
}

float* mutable_f32(Model& model, TensorView& t) {
  SMOE_CHECK(t.dtype == DType::F32, "tensor '", t.name, "' is ", dtype_name(t.dtype),
             ", expected f32 to modify it in place");
  for (auto& buf : model.owned)
    if (t.data >= buf.data() && t.data + t.nbytes <= buf.data() + buf.size())
      return reinterpret_cast<float*>(const_cast<uint8_t*>(t.data));
  t.data = model.own(t.data, t.nbytes);
  return reinterpret_cast<float*>(const_cast<uint8_t*>(t.data));
}

}  // namespace smoe
