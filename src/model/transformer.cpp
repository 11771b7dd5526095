// transformer.cpp: the float32 reference forward pass.
// Per layer: h = x + Attention(RMSNorm(x)); out = h + MoE(RMSNorm(h)).
// The MoE layer groups the batch's tokens by expert (count, prefix-sum offsets, gather),
// runs one matrix product per selected expert, and scatters the gated results back.
#include "model/transformer.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"
#include "kernels/attention.h"
#include "kernels/ops.h"
#include "kernels/simd.h"

namespace smoe {

void route_top_k(const float* logits, int64_t n_experts, int64_t k, int32_t* ids, float* weights) {
  // Partial selection sort: n_experts is small (8..256).
  thread_local std::vector<int32_t> order;
  order.resize(static_cast<size_t>(n_experts));
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  });
  for (int64_t j = 0; j < k; ++j) {
    ids[j] = order[j];
    weights[j] = logits[order[j]];
  }
  softmax(weights, k);  // G(x) = Softmax(TopK(logits))
}

const char* ForwardProfile::name(int phase) {
  static const char* const names[kPhases] = {"embedding", "norms",   "q k v",   "rope + cache", "attention",
                                             "wo",        "router",  "gather",  "experts w1 w3", "silu",
                                             "experts w2", "scatter", "output"};
  return phase >= 0 && phase < kPhases ? names[phase] : "?";
}

double ForwardProfile::total_seconds() const {
  double s = 0;
  for (double v : seconds) s += v;
  return s;
}

void Transformer::mark(ForwardProfile::Phase phase, double bytes) {
  if (!profile) return;
  const auto now = std::chrono::steady_clock::now();
  profile->seconds[phase] += std::chrono::duration<double>(now - mark_).count();
  profile->bytes[phase] += bytes;
  mark_ = now;
}

KVCache::KVCache(const ModelConfig& c, int64_t n_ctx) : n_ctx_(n_ctx), kv_dim_(c.kv_dim()) {
  SMOE_CHECK(n_ctx > 0 && n_ctx <= c.max_seq_len, "context size ", n_ctx,
             " is out of range (expected 1..", c.max_seq_len, ", the model's context length)");
  const size_t n = static_cast<size_t>(c.n_layers * n_ctx * c.kv_dim());
  k_.assign(n, 0.f);
  v_.assign(n, 0.f);
}

void KVCache::truncate(int64_t n) {
  SMOE_CHECK(n >= 0 && n <= n_past_, "KV cache: cannot truncate to ", n, " positions (holds ",
             n_past_, ")");
  n_past_ = n;
}

Transformer::Transformer(const Model& model) : model_(model) {
  const ModelConfig& c = model.config;
  expert_tokens.assign(static_cast<size_t>(c.n_layers * c.n_experts), 0);
}

void Transformer::forward(std::span<const BatchSeq> batch, std::vector<float>& logits) {
  const ModelConfig& c = model_.config;
  const int64_t D = c.dim, V = c.vocab_size;
  SMOE_CHECK(!batch.empty(), "forward: empty batch");
  // Validate everything before touching any state.
  int64_t T = 0;
  for (size_t b = 0; b < batch.size(); ++b) {
    const BatchSeq& s = batch[b];
    const int64_t n = static_cast<int64_t>(s.tokens.size());
    SMOE_CHECK(n > 0, "forward: sequence ", b, " of the batch has no tokens");
    SMOE_CHECK(s.cache->n_past_ + n <= s.cache->n_ctx_, "sequence of ", s.cache->n_past_ + n,
               " tokens exceeds the context size ", s.cache->n_ctx_, " (raise --ctx, at most ",
               c.max_seq_len, " for this model, or shorten the prompt)");
    for (int64_t t = 0; t < n; ++t)
      SMOE_CHECK(s.tokens[t] >= 0 && s.tokens[t] < V, "token id ", s.tokens[t], " at position ", t,
                 " is out of range (expected 0..", V - 1, ")");
    for (size_t o = 0; o < b; ++o)
      SMOE_CHECK(batch[o].cache != s.cache, "forward: sequences ", o, " and ", b,
                 " of the batch share one KV cache");
    T += n;
  }
  auto grow = [](std::vector<float>& v, int64_t n) {
    if (static_cast<int64_t>(v.size()) < n) v.resize(static_cast<size_t>(n));
  };
  grow(x_, T * D);
  grow(xn_, T * D);
  grow(tmp_, T * D);
  tok_cache_.resize(static_cast<size_t>(T));
  tok_pos_.resize(static_cast<size_t>(T));
  out_rows_.clear();
  if (profile) {
    ++profile->calls;
    mark_ = std::chrono::steady_clock::now();
  }
  int64_t t = 0;
  for (const BatchSeq& s : batch) {
    const int64_t n = static_cast<int64_t>(s.tokens.size());
    for (int64_t i = 0; i < n; ++i, ++t) {
      tok_cache_[t] = s.cache;
      tok_pos_[t] = s.cache->n_past_ + i;
      embedding_row(model_.tok_embd, s.tokens[i], &x_[t * D]);
      if (s.all_logits || i == n - 1) out_rows_.push_back(t);
    }
  }
  if (route_record) {
    route_record->n_layers = c.n_layers;
    route_record->n_tokens = T;
    route_record->k = c.n_experts_used;
    route_record->n_experts = c.n_experts;
    route_record->experts.assign(static_cast<size_t>(c.n_layers * T * c.n_experts_used), 0);
    route_record->gates.assign(route_record->experts.size(), 0.f);
    route_record->router_logits.assign(static_cast<size_t>(c.n_layers * T * c.n_experts), 0.f);
  }
  mark(ForwardProfile::kEmbed);

  for (int64_t l = 0; l < c.n_layers; ++l) {
    attention(l, T);
    moe(l, T);
  }
  for (const BatchSeq& s : batch) s.cache->n_past_ += static_cast<int64_t>(s.tokens.size());

  // Final norm and output projection for the wanted rows only.
  const int64_t n_out = static_cast<int64_t>(out_rows_.size());
  for (int64_t r = 0; r < n_out; ++r)
    rmsnorm(&x_[out_rows_[r] * D], model_.out_norm, c.norm_eps, &xn_[r * D], D);
  mark(ForwardProfile::kNorms);
  logits.resize(static_cast<size_t>(n_out * V));
  matmul(model_.output, xn_.data(), logits.data(), n_out, pool);
  mark(ForwardProfile::kOutput, static_cast<double>(model_.output.nbytes));
}

Session::Session(const Model& model, int64_t n_ctx) : transformer_(model), cache_(model.config, n_ctx) {}

void Session::forward(std::span<const int32_t> tokens, bool all_logits, std::vector<float>& logits) {
  transformer_.pool = pool;
  transformer_.route_record = route_record;
  transformer_.profile = profile;
  const BatchSeq seq{&cache_, tokens, all_logits};
  transformer_.forward(std::span<const BatchSeq>(&seq, 1), logits);
}

void Transformer::attention(int64_t layer, int64_t T) {
  const ModelConfig& c = model_.config;
  const LayerWeights& w = model_.layers[static_cast<size_t>(layer)];
  const int64_t D = c.dim, hd = c.head_dim, qd = c.q_dim(), kvd = c.kv_dim();
  const int64_t group = c.n_heads / c.n_kv_heads;
  if (static_cast<int64_t>(q_.size()) < T * qd) q_.resize(static_cast<size_t>(T * qd));
  if (static_cast<int64_t>(att_.size()) < T * qd) att_.resize(static_cast<size_t>(T * qd));
  if (static_cast<int64_t>(k_.size()) < T * kvd) k_.resize(static_cast<size_t>(T * kvd));
  if (static_cast<int64_t>(v_.size()) < T * kvd) v_.resize(static_cast<size_t>(T * kvd));

  for (int64_t t = 0; t < T; ++t) rmsnorm(&x_[t * D], w.attn_norm, c.norm_eps, &xn_[t * D], D);
  mark(ForwardProfile::kNorms);
  // q [T, H*hd], k and v [T, KV*hd]
  matmul_shared({&w.wq, &w.wk, &w.wv}, xn_.data(), {q_.data(), k_.data(), v_.data()}, T, pool);
  mark(ForwardProfile::kQKV, static_cast<double>(w.wq.nbytes + w.wk.nbytes + w.wv.nbytes));

  // RoPE at each token's own position, then append K and V to its sequence's cache.
  int64_t max_pos = 0;
  for (int64_t t = 0; t < T; ++t) {
    const int64_t pos = tok_pos_[t];
    max_pos = std::max(max_pos, pos);
    float* kc = tok_cache_[t]->k(layer);  // [C, KV*hd]
    float* vc = tok_cache_[t]->v(layer);
    rope_interleaved(&q_[t * qd], c.n_heads, hd, pos, c.rope_theta);
    rope_interleaved(&k_[t * kvd], c.n_kv_heads, hd, pos, c.rope_theta);
    std::copy_n(&k_[t * kvd], kvd, kc + pos * kvd);
    std::copy_n(&v_[t * kvd], kvd, vc + pos * kvd);
  }
  mark(ForwardProfile::kRope);

  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  // One task per (token, kv head): its `group` query heads share every key and value row
  // read, with an online softmax over blocks of keys (no score row of the context length).
  const int64_t grain = std::max<int64_t>(1, 32768 / ((max_pos + 1) * hd * group));
  parallel_for(pool, T * c.n_kv_heads, grain, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t t = task / c.n_kv_heads, kvh = task % c.n_kv_heads;
      const int64_t pos = tok_pos_[t];
      const int64_t start = c.sliding_window > 0 ? std::max<int64_t>(0, pos - c.sliding_window + 1) : 0;
      const float* kc = tok_cache_[t]->k(layer) + start * kvd + kvh * hd;  // [n, hd] rows, stride kvd
      const float* vc = tok_cache_[t]->v(layer) + start * kvd + kvh * hd;
      attention_heads(&q_[t * qd + kvh * group * hd], hd, group, kc, vc, kvd, pos - start + 1, hd,
                      scale, &att_[t * qd + kvh * group * hd], hd);
    }
  });
  mark(ForwardProfile::kAttention);
  matmul(w.wo, att_.data(), tmp_.data(), T, pool);  // [T, D]
  for (int64_t i = 0; i < T * D; ++i) x_[i] += tmp_[i];
  mark(ForwardProfile::kWo, static_cast<double>(w.wo.nbytes));
}

void Transformer::moe(int64_t layer, int64_t T) {
  const ModelConfig& c = model_.config;
  const LayerWeights& w = model_.layers[static_cast<size_t>(layer)];
  const int64_t D = c.dim, F = c.hidden_dim, E = c.n_experts, K = c.n_experts_used;
  for (int64_t t = 0; t < T; ++t) rmsnorm(&x_[t * D], w.ffn_norm, c.norm_eps, &xn_[t * D], D);
  mark(ForwardProfile::kNorms);

  // Route: top-K experts per token and their gates.
  top_ids_.resize(static_cast<size_t>(T * K));
  gates_.resize(static_cast<size_t>(T * K));
  if (c.has_router) {
    router_logits_.resize(static_cast<size_t>(T * E));
    matmul(w.router, xn_.data(), router_logits_.data(), T, pool);  // [T, E]
    for (int64_t t = 0; t < T; ++t)
      route_top_k(&router_logits_[t * E], E, K, &top_ids_[t * K], &gates_[t * K]);
  } else {
    std::fill(top_ids_.begin(), top_ids_.end(), 0);
    std::fill(gates_.begin(), gates_.end(), 1.f);
  }
  if (route_record) {
    std::copy_n(top_ids_.begin(), T * K, route_record->experts.begin() + layer * T * K);
    std::copy_n(gates_.begin(), T * K, route_record->gates.begin() + layer * T * K);
    if (c.has_router)
      std::copy_n(router_logits_.begin(), T * E, route_record->router_logits.begin() + layer * T * E);
  }
  mark(ForwardProfile::kRouter, c.has_router ? static_cast<double>(w.router.nbytes) : 0.0);

  // Group (token, slot) pairs by expert: counts, prefix-sum offsets, expert-major gather.
  counts_.assign(static_cast<size_t>(E), 0);
  for (int64_t i = 0; i < T * K; ++i) ++counts_[top_ids_[i]];
  offsets_.assign(static_cast<size_t>(E + 1), 0);
  for (int64_t e = 0; e < E; ++e) offsets_[e + 1] = offsets_[e] + counts_[e];
  const int64_t S = T * K;  // slots
  slot_token_.resize(static_cast<size_t>(S));
  slot_gate_.resize(static_cast<size_t>(S));
  xg_.resize(static_cast<size_t>(S * D));
  yg_.resize(static_cast<size_t>(S * D));
  h1_.resize(static_cast<size_t>(S * F));
  h3_.resize(static_cast<size_t>(S * F));
  std::vector<int32_t>& fill = counts_;  // reused as per-expert write cursor
  std::fill(fill.begin(), fill.end(), 0);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < K; ++j) {
      const int32_t e = top_ids_[t * K + j];
      const int64_t s = offsets_[e] + fill[e]++;
      slot_token_[s] = static_cast<int32_t>(t);
      slot_gate_[s] = gates_[t * K + j];
      std::copy_n(&xn_[t * D], D, &xg_[s * D]);
    }
  mark(ForwardProfile::kGather);

  // One SwiGLU per selected expert over its tokens: W2 (SiLU(W1 x) * W3 x).
  for (int64_t e = 0; e < E; ++e) {
    const int64_t n = offsets_[e + 1] - offsets_[e];
    if (n == 0) continue;  // unselected experts cost nothing
    expert_tokens[static_cast<size_t>(layer * E + e)] += n;
    const ExpertWeights& ex = w.experts[static_cast<size_t>(e)];
    const int64_t s0 = offsets_[e];
    matmul_shared({&ex.w1, &ex.w3}, &xg_[s0 * D], {&h1_[s0 * F], &h3_[s0 * F]}, n, pool);  // [n, F] each
    mark(ForwardProfile::kExpertUp, static_cast<double>(ex.w1.nbytes + ex.w3.nbytes));
    silu_mul(&h1_[s0 * F], &h3_[s0 * F], n * F);
    mark(ForwardProfile::kSilu);
    matmul(ex.w2, &h1_[s0 * F], &yg_[s0 * D], n, pool);  // [n, D]
    mark(ForwardProfile::kExpertDown, static_cast<double>(ex.w2.nbytes));
  }

  // Weighted scatter back onto the residual stream.
  for (int64_t s = 0; s < S; ++s) {
    float* x = &x_[slot_token_[s] * D];
    const float g = slot_gate_[s];
    for (int64_t i = 0; i < D; ++i) x[i] += g * yg_[s * D + i];
  }
  mark(ForwardProfile::kScatter);
}

}  // namespace smoe
