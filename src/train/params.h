// params.h: a trainable Mixtral-architecture model's parameters as one flat buffer, its
// layout (where each tensor lives), initialisation and AdamW. The same layout indexes the
// parameters, their gradients and the optimizer's two moments. Not the inference model:
// to_model() turns trained parameters into a smoe::Model for the writers and the forward pass.
// Legend: V vocab, D dim, E experts, F expert hidden, H heads, KV kv heads, hd head dim.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/thread_pool.h"
#include "model/config.h"
#include "model/model.h"

namespace smoe::train {

struct ParamTensor {
  std::string name;            // GGUF-like name, e.g. "blk.0.attn_q"
  std::vector<int64_t> shape;  // row-major, linear weights [out, in]
  size_t offset = 0, size = 0; // in floats
  bool decay = false;          // AdamW weight decay applies (matrices, not norms)
};

// Offsets (in floats) of every tensor in the flat buffer.
struct Layout {
  struct Layer {
    size_t attn_norm, wq, wk, wv, wo;  // [D], [H*hd, D], [KV*hd, D] x2, [D, H*hd]
    size_t ffn_norm, router;           // [D], [E, D]
    size_t w1, w2, w3;                 // [E, F, D], [E, D, F], [E, F, D]
  };
  size_t tok_embd = 0, out_norm = 0, output = 0;  // [V, D], [D], [V, D]
  std::vector<Layer> layers;
  std::vector<ParamTensor> tensors;
  size_t total = 0;

  explicit Layout(const ModelConfig& c);
};

// Fills `p` (layout.total floats): norms 1, linear weights N(0, 0.02), the residual
// projections (wo, w2) scaled by 1/sqrt(2 L). Deterministic in seed.
template <typename Real>
void init_params(const ModelConfig& c, const Layout& layout, uint64_t seed, std::vector<Real>& p);

struct AdamW {
  float lr = 3e-3f, beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f, weight_decay = 0.1f;
};

// One AdamW step (decoupled weight decay on tensors with decay set). step counts from 1.
void adamw_update(const Layout& layout, const AdamW& opt, float lr, int64_t step, const float* grad,
                  float* param, float* m, float* v, ThreadPool* pool);

// L2 norm of a gradient buffer (double accumulation, fixed order: deterministic).
double grad_norm(const float* g, size_t n);

// A Model (owned f32 buffers) holding these parameters; tokenizer left null.
std::unique_ptr<Model> to_model(const ModelConfig& c, const Layout& layout, const float* p);

}  // namespace smoe::train
