// train_model.h: the training forward pass (saving every activation the backward pass
// needs) and the backward pass of a Mixtral-architecture model, over B sequences of T
// tokens. It computes exactly what src/model/transformer.cpp computes (tests check the
// logits against it), in Real = float for training or double for gradient checks.
// Loss = mean cross-entropy + aux_coef * load-balancing loss + z_coef * router z-loss.
// Legend: B sequences, T tokens each, N = B*T rows, D dim, V vocab, E experts, K experts
// used, H heads, KV kv heads, hd head dim, F expert hidden, S = N*K (token, expert) slots.
#pragma once
#include <cstdint>
#include <vector>

#include "core/thread_pool.h"
#include "model/config.h"
#include "train/params.h"

namespace smoe::train {

struct LossOptions {
  double aux_coef = 0.02;  // load-balancing loss weight (Mixtral's router_aux_loss_coef)
  double z_coef = 0.0;     // router z-loss weight (0: off)
};

struct LossParts {
  double ce = 0;     // mean cross-entropy per target token (nats)
  double aux = 0;    // load-balancing loss, mean over layers of E * sum_i f_i * P_i
  double z = 0;      // router z-loss, mean over layers and tokens of logsumexp(logits)^2
  double total = 0;  // ce + aux_coef * aux + z_coef * z
};

template <typename Real>
class TrainModel {
 public:
  TrainModel(const ModelConfig& c, const Layout& layout);

  // inputs[B*T], targets[B*T] (a target < 0 is ignored). Saves activations for backward().
  LossParts forward(const Real* params, const int32_t* inputs, const int32_t* targets, int64_t B,
                    int64_t T, const LossOptions& opt, ThreadPool* pool);
  // Gradients of the last forward()'s total loss, added into grads (layout.total).
  void backward(const Real* params, Real* grads, ThreadPool* pool);

  const std::vector<Real>& logits() const { return logits_; }  // [N, V] of the last forward
  // Tokens routed to each expert by the last forward: [L, E] (K slots per token).
  const std::vector<int64_t>& expert_counts() const { return expert_counts_; }

 private:
  struct LayerActs {
    std::vector<Real> x, r1, xn1;       // [N, D] layer input, [N] 1/rms, [N, D] normed
    std::vector<Real> q, k, v;          // [N, H*hd], [N, KV*hd] x2; q, k after RoPE
    std::vector<Real> att;              // [B, H, T, T] attention probabilities
    std::vector<Real> ao;               // [N, H*hd] attention output (before wo)
    std::vector<Real> h, r2, xn2;       // [N, D] after attention, [N], [N, D] normed
    std::vector<Real> probs, lse;       // [N, E] softmax over all experts, [N] logsumexp
    std::vector<int32_t> top;           // [N, K] selected experts, best first
    std::vector<Real> gates;            // [N, K] Softmax(TopK)
    std::vector<int32_t> offsets;       // [E+1] slot ranges per expert
    std::vector<int32_t> slot_tok, slot_j;  // [S] token and top-K rank of each slot
    std::vector<Real> xg, a1, a3, act, y;   // [S, D], [S, F] x3, [S, D]
  };
  void attention_forward(int64_t l, const Real* p, ThreadPool* pool);
  void moe_forward(int64_t l, const Real* p, std::vector<Real>& out, ThreadPool* pool);
  void moe_backward(int64_t l, const Real* p, Real* g, std::vector<Real>& dx, ThreadPool* pool);
  void attention_backward(int64_t l, const Real* p, Real* g, std::vector<Real>& dx, ThreadPool* pool);

  ModelConfig c_;
  const Layout& layout_;
  LossOptions opt_;
  int64_t B_ = 0, T_ = 0, N_ = 0;
  std::vector<int32_t> inputs_, targets_;
  int64_t n_targets_ = 0;
  std::vector<Real> cos_, sin_;  // [T, hd/2]
  std::vector<LayerActs> acts_;
  std::vector<Real> xf_, rf_, xnf_, logits_;  // final residual, 1/rms, normed, [N, V]
  std::vector<int64_t> expert_counts_;
  std::vector<Real> ftok_;  // [L, E] f_i of the load-balancing loss
};

extern template class TrainModel<float>;
extern template class TrainModel<double>;

}  // namespace smoe::train
