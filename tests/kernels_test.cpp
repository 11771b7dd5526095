// kernels_test.cpp: every SIMD kernel against its scalar reference, over many sizes and
// misaligned pointers: fused dot products (all ten types; float rows for 1-3 tokens at
// once), GEMM panels, SIMD
// dequantization (bit-exact), the fast half conversion (all 65536 values), attention's
// dot/axpy, the int8-activation GEMM and decode dots (bit-exact with their reference),
// online-softmax attention, and matmul against matmul_ref through the thread pool.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "core/thread_pool.h"
#include "kernels/attention.h"
#include "kernels/dequant.h"
#include "kernels/dot_float.h"
#include "kernels/gemm_int8.h"
#include "kernels/ops.h"
#include "kernels/quantize.h"
#include "kernels/simd.h"
#include "test_util.h"

namespace smoe {
namespace {

const DType kAllTypes[] = {DType::F32,  DType::F16,  DType::BF16, DType::Q8_0, DType::Q4_0,
                           DType::Q2_K, DType::Q3_K, DType::Q4_K, DType::Q5_K, DType::Q6_K};

using test::randn;

using test::quantized_rows;

double scalar_dot(DType t, const uint8_t* row, const float* x, int64_t D) {
  std::vector<float> w(static_cast<size_t>(D));
  dequantize_row(t, row, w.data(), D);
  double s = 0;
  for (int64_t i = 0; i < D; ++i) s += static_cast<double>(w[i]) * x[i];
  return s;
}

TEST(Kernels, FastHalfConversionIsExactForEveryValue) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float a = f16_to_f32(static_cast<uint16_t>(h)), b = f16_to_f32_fast(static_cast<uint16_t>(h));
    if (std::isnan(a)) ASSERT_TRUE(std::isnan(b)) << h;
    else ASSERT_EQ(std::memcmp(&a, &b, 4), 0) << "half 0x" << std::hex << h;
  }
}

TEST(Kernels, DotRowsMatchScalarForAllTypesSizesAndAlignments) {
  for (DType t : kAllTypes) {
    const int64_t blk = static_cast<int64_t>(dtype_info(t).block_elems);
    // Float types: every size 0..2N for N up to 64 lanes' worth; blocks: 0..8 blocks.
    const int64_t max_blocks = blk == 1 ? 130 : (blk == 32 ? 9 : 4);
    for (int64_t nblk = 0; nblk <= max_blocks; ++nblk) {
      const int64_t D = nblk * blk;
      if (t != DType::F32 && t != DType::F16 && t != DType::BF16 && D % 32 != 0) continue;
      for (size_t mis : {0, 1, 3}) {
        const int64_t rows = 6;  // a 4-row group and two single rows
        std::vector<uint8_t> w = quantized_rows(t, rows, D, mis, 7 + static_cast<uint64_t>(D));
        std::vector<float> xbuf = randn(static_cast<size_t>(D + 1), 11);
        const float* x = xbuf.data() + (mis ? 1 : 0);  // misaligned activations too
        std::vector<float> xs(static_cast<size_t>(D / 32 + 1));
        if (D % 32 == 0) sub_block_sums(x, D, xs.data());
        std::vector<float> y(rows);
        dot_rows(t, w.data() + mis, rows, x, xs.data(), D, y.data());
        const size_t rb = row_bytes(t, D);
        for (int64_t r = 0; r < rows; ++r) {
          const double ref = scalar_dot(t, w.data() + mis + r * rb, x, D);
          ASSERT_NEAR(y[r], ref, 1e-4 * (1 + std::sqrt(static_cast<double>(D))))
              << dtype_name(t) << " D=" << D << " misalign " << mis << " row " << r;
        }
      }
    }
  }
}

TEST(Kernels, FloatDecodeDotsMatchScalarForAllSizesTokensAndAlignments) {
  for (DType t : {DType::F32, DType::F16, DType::BF16}) {
    ASSERT_TRUE(dot_rows_float_supports(t));
    for (int64_t D = 0; D <= 130; ++D) {
      for (size_t mis : {0, 1, 3}) {
        for (int64_t rows : {1, 2, 3, 5, 9}) {  // 4- and 2-row passes and the rest
          std::vector<uint8_t> w = quantized_rows(t, rows, D, mis, 5 + static_cast<uint64_t>(D));
          for (int T = 1; T <= kMaxFloatDotTokens; ++T) {
            std::vector<float> xbuf = randn(static_cast<size_t>(T * D + 1), 3 + static_cast<uint64_t>(T));
            const float* x = xbuf.data() + (mis ? 1 : 0);
            const int64_t ldy = rows + 2;
            std::vector<float> y(static_cast<size_t>(T * ldy), -7.f);
            dot_rows_float(t, w.data() + mis, rows, x, T, D, y.data(), ldy);
            const size_t rb = row_bytes(t, D);
            for (int tok = 0; tok < T; ++tok) {
              for (int64_t r = 0; r < rows; ++r) {
                const double ref = scalar_dot(t, w.data() + mis + r * rb, x + tok * D, D);
                ASSERT_NEAR(y[static_cast<size_t>(tok * ldy + r)], ref, 1e-5 * (1 + static_cast<double>(D)))
                    << dtype_name(t) << " D=" << D << " misalign " << mis << " rows " << rows
                    << " T=" << T << " token " << tok << " row " << r;
              }
              for (int64_t r = rows; r < ldy; ++r)  // past the rows: untouched
                ASSERT_EQ(y[static_cast<size_t>(tok * ldy + r)], -7.f);
            }
          }
        }
      }
    }
  }
  std::vector<float> x(64), y(8);
  std::vector<uint8_t> w(64 * 4 * 8);
  EXPECT_THROW(dot_rows_float(DType::F16, w.data(), 1, x.data(), 0, 32, y.data(), 1), Error);
  EXPECT_THROW(dot_rows_float(DType::F16, w.data(), 1, x.data(), kMaxFloatDotTokens + 1, 16, y.data(), 1), Error);
  EXPECT_THROW(dot_rows_float(DType::Q8_0, w.data(), 1, x.data(), 1, 32, y.data(), 1), Error);
}

TEST(Kernels, SimdDequantizationIsBitExact) {
  for (DType t : kAllTypes) {
    const int64_t blk = static_cast<int64_t>(dtype_info(t).block_elems);
    for (int64_t nblk = 0; nblk <= (blk == 1 ? 70 : 5); ++nblk) {
      const int64_t D = nblk * blk;
      for (size_t mis : {0, 1}) {
        std::vector<uint8_t> w = quantized_rows(t, 1, D, mis, 3);
        // One spare float so data() is never null, even for D = 0.
        std::vector<float> a(static_cast<size_t>(D) + 1), b(static_cast<size_t>(D) + 1);
        dequantize_row(t, w.data() + mis, a.data(), D);
        dequantize_row_simd(t, w.data() + mis, b.data(), D);
        ASSERT_EQ(std::memcmp(a.data(), b.data(), static_cast<size_t>(D) * 4), 0) << dtype_name(t) << " D=" << D;
      }
    }
  }
}

TEST(Kernels, DotAndAxpyMatchScalar) {
  for (int64_t n = 0; n <= 70; ++n) {
    std::vector<float> a = randn(static_cast<size_t>(n + 1), 1), b = randn(static_cast<size_t>(n + 1), 2);
    double ref = 0;
    for (int64_t i = 0; i < n; ++i) ref += static_cast<double>(a[i + 1]) * b[i];
    EXPECT_NEAR(dot_f32(a.data() + 1, b.data(), n), ref, 1e-5 * (1 + n));
    std::vector<float> out = b, expect = b;
    axpy(0.5f, a.data() + 1, out.data(), n);
    for (int64_t i = 0; i < n; ++i) expect[i] += 0.5f * a[i + 1];
    for (int64_t i = 0; i < n; ++i) ASSERT_NEAR(out[i], expect[i], 1e-6) << n;
  }
}

TEST(Kernels, GemmPanelMatchesScalar) {
  const int64_t half = gemm_token_block() / 2;
  for (DType t : kAllTypes) {
    const int64_t D = 512;
    for (int64_t n : {1, 7, 24, 25, 48}) {
      for (int64_t T : {1, 5, 16, 33, 70}) {
        std::vector<uint8_t> w = quantized_rows(t, n, D, 1, 5);
        const std::vector<float> x = randn(static_cast<size_t>(T * D), 9);
        const int64_t Tpad = (T + half - 1) / half * half;
        std::vector<float> xT(static_cast<size_t>(D * Tpad), 0.f);
        for (int64_t k = 0; k < D; ++k)
          for (int64_t tt = 0; tt < T; ++tt) xT[static_cast<size_t>(k * Tpad + tt)] = x[static_cast<size_t>(tt * D + k)];
        std::vector<float> y(static_cast<size_t>(T * n), -1.f);
        gemm_panel(t, w.data() + 1, n, xT.data(), Tpad, T, D, y.data(), n);
        const size_t rb = row_bytes(t, D);
        for (int64_t j = 0; j < n; ++j)
          for (int64_t tt = 0; tt < T; ++tt)
            ASSERT_NEAR(y[static_cast<size_t>(tt * n + j)], scalar_dot(t, w.data() + 1 + j * rb, &x[static_cast<size_t>(tt * D)], D), 2e-3)
                << dtype_name(t) << " n=" << n << " T=" << T;
      }
    }
  }
}

TEST(Kernels, SiluMulMatchesScalarSilu) {
  // Every vector remainder, ordinary values and the extremes (exp overflow and underflow).
  for (int64_t n : {1, 7, 16, 33, 1000}) {
    std::vector<float> g = randn(static_cast<size_t>(n), 9 + static_cast<uint64_t>(n)), u = randn(g.size(), 10);
    for (size_t i = 0; i < g.size(); ++i) g[i] *= 4.f;
    if (n > 7) {
      g[0] = -120.f;
      g[1] = 120.f;
      g[2] = -88.5f;
      g[3] = 0.f;
      g[4] = -3e38f;
      g[5] = 3e38f;
    }
    std::vector<float> y = g;
    silu_mul(y.data(), u.data(), n);
    for (size_t i = 0; i < g.size(); ++i) {
      const float ref = silu(g[i]) * u[i];
      ASSERT_NEAR(y[i], ref, 4e-7f * std::fabs(ref) + 1e-30f) << "n=" << n << " x=" << g[i];
    }
  }
}

// The threaded (and, on AVX-512 CPUs, vectorized) activation quantization equals the scalar
// reference in every buffer: values with exact .5 ties, an all-zero block, padding tokens.
TEST(Kernels, ActivationQuantizationEqualsItsReference) {
  ThreadPool pool(3);
  for (int64_t D : {32, 256}) {
    for (int64_t T : {1, 5, 16, 23}) {
      for (int64_t pad : {1, 16}) {
        std::vector<float> x = randn(static_cast<size_t>(T * D), 7 + static_cast<uint64_t>(T));
        for (int64_t k = 0; k < 32; ++k) x[static_cast<size_t>(k)] = 0.f;  // a zero block
        if (T > 1)  // amax 127: every value n + 0.5 is an exact tie, rounded to even
          for (int64_t k = 0; k < 32; ++k) x[static_cast<size_t>(D + k)] = k == 0 ? 127.f : static_cast<float>(k) - 15.5f;
        Int8Activations a, b;
        const bool superblocks = D % 256 == 0;
        quantize_activations(x.data(), T, D, a, pad, &pool, superblocks);
        quantize_activations_ref(x.data(), T, D, b, pad, superblocks);
        ASSERT_EQ(a.Tpad, b.Tpad);
        if (superblocks) {  // per 256 values (the repacked q2_K/q3_K kernels)
          const size_t n = static_cast<size_t>(D * a.Tpad);
          ASSERT_EQ(std::memcmp(a.q256.data(), b.q256.data(), n), 0) << "D=" << D << " T=" << T;
          ASSERT_EQ(std::memcmp(a.d256.data(), b.d256.data(), n / 256 * 4), 0);
          ASSERT_EQ(std::memcmp(a.sum16.data(), b.sum16.data(), n / 16 * 4), 0);
          ASSERT_EQ(std::memcmp(a.sum32.data(), b.sum32.data(), n / 32 * 4), 0);
          ASSERT_EQ(std::memcmp(a.corr32.data(), b.corr32.data(), n / 32 * 4), 0);
          EXPECT_EQ(b.sum32[0], b.sum16[0] + b.sum16[static_cast<size_t>(b.Tpad)]);
          EXPECT_EQ(b.corr32[0], -8 * b.sum32[0]);
          int32_t s0 = 0;  // token 0's first sub-block sum, its scale from the super-block's amax
          float amax = 0.f;
          for (int64_t k = 0; k < 256; ++k) amax = std::max(amax, std::fabs(x[static_cast<size_t>(k)]));
          for (int64_t k = 0; k < 16; ++k) s0 += b.q256[static_cast<size_t>((k / 4 * b.Tpad) * 4 + k % 4)];
          EXPECT_EQ(b.sum16[0], s0);
          EXPECT_EQ(b.d256[0], amax / 127.f);
          if (pad == 16 && T == 5) {
            EXPECT_EQ(b.d256[static_cast<size_t>(T)], 0.f);  // a padding token
          }
        }
        const size_t nl = static_cast<size_t>(D / 32 * a.Tpad);
        ASSERT_EQ(std::memcmp(a.q.data(), b.q.data(), static_cast<size_t>(D * a.Tpad)), 0) << "D=" << D << " T=" << T;
        ASSERT_EQ(std::memcmp(a.d.data(), b.d.data(), nl * 4), 0);
        ASSERT_EQ(std::memcmp(a.dsum.data(), b.dsum.data(), nl * 4), 0);
        ASSERT_EQ(std::memcmp(a.corr8.data(), b.corr8.data(), nl * 4), 0);
        ASSERT_EQ(std::memcmp(a.corr4.data(), b.corr4.data(), nl * 4), 0);
        ASSERT_EQ(std::memcmp(a.corr6.data(), b.corr6.data(), 2 * nl * 4), 0);
        if (T > 1) {  // token 1, block 0 (group 0, lanes 1 and 2): round-half-even(k - 15.5)
          EXPECT_EQ(b.q[static_cast<size_t>(1 * 4 + 1)], -14);  // -14.5 -> -14
          EXPECT_EQ(b.q[static_cast<size_t>(1 * 4 + 2)], -14);  // -13.5 -> -14
        }
      }
    }
  }
}

TEST(Kernels, Int8GemmMatchesItsReferenceAndTheFloatProduct) {
  for (DType t : {DType::Q8_0, DType::Q4_0}) {
    for (int64_t D : {32, 96, 512}) {
      for (int64_t n : {1, 2, 3, 4, 5, 7, 48}) {  // every remainder of the 6-row tile
        for (int64_t T : {1, 15, 16, 17, 40}) {
          std::vector<uint8_t> w = quantized_rows(t, n, D, 3, 21);
          const std::vector<float> x = randn(static_cast<size_t>(T * D), 4);
          Int8Activations xa;
          quantize_activations(x.data(), T, D, xa);
          std::vector<float> y(static_cast<size_t>(T * n)), yr(y.size());
          gemm_int8_panel(t, w.data() + 3, n, xa, y.data(), n);
          gemm_int8_panel_ref(t, w.data() + 3, n, xa, yr.data(), n);
          ASSERT_EQ(std::memcmp(y.data(), yr.data(), y.size() * 4), 0) << dtype_name(t) << " D=" << D;
          const size_t rb = row_bytes(t, D);
          for (int64_t j = 0; j < n; ++j)
            for (int64_t tt = 0; tt < T; ++tt) {
              const double ref = scalar_dot(t, w.data() + 3 + j * rb, &x[static_cast<size_t>(tt * D)], D);
              // int8 activations: relative error about 1/127 per block.
              ASSERT_NEAR(y[static_cast<size_t>(tt * n + j)], ref, 0.05 * std::sqrt(static_cast<double>(D)) + 0.01 * std::fabs(ref));
            }
        }
      }
    }
  }
}

TEST(Kernels, MatmulMatchesReferenceOnThreads) {
  ThreadPool pool(3);
  for (DType t : kAllTypes) {
    for (int64_t T : {1, 2, 3, 4, 9, 40}) {
      const int64_t N = 70, D = 256;
      std::vector<uint8_t> buf = quantized_rows(t, N, D, 0, 13);
      TensorView w;
      w.name = "w";
      w.dtype = t;
      w.shape = {N, D};
      w.data = buf.data();
      w.nbytes = row_bytes(t, D) * N;
      const std::vector<float> x = randn(static_cast<size_t>(T * D), 17);
      std::vector<float> y(static_cast<size_t>(T * N)), y1(y.size()), yr(y.size());
      matmul(w, x.data(), y.data(), T, &pool);
      matmul(w, x.data(), y1.data(), T, nullptr);
      matmul_ref(w, x.data(), yr.data(), T, nullptr);
      // The split across threads never changes a row's result.
      ASSERT_EQ(std::memcmp(y.data(), y1.data(), y.size() * 4), 0) << dtype_name(t) << " T=" << T;
      const bool int8 = matmul_int8_activations(t, T);
      for (size_t i = 0; i < y.size(); ++i)
        ASSERT_NEAR(y[i], yr[i], int8 ? 0.5 : 2e-3) << dtype_name(t) << " T=" << T << " i=" << i;
    }
  }
}

}  // namespace
}  // namespace smoe

namespace smoe {
namespace {

TEST(Kernels, Int8DecodeDotMatchesItsReferenceAndTheFloatDot) {
  for (DType t : {DType::Q8_0, DType::Q4_0}) {
    const int64_t blk = static_cast<int64_t>(dtype_info(t).block_elems);
    for (int64_t D = 0; D <= blk * (blk == 32 ? 9 : 3); D += blk) {
      for (size_t mis : {0, 1}) {
        const int64_t rows = 5;
        std::vector<uint8_t> w = quantized_rows(t, rows, D, mis, 31 + static_cast<uint64_t>(D));
        const std::vector<float> x = randn(static_cast<size_t>(D), 8);
        Int8Vector xq;
        quantize_vector(x.data(), D, xq);
        std::vector<float> y(rows), yr(rows);
        dot_rows_int8(t, w.data() + mis, rows, xq, y.data());
        dot_rows_int8_ref(t, w.data() + mis, rows, xq, yr.data());
        ASSERT_EQ(std::memcmp(y.data(), yr.data(), y.size() * 4), 0) << dtype_name(t) << " D=" << D;
        // Several tokens at once (1..6: the kernel's groups of 4 and remainders) equal each
        // token on its own.
        for (int nt = 1; nt <= 6; ++nt) {
          std::vector<Int8Vector> xs(static_cast<size_t>(nt));
          std::vector<const Int8Vector*> xp;
          for (int i = 0; i < nt; ++i) {
            const std::vector<float> xi = randn(static_cast<size_t>(D), 100 + static_cast<uint64_t>(i));
            quantize_vector(xi.data(), D, xs[static_cast<size_t>(i)]);
            xp.push_back(&xs[static_cast<size_t>(i)]);
          }
          std::vector<float> ym(static_cast<size_t>(nt * rows)), yi(static_cast<size_t>(rows));
          dot_rows_int8_tokens(t, w.data() + mis, rows, xp.data(), nt, ym.data(), rows);
          for (int i = 0; i < nt; ++i) {
            dot_rows_int8_ref(t, w.data() + mis, rows, xs[static_cast<size_t>(i)], yi.data());
            ASSERT_EQ(std::memcmp(ym.data() + i * rows, yi.data(), yi.size() * 4), 0)
                << dtype_name(t) << " D=" << D << " tokens=" << nt << " token " << i;
          }
        }
        const size_t rb = row_bytes(t, D);
        for (int64_t r = 0; r < rows; ++r)
          ASSERT_NEAR(y[r], scalar_dot(t, w.data() + mis + r * rb, x.data(), D), 0.05 * std::sqrt(static_cast<double>(D)) + 1e-6);
      }
    }
  }
}

// The extremes the kernels' 16-bit pair sums must hold (AVX2's vpmaddubsw saturates): q8_0
// weights of -128 and 127 against activations of +-127, and q4_0 nibbles at their top,
// against the reference (the K-quants' kernels: kquant_sb_test.cpp).
TEST(Kernels, Int8DecodeDotHoldsExtremeValues) {
  const int64_t D = 256;
  std::vector<float> x(static_cast<size_t>(D));
  for (int64_t i = 0; i < D; ++i) x[static_cast<size_t>(i)] = (i / 4) % 4 ? 1.f : -1.f;  // x_q = +-127
  Int8Vector xq;
  quantize_vector(x.data(), D, xq);
  for (DType t : {DType::Q8_0, DType::Q4_0}) {
    const int64_t rows = 5;
    const size_t rb = row_bytes(t, D);
    std::vector<uint8_t> w(rb * rows, 0xFF);  // nibbles and bit fields at their top
    const uint16_t one = 0x3C00;              // f16 1.0 for every scale field that is f16
    for (int64_t r = 0; r < rows; ++r) {
      uint8_t* row = w.data() + r * rb;
      if (t == DType::Q8_0)
        for (int64_t b = 0; b < D / 32; ++b) {
          std::memcpy(row + b * 34, &one, 2);
          for (int k = 0; k < 32; ++k) row[b * 34 + 2 + k] = static_cast<uint8_t>((k / 4 + r) % 2 ? 0x80 : 0x7F);  // -128, 127
        }
      else
        for (int64_t b = 0; b < D / 32; ++b) std::memcpy(row + b * 18, &one, 2);
    }
    std::vector<float> y(rows), yr(rows);
    dot_rows_int8(t, w.data(), rows, xq, y.data());
    dot_rows_int8_ref(t, w.data(), rows, xq, yr.data());
    ASSERT_EQ(std::memcmp(y.data(), yr.data(), y.size() * 4), 0) << dtype_name(t) << " " << y[0] << " vs " << yr[0];
    EXPECT_NE(yr[0], 0.f) << dtype_name(t);
  }
}

}  // namespace
}  // namespace smoe

namespace smoe {
namespace {

TEST(Kernels, OnlineSoftmaxAttentionMatchesReference) {
  // G = 6 runs a partial group of query heads; hd 8 and 24 take the generic path where
  // vectors hold 16 floats.
  for (int64_t G : {1, 4, 6}) {
    for (int64_t hd : {8, 16, 24, 64, 128}) {
      for (int64_t n : {1, 2, 63, 64, 65, 200}) {
        const int64_t kv_stride = hd * 3;  // other kv heads interleaved, as in the cache
        const std::vector<float> q = randn(static_cast<size_t>(G * hd), 1, 2.f);
        const std::vector<float> k = randn(static_cast<size_t>(n * kv_stride), 2);
        const std::vector<float> v = randn(static_cast<size_t>(n * kv_stride), 3);
        std::vector<float> a(static_cast<size_t>(G * hd)), b(a.size());
        const float scale = 1.f / std::sqrt(static_cast<float>(hd));
        attention_heads(q.data(), hd, G, k.data(), v.data(), kv_stride, n, hd, scale, a.data(), hd);
        attention_heads_ref(q.data(), hd, G, k.data(), v.data(), kv_stride, n, hd, scale, b.data(), hd);
        for (size_t i = 0; i < a.size(); ++i) ASSERT_NEAR(a[i], b[i], 1e-5) << "G=" << G << " hd=" << hd << " n=" << n;
      }
    }
  }
}

}  // namespace
}  // namespace smoe
