// gemm_x16_test.cpp: the 16-row repacked q8_0/q4_0 layout (kernels/gemm_x16.h): repacking
// round-trips every row, the VNNI kernel equals the int8 GEMM reference bit for bit for
// every token count of its passes and tiles, and matmul / embedding_row on repacked views
// agree with the unpacked tensors. Skipped on CPUs without AVX-512 VNNI.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "core/error.h"
#include "core/thread_pool.h"
#include "kernels/dequant.h"
#include "kernels/gemm_x16.h"
#include "kernels/ops.h"
#include "kernels/quantize.h"

namespace smoe {
namespace {

std::vector<float> randn(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

std::vector<uint8_t> make_rows(DType t, int64_t rows, int64_t D, uint64_t seed) {
  const size_t rb = row_bytes(t, D);
  std::vector<uint8_t> buf(rb * static_cast<size_t>(rows));
  const std::vector<float> w = randn(static_cast<size_t>(rows * D), seed);
  for (int64_t r = 0; r < rows; ++r) quantize_row(t, w.data() + r * D, buf.data() + r * rb, D);
  return buf;
}

#define SKIP_WITHOUT_VNNI()                                                   \
  do {                                                                        \
    if (!int8_gemm_fast()) GTEST_SKIP() << "no AVX-512 VNNI on this CPU";     \
  } while (0)

TEST(GemmX16, SupportsOnlyWholeGroupsOfQ8AndQ4) {
  SKIP_WITHOUT_VNNI();
  EXPECT_TRUE(x16_supports(DType::Q8_0, 16, 32));
  EXPECT_TRUE(x16_supports(DType::Q4_0, 14336, 4096));
  EXPECT_FALSE(x16_supports(DType::Q8_0, 17, 32));
  EXPECT_FALSE(x16_supports(DType::Q8_0, 0, 32));
  EXPECT_FALSE(x16_supports(DType::Q4_K, 16, 256));
  EXPECT_FALSE(x16_supports(DType::F32, 16, 32));
  std::vector<uint8_t> a(64), b(64);
  EXPECT_THROW(repack_x16(DType::Q8_0, a.data(), b.data(), 15, 32), Error);
  EXPECT_THROW(repack_x16(DType::F16, a.data(), b.data(), 16, 32), Error);
}

TEST(GemmX16, RepackRoundTripsEveryRow) {
  for (DType t : {DType::Q8_0, DType::Q4_0}) {
    const int64_t N = 48, D = 96;
    const std::vector<uint8_t> w = make_rows(t, N, D, 5);
    std::vector<uint8_t> p(w.size());
    repack_x16(t, w.data(), p.data(), N, D);
    EXPECT_NE(std::memcmp(p.data(), w.data(), w.size()), 0);
    const size_t rb = row_bytes(t, D);
    std::vector<uint8_t> row(rb);
    for (int64_t r = 0; r < N; ++r) {
      unpack_x16_row(t, p.data(), D, r, row.data());
      ASSERT_EQ(std::memcmp(row.data(), w.data() + r * rb, rb), 0) << dtype_name(t) << " row " << r;
    }
  }
}

TEST(GemmX16, KernelEqualsInt8GemmReferenceBitForBit) {
  SKIP_WITHOUT_VNNI();
  for (DType t : {DType::Q8_0, DType::Q4_0}) {
    for (int64_t D : {32, 96, 512}) {
      for (int64_t N : {16, 48}) {
        // Every pass width 1-8, several passes, and a second 64-token block.
        for (int64_t T : {1, 2, 3, 4, 5, 6, 7, 8, 9, 17, 70}) {
          const std::vector<uint8_t> w = make_rows(t, N, D, 11 + static_cast<uint64_t>(D));
          std::vector<uint8_t> p(w.size());
          repack_x16(t, w.data(), p.data(), N, D);
          const std::vector<float> x = randn(static_cast<size_t>(T * D), 3 + static_cast<uint64_t>(T));
          Int8Activations xa, xa1;
          quantize_activations(x.data(), T, D, xa);       // padded, for the reference
          quantize_activations(x.data(), T, D, xa1, 1);   // unpadded, as matmul calls it
          EXPECT_EQ(xa1.Tpad, T);
          std::vector<float> y(static_cast<size_t>(T * N), -7.f), yr(y.size());
          gemm_x16(t, p.data(), N / 16, xa1, y.data(), N);
          gemm_int8_panel_ref(t, w.data(), N, xa, yr.data(), N);
          ASSERT_EQ(std::memcmp(y.data(), yr.data(), y.size() * 4), 0)
              << dtype_name(t) << " D=" << D << " N=" << N << " T=" << T;
        }
      }
    }
  }
}

TEST(GemmX16, MatmulAndEmbeddingOnRepackedViews) {
  SKIP_WITHOUT_VNNI();
  ThreadPool pool(3);
  for (DType t : {DType::Q8_0, DType::Q4_0}) {
    const int64_t N = 80, D = 256;
    const std::vector<uint8_t> w = make_rows(t, N, D, 21);
    std::vector<uint8_t> p(w.size());
    repack_x16(t, w.data(), p.data(), N, D);
    TensorView plain;
    plain.dtype = t;
    plain.shape = {N, D};
    plain.data = w.data();
    plain.nbytes = w.size();
    TensorView packed = plain;
    packed.data = p.data();
    packed.x16 = true;
    for (int64_t T : {1, 2, 3, 4, 12}) {
      const std::vector<float> x = randn(static_cast<size_t>(T * D), 40 + static_cast<uint64_t>(T));
      std::vector<float> y(static_cast<size_t>(T * N)), y1(y.size()), yr(y.size()), yp(y.size());
      matmul(packed, x.data(), y.data(), T, &pool);
      matmul(packed, x.data(), y1.data(), T, nullptr);
      matmul_ref(plain, x.data(), yr.data(), T, nullptr);
      matmul_ref(packed, x.data(), yp.data(), T, nullptr);  // the reference unpacks rows
      ASSERT_EQ(std::memcmp(y.data(), y1.data(), y.size() * 4), 0) << dtype_name(t) << " T=" << T;
      ASSERT_EQ(std::memcmp(yr.data(), yp.data(), y.size() * 4), 0) << dtype_name(t) << " T=" << T;
      for (size_t i = 0; i < y.size(); ++i)
        ASSERT_NEAR(y[i], yr[i], 0.5) << dtype_name(t) << " T=" << T << " i=" << i;
    }
    std::vector<float> a(static_cast<size_t>(D)), b(a.size());
    for (int64_t r : {0, 15, 16, 79}) {
      embedding_row(plain, r, a.data());
      embedding_row(packed, r, b.data());
      ASSERT_EQ(std::memcmp(a.data(), b.data(), a.size() * 4), 0) << dtype_name(t) << " row " << r;
    }
  }
}

}  // namespace
}  // namespace smoe
