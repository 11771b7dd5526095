// bench.h: measurements behind `smoe bench`: prompt-processing and generation speed of a
// model, the machine's memory read bandwidth, and the decode roofline (weight bytes read
// per generated token against that bandwidth).
#pragma once
#include <cstdint>
#include <vector>

#include "core/thread_pool.h"
#include "model/model.h"
#include "model/transformer.h"

namespace smoe {

struct BenchOptions {
  int64_t n_prompt = 512;  // tokens processed in one forward pass
  int64_t n_gen = 64;      // tokens generated one at a time
  int reps = 3;
  // Untimed passes first, so the timed ones find the weights paged in and caches warm.
  int warmup = 1;
  uint64_t seed = 1;
  // After the timed runs, one more generation of n_gen tokens with each phase of the
  // forward pass timed (BenchResult::decode_profile).
  bool profile = false;
};

struct Stats {
  double median = 0, min = 0, max = 0;
  static Stats of(std::vector<double> v);
};

struct BenchResult {
  Stats pp_tokens_per_s, tg_tokens_per_s;
  double bytes_per_token = 0;  // weights + KV cache read per generated token (mean)
  double weight_bytes_per_token = 0;
  double read_GBps = 0;          // read rate of a fresh 1 GiB huge-page buffer (the bound)
  double weights_read_GBps = 0;  // read rate of the model's weights (plain sums, all threads)
  double kernel_read_GBps = 0;   // read rate of the decode kernels over the model's matrices
  double roofline_fraction = 0;  // tg tokens/s x bytes per token / bandwidth
  double peak_rss_bytes = 0;
  ForwardProfile decode_profile;  // with BenchOptions::profile: n_gen decode steps
  double profile_tokens_per_s = 0;  // that run's speed (timing each phase costs under 1 us a step)
};

// Bytes of weights one decode step reads: attention, norms, router, the K used experts of
// every layer (taking the mean expert size), the output matrix and one embedding row.
double decode_weight_bytes(const Model& model);
// Best of `reps` timed parallel reads over a buffer of `bytes` (GB/s, 1e9 bytes), the reps
// alternating between a loop without and one with software prefetches.
double measure_read_bandwidth(ThreadPool& pool, size_t bytes = size_t(1) << 30, int reps = 5);
// GB/s of reading every weight tensor of m once (best of reps passes, alternating as above).
double measure_weight_read_bandwidth(ThreadPool& pool, const Model& m, int reps = 4);
// GB/s of the decode matrix-vector products (one token) over every matrix of m once, all
// experts included (best of reps passes): what the kernels alone reach, against which the
// rest of a decode step (attention, norms, routing, synchronisation) can be judged.
double measure_decode_kernel_bandwidth(ThreadPool& pool, const Model& m, int reps = 4);
// Peak resident set size of this process so far.
double peak_rss_bytes();

BenchResult run_bench(const Model& model, ThreadPool& pool, const BenchOptions& opts);

}  // namespace smoe
