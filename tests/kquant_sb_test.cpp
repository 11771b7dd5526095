// kquant_sb_test.cpp: the per-super-block int8 path for K-quant rows in the GGUF layout
// (dot_kquant_sb.h): the AVX2 quantizer and the kernel (its VNNI passes, or with
// SMOE_CPU=avx2 its AVX2 ones) against their scalar references bit for bit (every type, row counts around the passes, 1-6 tokens, misaligned rows, extreme and
// special values), the reference against the AMX reference (gemm_amx_kquant_ref) on the same
// activations, the error against float dot products, and matmul's use of it.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "core/error.h"
#include "core/thread_pool.h"
#include "kernels/dequant.h"
#include "kernels/dot_kquant_sb.h"
#include "kernels/gemm_amx_kquant.h"
#include "kernels/ops.h"
#include "kernels/quantize.h"
#include "test_util.h"

namespace smoe {
namespace {

using test::randn;

constexpr DType kTypes[] = {DType::Q2_K, DType::Q3_K, DType::Q4_K, DType::Q5_K, DType::Q6_K};

// n rows of D values at byte offset mis: quantized Gaussian rows, or random bytes (every
// scale, min and value pattern, q6_K's scale -128 included) with finite f16 scales.
std::vector<uint8_t> make_rows(DType t, int64_t n, int64_t D, size_t mis, uint64_t seed, bool random_bytes) {
  if (!random_bytes) return test::quantized_rows(t, n, D, mis, seed);
  const size_t rb = row_bytes(t, D), bb = row_bytes(t, 256);
  std::vector<uint8_t> buf(mis + rb * static_cast<size_t>(n) + 1);
  uint8_t* w = buf.data() + mis;
  std::mt19937_64 rng(seed);
  for (size_t i = 0; i < rb * static_cast<size_t>(n); ++i) w[i] = static_cast<uint8_t>(rng());
  const size_t d_at = t == DType::Q6_K ? 208 : t == DType::Q3_K ? 108 : t == DType::Q2_K ? 80 : 0;
  const bool has_dmin = t == DType::Q2_K || t == DType::Q4_K || t == DType::Q5_K;
  std::uniform_real_distribution<float> u(-0.01f, 0.01f);
  for (size_t b = 0; b < rb * static_cast<size_t>(n) / bb; ++b)
    for (size_t o : {d_at, d_at + 2}) {
      if (o == d_at + 2 && !has_dmin) continue;
      const uint16_t h = f32_to_f16(u(rng));
      std::memcpy(w + b * bb + o, &h, 2);
    }
  return buf;
}

std::vector<Int8SuperVector> quantize_tokens(const std::vector<float>& x, int64_t T, int64_t D) {
  std::vector<Int8SuperVector> v(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) quantize_vector_sb(x.data() + t * D, D, v[static_cast<size_t>(t)]);
  return v;
}

std::vector<const Int8SuperVector*> pointers(const std::vector<Int8SuperVector>& v) {
  std::vector<const Int8SuperVector*> p;
  for (const Int8SuperVector& x : v) p.push_back(&x);
  return p;
}

TEST(KQuantSb, QuantizerMatchesItsReferenceOnOrdinaryAndSpecialValues) {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  for (int64_t D : {0, 256, 512, 4096}) {
    std::vector<float> x = randn(static_cast<size_t>(D), 3 + static_cast<uint64_t>(D), 2.5f);
    if (D >= 4096) {
      for (int i = 0; i < 256; ++i) x[static_cast<size_t>(i)] = 0.f;                  // all zero: d = 0
      x[300] = inf;                                                                    // d = inf
      x[600] = nan;                                                                    // skipped by amax
      for (int i = 768; i < 1024; ++i) x[static_cast<size_t>(i)] = (i % 2 ? 1e30f : -1e30f);  // at +-amax
      for (int i = 1024; i < 1280; ++i) x[static_cast<size_t>(i)] = static_cast<float>(i - 1152) * 1e-42f;  // denormals
      for (int i = 1280; i < 1536; ++i) x[static_cast<size_t>(i)] = static_cast<float>(i % 255) - 127.f;  // ties at .5 steps
    }
    Int8SuperVector a, b;
    quantize_vector_sb(x.data(), D, a);
    quantize_vector_sb_ref(x.data(), D, b);
    ASSERT_EQ(a.D, D);
    if (D == 0) continue;  // nothing stored (and memcmp may not take the empty buffers' null pointers)
    ASSERT_EQ(std::memcmp(a.q.data(), b.q.data(), static_cast<size_t>(D)), 0) << "D=" << D;
    ASSERT_EQ(std::memcmp(a.d.data(), b.d.data(), static_cast<size_t>(D / 256) * 4), 0) << "D=" << D;
    ASSERT_EQ(std::memcmp(a.sum16.data(), b.sum16.data(), static_cast<size_t>(D / 16) * 2), 0) << "D=" << D;
    for (int64_t k = 0; k < D / 16; ++k) {
      int s = 0;
      for (int64_t i = 0; i < 16; ++i) s += a.q[static_cast<size_t>(16 * k + i)];
      ASSERT_EQ(a.sum16[static_cast<size_t>(k)], s) << "sub-block " << k;
    }
    // Within half a step of x / d where 1 / d is finite (a super-block of denormals has an
    // infinite 1 / d and quantizes to zeros, as the AMX activations and llama.cpp's q8_K do).
    for (int64_t i = 0; i < D; ++i) {
      const float d = a.d[static_cast<size_t>(i / 256)], xi = x[static_cast<size_t>(i)];
      if (d > 0 && std::isfinite(1.f / d) && std::isfinite(xi)) {
        ASSERT_LE(std::fabs(static_cast<float>(a.q[static_cast<size_t>(i)]) - xi / d), 0.5001f) << i;
      }
    }
  }
  // A row that is not a whole number of super-blocks.
  Int8SuperVector a;
  std::vector<float> x(300, 1.f);
  EXPECT_THROW(quantize_vector_sb(x.data(), 300, a), Error);
}

TEST(KQuantSb, ReferenceMatchesTheAmxReference) {
  const int64_t D = 768, n = 5, T = 3;
  for (DType t : kTypes)
    for (bool random_bytes : {false, true}) {
      const std::vector<uint8_t> w = make_rows(t, n, D, 0, 17, random_bytes);
      const std::vector<float> x = randn(static_cast<size_t>(T * D), 23);
      AmxInt8Activations amx;
      quantize_amx_activations_ref(x.data(), T, D, amx);
      const std::vector<Int8SuperVector> xv = quantize_tokens(x, T, D);
      std::vector<float> ya(static_cast<size_t>(T * n)), yb(static_cast<size_t>(T * n));
      gemm_amx_kquant_ref(t, w.data(), n, amx, ya.data(), n);
      dot_kquant_sb_ref(t, w.data(), n, pointers(xv).data(), static_cast<int>(T), yb.data(), n);
      ASSERT_EQ(std::memcmp(ya.data(), yb.data(), ya.size() * 4), 0) << dtype_name(t) << " random " << random_bytes;
    }
}

TEST(KQuantSb, KernelMatchesItsReferenceBitForBit) {  // VNNI or AVX2 passes, by the cap
  if (!kquant_sb_avx2(DType::Q4_K)) GTEST_SKIP() << "no AVX2 here (or SMOE_CPU caps it off): the reference only";
  for (DType t : kTypes)
    for (int64_t D : {256, 768, 2048})
      for (int64_t n : {1, 3, 8, 9, 19})
        for (size_t mis : {0, 1})
          for (bool random_bytes : {false, true}) {
            const std::vector<uint8_t> w = make_rows(t, n, D, mis, 31 + static_cast<uint64_t>(D + n), random_bytes);
            for (int nt = 1; nt <= 6; ++nt) {
              std::vector<float> x = randn(static_cast<size_t>(nt * D), 100 + static_cast<uint64_t>(nt));
              if (nt == 5)  // every activation at +-amax: x_q = +-127 throughout
                for (size_t i = 0; i < x.size(); ++i) x[i] = i % 3 ? 4.f : -4.f;
              const std::vector<Int8SuperVector> xv = quantize_tokens(x, nt, D);
              const auto xp = pointers(xv);
              std::vector<float> ya(static_cast<size_t>(nt * n)), yb(ya.size());
              dot_kquant_sb(t, w.data() + mis, n, xp.data(), nt, ya.data(), n);
              dot_kquant_sb_ref(t, w.data() + mis, n, xp.data(), nt, yb.data(), n);
              ASSERT_EQ(std::memcmp(ya.data(), yb.data(), ya.size() * 4), 0)
                  << dtype_name(t) << " D=" << D << " rows=" << n << " misalign " << mis << " tokens " << nt
                  << " random " << random_bytes;
            }
          }
}

// The extremes the kernel's 16-bit pair sums and 16-bit scale products must hold: every
// weight byte 0xFF (values, scales and mins at their top; q6_K's scales -1) against
// activations of +-127.
TEST(KQuantSb, KernelHoldsExtremeValues) {
  if (!kquant_sb_avx2(DType::Q4_K)) GTEST_SKIP() << "no AVX2 here (or SMOE_CPU caps it off): the reference only";
  const int64_t D = 512, n = 9;
  std::vector<float> x(static_cast<size_t>(D));
  for (int64_t i = 0; i < D; ++i) x[static_cast<size_t>(i)] = (i / 4) % 3 ? 1.f : -1.f;
  const std::vector<Int8SuperVector> xv = quantize_tokens(x, 1, D);
  for (DType t : kTypes) {
    const size_t rb = row_bytes(t, D), bb = row_bytes(t, 256);
    std::vector<uint8_t> w(rb * n, 0xFF);
    const size_t d_at = t == DType::Q6_K ? 208 : t == DType::Q3_K ? 108 : t == DType::Q2_K ? 80 : 0;
    const uint16_t one = 0x3C00;  // f16 1.0 for d and dmin
    for (size_t b = 0; b < w.size() / bb; ++b)
      for (size_t o : {d_at, d_at + 2})
        if (o == d_at || t == DType::Q2_K || t == DType::Q4_K || t == DType::Q5_K) std::memcpy(&w[b * bb + o], &one, 2);
    std::vector<float> ya(static_cast<size_t>(n)), yb(ya.size());
    dot_kquant_sb(t, w.data(), n, pointers(xv).data(), 1, ya.data(), n);
    dot_kquant_sb_ref(t, w.data(), n, pointers(xv).data(), 1, yb.data(), n);
    ASSERT_EQ(std::memcmp(ya.data(), yb.data(), ya.size() * 4), 0) << dtype_name(t) << " " << ya[0] << " vs " << yb[0];
    EXPECT_NE(yb[0], 0.f) << dtype_name(t);
  }
}

TEST(KQuantSb, ErrorAgainstFloatDotsIsSmall) {
  const int64_t D = 2048, n = 32;
  for (DType t : kTypes) {
    const std::vector<uint8_t> w = make_rows(t, n, D, 0, 5, false);
    const std::vector<float> x = randn(static_cast<size_t>(D), 9);
    const std::vector<Int8SuperVector> xv = quantize_tokens(x, 1, D);
    std::vector<float> y(static_cast<size_t>(n));
    dot_kquant_sb(t, w.data(), n, pointers(xv).data(), 1, y.data(), n);
    double err = 0, ref = 0;
    std::vector<float> row(static_cast<size_t>(D));
    for (int64_t r = 0; r < n; ++r) {
      dequantize_row(t, w.data() + r * row_bytes(t, D), row.data(), D);
      double s = 0;
      for (int64_t i = 0; i < D; ++i) s += static_cast<double>(row[static_cast<size_t>(i)]) * x[static_cast<size_t>(i)];
      err += (y[static_cast<size_t>(r)] - s) * (y[static_cast<size_t>(r)] - s);
      ref += s * s;
    }
    // The activations' rounding (steps of amax / 127 per 256 values) leaves under 1% of the
    // products' magnitude on Gaussian inputs.
    EXPECT_LT(std::sqrt(err / ref), 0.01) << dtype_name(t);
    EXPECT_GT(ref, 0) << dtype_name(t);
  }
}

// Weights in the file layout (not repacked), as mapped files and --no-repack leave them.
TEST(KQuantSb, MatmulTakesItForRowsInTheFileLayout) {
  if (!kquant_sb_avx2(DType::Q4_K)) GTEST_SKIP() << "no AVX2 here (or SMOE_CPU caps it off): matmul takes float dots";
  ThreadPool pool(2);
  const int64_t D = 512, N = 40;
  for (DType t : kTypes) {
    const std::vector<uint8_t> buf = make_rows(t, N, D, 0, 77, false);
    TensorView w;
    w.dtype = t;
    w.shape = {N, D};
    w.data = buf.data();
    w.nbytes = row_bytes(t, D) * N;
    for (int64_t T : {1, 3, 8, 21}) {
      ASSERT_TRUE(matmul_int8_activations(t, T));
      const std::vector<float> x = randn(static_cast<size_t>(T * D), 12 + static_cast<uint64_t>(T));
      std::vector<float> y(static_cast<size_t>(T * N)), yr(y.size());
      matmul(w, x.data(), y.data(), T, &pool);
      const std::vector<Int8SuperVector> xv = quantize_tokens(x, T, D);
      dot_kquant_sb_ref(t, buf.data(), N, pointers(xv).data(), static_cast<int>(T), yr.data(), N);
      ASSERT_EQ(std::memcmp(y.data(), yr.data(), y.size() * 4), 0) << dtype_name(t) << " T=" << T;
    }
  }
}

}  // namespace
}  // namespace smoe
