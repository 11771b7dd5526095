// gemm_x16_test.cpp: the 16-row repacked q8_0/q4_0/q2_K/q3_K/q4_K/q5_K/q6_K layouts
// (kernels/gemm_x16.h): repacking round-trips every row, the VNNI kernels equal their scalar
// references bit for bit for every token count of their passes and tiles, the K-quant
// reference agrees with float dot products of the dequantized rows, and matmul /
// embedding_row on repacked views agree with the unpacked tensors. Skipped on CPUs without
// AVX-512 VNNI.
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
#include "test_util.h"

namespace smoe {
namespace {

using test::randn;

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
  EXPECT_TRUE(x16_supports(DType::Q4_K, 16, 256));
  EXPECT_TRUE(x16_supports(DType::Q6_K, 14336, 4096));
  EXPECT_FALSE(x16_supports(DType::Q5_K, 16, 96));
  EXPECT_FALSE(x16_supports(DType::Q4_K, 8, 256));
  EXPECT_TRUE(x16_supports(DType::Q2_K, 14336, 4096));
  EXPECT_TRUE(x16_supports(DType::Q3_K, 16, 256));
  EXPECT_FALSE(x16_supports(DType::Q3_K, 16, 128));
  EXPECT_FALSE(x16_supports(DType::Q2_K, 24, 256));
  EXPECT_FALSE(x16_supports(DType::F32, 16, 32));
  std::vector<uint8_t> a(64), b(64);
  EXPECT_THROW(repack_x16(DType::Q8_0, a.data(), b.data(), 15, 32), Error);
  EXPECT_THROW(repack_x16(DType::F16, a.data(), b.data(), 16, 32), Error);
  EXPECT_THROW(repack_x16(DType::Q4_K, a.data(), b.data(), 16, 32), Error);
  EXPECT_THROW(repack_x16(DType::Q3_K, a.data(), b.data(), 16, 32), Error);
}

constexpr DType kAllTypes[] = {DType::Q8_0, DType::Q4_0, DType::Q2_K, DType::Q3_K,
                               DType::Q4_K, DType::Q5_K, DType::Q6_K};
constexpr DType kKTypes[] = {DType::Q2_K, DType::Q3_K, DType::Q4_K, DType::Q5_K, DType::Q6_K};
// The activation quantizations the K-quant kernels take for t (superblocks = false, true):
// q2_K/q3_K need super-blocks, q4_K takes either (two arithmetics), q5_K/q6_K per 32 values.
std::vector<bool> superblock_modes(DType t) {
  if (t == DType::Q2_K || t == DType::Q3_K) return {true};
  if (t == DType::Q4_K) return {false, true};
  return {false};
}

// Repacking only moves bits: rows of arbitrary bytes (every scale, mask and value bit
// random, not only what a quantizer writes) come back unchanged.
TEST(GemmX16, RepackRoundTripsArbitraryBytes) {
  std::mt19937_64 rng(11);
  for (DType t : kAllTypes) {
    const int64_t N = 32, D = 768;
    const size_t rb = row_bytes(t, D);
    std::vector<uint8_t> w(rb * N), p(w.size()), row(rb);
    for (uint8_t& b : w) b = static_cast<uint8_t>(rng());
    repack_x16(t, w.data(), p.data(), N, D);
    for (int64_t r = 0; r < N; ++r) {
      unpack_x16_row(t, p.data(), D, r, row.data());
      ASSERT_EQ(std::memcmp(row.data(), w.data() + r * rb, rb), 0) << dtype_name(t) << " row " << r;
    }
  }
}

TEST(GemmX16, RepackRoundTripsEveryRow) {
  for (DType t : kAllTypes) {
    const int64_t N = 48, D = x16_kquant(t) ? 512 : 96;
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
      for (int64_t N : {16, 48, 112}) {
        // Every pass width 1-8, several passes, and a second 64-token block (T = 65 ends
        // with a one-token block: groups in decode passes of several, then the rest).
        for (int64_t T : {1, 2, 3, 4, 5, 6, 7, 8, 9, 17, 65, 70}) {
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

TEST(GemmX16, KQuantKernelEqualsItsReferenceBitForBit) {
  SKIP_WITHOUT_VNNI();
  for (DType t : kKTypes) {
    for (int64_t D : {256, 768}) {
      for (int64_t N : {16, 48, 112}) {
        for (int64_t T : {1, 2, 3, 4, 5, 6, 7, 8, 9, 17, 65, 70}) {
          const std::vector<uint8_t> w = make_rows(t, N, D, 13 + static_cast<uint64_t>(D));
          std::vector<uint8_t> p(w.size());
          repack_x16(t, w.data(), p.data(), N, D);
          const std::vector<float> x = randn(static_cast<size_t>(T * D), 5 + static_cast<uint64_t>(T));
          for (bool sb : superblock_modes(t)) {
            const std::string what = std::string(dtype_name(t)) + " D=" + std::to_string(D) + " N=" +
                                     std::to_string(N) + " T=" + std::to_string(T) + (sb ? " per-256" : "");
            Int8Activations xa;
            quantize_activations(x.data(), T, D, xa, 1, nullptr, sb);
            std::vector<float> y(static_cast<size_t>(T * N), -7.f), yr(y.size(), -9.f);
            gemm_x16(t, p.data(), N / 16, xa, y.data(), N);
            gemm_x16_kquant_ref(t, w.data(), N, xa, yr.data(), N);
            ASSERT_EQ(std::memcmp(y.data(), yr.data(), y.size() * 4), 0) << what;
            if (x16_gfni_active()) {  // q2_K/q3_K planes, q6_K high bits: also the shifts GFNI replaces
              set_x16_gfni_enabled(false);
              std::fill(y.begin(), y.end(), -7.f);
              gemm_x16(t, p.data(), N / 16, xa, y.data(), N);
              set_x16_gfni_enabled(true);
              ASSERT_EQ(std::memcmp(y.data(), yr.data(), y.size() * 4), 0) << what << " without GFNI";
            }
          }
        }
      }
    }
  }
}

// The reference's integer arithmetic is the dot product of the dequantized row with the
// int8 activations times their scales: compare with that dot in double precision (only
// float rounding differs), and with the float activations (plus the int8 rounding).
TEST(GemmX16, KQuantReferenceMatchesFloatDots) {
  for (DType t : kKTypes)
    for (bool sb : superblock_modes(t)) {
      const int64_t N = 16, D = 512, T = 3;
      const std::vector<uint8_t> w = make_rows(t, N, D, 17);
      const std::vector<float> x = randn(static_cast<size_t>(T * D), 19);
      Int8Activations xa;
      quantize_activations(x.data(), T, D, xa, 16, nullptr, sb);  // padding tokens must be ignored
      std::vector<float> y(static_cast<size_t>(T * N));
      gemm_x16_kquant_ref(t, w.data(), N, xa, y.data(), N);
      std::vector<float> row(static_cast<size_t>(D));
      for (int64_t r = 0; r < N; ++r) {
        dequantize_row(t, w.data() + r * row_bytes(t, D), row.data(), D);
        for (int64_t k = 0; k < T; ++k) {
          double dq = 0, dot = 0, mag = 0;
          for (int64_t i = 0; i < D; ++i) {
            const int64_t b = i / 32, v = i % 32;
            const size_t qi = static_cast<size_t>(((b * 8 + v / 4) * xa.Tpad + k) * 4 + v % 4);
            const double xi = sb ? static_cast<double>(xa.d256[static_cast<size_t>(i / 256 * xa.Tpad + k)]) * xa.q256[qi]
                                 : static_cast<double>(xa.d[static_cast<size_t>(b * xa.Tpad + k)]) * xa.q[qi];
            const double wi = row[static_cast<size_t>(i)];
            dq += wi * xi;
            dot += wi * x[static_cast<size_t>(k * D + i)];
            mag += std::fabs(wi * xi);
          }
          const float got = y[static_cast<size_t>(k * N + r)];
          ASSERT_NEAR(got, dq, mag * 1e-5 + 1e-5) << dtype_name(t) << " row " << r << " token " << k;
          ASSERT_NEAR(got, dot, 0.05 * std::sqrt(static_cast<double>(D))) << dtype_name(t) << " row " << r;
        }
      }
    }
}

// matmul_shared runs several repacked products of one input as one parallel loop (its tasks
// cross from matrix to matrix inside the pool's chunks): the same bits as one matmul each,
// also when one weight is not repacked (then it is one matmul each).
TEST(GemmX16, SharedInputProductsEqualSeparateOnes) {
  SKIP_WITHOUT_VNNI();
  ThreadPool pool(3);
  // 256 KB tasks: 3 groups of q8_0 rows, 7 of q4_K or q4_0, so 9 + 4 + 1 tasks, which 3
  // threads take 2 at a time (two of those pairs straddle two matrices).
  const int64_t D = 4096;
  const DType types[3] = {DType::Q8_0, DType::Q4_K, DType::Q4_0};
  const int64_t rows[3] = {432, 352, 112};
  std::vector<std::vector<uint8_t>> plain(3), packed(3);
  TensorView views[3], unpacked[3];
  for (int i = 0; i < 3; ++i) {
    plain[i] = make_rows(types[i], rows[i], D, 50 + static_cast<uint64_t>(i));
    packed[i].resize(plain[i].size());
    repack_x16(types[i], plain[i].data(), packed[i].data(), rows[i], D);
    unpacked[i].dtype = types[i];
    unpacked[i].shape = {rows[i], D};
    unpacked[i].data = plain[i].data();
    unpacked[i].nbytes = plain[i].size();
    views[i] = unpacked[i];
    views[i].data = packed[i].data();
    views[i].x16 = true;
  }
  for (int64_t T : {1, 3, 9}) {
    const std::vector<float> x = randn(static_cast<size_t>(T * D), 60 + static_cast<uint64_t>(T));
    std::vector<float> ys[3], yr[3];
    for (int i = 0; i < 3; ++i) {
      ys[i].assign(static_cast<size_t>(T * rows[i]), -1.f);
      yr[i].assign(ys[i].size(), -2.f);
      matmul(views[i], x.data(), yr[i].data(), T, &pool);
    }
    matmul_shared({&views[0], &views[1], &views[2]}, x.data(), {ys[0].data(), ys[1].data(), ys[2].data()}, T, &pool);
    for (int i = 0; i < 3; ++i)
      ASSERT_EQ(std::memcmp(ys[i].data(), yr[i].data(), ys[i].size() * 4), 0) << dtype_name(types[i]) << " T=" << T;
    // One weight in the file layout: separate products.
    std::vector<float> y0(ys[0].size()), y1(ys[1].size()), y1r(ys[1].size());
    matmul(unpacked[1], x.data(), y1r.data(), T, &pool);
    matmul_shared({&views[0], &unpacked[1]}, x.data(), {y0.data(), y1.data()}, T, &pool);
    ASSERT_EQ(std::memcmp(y0.data(), yr[0].data(), y0.size() * 4), 0) << "T=" << T;
    ASSERT_EQ(std::memcmp(y1.data(), y1r.data(), y1.size() * 4), 0) << "T=" << T;
  }
  EXPECT_THROW(matmul_shared({&views[0]}, nullptr, {}, 1, &pool), Error);
}

TEST(GemmX16, MatmulAndEmbeddingOnRepackedViews) {
  SKIP_WITHOUT_VNNI();
  ThreadPool pool(3);
  for (DType t : kAllTypes) {
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
