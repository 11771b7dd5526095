// train_model.cpp: forward with saved activations and backward of a Mixtral-architecture
// model (llm.c style: each backward step quotes the forward line it differentiates).
// Per layer: h = x + Attention(RMSNorm(x)); out = h + MoE(RMSNorm(h)).
#include "train/train_model.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"
#include "train/train_ops.h"

namespace smoe::train {

namespace {
template <typename Real>
void grow(std::vector<Real>& v, int64_t n) {
  v.resize(static_cast<size_t>(n));
}
}  // namespace

template <typename Real>
TrainModel<Real>::TrainModel(const ModelConfig& c, const Layout& layout) : c_(c), layout_(layout) {
  c.validate("training model");
  SMOE_CHECK(c.has_router || c.n_experts == 1, "training: a model with ", c.n_experts, " experts needs a router");
  acts_.resize(static_cast<size_t>(c.n_layers));
}

// ---------------------------------------------------------------------------------------
// Forward
// ---------------------------------------------------------------------------------------

template <typename Real>
LossParts TrainModel<Real>::forward(const Real* p, const int32_t* inputs, const int32_t* targets, int64_t B,
                                    int64_t T, const LossOptions& opt, ThreadPool* pool) {
  const int64_t D = c_.dim, V = c_.vocab_size, L = c_.n_layers, E = c_.n_experts, hd = c_.head_dim;
  SMOE_CHECK(B > 0 && T > 0 && T <= c_.max_seq_len, "training batch of ", B, " x ", T,
             " tokens: T must be 1..", c_.max_seq_len);
  B_ = B, T_ = T, N_ = B * T, opt_ = opt;
  const int64_t N = N_;
  inputs_.assign(inputs, inputs + N);
  targets_.assign(targets, targets + N);
  for (int64_t i = 0; i < N; ++i)
    SMOE_CHECK(inputs[i] >= 0 && inputs[i] < V && targets[i] < V, "training: token id out of range at ", i);

  // RoPE table, as kernels/ops.cpp computes the angles (double, then rounded to float).
  grow(cos_, T * hd / 2);
  grow(sin_, T * hd / 2);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < hd / 2; ++i) {
      const double freq = std::pow(static_cast<double>(c_.rope_theta), -2.0 * static_cast<double>(i) / static_cast<double>(hd));
      const double angle = static_cast<double>(t) * freq;
      cos_[t * hd / 2 + i] = static_cast<Real>(static_cast<float>(std::cos(angle)));
      sin_[t * hd / 2 + i] = static_cast<Real>(static_cast<float>(std::sin(angle)));
    }

  // x = tok_embd[inputs]
  LayerActs& a0 = acts_[0];
  grow(a0.x, N * D);
  for (int64_t n = 0; n < N; ++n) std::copy_n(p + layout_.tok_embd + inputs[n] * D, D, &a0.x[n * D]);

  expert_counts_.assign(static_cast<size_t>(L * E), 0);
  ftok_.assign(static_cast<size_t>(L * E), Real(0));
  LossParts loss;
  for (int64_t l = 0; l < L; ++l) {
    attention_forward(l, p, pool);
    std::vector<Real>& out = l + 1 < L ? acts_[l + 1].x : xf_;
    moe_forward(l, p, out, pool);
    const LayerActs& a = acts_[l];
    // Load-balancing loss: E * sum_i f_i * P_i, f_i = share of tokens whose top-K holds i,
    // P_i = mean router probability of i.
    double aux = 0;
    for (int64_t e = 0; e < E; ++e) {
      double P = 0;
      for (int64_t n = 0; n < N; ++n) P += a.probs[n * E + e];
      P /= static_cast<double>(N);
      const double f = static_cast<double>(expert_counts_[l * E + e]) / static_cast<double>(N);
      ftok_[l * E + e] = static_cast<Real>(f);
      aux += static_cast<double>(E) * f * P;
    }
    loss.aux += aux / static_cast<double>(L);
    double z = 0;
    for (int64_t n = 0; n < N; ++n) z += static_cast<double>(a.lse[n]) * a.lse[n];
    loss.z += z / static_cast<double>(N * L);
  }

  // Final norm, output projection, cross-entropy.
  grow(rf_, N);
  grow(xnf_, N * D);
  grow(logits_, N * V);
  for (int64_t n = 0; n < N; ++n)
    rf_[n] = rmsnorm_forward(&xf_[n * D], p + layout_.out_norm, static_cast<Real>(c_.norm_eps), &xnf_[n * D], D);
  mm_forward(xnf_.data(), p + layout_.output, logits_.data(), N, D, V, pool);
  n_targets_ = 0;
  double ce = 0;
  for (int64_t n = 0; n < N; ++n) {
    if (targets[n] < 0) continue;
    const Real* lg = &logits_[n * V];
    const double mx = *std::max_element(lg, lg + V);
    double s = 0;
    for (int64_t v = 0; v < V; ++v) s += std::exp(static_cast<double>(lg[v]) - mx);
    ce += mx + std::log(s) - static_cast<double>(lg[targets[n]]);
    ++n_targets_;
  }
  loss.ce = n_targets_ > 0 ? ce / static_cast<double>(n_targets_) : 0.0;
  loss.total = loss.ce + opt.aux_coef * loss.aux + opt.z_coef * loss.z;
  return loss;
}

template <typename Real>
void TrainModel<Real>::attention_forward(int64_t l, const Real* p, ThreadPool* pool) {
  const Layout::Layer& w = layout_.layers[static_cast<size_t>(l)];
  LayerActs& a = acts_[static_cast<size_t>(l)];
  const int64_t N = N_, T = T_, D = c_.dim, H = c_.n_heads, hd = c_.head_dim;
  const int64_t qd = c_.q_dim(), kvd = c_.kv_dim(), group = c_.n_heads / c_.n_kv_heads;
  grow(a.r1, N), grow(a.xn1, N * D), grow(a.q, N * qd), grow(a.k, N * kvd), grow(a.v, N * kvd);
  grow(a.att, B_ * H * T * T), grow(a.ao, N * qd), grow(a.h, N * D);
  for (int64_t n = 0; n < N; ++n)
    a.r1[n] = rmsnorm_forward(&a.x[n * D], p + w.attn_norm, static_cast<Real>(c_.norm_eps), &a.xn1[n * D], D);
  mm_forward(a.xn1.data(), p + w.wq, a.q.data(), N, D, qd, pool);   // q = xn1 Wq^T
  mm_forward(a.xn1.data(), p + w.wk, a.k.data(), N, D, kvd, pool);  // k = xn1 Wk^T
  mm_forward(a.xn1.data(), p + w.wv, a.v.data(), N, D, kvd, pool);  // v = xn1 Wv^T
  // RoPE, interleaved pairs: (a, b) -> (a c - b s, a s + b c) at the token's position t.
  auto rope = [&](Real* vec, int64_t t) {
    for (int64_t i = 0; i < hd / 2; ++i) {
      const Real cs = cos_[t * hd / 2 + i], sn = sin_[t * hd / 2 + i];
      const Real x0 = vec[2 * i], x1 = vec[2 * i + 1];
      vec[2 * i] = x0 * cs - x1 * sn;
      vec[2 * i + 1] = x0 * sn + x1 * cs;
    }
  };
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t h = 0; h < H; ++h) rope(&a.q[n * qd + h * hd], n % T);
    for (int64_t h = 0; h < c_.n_kv_heads; ++h) rope(&a.k[n * kvd + h * hd], n % T);
  }
  const Real scale = static_cast<Real>(1.0f / std::sqrt(static_cast<float>(hd)));
  // Causal attention per (sequence, head): P = softmax(q k^T * scale), ao = P v.
  parallel_for(pool, B_ * H, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / H, h = task % H, kvh = h / group;
      for (int64_t t = 0; t < T; ++t) {
        const Real* q = &a.q[(b * T + t) * qd + h * hd];
        Real* P = &a.att[((b * H + h) * T + t) * T];
        double mx = -1e300;
        for (int64_t j = 0; j <= t; ++j) {
          P[j] = dot(q, &a.k[(b * T + j) * kvd + kvh * hd], hd) * scale;
          mx = std::max(mx, static_cast<double>(P[j]));
        }
        double s = 0;
        for (int64_t j = 0; j <= t; ++j) {
          P[j] = static_cast<Real>(std::exp(static_cast<double>(P[j]) - mx));
          s += P[j];
        }
        const Real inv = static_cast<Real>(1.0 / s);
        for (int64_t j = 0; j <= t; ++j) P[j] *= inv;
        std::fill(P + t + 1, P + T, Real(0));
        Real* o = &a.ao[(b * T + t) * qd + h * hd];
        std::fill_n(o, hd, Real(0));
        for (int64_t j = 0; j <= t; ++j) axpy(P[j], &a.v[(b * T + j) * kvd + kvh * hd], o, hd);
      }
    }
  });
  // h = x + ao Wo^T
  mm_forward(a.ao.data(), p + w.wo, a.h.data(), N, qd, D, pool);
  for (int64_t i = 0; i < N * D; ++i) a.h[i] += a.x[i];
}

template <typename Real>
void TrainModel<Real>::moe_forward(int64_t l, const Real* p, std::vector<Real>& out, ThreadPool* pool) {
  const Layout::Layer& w = layout_.layers[static_cast<size_t>(l)];
  LayerActs& a = acts_[static_cast<size_t>(l)];
  const int64_t N = N_, D = c_.dim, E = c_.n_experts, K = c_.n_experts_used, F = c_.hidden_dim, S = N * K;
  grow(a.r2, N), grow(a.xn2, N * D), grow(a.probs, N * E), grow(a.lse, N);
  a.top.resize(static_cast<size_t>(N * K));
  grow(a.gates, N * K);
  for (int64_t n = 0; n < N; ++n)
    a.r2[n] = rmsnorm_forward(&a.h[n * D], p + w.ffn_norm, static_cast<Real>(c_.norm_eps), &a.xn2[n * D], D);
  // Router: logits = xn2 Wg^T; probs = softmax(logits); G = Softmax(TopK(logits)).
  std::vector<Real> logits(static_cast<size_t>(N * E));
  if (c_.has_router) mm_forward(a.xn2.data(), p + w.router, logits.data(), N, D, E, pool);
  std::vector<int32_t> order(static_cast<size_t>(E));
  for (int64_t n = 0; n < N; ++n) {
    const Real* lg = &logits[n * E];
    const double mx = *std::max_element(lg, lg + E);
    double s = 0;
    for (int64_t e = 0; e < E; ++e) s += std::exp(static_cast<double>(lg[e]) - mx);
    a.lse[n] = static_cast<Real>(mx + std::log(s));
    for (int64_t e = 0; e < E; ++e) a.probs[n * E + e] = static_cast<Real>(std::exp(static_cast<double>(lg[e]) - mx) / s);
    // The K largest logits, ties to the lower index (as route_top_k), best first.
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + K, order.end(), [&](int32_t x, int32_t y) {
      return lg[x] > lg[y] || (lg[x] == lg[y] && x < y);
    });
    double gs = 0;
    for (int64_t j = 0; j < K; ++j) {
      a.top[n * K + j] = order[j];
      gs += std::exp(static_cast<double>(lg[order[j]]) - static_cast<double>(lg[order[0]]));
    }
    for (int64_t j = 0; j < K; ++j)
      a.gates[n * K + j] = static_cast<Real>(std::exp(static_cast<double>(lg[order[j]]) - static_cast<double>(lg[order[0]])) / gs);
  }
  // Group slots by expert (expert-major, tokens in order): counts, offsets, gather.
  a.offsets.assign(static_cast<size_t>(E + 1), 0);
  for (int64_t i = 0; i < S; ++i) ++a.offsets[a.top[i] + 1];
  for (int64_t e = 0; e < E; ++e) {
    expert_counts_[l * E + e] = a.offsets[e + 1];
    a.offsets[e + 1] += a.offsets[e];
  }
  a.slot_tok.resize(static_cast<size_t>(S));
  a.slot_j.resize(static_cast<size_t>(S));
  grow(a.xg, S * D), grow(a.a1, S * F), grow(a.a3, S * F), grow(a.act, S * F), grow(a.y, S * D);
  std::vector<int32_t> cursor(a.offsets.begin(), a.offsets.end() - 1);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t j = 0; j < K; ++j) {
      const int32_t s = cursor[a.top[n * K + j]]++;
      a.slot_tok[s] = static_cast<int32_t>(n);
      a.slot_j[s] = static_cast<int32_t>(j);
      std::copy_n(&a.xn2[n * D], D, &a.xg[s * D]);
    }
  // Experts: y = W2 (SiLU(W1 x) * W3 x) over each expert's slots.
  const size_t FD = static_cast<size_t>(F * D);
  for (int64_t e = 0; e < E; ++e) {
    const int64_t s0 = a.offsets[e], n = a.offsets[e + 1] - s0;
    if (n == 0) continue;
    mm_forward(&a.xg[s0 * D], p + w.w1 + e * FD, &a.a1[s0 * F], n, D, F, pool);
    mm_forward(&a.xg[s0 * D], p + w.w3 + e * FD, &a.a3[s0 * F], n, D, F, pool);
    for (int64_t i = s0 * F; i < (s0 + n) * F; ++i) a.act[i] = a.a1[i] / (Real(1) + std::exp(-a.a1[i])) * a.a3[i];
    mm_forward(&a.act[s0 * F], p + w.w2 + e * FD, &a.y[s0 * D], n, F, D, pool);
  }
  // out = h + sum_j G_j * y_j
  grow(out, N * D);
  std::copy_n(a.h.begin(), N * D, out.begin());
  for (int64_t s = 0; s < S; ++s) {
    const int64_t n = a.slot_tok[s];
    axpy(a.gates[n * K + a.slot_j[s]], &a.y[s * D], &out[n * D], D);
  }
}

// ---------------------------------------------------------------------------------------
// Backward
// ---------------------------------------------------------------------------------------

template <typename Real>
void TrainModel<Real>::backward(const Real* p, Real* g, ThreadPool* pool) {
  const int64_t N = N_, D = c_.dim, V = c_.vocab_size;
  SMOE_CHECK(N > 0, "backward() called before forward()");
  // loss = mean_n (logsumexp(logits_n) - logits_n[target]):  dlogits = (softmax - onehot) / n_targets
  std::vector<Real> dlogits(static_cast<size_t>(N * V), Real(0));
  const double inv = n_targets_ > 0 ? 1.0 / static_cast<double>(n_targets_) : 0.0;
  parallel_for(pool, N, 16, [&](int64_t b, int64_t e) {
    for (int64_t n = b; n < e; ++n) {
      if (targets_[n] < 0) continue;
      const Real* lg = &logits_[n * V];
      Real* d = &dlogits[n * V];
      const double mx = *std::max_element(lg, lg + V);
      double s = 0;
      for (int64_t v = 0; v < V; ++v) s += std::exp(static_cast<double>(lg[v]) - mx);
      for (int64_t v = 0; v < V; ++v) d[v] = static_cast<Real>(std::exp(static_cast<double>(lg[v]) - mx) / s * inv);
      d[targets_[n]] -= static_cast<Real>(inv);
    }
  });
  // logits = xnf Wout^T
  mm_backward_w(dlogits.data(), xnf_.data(), g + layout_.output, N, D, V, pool);
  std::vector<Real> dxnf(static_cast<size_t>(N * D));
  mm_backward_x(dlogits.data(), p + layout_.output, dxnf.data(), N, D, V, false, pool);
  // xnf = rmsnorm(xf, out_norm)
  std::vector<Real> dx(static_cast<size_t>(N * D), Real(0));
  for (int64_t n = 0; n < N; ++n)
    rmsnorm_backward(&xf_[n * D], p + layout_.out_norm, rf_[n], &dxnf[n * D], &dx[n * D], g + layout_.out_norm, D);
  for (int64_t l = c_.n_layers - 1; l >= 0; --l) {
    moe_backward(l, p, g, dx, pool);        // dx: d out -> d h
    attention_backward(l, p, g, dx, pool);  // dx: d h -> d x
  }
  // x = tok_embd[inputs]
  for (int64_t n = 0; n < N; ++n) axpy(Real(1), &dx[n * D], g + layout_.tok_embd + inputs_[n] * D, D);
}

template <typename Real>
void TrainModel<Real>::moe_backward(int64_t l, const Real* p, Real* g, std::vector<Real>& dx, ThreadPool* pool) {
  const Layout::Layer& w = layout_.layers[static_cast<size_t>(l)];
  const LayerActs& a = acts_[static_cast<size_t>(l)];
  const int64_t N = N_, D = c_.dim, E = c_.n_experts, K = c_.n_experts_used, F = c_.hidden_dim, S = N * K;
  const int64_t L = c_.n_layers;
  // out = h + sum_j G_j * y_j:  dh = dout (dx already holds it);  dy_s = G_j dout;  dG_j = dout . y_s
  std::vector<Real> dy(static_cast<size_t>(S * D)), dgate(static_cast<size_t>(N * K));
  parallel_for(pool, S, 64, [&](int64_t b, int64_t e) {
    for (int64_t s = b; s < e; ++s) {
      const int64_t n = a.slot_tok[s], j = a.slot_j[s];
      const Real gj = a.gates[n * K + j];
      for (int64_t i = 0; i < D; ++i) dy[s * D + i] = gj * dx[n * D + i];
      dgate[n * K + j] = dot(&dx[n * D], &a.y[s * D], D);
    }
  });
  // Experts, per expert e over its slots.
  std::vector<Real> dact(static_cast<size_t>(S * F)), da1(static_cast<size_t>(S * F)), da3(static_cast<size_t>(S * F));
  std::vector<Real> dxg(static_cast<size_t>(S * D));
  const size_t FD = static_cast<size_t>(F * D);
  for (int64_t e = 0; e < E; ++e) {
    const int64_t s0 = a.offsets[e], n = a.offsets[e + 1] - s0;
    if (n == 0) continue;
    // y = act W2^T
    mm_backward_w(&dy[s0 * D], &a.act[s0 * F], g + w.w2 + e * FD, n, F, D, pool);
    mm_backward_x(&dy[s0 * D], p + w.w2 + e * FD, &dact[s0 * F], n, F, D, false, pool);
    // act = silu(a1) * a3:  da1 = dact * a3 * silu'(a1);  da3 = dact * silu(a1)
    for (int64_t i = s0 * F; i < (s0 + n) * F; ++i) {
      const Real z = a.a1[i];
      da1[i] = dact[i] * a.a3[i] * silu_grad(z);
      da3[i] = dact[i] * (z / (Real(1) + std::exp(-z)));
    }
    // a1 = xg W1^T;  a3 = xg W3^T
    mm_backward_w(&da1[s0 * F], &a.xg[s0 * D], g + w.w1 + e * FD, n, D, F, pool);
    mm_backward_w(&da3[s0 * F], &a.xg[s0 * D], g + w.w3 + e * FD, n, D, F, pool);
    mm_backward_x(&da1[s0 * F], p + w.w1 + e * FD, &dxg[s0 * D], n, D, F, false, pool);
    mm_backward_x(&da3[s0 * F], p + w.w3 + e * FD, &dxg[s0 * D], n, D, F, true, pool);
  }
  // xg_s = xn2[token(s)]  (gather): dxn2 = sum over the token's slots
  std::vector<Real> dxn2(static_cast<size_t>(N * D), Real(0));
  for (int64_t s = 0; s < S; ++s) axpy(Real(1), &dxg[s * D], &dxn2[a.slot_tok[s] * D], D);
  if (c_.has_router) {
    std::vector<Real> dlogits(static_cast<size_t>(N * E), Real(0));
    const double aux_scale = opt_.aux_coef * static_cast<double>(E) / static_cast<double>(N * L);
    const double z_scale = opt_.z_coef * 2.0 / static_cast<double>(N * L);
    for (int64_t n = 0; n < N; ++n) {
      Real* dl = &dlogits[n * E];
      // G = softmax over the top-K logits:  dl_j = G_j (dG_j - sum_i G_i dG_i)
      double gdg = 0;
      for (int64_t j = 0; j < K; ++j) gdg += static_cast<double>(a.gates[n * K + j]) * dgate[n * K + j];
      for (int64_t j = 0; j < K; ++j)
        dl[a.top[n * K + j]] += static_cast<Real>(a.gates[n * K + j] * (dgate[n * K + j] - gdg));
      // aux = E * sum_i f_i * mean_n probs_ni  (over layers: / L):  dprobs_ni = coef * E * f_i / (N L)
      // z = mean lse_n^2 (over layers: / L):  dl = coef * 2 lse_n * probs_n / (N L)
      // probs = softmax(logits):  dl_e = probs_e (dprobs_e - sum_i probs_i dprobs_i)
      double pdp = 0;
      for (int64_t e = 0; e < E; ++e) pdp += static_cast<double>(a.probs[n * E + e]) * ftok_[l * E + e];
      for (int64_t e = 0; e < E; ++e) {
        const double pe = a.probs[n * E + e];
        dl[e] += static_cast<Real>(aux_scale * pe * (static_cast<double>(ftok_[l * E + e]) - pdp) +
                                   z_scale * static_cast<double>(a.lse[n]) * pe);
      }
    }
    // logits = xn2 Wg^T
    mm_backward_w(dlogits.data(), a.xn2.data(), g + w.router, N, D, E, pool);
    mm_backward_x(dlogits.data(), p + w.router, dxn2.data(), N, D, E, true, pool);
  }
  // xn2 = rmsnorm(h, ffn_norm):  dh += rmsnorm'(dxn2)
  for (int64_t n = 0; n < N; ++n)
    rmsnorm_backward(&a.h[n * D], p + w.ffn_norm, a.r2[n], &dxn2[n * D], &dx[n * D], g + w.ffn_norm, D);
}

template <typename Real>
void TrainModel<Real>::attention_backward(int64_t l, const Real* p, Real* g, std::vector<Real>& dx, ThreadPool* pool) {
  const Layout::Layer& w = layout_.layers[static_cast<size_t>(l)];
  const LayerActs& a = acts_[static_cast<size_t>(l)];
  const int64_t N = N_, T = T_, D = c_.dim, H = c_.n_heads, hd = c_.head_dim;
  const int64_t qd = c_.q_dim(), kvd = c_.kv_dim(), KVH = c_.n_kv_heads, group = H / KVH;
  // h = x + ao Wo^T:  dx = dh (kept);  dWo += dh^T ao;  dao = dh Wo
  mm_backward_w(dx.data(), a.ao.data(), g + w.wo, N, qd, D, pool);
  std::vector<Real> dao(static_cast<size_t>(N * qd));
  mm_backward_x(dx.data(), p + w.wo, dao.data(), N, qd, D, false, pool);
  // Attention per (sequence, kv head): the heads of a group share k and v.
  std::vector<Real> dq(static_cast<size_t>(N * qd), Real(0)), dk(static_cast<size_t>(N * kvd), Real(0)),
      dv(static_cast<size_t>(N * kvd), Real(0));
  const Real scale = static_cast<Real>(1.0f / std::sqrt(static_cast<float>(hd)));
  parallel_for(pool, B_ * KVH, 1, [&](int64_t begin, int64_t end) {
    std::vector<Real> dP(static_cast<size_t>(T));
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / KVH, kvh = task % KVH;
      for (int64_t h = kvh * group; h < (kvh + 1) * group; ++h)
        for (int64_t t = 0; t < T; ++t) {
          const Real* P = &a.att[((b * H + h) * T + t) * T];
          const Real* dot_ = &dao[(b * T + t) * qd + h * hd];
          // ao_t = sum_j P_j v_j:  dP_j = dao_t . v_j;  dv_j += P_j dao_t
          double pdp = 0;
          for (int64_t j = 0; j <= t; ++j) {
            dP[j] = dot(dot_, &a.v[(b * T + j) * kvd + kvh * hd], hd);
            pdp += static_cast<double>(P[j]) * dP[j];
            axpy(P[j], dot_, &dv[(b * T + j) * kvd + kvh * hd], hd);
          }
          // P = softmax(s):  ds_j = P_j (dP_j - sum_i P_i dP_i)
          // s_j = q_t . k_j * scale:  dq_t += scale ds_j k_j;  dk_j += scale ds_j q_t
          const Real* q = &a.q[(b * T + t) * qd + h * hd];
          Real* dqt = &dq[(b * T + t) * qd + h * hd];
          for (int64_t j = 0; j <= t; ++j) {
            const Real ds = static_cast<Real>(P[j] * (dP[j] - pdp)) * scale;
            axpy(ds, &a.k[(b * T + j) * kvd + kvh * hd], dqt, hd);
            axpy(ds, q, &dk[(b * T + j) * kvd + kvh * hd], hd);
          }
        }
    }
  });
  // RoPE (a, b) -> (a c - b s, a s + b c):  da = db0 c + db1 s;  db = -db0 s + db1 c
  auto rope_back = [&](Real* vec, int64_t t) {
    for (int64_t i = 0; i < hd / 2; ++i) {
      const Real cs = cos_[t * hd / 2 + i], sn = sin_[t * hd / 2 + i];
      const Real d0 = vec[2 * i], d1 = vec[2 * i + 1];
      vec[2 * i] = d0 * cs + d1 * sn;
      vec[2 * i + 1] = -d0 * sn + d1 * cs;
    }
  };
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t h = 0; h < H; ++h) rope_back(&dq[n * qd + h * hd], n % T);
    for (int64_t h = 0; h < KVH; ++h) rope_back(&dk[n * kvd + h * hd], n % T);
  }
  // q = xn1 Wq^T, k = xn1 Wk^T, v = xn1 Wv^T
  mm_backward_w(dq.data(), a.xn1.data(), g + w.wq, N, D, qd, pool);
  mm_backward_w(dk.data(), a.xn1.data(), g + w.wk, N, D, kvd, pool);
  mm_backward_w(dv.data(), a.xn1.data(), g + w.wv, N, D, kvd, pool);
  std::vector<Real> dxn1(static_cast<size_t>(N * D));
  mm_backward_x(dq.data(), p + w.wq, dxn1.data(), N, D, qd, false, pool);
  mm_backward_x(dk.data(), p + w.wk, dxn1.data(), N, D, kvd, true, pool);
  mm_backward_x(dv.data(), p + w.wv, dxn1.data(), N, D, kvd, true, pool);
  // xn1 = rmsnorm(x, attn_norm):  dx += rmsnorm'(dxn1)  (dx already holds the residual dh)
  for (int64_t n = 0; n < N; ++n)
    rmsnorm_backward(&a.x[n * D], p + w.attn_norm, a.r1[n], &dxn1[n * D], &dx[n * D], g + w.attn_norm, D);
}

template class TrainModel<float>;
template class TrainModel<double>;

}  // namespace smoe::train
