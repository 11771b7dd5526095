// microbench.cpp: kernel microbenchmarks (Google Benchmark) for the pieces `smoe bench` does
// not isolate: one token's product on the repacked x16 kernels with the weights resident in
// L1 (the compute rate decode is bound by once memory is fast enough), repacking GGUF rows
// into the x16 layout (load time), and quantizing float rows (`smoe quantize`/`synth`).
//   build/smoe_microbench [--benchmark_filter=Decode] [--benchmark_repetitions=5]
// Rates are bytes of weights (decode, repack) or float values (quantize) per second, one
// thread. Compare builds alternately on a shared machine: its speed moves between runs.
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "core/dtype.h"
#include "kernels/gemm_int8.h"
#include "kernels/gemm_x16.h"
#include "kernels/quantize.h"

namespace {

using namespace smoe;

std::vector<float> gaussian(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> v(n);
  for (float& x : v) x = nd(rng);
  return v;
}

// rows x D Gaussian weights quantized to t (GGUF rows).
std::vector<uint8_t> quantized_rows(DType t, int64_t rows, int64_t D) {
  const std::vector<float> w = gaussian(static_cast<size_t>(rows * D), 1);
  const size_t rb = row_bytes(t, D);
  std::vector<uint8_t> out(rb * static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) quantize_row(t, w.data() + r * D, out.data() + r * rb, D);
  return out;
}

// One token against 2 row groups of D = 1024 (11-26 KB of weights: L1-resident).
void Decode(benchmark::State& state, DType t) {
  constexpr int64_t D = 1024, groups = 2, N = 16 * groups;
  if (!x16_supports(t, N, D)) {
    state.SkipWithError("no AVX-512 VNNI on this CPU");
    return;
  }
  const std::vector<uint8_t> rows = quantized_rows(t, N, D);
  std::vector<uint8_t> packed(rows.size());
  repack_x16(t, rows.data(), packed.data(), N, D);
  const std::vector<float> x = gaussian(D, 2);
  Int8Activations xa;
  quantize_activations(x.data(), 1, D, xa, 1, nullptr, /*superblocks=*/true);
  std::vector<float> y(N);
  for (auto _ : state) {
    gemm_x16(t, packed.data(), groups, xa, y.data(), N);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(packed.size()));
}

// GGUF rows into the x16 layout, 256 rows of 4096.
void Repack(benchmark::State& state, DType t) {
  constexpr int64_t N = 256, D = 4096;
  const std::vector<uint8_t> rows = quantized_rows(t, N, D);
  std::vector<uint8_t> packed(rows.size());
  for (auto _ : state) {
    repack_x16(t, rows.data(), packed.data(), N, D);
    benchmark::DoNotOptimize(packed.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(rows.size()));
}

// 16 float rows of 4096 into t.
void Quantize(benchmark::State& state, DType t) {
  constexpr int64_t N = 16, D = 4096;
  const std::vector<float> w = gaussian(static_cast<size_t>(N * D), 3);
  const size_t rb = row_bytes(t, D);
  std::vector<uint8_t> out(rb * N);
  for (auto _ : state) {
    for (int64_t r = 0; r < N; ++r) quantize_row(t, w.data() + r * D, out.data() + r * rb, D);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * N * D);
}

#define SMOE_FOR_X16_TYPES(BM)                                                                            \
  BENCHMARK_CAPTURE(BM, q8_0, DType::Q8_0);                                                               \
  BENCHMARK_CAPTURE(BM, q4_0, DType::Q4_0);                                                               \
  BENCHMARK_CAPTURE(BM, q2_K, DType::Q2_K);                                                               \
  BENCHMARK_CAPTURE(BM, q3_K, DType::Q3_K);                                                               \
  BENCHMARK_CAPTURE(BM, q4_K, DType::Q4_K);                                                               \
  BENCHMARK_CAPTURE(BM, q5_K, DType::Q5_K);                                                               \
  BENCHMARK_CAPTURE(BM, q6_K, DType::Q6_K)

SMOE_FOR_X16_TYPES(Decode);
SMOE_FOR_X16_TYPES(Repack);
SMOE_FOR_X16_TYPES(Quantize);

}  // namespace

BENCHMARK_MAIN();
