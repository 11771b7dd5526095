// transformer.h: the float32 forward pass of a Mixtral-family model over a batch of
// sequences, each with its own KV cache. All tokens of the batch share every matrix
// product, and the MoE layer groups them by expert across sequences (what continuous
// batching needs). Session wraps one sequence for the CLI and tests.
// Legend: T tokens in this call (all sequences), D dim, V vocab, E experts, K experts used
// per token, H heads, KV kv heads, hd head dim, F expert hidden, C context (cache) size.
#pragma once
#include <chrono>
#include <cstdint>
#include <span>
#include <vector>

#include "core/thread_pool.h"
#include "model/model.h"

namespace smoe {

// The experts chosen for each token in each layer by the last forward() call.
struct RouteRecord {
  int64_t n_layers = 0, n_tokens = 0, k = 0, n_experts = 0;
  std::vector<int32_t> experts;      // [L, T, K], best first
  std::vector<float> gates;          // [L, T, K], Softmax(TopK) weights, sum to 1 per token
  std::vector<float> router_logits;  // [L, T, E]
  int32_t expert(int64_t l, int64_t t, int64_t j) const { return experts[(l * n_tokens + t) * k + j]; }
  float gate(int64_t l, int64_t t, int64_t j) const { return gates[(l * n_tokens + t) * k + j]; }
};

// Router: the K largest of logits[E] (ties go to the lower index), best first, and their
// softmax weights. ids[K], weights[K].
void route_top_k(const float* logits, int64_t n_experts, int64_t k, int32_t* ids, float* weights);

// One sequence's keys and values: [L, C, KV*hd] each, float32.
class KVCache {
 public:
  KVCache(const ModelConfig& config, int64_t n_ctx);
  int64_t n_ctx() const { return n_ctx_; }
  int64_t n_past() const { return n_past_; }  // positions filled
  void reset() { n_past_ = 0; }
  // Forgets positions >= n (n <= n_past), e.g. to reuse a shared prompt prefix.
  void truncate(int64_t n);
  float* k(int64_t layer) { return &k_[static_cast<size_t>(layer * n_ctx_ * kv_dim_)]; }
  float* v(int64_t layer) { return &v_[static_cast<size_t>(layer * n_ctx_ * kv_dim_)]; }
  size_t bytes() const { return (k_.size() + v_.size()) * sizeof(float); }

 private:
  friend class Transformer;
  int64_t n_ctx_, kv_dim_, n_past_ = 0;
  std::vector<float> k_, v_;
};

// One sequence's part of a batch: new tokens appended at cache->n_past().
struct BatchSeq {
  KVCache* cache;
  std::span<const int32_t> tokens;
  bool all_logits = false;  // logits for every new token, or only the last
};

// Where forward() spends its time, summed over calls while Transformer::profile points at
// one: wall seconds per phase and the weight bytes its matrix products read. Phases run one
// after another (each matrix product is one parallel loop over all threads), so the
// seconds add up to the calls' time.
struct ForwardProfile {
  enum Phase {
    kEmbed,       // embedding rows
    kNorms,       // attention, feed-forward and final RMSNorm
    kQKV,         // q, k, v projections (with the activations' quantization)
    kRope,        // rotary embedding, appending K and V to the cache
    kAttention,   // softmax(q k^T) v over the cache
    kWo,          // output projection and residual add
    kRouter,      // router logits, top-K and gates
    kGather,      // grouping (token, slot) pairs by expert
    kExpertUp,    // w1 and w3 of the selected experts
    kSilu,        // SiLU(w1 x) * w3 x
    kExpertDown,  // w2 of the selected experts
    kScatter,     // gated sum back onto the residual stream
    kOutput,      // output matrix (logits)
    kPhases
  };
  static const char* name(int phase);
  double seconds[kPhases] = {};
  double bytes[kPhases] = {};  // weight bytes read by the phase's matrix products
  int64_t calls = 0;
  double total_seconds() const;
};

class Transformer {
 public:
  explicit Transformer(const Model& model);

  // Runs every sequence's new tokens in one pass and appends them to their caches.
  // logits receives, sequence after sequence, [n, V] rows (n = its token count when
  // all_logits, else 1). Throws smoe::Error (changing nothing) for token ids outside
  // [0, V), empty sequences, or a cache that would overflow.
  void forward(std::span<const BatchSeq> batch, std::vector<float>& logits);
  const Model& model() const { return model_; }

  ThreadPool* pool = nullptr;         // threads to run on (null: caller only); not owned
  RouteRecord* route_record = nullptr;  // when set, filled with the routing of each call
  ForwardProfile* profile = nullptr;    // when set, each call's phases are timed into it
  // Tokens each expert has computed since construction: [L, E]. Experts a token is not
  // routed to are never computed, so these equal the routing counts.
  std::vector<int64_t> expert_tokens;

 private:
  void attention(int64_t layer, int64_t T);
  void moe(int64_t layer, int64_t T);
  // Closes the phase running since the last mark (adding `bytes` of weights to it) and
  // starts the next; a no-op without a profile.
  void mark(ForwardProfile::Phase phase, double bytes = 0);

  const Model& model_;
  // Per token of the current batch: its cache and position.
  std::vector<KVCache*> tok_cache_;
  std::vector<int64_t> tok_pos_;
  // Scratch, grown on demand and reused across calls.
  std::vector<float> x_, xn_, q_, k_, v_, att_, tmp_;              // [T, *]
  std::vector<float> router_logits_, gates_;                       // [T, E], [T, K]
  std::vector<int32_t> top_ids_, counts_, offsets_, slot_token_;   // [T, K], [E], [E+1], [T*K]
  std::vector<float> slot_gate_, xg_, h1_, h3_, yg_;               // expert-major [T*K, *]
  std::vector<int64_t> out_rows_;                                  // tokens whose logits are wanted
  std::chrono::steady_clock::time_point mark_;                     // start of the current phase
};

// One sequence: a KV cache and a Transformer.
class Session {
 public:
  // n_ctx: KV cache capacity in tokens (<= the model's max_seq_len).
  Session(const Model& model, int64_t n_ctx);

  // Runs tokens[T] at positions n_past()..n_past()+T-1 and appends them to the cache.
  // logits receives [T, V] when all_logits, else [1, V] for the last token.
  void forward(std::span<const int32_t> tokens, bool all_logits, std::vector<float>& logits);
  void reset() { cache_.reset(); }
  int64_t n_past() const { return cache_.n_past(); }
  int64_t n_ctx() const { return cache_.n_ctx(); }
  const Model& model() const { return transformer_.model(); }

  // Forwarded to the Transformer on each call (see there).
  ThreadPool* pool = nullptr;
  RouteRecord* route_record = nullptr;
  ForwardProfile* profile = nullptr;
  const std::vector<int64_t>& expert_tokens() const { return transformer_.expert_tokens; }

 private:
  Transformer transformer_;
  KVCache cache_;
};

}  // namespace smoe
