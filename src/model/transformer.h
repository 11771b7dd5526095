// transformer.h: the plain float32 forward pass of a Mixtral-family model, with its KV
// cache. A Session holds one sequence's state; forward() runs T new tokens in one pass.
// Legend: T tokens in this call, D dim, V vocab, E experts, K experts used per token,
// H heads, KV kv heads, hd head dim, F expert hidden, C context (KV cache) size.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "core/thread_pool.h"
#include "model/model.h"

namespace smoe {

// The experts chosen for each token in each layer by the last forward() call.
struct RouteRecord {
  int64_t n_layers = 0, n_tokens = 0, k = 0;
  std::vector<int32_t> experts;      // [L, T, K], best first
  std::vector<float> gates;          // [L, T, K], Softmax(TopK) weights, sum to 1 per token
  std::vector<float> router_logits;  // [L, T, E]
  int32_t expert(int64_t l, int64_t t, int64_t j) const { return experts[(l * n_tokens + t) * k + j]; }
  float gate(int64_t l, int64_t t, int64_t j) const { return gates[(l * n_tokens + t) * k + j]; }
};

// Router: the K largest of logits[E] (ties go to the lower index), best first, and their
// softmax weights. ids[K], weights[K].
void route_top_k(const float* logits, int64_t n_experts, int64_t k, int32_t* ids, float* weights);

class Session {
 public:
  // n_ctx: KV cache capacity in tokens (<= the model's max_seq_len).
  Session(const Model& model, int64_t n_ctx);

  // Runs tokens[T] at positions n_past()..n_past()+T-1 and appends them to the cache.
  // logits receives [T, V] when all_logits, else [1, V] for the last token.
  // Throws smoe::Error for token ids outside [0, V) or when the cache would overflow.
  void forward(std::span<const int32_t> tokens, bool all_logits, std::vector<float>& logits);
  void reset() { n_past_ = 0; }
  int64_t n_past() const { return n_past_; }
  int64_t n_ctx() const { return n_ctx_; }
  const Model& model() const { return model_; }

  // Threads to run on (null: the calling thread only). Not owned.
  ThreadPool* pool = nullptr;
  // When set, forward() fills it with the routing of the tokens it ran.
  RouteRecord* route_record = nullptr;
  // Tokens each expert has computed since construction: [L, E]. Experts a token is not
  // routed to are never computed, so these equal the routing counts.
  std::vector<int64_t> expert_tokens;

 private:
  void attention(int64_t layer, int64_t T);
  void moe(int64_t layer, int64_t T);

  const Model& model_;
  int64_t n_ctx_, n_past_ = 0;
  std::vector<float> k_cache_, v_cache_;  // [L, C, KV*hd]
  // Scratch, grown on demand and reused across calls.
  std::vector<float> x_, xn_, q_, k_, v_, att_, tmp_;              // [T, *]
  std::vector<float> router_logits_, gates_;                       // [T, E], [T, K]
  std::vector<int32_t> top_ids_, counts_, offsets_, slot_token_;   // [T, K], [E], [E+1], [T*K]
  std::vector<float> slot_gate_, xg_, h1_, h3_, yg_;               // expert-major [T*K, *]
};

}  // namespace smoe
