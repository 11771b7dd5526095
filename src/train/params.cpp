// params.cpp: parameter layout, initialisation, AdamW and the export to a smoe::Model.
#include "train/params.h"

#include <cmath>
#include <cstring>
#include <random>

#include "core/error.h"
#include "model/synth.h"

namespace smoe::train {

Layout::Layout(const ModelConfig& c) {
  auto add = [&](const std::string& name, std::vector<int64_t> shape, bool decay) {
    ParamTensor t{name, std::move(shape), total, 1, decay};
    for (int64_t s : t.shape) t.size *= static_cast<size_t>(s);
    total += t.size;
    tensors.push_back(t);
    return t.offset;
  };
  const int64_t D = c.dim, E = c.n_experts, F = c.hidden_dim;
  tok_embd = add("token_embd", {c.vocab_size, D}, true);
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const std::string b = cat("blk.", l, ".");
    Layer L{};
    L.attn_norm = add(b + "attn_norm", {D}, false);
    L.wq = add(b + "attn_q", {c.q_dim(), D}, true);
    L.wk = add(b + "attn_k", {c.kv_dim(), D}, true);
    L.wv = add(b + "attn_v", {c.kv_dim(), D}, true);
    L.wo = add(b + "attn_output", {D, c.q_dim()}, true);
    L.ffn_norm = add(b + "ffn_norm", {D}, false);
    L.router = add(b + "ffn_gate_inp", {E, D}, true);
    L.w1 = add(b + "ffn_gate_exps", {E, F, D}, true);
    L.w2 = add(b + "ffn_down_exps", {E, D, F}, true);
    L.w3 = add(b + "ffn_up_exps", {E, F, D}, true);
    layers.push_back(L);
  }
  out_norm = add("output_norm", {D}, false);
  output = add("output", {c.vocab_size, D}, true);
}

template <typename Real>
void init_params(const ModelConfig& c, const Layout& layout, uint64_t seed, std::vector<Real>& p) {
  p.assign(layout.total, Real(0));
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  const double resid_scale = 1.0 / std::sqrt(2.0 * static_cast<double>(c.n_layers));
  for (const ParamTensor& t : layout.tensors) {
    const bool is_norm = t.shape.size() == 1;
    const bool resid = t.name.ends_with("attn_output") || t.name.ends_with("ffn_down_exps");
    const double sd = 0.02 * (resid ? resid_scale : 1.0);
    for (size_t i = 0; i < t.size; ++i)
      p[t.offset + i] = is_norm ? Real(1) : static_cast<Real>(sd * normal(rng));
  }
}
template void init_params<float>(const ModelConfig&, const Layout&, uint64_t, std::vector<float>&);
template void init_params<double>(const ModelConfig&, const Layout&, uint64_t, std::vector<double>&);

void adamw_update(const Layout& layout, const AdamW& opt, float lr, int64_t step, const float* grad,
                  float* param, float* m, float* v, ThreadPool* pool) {
  const double bc1 = 1.0 - std::pow(static_cast<double>(opt.beta1), static_cast<double>(step));
  const double bc2 = 1.0 - std::pow(static_cast<double>(opt.beta2), static_cast<double>(step));
  for (const ParamTensor& t : layout.tensors) {
    const float wd = t.decay ? opt.weight_decay : 0.f;
    parallel_for(pool, static_cast<int64_t>(t.size), 16384, [&](int64_t b, int64_t e) {
      for (int64_t i = static_cast<int64_t>(t.offset) + b; i < static_cast<int64_t>(t.offset) + e; ++i) {
        const float g = grad[i];
        m[i] = opt.beta1 * m[i] + (1.f - opt.beta1) * g;
        v[i] = opt.beta2 * v[i] + (1.f - opt.beta2) * g * g;
        const float mhat = static_cast<float>(m[i] / bc1), vhat = static_cast<float>(v[i] / bc2);
        param[i] -= lr * (mhat / (std::sqrt(vhat) + opt.eps) + wd * param[i]);
      }
    });
  }
}

double grad_norm(const float* g, size_t n) {
  double ss = 0;
  for (size_t i = 0; i < n; ++i) ss += static_cast<double>(g[i]) * g[i];
  return std::sqrt(ss);
}

std::unique_ptr<Model> to_model(const ModelConfig& c, const Layout& layout, const float* p) {
  ModelConfig zero = c;
  std::unique_ptr<Model> m = synth_model(zero, 0);  // right shapes, owned f32 buffers
  m->path = "(trained)";
  m->format = "trained";
  auto put = [&](TensorView& t, size_t off) {
    float* dst = mutable_f32(*m, t);
    std::memcpy(dst, p + off, static_cast<size_t>(t.numel()) * sizeof(float));
  };
  put(m->tok_embd, layout.tok_embd);
  put(m->out_norm, layout.out_norm);
  put(m->output, layout.output);
  const size_t FD = static_cast<size_t>(c.hidden_dim * c.dim);
  for (size_t l = 0; l < layout.layers.size(); ++l) {
    const Layout::Layer& L = layout.layers[l];
    LayerWeights& w = m->layers[l];
    put(w.attn_norm, L.attn_norm);
    put(w.wq, L.wq);
    put(w.wk, L.wk);
    put(w.wv, L.wv);
    put(w.wo, L.wo);
    put(w.ffn_norm, L.ffn_norm);
    put(w.router, L.router);
    for (size_t e = 0; e < w.experts.size(); ++e) {
      put(w.experts[e].w1, L.w1 + e * FD);
      put(w.experts[e].w2, L.w2 + e * FD);
      put(w.experts[e].w3, L.w3 + e * FD);
    }
  }
  return m;
}

}  // namespace smoe::train
