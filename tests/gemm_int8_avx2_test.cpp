// gemm_int8_avx2_test.cpp: the AVX2 batch kernel for q8_0/q4_0 rows (gemm_int8_avx2.cpp)
// against gemm_int8_panel_ref bit for bit: row counts around its 2-row passes, token counts
// around its quads, misaligned rows, the 16-bit extremes; and matmul taking it for batches
// on CPUs without VNNI.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "core/thread_pool.h"
#include "kernels/cpu_features.h"
#include "kernels/gemm_int8.h"
#include "kernels/ops.h"
#include "kernels/quantize.h"
#include "test_util.h"

namespace smoe {
namespace {

using test::quantized_rows;
using test::randn;

// gemm_int8_rows_avx2 and gemm_int8_panel_ref on the same rows and activations, bit for bit.
void expect_equal(DType t, const uint8_t* w, int64_t n, const std::vector<float>& x, int64_t T, int64_t D,
                  const std::string& what) {
  Int8QuadActivations xq;
  quantize_quads(x.data(), T, D, xq);
  Int8Activations xa;
  quantize_activations_ref(x.data(), T, D, xa, 1);
  std::vector<float> y(static_cast<size_t>(T * n), -1.f), yr(y.size(), -2.f);
  gemm_int8_rows_avx2(t, w, n, xq, y.data(), n);
  gemm_int8_panel_ref(t, w, n, xa, yr.data(), n);
  ASSERT_EQ(std::memcmp(y.data(), yr.data(), y.size() * 4), 0) << what << ": " << y[0] << " vs " << yr[0];
}

TEST(GemmInt8Avx2, EqualsThePanelReferenceBitForBit) {
  if (!avx2_allowed()) GTEST_SKIP() << "no AVX2 here (or SMOE_CPU caps it off)";
  for (DType t : {DType::Q8_0, DType::Q4_0})
    for (int64_t D : {32, 96, 512})
      for (int64_t n : {1, 2, 3, 8})
        for (size_t mis : {0, 1}) {
          const std::vector<uint8_t> w = quantized_rows(t, n, D, mis, 3 + static_cast<uint64_t>(D + n));
          for (int64_t T : {1, 2, 3, 4, 5, 7, 8, 9, 13}) {
            const std::vector<float> x = randn(static_cast<size_t>(T * D), 50 + static_cast<uint64_t>(T));
            expect_equal(t, w.data() + mis, n, x, T, D,
                         std::string(dtype_name(t)) + " D=" + std::to_string(D) + " rows=" + std::to_string(n) +
                             " T=" + std::to_string(T) + " misalign " + std::to_string(mis));
          }
        }
}

// The extremes the 16-bit pair sums must hold: q8_0 weights of -128 and 127 and q4_0 nibbles
// of 15 against activations of +-127.
TEST(GemmInt8Avx2, HoldsExtremeValues) {
  if (!avx2_allowed()) GTEST_SKIP() << "no AVX2 here (or SMOE_CPU caps it off)";
  const int64_t D = 128, n = 3, T = 6;
  std::vector<float> x(static_cast<size_t>(T * D));
  for (size_t i = 0; i < x.size(); ++i) x[i] = (i / 4) % 3 ? 1.f : -1.f;
  const uint16_t one = 0x3C00;
  for (DType t : {DType::Q8_0, DType::Q4_0}) {
    const size_t rb = row_bytes(t, D), bb = dtype_info(t).block_bytes;
    std::vector<uint8_t> w(rb * n, 0xFF);
    for (size_t b = 0; b < w.size() / bb; ++b) {
      std::memcpy(&w[b * bb], &one, 2);
      if (t == DType::Q8_0)
        for (size_t k = 0; k < 32; ++k) w[b * bb + 2 + k] = (k / 4 + b) % 2 ? 0x80 : 0x7F;
    }
    expect_equal(t, w.data(), n, x, T, D, dtype_name(t));
  }
}

TEST(GemmInt8Avx2, MatmulTakesItForBatchesWithoutVnni) {
  if (!avx2_allowed() || int8_gemm_fast()) GTEST_SKIP() << "matmul takes it without AVX-512 VNNI (SMOE_CPU=avx2)";
  ThreadPool pool(2);
  const int64_t D = 256, N = 37;
  for (DType t : {DType::Q8_0, DType::Q4_0}) {
    const std::vector<uint8_t> buf = quantized_rows(t, N, D, 0, 9);
    TensorView w;
    w.dtype = t;
    w.shape = {N, D};
    w.data = buf.data();
    w.nbytes = row_bytes(t, D) * N;
    for (int64_t T : {4, 11, 40}) {
      const std::vector<float> x = randn(static_cast<size_t>(T * D), 70 + static_cast<uint64_t>(T));
      std::vector<float> y(static_cast<size_t>(T * N)), yr(y.size());
      matmul(w, x.data(), y.data(), T, &pool);
      Int8Activations xa;
      quantize_activations_ref(x.data(), T, D, xa, 1);
      gemm_int8_panel_ref(t, buf.data(), N, xa, yr.data(), N);
      ASSERT_EQ(std::memcmp(y.data(), yr.data(), y.size() * 4), 0) << dtype_name(t) << " T=" << T;
    }
  }
}

}  // namespace
}  // namespace smoe
