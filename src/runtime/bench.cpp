// bench.cpp: model speed, memory bandwidth and roofline measurements.
#include "runtime/bench.h"

#include <immintrin.h>
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <random>

#include "core/error.h"
#include "core/mapped_file.h"
#include "kernels/ops.h"
#include "model/transformer.h"

namespace smoe {

namespace {
using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}
}  // namespace

Stats Stats::of(std::vector<double> v) {
  Stats s;
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  s.min = v.front();
  s.max = v.back();
  const size_t n = v.size();
  s.median = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
  return s;
}

double decode_weight_bytes(const Model& m) {
  const ModelConfig& c = m.config;
  double bytes = static_cast<double>(m.out_norm.nbytes + m.output.nbytes) +
                 static_cast<double>(m.tok_embd.nbytes) / static_cast<double>(c.vocab_size);
  for (const LayerWeights& l : m.layers) {
    for (const TensorView* t : {&l.attn_norm, &l.wq, &l.wk, &l.wv, &l.wo, &l.ffn_norm, &l.router})
      bytes += static_cast<double>(t->nbytes);
    double experts = 0;
    for (const ExpertWeights& e : l.experts)
      experts += static_cast<double>(e.w1.nbytes + e.w2.nbytes + e.w3.nbytes);
    bytes += experts / static_cast<double>(l.experts.size()) * static_cast<double>(c.n_experts_used);
  }
  return bytes;
}

namespace {

// Sum of the 8-byte words q[0, len): the widest loads this CPU has, two independent sums,
// with or without software prefetches (each 64-byte line 4 KB ahead into L2 and 16 KB ahead
// into L3, as the decode kernels do). Plain 8-byte sums were instruction-bound on a 2.3 GHz
// Xeon: 17 GB/s from 2 cores against 25 with AVX-512 loads. Which prefetching reads fastest
// varies by machine: on the 2026-12-06 Xeon (2 threads, 1 GiB, variants alternating in one
// process, 3 x 12 runs) none and these two both read 26-28 GB/s (medians), where L1
// prefetches 1 KB ahead, the probe's loop before, read 23-26, so the probe takes the best
// of both loops.
template <bool kPrefetch>
__attribute__((target("avx512f"))) uint64_t sum_words_avx512(const uint64_t* q, size_t len) {
  __m512i a0 = _mm512_setzero_si512(), a1 = _mm512_setzero_si512();
  size_t i = 0;
  for (; i + 16 <= len; i += 16) {
    if constexpr (kPrefetch)
      for (size_t o : {size_t{512}, size_t{520}}) {  // 4 KB and 16 KB ahead, in words
        _mm_prefetch(reinterpret_cast<const char*>(q + i + o), _MM_HINT_T1);
        _mm_prefetch(reinterpret_cast<const char*>(q + i + 4 * o), _MM_HINT_T2);
      }
    a0 = _mm512_add_epi64(a0, _mm512_loadu_si512(q + i));
    a1 = _mm512_add_epi64(a1, _mm512_loadu_si512(q + i + 8));
  }
  // Lanes summed as unsigned (GCC's _mm512_reduce_add_epi64 adds them as signed, and the
  // sums wrap: undefined behaviour that UBSan reports).
  alignas(64) uint64_t lanes[8];
  _mm512_store_si512(lanes, _mm512_add_epi64(a0, a1));
  uint64_t total = 0;
  for (const uint64_t v : lanes) total += v;
  for (; i < len; ++i) total += q[i];
  return total;
}
template <bool kPrefetch>
__attribute__((target("avx2"))) uint64_t sum_words_avx2(const uint64_t* q, size_t len) {
  __m256i a0 = _mm256_setzero_si256(), a1 = _mm256_setzero_si256();
  size_t i = 0;
  for (; i + 8 <= len; i += 8) {
    if constexpr (kPrefetch) {
      _mm_prefetch(reinterpret_cast<const char*>(q + i + 512), _MM_HINT_T1);
      _mm_prefetch(reinterpret_cast<const char*>(q + i + 2048), _MM_HINT_T2);
    }
    a0 = _mm256_add_epi64(a0, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + i)));
    a1 = _mm256_add_epi64(a1, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + i + 4)));
  }
  alignas(32) uint64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), _mm256_add_epi64(a0, a1));
  uint64_t total = lanes[0] + lanes[1] + lanes[2] + lanes[3];
  for (; i < len; ++i) total += q[i];
  return total;
}
uint64_t sum_words_plain(const uint64_t* q, size_t len) {
  uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  size_t i = 0;
  for (; i + 4 <= len; i += 4) {
    a0 += q[i];
    a1 += q[i + 1];
    a2 += q[i + 2];
    a3 += q[i + 3];
  }
  for (; i < len; ++i) a0 += q[i];
  return a0 + a1 + a2 + a3;
}

// Sums every 8-byte word of [p, p + n) over the pool's threads, with the loop that
// prefetches or the one that does not; the leading bytes up to 8-byte alignment and the tail
// are added one by one.
uint64_t sum_words(ThreadPool& pool, const uint8_t* p, size_t n, bool prefetch) {
  using SumFn = uint64_t (*)(const uint64_t*, size_t);
  static const SumFn sums[2] = {
      __builtin_cpu_supports("avx512f") ? sum_words_avx512<false> : __builtin_cpu_supports("avx2") ? sum_words_avx2<false> : sum_words_plain,
      __builtin_cpu_supports("avx512f") ? sum_words_avx512<true> : __builtin_cpu_supports("avx2") ? sum_words_avx2<true> : sum_words_plain};
  const SumFn sum_range = sums[prefetch ? 1 : 0];
  uint64_t head = 0;
  size_t lead = (8 - reinterpret_cast<uintptr_t>(p) % 8) % 8;
  lead = std::min(lead, n);
  for (size_t i = 0; i < lead; ++i) head += p[i];
  const auto* w = reinterpret_cast<const uint64_t*>(p + lead);
  const size_t nw = (n - lead) / 8;
  for (size_t i = lead + nw * 8; i < n; ++i) head += p[i];
  std::atomic<uint64_t> total{head};
  parallel_for(&pool, static_cast<int64_t>(nw), 1 << 16, [&](int64_t b, int64_t e) {
    total += sum_range(w + b, static_cast<size_t>(e - b));
  });
  return total.load();
}

}  // namespace

double measure_read_bandwidth(ThreadPool& pool, size_t bytes, int reps) {
  const size_t n = bytes / sizeof(uint64_t);
  // Huge pages, as weights moved into memory use: the best read rate the machine offers.
  HugePageBuffer mem(n * sizeof(uint64_t), "bandwidth test");
  uint64_t* const buf = reinterpret_cast<uint64_t*>(mem.data());
  // Touch every page from the threads that will read it.
  parallel_for(&pool, static_cast<int64_t>(n), 1 << 16, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) buf[i] = static_cast<uint64_t>(i);
  });
  double best = 0;
  volatile uint64_t sink = 0;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = Clock::now();
    sink = sink + sum_words(pool, mem.data(), n * sizeof(uint64_t), r % 2 == 1);
    best = std::max(best, static_cast<double>(n * sizeof(uint64_t)) / seconds_since(t0) / 1e9);
  }
  return best;
}

double measure_weight_read_bandwidth(ThreadPool& pool, const Model& m, int reps) {
  std::vector<std::pair<const uint8_t*, size_t>> ranges;
  size_t total = 0;
  for (const TensorView* t : m.all_tensors())
    if (t->data && t->nbytes > 0) ranges.emplace_back(t->data, t->nbytes);
  std::sort(ranges.begin(), ranges.end());
  ranges.erase(std::unique(ranges.begin(), ranges.end()), ranges.end());  // tied tensors
  for (const auto& r : ranges) total += r.second;
  if (total == 0) return 0;
  double best = 0;
  volatile uint64_t sink = 0;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = Clock::now();
    for (const auto& [p, n] : ranges) sink = sink + sum_words(pool, p, n, r % 2 == 1);
    best = std::max(best, static_cast<double>(total) / seconds_since(t0) / 1e9);
  }
  return best;
}

double measure_decode_kernel_bandwidth(ThreadPool& pool, const Model& m, int reps) {
  // Every matrix but the embedding (one row per token), the output matrix included (a
  // tied one shares the embedding's data and is not among all_tensors).
  std::vector<const TensorView*> mats = m.all_tensors();
  std::erase_if(mats, [&](const TensorView* t) { return t == &m.tok_embd || !t->data || t->shape.size() != 2; });
  if (m.output.data && std::find(mats.begin(), mats.end(), &m.output) == mats.end()) mats.push_back(&m.output);
  int64_t max_n = 0, max_d = 0;
  double total = 0;
  for (const TensorView* t : mats) {
    max_n = std::max(max_n, t->shape[0]);
    max_d = std::max(max_d, t->shape[1]);
    total += static_cast<double>(t->nbytes);
  }
  if (mats.empty()) return 0;
  std::vector<float> x(static_cast<size_t>(max_d)), y(static_cast<size_t>(max_n));
  std::mt19937 rng(7);
  std::normal_distribution<float> nd;
  for (float& v : x) v = nd(rng);
  double best = 0;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = Clock::now();
    for (const TensorView* t : mats) matmul(*t, x.data(), y.data(), 1, &pool);
    best = std::max(best, total / seconds_since(t0) / 1e9);
  }
  return best;
}

double peak_rss_bytes() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) * 1024.0;
}

BenchResult run_bench(const Model& model, ThreadPool& pool, const BenchOptions& o) {
  const ModelConfig& c = model.config;
  SMOE_CHECK(o.n_prompt >= 0 && o.n_gen >= 0 && o.n_prompt + o.n_gen > 0,
             "bench: -p ", o.n_prompt, " and -n ", o.n_gen, " must be >= 0, not both 0");
  SMOE_CHECK(o.reps >= 1 && o.reps <= 1000, "bench: --reps ", o.reps, " is out of range (1..1000)");
  SMOE_CHECK(o.warmup >= 0 && o.warmup <= 100, "bench: --warmup ", o.warmup, " is out of range (0..100)");
  const int64_t n_ctx = std::max<int64_t>(o.n_prompt, o.n_gen + 1);
  SMOE_CHECK(n_ctx <= c.max_seq_len, "bench: ", n_ctx, " tokens exceed the model's context ",
             c.max_seq_len);
  const double probe_before = measure_read_bandwidth(pool, size_t(1) << 30, 8);
  const double weights_before = measure_weight_read_bandwidth(pool, model, 4);
  std::mt19937_64 rng(o.seed);
  std::uniform_int_distribution<int32_t> tok(0, static_cast<int32_t>(c.vocab_size - 1));
  Session session(model, n_ctx);
  session.pool = &pool;
  std::vector<float> logits;
  std::vector<double> pp, tg;
  BenchResult r;
  // Warm-up: one untimed pass over a prompt long enough to route tokens to every expert.
  for (int w = 0; w < o.warmup; ++w) {
    std::vector<int32_t> prompt(static_cast<size_t>(std::min<int64_t>(n_ctx, std::max<int64_t>(o.n_prompt, 64))));
    for (int32_t& t : prompt) t = tok(rng);
    session.reset();
    session.forward(prompt, false, logits);
  }
  // n_gen random tokens one at a time after BOS, from an empty cache: tokens/s (those steps
  // timed phase by phase into profile when given).
  auto generate = [&](ForwardProfile* profile) {
    session.reset();
    int32_t next[1] = {c.bos_id};
    session.forward(next, false, logits);
    session.profile = profile;
    const auto t0 = Clock::now();
    for (int64_t i = 0; i < o.n_gen; ++i) {
      next[0] = tok(rng);
      session.forward(next, false, logits);
    }
    const double rate = static_cast<double>(o.n_gen) / seconds_since(t0);
    session.profile = nullptr;
    return rate;
  };
  for (int rep = 0; rep < o.reps; ++rep) {
    if (o.n_prompt > 0) {
      std::vector<int32_t> prompt(static_cast<size_t>(o.n_prompt));
      for (int32_t& t : prompt) t = tok(rng);
      session.reset();
      const auto t0 = Clock::now();
      session.forward(prompt, false, logits);
      pp.push_back(static_cast<double>(o.n_prompt) / seconds_since(t0));
    }
    if (o.n_gen > 0) tg.push_back(generate(nullptr));
  }
  if (o.profile && o.n_gen > 0) r.profile_tokens_per_s = generate(&r.decode_profile);
  r.pp_tokens_per_s = Stats::of(pp);
  r.tg_tokens_per_s = Stats::of(tg);
  r.weight_bytes_per_token = decode_weight_bytes(model);
  // KV cache read per step at the mean position 1 + n_gen / 2 (float32 K and V).
  const double kv = static_cast<double>(c.n_layers * c.kv_dim()) * 2 * 4 *
                    (1.0 + static_cast<double>(o.n_gen) / 2.0);
  r.bytes_per_token = r.weight_bytes_per_token + kv;
  r.peak_rss_bytes = peak_rss_bytes();
  // The machine's read rate drifts (other tenants, frequency: a fresh 1 GiB buffer read at
  // 30-33 GB/s for minutes, then at 44-48, on the same day): the best of the runs made
  // before and after the model's. The rate of reading the model's own weights (where their
  // pages landed, mapped or in memory) is reported beside it.
  r.read_GBps = std::max(probe_before, measure_read_bandwidth(pool, size_t(1) << 30, 8));
  r.weights_read_GBps = std::max(weights_before, measure_weight_read_bandwidth(pool, model, 4));
  r.kernel_read_GBps = measure_decode_kernel_bandwidth(pool, model, 4);
  if (r.read_GBps > 0 && o.n_gen > 0)
    r.roofline_fraction = r.tg_tokens_per_s.median * r.bytes_per_token / (r.read_GBps * 1e9);
  return r;
}

}  // namespace smoe
