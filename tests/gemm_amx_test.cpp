// gemm_amx_test.cpp: the AMX-BF16 products of f16/bf16 weights (kernels/gemm_amx.h) against
// float32 arithmetic in double precision (within the split's ~2^-16 per product), over token
// counts around the 16-token tiles and 4-tile chunks and row lengths around the 1024-value
// segments; a row's results do not depend on the other tokens or on the thread split; matmul
// uses them from 16 tokens on; bad shapes are refused. Skipped without AMX-BF16.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "core/thread_pool.h"
#include "kernels/dequant.h"
#include "kernels/gemm_amx.h"
#include "kernels/ops.h"
#include "kernels/quantize.h"
#include "test_util.h"

namespace smoe {
namespace {

using test::randn;

#define SKIP_WITHOUT_AMX()                                                          \
  do {                                                                              \
    if (!amx_available()) GTEST_SKIP() << "no AMX-BF16 on this CPU (or SMOE_AMX=0)"; \
  } while (0)

struct Rows {
  std::vector<uint8_t> bytes;
  std::vector<float> values;  // the rows as stored, dequantized
};
Rows make_rows(DType t, int64_t N, int64_t D, uint64_t seed) {
  Rows r;
  const size_t rb = row_bytes(t, D);
  r.bytes.resize(rb * static_cast<size_t>(N));
  r.values.resize(static_cast<size_t>(N * D));
  std::vector<float> w = randn(static_cast<size_t>(N * D), seed);
  for (float& v : w) v *= 0.05f;
  for (int64_t i = 0; i < N; ++i) {
    quantize_row(t, w.data() + i * D, r.bytes.data() + i * rb, D);
    dequantize_row(t, r.bytes.data() + i * rb, r.values.data() + i * D, D);
  }
  return r;
}

// A [N, D] view of the rows.
TensorView view_of(DType t, const Rows& r, int64_t N, int64_t D) {
  TensorView v;
  v.dtype = t;
  v.shape = {N, D};
  v.data = r.bytes.data();
  v.nbytes = r.bytes.size();
  return v;
}

// y[t][n] against the double-precision dot of the stored rows: |error| <= 1e-4 of the sum of
// |w x| (the split leaves out ~2^-16 of each product; float32 sums add their own rounding).
void expect_close(const Rows& w, const std::vector<float>& x, const std::vector<float>& y, int64_t T, int64_t N,
                  int64_t D, const char* what) {
  for (int64_t t = 0; t < T; ++t)
    for (int64_t n = 0; n < N; ++n) {
      double dot = 0, mag = 0;
      for (int64_t k = 0; k < D; ++k) {
        const double p = static_cast<double>(w.values[static_cast<size_t>(n * D + k)]) * x[static_cast<size_t>(t * D + k)];
        dot += p;
        mag += std::fabs(p);
      }
      ASSERT_NEAR(y[static_cast<size_t>(t * N + n)], dot, 1e-4 * mag + 1e-30) << what << " token " << t << " row " << n;
    }
}

TEST(GemmAmx, ProductsMatchDoublePrecisionDots) {
  SKIP_WITHOUT_AMX();
  for (DType t : {DType::F16, DType::BF16}) {
    for (int64_t D : {32, 96, 1056}) {
      const int64_t N = 48;
      const Rows w = make_rows(t, N, D, 5 + static_cast<uint64_t>(D));
      for (int64_t T : {1, 15, 16, 17, 64, 65, 100}) {
        const std::vector<float> x = randn(static_cast<size_t>(T * D), 7 + static_cast<uint64_t>(T));
        AmxActivations xa;
        prepare_amx_activations(x.data(), T, D, xa, nullptr);
        EXPECT_EQ(xa.Tpad % 16, 0);
        std::vector<float> y(static_cast<size_t>(T * N), -7.f);
        gemm_amx(t, w.bytes.data(), row_bytes(t, D), N / 16, xa, y.data(), N);
        const std::string what = std::string(dtype_name(t)) + " D=" + std::to_string(D) + " T=" + std::to_string(T);
        expect_close(w, x, y, T, N, D, what.c_str());
      }
    }
  }
}

// A token's results are the same bits whatever the other tokens and the row split are.
TEST(GemmAmx, ResultsDoNotDependOnBatchOrSplit) {
  SKIP_WITHOUT_AMX();
  const int64_t N = 128, D = 2080;
  for (DType t : {DType::F16, DType::BF16}) {
    const Rows w = make_rows(t, N, D, 21);
    const std::vector<float> x = randn(static_cast<size_t>(70 * D), 22);
    const TensorView v = view_of(t, w, N, D);
    ThreadPool one(1), three(3);
    std::vector<float> y70(static_cast<size_t>(70 * N)), y17(static_cast<size_t>(17 * N));
    matmul(v, x.data(), y70.data(), 70, &three);
    matmul(v, x.data(), y17.data(), 17, &one);
    ASSERT_EQ(std::memcmp(y70.data(), y17.data(), y17.size() * 4), 0) << dtype_name(t);
  }
}

// matmul takes the tiles from 16 tokens on (and agrees with its float path there).
TEST(GemmAmx, MatmulUsesTilesFrom16Tokens) {
  SKIP_WITHOUT_AMX();
  const int64_t N = 64, D = 256;
  const Rows w = make_rows(DType::F16, N, D, 31);
  const TensorView v = view_of(DType::F16, w, N, D);
  ThreadPool pool(2);
  for (int64_t T : {15, 16, 40}) {
    const std::vector<float> x = randn(static_cast<size_t>(T * D), 32);
    std::vector<float> ya(static_cast<size_t>(T * N)), yf(ya.size()), yt(ya.size());
    matmul(v, x.data(), ya.data(), T, &pool);
    set_amx_enabled(false);
    matmul(v, x.data(), yf.data(), T, &pool);
    set_amx_enabled(true);
    AmxActivations xa;
    prepare_amx_activations(x.data(), T, D, xa, &pool);
    gemm_amx(DType::F16, w.bytes.data(), row_bytes(DType::F16, D), N / 16, xa, yt.data(), N);
    const bool same_as_tiles = std::memcmp(ya.data(), yt.data(), ya.size() * 4) == 0;
    EXPECT_EQ(same_as_tiles, T >= 16) << "T=" << T;
    expect_close(w, x, yf, T, N, D, "float path");
    expect_close(w, x, ya, T, N, D, "matmul");
  }
}

// matmul_shared splits the activations once for all its f16/bf16 weights and runs one loop:
// the same bits as one matmul each (a mix with f32 falls back to one matmul each).
TEST(GemmAmx, SharedInputProductsEqualSeparateOnes) {
  SKIP_WITHOUT_AMX();
  const int64_t D = 1088, T = 37;
  const DType types[3] = {DType::F16, DType::BF16, DType::F16};
  const int64_t rows[3] = {112, 48, 80};
  Rows w[3];
  TensorView v[3];
  for (int i = 0; i < 3; ++i) {
    w[i] = make_rows(types[i], rows[i], D, 40 + static_cast<uint64_t>(i));
    v[i] = view_of(types[i], w[i], rows[i], D);
  }
  ThreadPool pool(3);
  const std::vector<float> x = randn(static_cast<size_t>(T * D), 41);
  std::vector<float> ys[3], yr[3];
  for (int i = 0; i < 3; ++i) {
    ys[i].assign(static_cast<size_t>(T * rows[i]), -1.f);
    yr[i].assign(ys[i].size(), -2.f);
    matmul(v[i], x.data(), yr[i].data(), T, &pool);
  }
  matmul_shared({&v[0], &v[1], &v[2]}, x.data(), {ys[0].data(), ys[1].data(), ys[2].data()}, T, &pool);
  for (int i = 0; i < 3; ++i)
    ASSERT_EQ(std::memcmp(ys[i].data(), yr[i].data(), ys[i].size() * 4), 0) << "matrix " << i;
}

TEST(GemmAmx, RefusesOtherTypesAndShapes) {
  SKIP_WITHOUT_AMX();
  EXPECT_TRUE(amx_supports(DType::F16, 16, 32));
  EXPECT_TRUE(amx_supports(DType::BF16, 14336, 4096));
  EXPECT_FALSE(amx_supports(DType::F32, 16, 32));
  EXPECT_FALSE(amx_supports(DType::Q8_0, 16, 32));
  EXPECT_FALSE(amx_supports(DType::F16, 24, 32));
  EXPECT_FALSE(amx_supports(DType::F16, 16, 48));
  const std::vector<float> x = randn(64, 1);
  AmxActivations xa;
  EXPECT_THROW(prepare_amx_activations(x.data(), 2, 24, xa, nullptr), Error);
  prepare_amx_activations(x.data(), 2, 32, xa, nullptr);
  std::vector<uint8_t> w(16 * 64);
  std::vector<float> y(64);
  EXPECT_THROW(gemm_amx(DType::F32, w.data(), 128, 1, xa, y.data(), 16), Error);
  EXPECT_THROW(gemm_amx(DType::F16, w.data(), 32, 1, xa, y.data(), 16), Error);  // rows 64 bytes apart
  set_amx_enabled(false);
  EXPECT_FALSE(amx_supports(DType::F16, 16, 32));
  EXPECT_THROW(gemm_amx(DType::F16, w.data(), 64, 1, xa, y.data(), 16), Error);
  set_amx_enabled(true);
}

}  // namespace
}  // namespace smoe
