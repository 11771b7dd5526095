// gemm_amx_kquant_test.cpp: K-quant (q2_K..q6_K) products on AMX-INT8 tiles (kernels/gemm_amx_kquant.h):
// the activation quantization and the tile kernel equal their scalar references bit for bit
// over token counts around the 16-token tiles, 2-tile chunks and 256-token blocks; the
// results stay within the activations' rounding bound of double-precision dots; matmul takes
// the tiles from each type's threshold on; bad shapes and types are refused. Skipped without AMX-INT8.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/thread_pool.h"
#include "kernels/dequant.h"
#include "kernels/gemm_amx.h"
#include "kernels/gemm_amx_kquant.h"
#include "kernels/gemm_int8.h"
#include "kernels/gemm_x16.h"
#include "kernels/ops.h"
#include "kernels/quantize.h"
#include "test_util.h"

namespace smoe {
namespace {

using test::randn;

#define SKIP_WITHOUT_AMX_INT8()                                                                 \
  do {                                                                                          \
    if (!amx_int8_available()) GTEST_SKIP() << "no AMX-INT8 on this CPU (or SMOE_AMX=0)";      \
  } while (0)

constexpr DType kTypes[] = {DType::Q2_K, DType::Q3_K, DType::Q4_K, DType::Q5_K, DType::Q6_K};

// N GGUF rows of type t, their repacked copy, and their values.
struct Rows {
  std::vector<uint8_t> gguf, packed;
  std::vector<float> values;
};
Rows make_rows(DType t, int64_t N, int64_t D, uint64_t seed) {
  Rows r;
  const size_t rb = row_bytes(t, D);
  r.gguf.resize(rb * static_cast<size_t>(N));
  r.packed.resize(r.gguf.size());
  r.values.resize(static_cast<size_t>(N * D));
  const std::vector<float> w = randn(static_cast<size_t>(N * D), seed);
  for (int64_t i = 0; i < N; ++i) {
    quantize_row(t, w.data() + i * D, r.gguf.data() + i * rb, D);
    dequantize_row(t, r.gguf.data() + i * rb, r.values.data() + i * D, D);
  }
  repack_x16(t, r.gguf.data(), r.packed.data(), N, D);
  return r;
}

TensorView packed_view(DType t, const Rows& r, int64_t N, int64_t D) {
  TensorView v;
  v.dtype = t;
  v.shape = {N, D};
  v.data = r.packed.data();
  v.nbytes = r.packed.size();
  v.x16 = true;
  return v;
}

// Activations with a zero super-block (scale 0) and one of large values among Gaussian ones.
std::vector<float> make_x(int64_t T, int64_t D, uint64_t seed) {
  std::vector<float> x = randn(static_cast<size_t>(T * D), seed);
  if (D >= 512 && T >= 2) {
    std::fill(x.begin(), x.begin() + 256, 0.f);
    for (int64_t k = D + 256; k < D + 512; ++k) x[static_cast<size_t>(k)] *= 1000.f;
  }
  return x;
}

TEST(GemmAmxKquant, QuantizationEqualsReference) {
  SKIP_WITHOUT_AMX_INT8();
  ThreadPool pool(3);
  for (int64_t D : {256, 768})
    for (int64_t T : {1, 17, 40}) {
      const std::vector<float> x = make_x(T, D, 3 + static_cast<uint64_t>(T));
      AmxInt8Activations a, r;
      quantize_amx_activations(x.data(), T, D, a, &pool);
      quantize_amx_activations_ref(x.data(), T, D, r);
      ASSERT_EQ(a.Tpad, (T + 15) / 16 * 16);
      const size_t nq = static_cast<size_t>(a.Tpad * D), nd = static_cast<size_t>(a.Tpad * D / 256);
      ASSERT_EQ(std::memcmp(a.q.data(), r.q.data(), nq), 0) << "D=" << D << " T=" << T;
      ASSERT_EQ(std::memcmp(a.d.data(), r.d.data(), nd * 4), 0) << "D=" << D << " T=" << T;
      ASSERT_EQ(std::memcmp(a.sum16.data(), r.sum16.data(), nq / 16 * 4), 0) << "D=" << D << " T=" << T;
      // d is [token tile][super-block][16 tokens]: padding tokens have zero scales, and the
      // zeroed first super-block of token 0 too.
      for (size_t i = 0; i < nd; ++i) {
        const int64_t token = static_cast<int64_t>(i / 16 / static_cast<size_t>(D / 256) * 16 + i % 16);
        if (token >= T) {
          ASSERT_EQ(a.d[i], 0.f) << "padding token " << token;
        }
      }
      if (T >= 2 && D >= 512) {
        EXPECT_EQ(a.d[0], 0.f);
      }
    }
}

TEST(GemmAmxKquant, KernelEqualsReferenceBitForBit) {
  SKIP_WITHOUT_AMX_INT8();
  for (DType t : kTypes)
    for (int64_t D : {256, 1024}) {
      const int64_t N = 48;
      const Rows w = make_rows(t, N, D, 11 + static_cast<uint64_t>(D));
      for (int64_t T : {1, 15, 16, 17, 33, 64, 270}) {
        const std::vector<float> x = make_x(T, D, 12 + static_cast<uint64_t>(T));
        AmxInt8Activations xa;
        quantize_amx_activations(x.data(), T, D, xa, nullptr);
        std::vector<float> y(static_cast<size_t>(T * N), -7.f), yr(y.size(), -8.f);
        gemm_amx_kquant(t, w.packed.data(), N / 16, xa, y.data(), N);
        gemm_amx_kquant_ref(t, w.gguf.data(), N, xa, yr.data(), N);
        ASSERT_EQ(std::memcmp(y.data(), yr.data(), y.size() * 4), 0)
            << dtype_name(t) << " D=" << D << " T=" << T;
      }
    }
}

// Each result is the exact dot with the activations rounded to multiples of their block's
// scale dx, so its error against the double-precision dot is at most sum |w| dx / 2 (plus
// float32 rounding of the scaled sums). On Gaussian activations the mean error stays within
// 1.6x of the VNNI path's (32-value activation blocks; q2_K/q3_K, and q4_K at one token,
// the VNNI kernels also quantize per super-block and give the same bits).
TEST(GemmAmxKquant, WithinTheActivationRoundingBound) {
  SKIP_WITHOUT_AMX_INT8();
  const int64_t N = 64, D = 2048, T = 40;
  for (DType t : kTypes) {
    const Rows w = make_rows(t, N, D, 21);
    const std::vector<float> x = randn(static_cast<size_t>(T * D), 22);
    AmxInt8Activations xa;
    quantize_amx_activations(x.data(), T, D, xa, nullptr);
    std::vector<float> y(static_cast<size_t>(T * N)), yv(y.size());
    gemm_amx_kquant(t, w.packed.data(), N / 16, xa, y.data(), N);
    Int8Activations xv;  // as matmul quantizes them for T tokens
    quantize_activations(x.data(), T, D, xv, 1, nullptr, x16_superblock_activations(t, T));
    gemm_x16(t, w.packed.data(), N / 16, xv, yv.data(), N);
    double err = 0, err_vnni = 0;
    for (int64_t tk = 0; tk < T; ++tk)
      for (int64_t n = 0; n < N; ++n) {
        double dot = 0, mag = 0, bound = 0;
        for (int64_t k = 0; k < D; ++k) {
          const double wk = w.values[static_cast<size_t>(n * D + k)], xk = x[static_cast<size_t>(tk * D + k)];
          dot += wk * xk;
          mag += std::fabs(wk * xk);
          bound += std::fabs(wk) * xa.d[static_cast<size_t>(((tk / 16) * (D / 256) + k / 256) * 16 + tk % 16)] / 2;
        }
        const double e = std::fabs(y[static_cast<size_t>(tk * N + n)] - dot);
        ASSERT_LE(e, bound + 1e-5 * mag) << dtype_name(t) << " token " << tk << " row " << n;
        err += e;
        err_vnni += std::fabs(yv[static_cast<size_t>(tk * N + n)] - dot);
      }
    EXPECT_LT(err, 1.6 * err_vnni) << dtype_name(t);
    EXPECT_GT(err, 0.0) << dtype_name(t);
  }
}

// matmul on repacked views takes the tiles from the type's threshold on (the VNNI kernels
// below it, or with the tiles switched off), whatever the thread count.
TEST(GemmAmxKquant, MatmulUsesTilesFromTheThreshold) {
  SKIP_WITHOUT_AMX_INT8();
  const int64_t N = 96, D = 512;
  ThreadPool pool(3);
  for (DType t : kTypes) {
    const Rows w = make_rows(t, N, D, 31);
    const TensorView v = packed_view(t, w, N, D);
    const int64_t from = amx_kquant_min_tokens(t);
    EXPECT_GE(from, 16);
    for (int64_t T : {int64_t{1}, from - 1, from, from + 34}) {
      const std::vector<float> x = randn(static_cast<size_t>(T * D), 32 + static_cast<uint64_t>(T));
      std::vector<float> y(static_cast<size_t>(T * N)), y1(y.size()), yoff(y.size()), yt(y.size()), yv(y.size());
      matmul(v, x.data(), y.data(), T, &pool);
      matmul(v, x.data(), y1.data(), T, nullptr);
      set_amx_enabled(false);
      matmul(v, x.data(), yoff.data(), T, &pool);
      set_amx_enabled(true);
      AmxInt8Activations xa;
      quantize_amx_activations(x.data(), T, D, xa, nullptr);
      gemm_amx_kquant(t, w.packed.data(), N / 16, xa, yt.data(), N);
      const bool sb = x16_superblock_activations(t, T);
      Int8Activations xv;
      quantize_activations(x.data(), T, D, xv, 1, nullptr, sb);
      gemm_x16(t, w.packed.data(), N / 16, xv, yv.data(), N);
      const std::string what = std::string(dtype_name(t)) + " T=" + std::to_string(T);
      ASSERT_EQ(std::memcmp(y.data(), y1.data(), y.size() * 4), 0) << what;
      if (sb) {
        // The VNNI kernels' arithmetic on activations quantized per super-block (q2_K/q3_K,
        // and q4_K at one token) is the tiles' (exact integer sums per super-block): the
        // same bits either side of the threshold.
        EXPECT_EQ(std::memcmp(y.data(), yt.data(), y.size() * 4), 0) << what;
        EXPECT_EQ(std::memcmp(y.data(), yv.data(), y.size() * 4), 0) << what;
      } else {
        EXPECT_EQ(std::memcmp(y.data(), yt.data(), y.size() * 4) == 0, T >= from) << what;
        EXPECT_EQ(std::memcmp(y.data(), yv.data(), y.size() * 4) == 0, T < from) << what;
      }
      ASSERT_EQ(std::memcmp(yoff.data(), yv.data(), y.size() * 4), 0) << what;
    }
  }
}

TEST(GemmAmxKquant, RefusesOtherTypesAndShapes) {
  SKIP_WITHOUT_AMX_INT8();
  EXPECT_TRUE(amx_kquant_supports(DType::Q6_K, 14336, 4096));
  EXPECT_TRUE(amx_kquant_supports(DType::Q2_K, 16, 256));
  EXPECT_TRUE(amx_kquant_supports(DType::Q4_K, 16, 256));
  EXPECT_FALSE(amx_kquant_supports(DType::Q4_0, 16, 256));
  EXPECT_FALSE(amx_kquant_supports(DType::Q8_0, 16, 256));
  EXPECT_FALSE(amx_kquant_supports(DType::Q6_K, 24, 256));
  EXPECT_FALSE(amx_kquant_supports(DType::Q6_K, 16, 384));
  const std::vector<float> x = randn(512, 1);
  AmxInt8Activations xa;
  EXPECT_THROW(quantize_amx_activations(x.data(), 2, 128, xa, nullptr), Error);
  EXPECT_THROW(quantize_amx_activations(x.data(), 0, 256, xa, nullptr), Error);
  quantize_amx_activations(x.data(), 2, 256, xa, nullptr);
  std::vector<uint8_t> w(row_bytes(DType::Q6_K, 256) * 16);
  std::vector<float> y(32);
  EXPECT_THROW(gemm_amx_kquant(DType::Q4_0, w.data(), 1, xa, y.data(), 16), Error);
  EXPECT_THROW(gemm_amx_kquant_ref(DType::Q8_0, w.data(), 1, xa, y.data(), 16), Error);
  set_amx_enabled(false);
  EXPECT_FALSE(amx_kquant_supports(DType::Q6_K, 16, 256));
  EXPECT_THROW(gemm_amx_kquant(DType::Q6_K, w.data(), 1, xa, y.data(), 16), Error);
  EXPECT_THROW(quantize_amx_activations(x.data(), 2, 256, xa, nullptr), Error);
  set_amx_enabled(true);
}

}  // namespace
}  // namespace smoe
