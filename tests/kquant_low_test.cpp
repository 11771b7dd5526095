// kquant_low_test.cpp: the 2- and 3-bit K-quants (q2_K, q3_K): dequantization of hand-built
// blocks against values computed here from the GGUF layout, the quantizers' round-trip
// error on Gaussian and awkward rows, the fused decode dots and the batch GEMM against
// double-precision references, and a whole model quantized to q2_K / q3_K (mapped and
// in memory) against its f32 original.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

#include "core/thread_pool.h"
#include "kernels/dequant.h"
#include "kernels/gemm_int8.h"
#include "kernels/gemm_x16.h"
#include "kernels/ops.h"
#include "kernels/quantize.h"
#include "kernels/simd.h"
#include "model/convert.h"
#include "model/model.h"
#include "test_util.h"

namespace smoe {
namespace {

using test::randn;

void put_half(uint8_t* p, float f) {
  const uint16_t h = f32_to_f16(f);
  std::memcpy(p, &h, 2);
}

// ---- hand-built blocks -------------------------------------------------------------------

// Q2_K block bytes: scales[16] at 0, qs[64] at 16, d at 80, dmin at 82. Byte p of qs holds,
// at bits 2k..2k+1, value 128 * (p / 32) + 32 k + p % 32; sub-block s = value / 16 has scale
// scales[s] & 15 and min scales[s] >> 4. Expected values are built by walking the bytes.
TEST(KQuantLow, Q2KDequantizesHandBuiltBlock) {
  uint8_t blk[84];
  for (int s = 0; s < 16; ++s) blk[s] = static_cast<uint8_t>((s % 7 + 1) | (s % 5) << 4);
  for (int p = 0; p < 64; ++p) blk[16 + p] = static_cast<uint8_t>(p * 37 + 11);
  put_half(blk + 80, 0.5f);
  put_half(blk + 82, 0.25f);
  float expect[256];
  for (int p = 0; p < 64; ++p)
    for (int k = 0; k < 4; ++k) {
      const int i = 128 * (p / 32) + 32 * k + p % 32;
      const int q = (blk[16 + p] >> (2 * k)) & 3, s = i / 16;
      expect[i] = 0.5f * static_cast<float>(s % 7 + 1) * static_cast<float>(q) - 0.25f * static_cast<float>(s % 5);
    }
  float y[256];
  dequantize_row(DType::Q2_K, blk, y, 256);
  for (int i = 0; i < 256; ++i) ASSERT_EQ(y[i], expect[i]) << i;
  // Two blocks in a row, the second at an odd address inside the buffer.
  std::vector<uint8_t> two(1 + 2 * 84);
  std::memcpy(two.data() + 1, blk, 84);
  std::memcpy(two.data() + 85, blk, 84);
  two[85 + 80] = 0, two[85 + 81] = 0x40;  // d = 2.0: scales x4
  std::vector<float> y2(512);
  dequantize_row(DType::Q2_K, two.data() + 1, y2.data(), 512);
  for (int i = 0; i < 256; ++i) {
    ASSERT_EQ(y2[i], expect[i]) << i;
    const int s = i / 16;
    const float q = (expect[i] + 0.25f * static_cast<float>(s % 5)) / (0.5f * static_cast<float>(s % 7 + 1));
    ASSERT_EQ(y2[256 + i], 2.f * static_cast<float>(s % 7 + 1) * q - 0.25f * static_cast<float>(s % 5)) << i;
  }
}

// Q3_K block bytes: hmask[32] at 0, qs[64] at 32, scales[12] at 96, d at 108. The 6-bit
// stored scale v_s of sub-block s (scale v_s - 32): low 4 bits in byte s % 8 (low nibble
// for s < 8, high nibble for s >= 8), top 2 bits at bit 2 (s / 4) of byte 8 + s % 4. Value
// i's high bit is bit i / 32 of hmask[i % 32]; value = d (v_s - 32) (low + 4 high - 4).
TEST(KQuantLow, Q3KDequantizesHandBuiltBlock) {
  int v[16];
  uint8_t blk[110] = {};
  for (int s = 0; s < 16; ++s) {
    v[s] = (s * 13 + 5) % 64;
    blk[96 + s % 8] |= static_cast<uint8_t>((v[s] & 15) << (s < 8 ? 0 : 4));
    blk[96 + 8 + s % 4] |= static_cast<uint8_t>((v[s] >> 4) << (2 * (s / 4)));
  }
  for (int b = 0; b < 32; ++b) blk[b] = static_cast<uint8_t>(b * 29 + 7);
  for (int p = 0; p < 64; ++p) blk[32 + p] = static_cast<uint8_t>(p * 53 + 3);
  put_half(blk + 108, 0.125f);
  int low[256], high[256];
  for (int p = 0; p < 64; ++p)
    for (int k = 0; k < 4; ++k) low[128 * (p / 32) + 32 * k + p % 32] = (blk[32 + p] >> (2 * k)) & 3;
  for (int b = 0; b < 32; ++b)
    for (int k = 0; k < 8; ++k) high[32 * k + b] = (blk[b] >> k) & 1;
  float y[256];
  dequantize_row(DType::Q3_K, blk, y, 256);
  for (int i = 0; i < 256; ++i) {
    const float want = 0.125f * static_cast<float>(v[i / 16] - 32) * static_cast<float>(low[i] + 4 * high[i] - 4);
    ASSERT_EQ(y[i], want) << i;
  }
  // All high bits clear: every level is shifted down by 4 (q in -4..-1).
  std::memset(blk, 0, 32);
  dequantize_row(DType::Q3_K, blk, y, 256);
  for (int i = 0; i < 256; ++i)
    ASSERT_EQ(y[i], 0.125f * static_cast<float>(v[i / 16] - 32) * static_cast<float>(low[i] - 4)) << i;
}

// ---- round trips -------------------------------------------------------------------------

// RMS of (dequantize(quantize(x)) - x) over RMS of x.
double relative_rms_error(DType t, const std::vector<float>& x, std::vector<float>* back = nullptr) {
  const int64_t n = static_cast<int64_t>(x.size());
  std::vector<uint8_t> q(row_bytes(t, n));
  quantize_row(t, x.data(), q.data(), n);
  std::vector<float> y(x.size());
  dequantize_row(t, q.data(), y.data(), n);
  double e = 0, s = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    e += std::pow(static_cast<double>(y[i]) - x[i], 2);
    s += static_cast<double>(x[i]) * x[i];
  }
  if (back) *back = y;
  return s > 0 ? std::sqrt(e / s) : std::sqrt(e);
}

TEST(KQuantLow, RoundTripErrorOnGaussianRows) {
  const std::vector<float> x = randn(64 * 256, 5);
  const double e2 = relative_rms_error(DType::Q2_K, x), e3 = relative_rms_error(DType::Q3_K, x);
  const double e4 = relative_rms_error(DType::Q4_K, x);
  std::printf("[ relative RMS round-trip error, N(0,1), 16384 values ] q2_K %.4f  q3_K %.4f  (q4_K %.4f)\n",
              e2, e3, e4);
  // q3_K: 0.1425 is the least-squares limit of one scale and levels -4..3 per 16 values.
  EXPECT_LT(e2, 0.28);
  EXPECT_LT(e3, 0.15);
  EXPECT_LT(e3, e2);
  EXPECT_GT(e2, 0.05);  // 2 bits cannot be this good: the test would be measuring nothing
  // Scale invariance (up to half-precision scales): N(0, 0.01^2) rows do as well.
  const std::vector<float> small = randn(16 * 256, 6, 0.01f);
  EXPECT_LT(relative_rms_error(DType::Q2_K, small), 0.28);
  EXPECT_LT(relative_rms_error(DType::Q3_K, small), 0.15);
}

TEST(KQuantLow, RoundTripOfAwkwardRows) {
  for (DType t : {DType::Q2_K, DType::Q3_K}) {
    SCOPED_TRACE(dtype_name(t));
    std::vector<float> y;
    // All zero: exactly zero back.
    std::vector<float> x(512, 0.f);
    relative_rms_error(t, x, &y);
    for (float v : y) ASSERT_EQ(v, 0.f);
    // Constant rows, either sign: within half precision of the constant.
    for (float c : {0.7f, -0.7f, 3.f, -1e-3f}) {
      x.assign(512, c);
      EXPECT_LT(relative_rms_error(t, x), 2e-3) << c;
    }
    // Negative-only rows.
    x = randn(1024, 7);
    for (float& v : x) v = -std::fabs(v) - 0.1f;
    EXPECT_LT(relative_rms_error(t, x), t == DType::Q2_K ? 0.25 : 0.14);
    // One huge outlier: kept (to its sub-block's precision), and the other super-blocks
    // of the row are unaffected; inside its own super-block the rest may be rounded to
    // their sub-block's min/zero but never made worse than that.
    x = randn(1024, 8);
    x[300] = 1000.f;
    relative_rms_error(t, x, &y);
    EXPECT_NEAR(y[300], 1000.f, 1000.f * (t == DType::Q2_K ? 0.05f : 0.03f));
    const std::vector<float> rest_x(x.begin() + 512, x.end());
    std::vector<float> y_rest;
    EXPECT_LT(relative_rms_error(t, rest_x, &y_rest), t == DType::Q2_K ? 0.28 : 0.16);
    for (int i = 512; i < 1024; ++i) ASSERT_EQ(y[i], y_rest[static_cast<size_t>(i - 512)]) << i;  // blocks are independent
    double e = 0, s = 0;
    for (int i = 256; i < 512; ++i) {
      if (i == 300) continue;
      e += std::pow(y[i] - x[i], 2);
      s += std::pow(x[i], 2);
    }
    EXPECT_LT(std::sqrt(e / s), 1.1);
  }
}

// The AVX-512 scale-search trials give the scalar path's blocks bit for bit, on rows of
// several shapes: Gaussian, uniform, one-signed, outliers, tiny values, zero and constant
// super-blocks, infinities.
TEST(KQuantLow, SimdQuantizationEqualsScalarReference) {
  std::vector<std::vector<float>> rows;
  for (uint64_t seed = 0; seed < 12; ++seed) rows.push_back(randn(1024, 100 + seed, seed % 3 == 0 ? 1e-3f : 1.f));
  for (float& v : rows[1]) v = std::fabs(v);
  for (float& v : rows[2]) v = -std::fabs(v);
  for (size_t i = 0; i < 1024; i += 37) rows[4][i] *= 300.f;
  for (size_t i = 0; i < 256; ++i) rows[5][i] = 0.f, rows[6][i] = 0.25f, rows[7][i] = (i % 16 == 0) ? 2.f : 0.f;
  rows[8][5] = INFINITY, rows[8][600] = -INFINITY;
  for (DType t : {DType::Q2_K, DType::Q3_K, DType::Q4_K, DType::Q5_K, DType::Q6_K}) {
    std::vector<uint8_t> a(row_bytes(t, 1024)), b(a.size());
    for (size_t r = 0; r < rows.size(); ++r) {
      quantize_row(t, rows[r].data(), a.data(), 1024);
      quantize_row_ref(t, rows[r].data(), b.data(), 1024);
      ASSERT_EQ(std::memcmp(a.data(), b.data(), a.size()), 0) << dtype_name(t) << " row " << r;
    }
  }
}

// ---- kernels -----------------------------------------------------------------------------

TEST(KQuantLow, DotRowsMatchDoubleDotOfDequantizedRows) {
  for (DType t : {DType::Q2_K, DType::Q3_K}) {
    for (int64_t D : {256, 512, 4096}) {
      for (size_t mis : {0, 1, 3}) {
        const int64_t rows = 7;
        const size_t rb = row_bytes(t, D);
        const std::vector<float> w = randn(static_cast<size_t>(rows * D), 40 + static_cast<uint64_t>(D));
        std::vector<uint8_t> buf(mis + rb * rows);
        for (int64_t r = 0; r < rows; ++r) quantize_row(t, &w[static_cast<size_t>(r * D)], buf.data() + mis + r * rb, D);
        // x at a misaligned float address too.
        std::vector<float> xbuf(static_cast<size_t>(D) + 1);
        const std::vector<float> xs = randn(static_cast<size_t>(D), 9);
        std::copy(xs.begin(), xs.end(), xbuf.begin() + 1);
        const float* x = xbuf.data() + 1;
        std::vector<float> sums(static_cast<size_t>(D / 32));
        sub_block_sums(x, D, sums.data());
        std::vector<float> y(rows);
        dot_rows(t, buf.data() + mis, rows, x, sums.data(), D, y.data());
        std::vector<float> wr(static_cast<size_t>(D));
        for (int64_t r = 0; r < rows; ++r) {
          dequantize_row(t, buf.data() + mis + r * rb, wr.data(), D);
          double ref = 0, mag = 0;
          for (int64_t i = 0; i < D; ++i) {
            ref += static_cast<double>(wr[i]) * x[i];
            mag += std::fabs(static_cast<double>(wr[i]) * x[i]);
          }
          ASSERT_NEAR(y[r], ref, 2e-6 * mag + 1e-6) << dtype_name(t) << " D=" << D << " mis=" << mis << " r=" << r;
        }
      }
    }
  }
}

TEST(KQuantLow, MatmulMatchesReferenceForAllTokenCounts) {
  ThreadPool pool(2);
  for (DType t : {DType::Q2_K, DType::Q3_K}) {
    const int64_t N = 70, D = 512;
    const std::vector<float> wf = randn(static_cast<size_t>(N * D), 11);
    std::vector<uint8_t> buf(row_bytes(t, D) * N);
    for (int64_t r = 0; r < N; ++r) quantize_row(t, &wf[static_cast<size_t>(r * D)], buf.data() + r * row_bytes(t, D), D);
    TensorView w;
    w.name = "w";
    w.dtype = t;
    w.shape = {N, D};
    w.data = buf.data();
    w.nbytes = buf.size();
    for (int64_t T : {1, 2, 3, 4, 5, 6, 7, 8, 9, 70}) {
      const std::vector<float> x = randn(static_cast<size_t>(T * D), 12 + static_cast<uint64_t>(T));
      std::vector<float> y(static_cast<size_t>(T * N)), yr(y.size());
      matmul(w, x.data(), y.data(), T, &pool);
      matmul_ref(w, x.data(), yr.data(), T, nullptr);
      // Int8 activations (decode sizes with VNNI, any size with AVX2 alone): each activation
      // rounded to 1/254 of its block's largest, about 0.15 here (their own kernels are
      // checked bit for bit in kernels_test); float activations otherwise.
      const bool int8 = matmul_int8_activations(t, T);
      const double sd = std::sqrt(static_cast<double>(D));
      for (size_t i = 0; i < y.size(); ++i)
        ASSERT_NEAR(y[i], yr[i], int8 ? 0.05 * sd : 1e-4 * (1 + std::fabs(yr[i])) + 2e-4 * sd)
            << dtype_name(t) << " T=" << T << " i=" << i;
    }
  }
}

// ---- a whole model -----------------------------------------------------------------------

double correlation(const std::vector<float>& a, const std::vector<float>& b) {
  double ma = 0, mb = 0;
  for (size_t i = 0; i < a.size(); ++i) ma += a[i], mb += b[i];
  ma /= static_cast<double>(a.size());
  mb /= static_cast<double>(b.size());
  double sab = 0, saa = 0, sbb = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    sab += (a[i] - ma) * (b[i] - mb);
    saa += (a[i] - ma) * (a[i] - ma);
    sbb += (b[i] - mb) * (b[i] - mb);
  }
  return sab / std::sqrt(saa * sbb);
}

// A Mixtral-shaped synthetic model (D 256, F 512, 8 experts, top-2) as f32, quantized to
// q3_K and q2_K by `quantize_model`, loaded mapped and in memory: the expert and attention
// matrices are q2_K / q3_K, in-memory copies are repacked for the VNNI kernels where the CPU
// has them (row for row the same bytes; kept byte for byte otherwise), the logits are close
// to the mapped model's, and both stay close to the f32 model's.
TEST(KQuantLow, QuantizedModelRunsMappedAndInMemoryCloseToF32) {
  const std::string dir = test::temp_dir("kquant_low_model");
  ModelConfig c = test::tiny_moe_config();
  c.dim = 256;
  c.hidden_dim = 512;
  c.head_dim = 64;
  c.vocab_size = 300;
  ThreadPool pool(2);
  synth_gguf(c, 3, DType::F32, dir + "/f32.gguf", &pool);
  std::unique_ptr<Model> f32 = load_model(dir + "/f32.gguf");
  const std::vector<float> want = test::prompt_logits(*f32);
  // Closeness to f32: logits' correlation and relative RMS difference (this random-weight
  // model magnifies weight noise: q4_K measured 0.972 and 0.24, q3_K 0.948 and
  // 0.32, q2_K 0.887 and 0.48; the bounds leave some margin).
  auto closeness = [&](const std::vector<float>& got, double* corr, double* rel) {
    ASSERT_EQ(got.size(), want.size());
    double e = 0, s = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      e += std::pow(got[i] - want[i], 2);
      s += std::pow(want[i], 2);
    }
    *corr = correlation(got, want);
    *rel = std::sqrt(e / s);
  };
  double corr4 = 0, rel4 = 0;
  quantize_model(*f32, dir + "/q4_K.gguf", DType::Q4_K, &pool);
  closeness(test::prompt_logits(*load_model(dir + "/q4_K.gguf")), &corr4, &rel4);
  std::printf("[ q4_K model vs f32: logits correlation %.4f, relative RMS difference %.4f ]\n", corr4, rel4);
  double prev_rel = rel4;
  for (DType t : {DType::Q3_K, DType::Q2_K}) {
    SCOPED_TRACE(dtype_name(t));
    const std::string path = dir + "/" + dtype_name(t) + ".gguf";
    quantize_model(*f32, path, t, &pool);
    std::unique_ptr<Model> mapped = load_model(path, {WeightPlacement::kMapped});
    EXPECT_EQ(mapped->layers[0].experts[0].w1.dtype, t);
    EXPECT_EQ(mapped->layers[0].experts[7].w2.dtype, t);
    EXPECT_EQ(mapped->layers[1].wq.dtype, t);
    EXPECT_EQ(mapped->layers[1].wk.dtype, DType::Q8_0);  // 8 experts: attn_k/v in q8_0
    EXPECT_EQ(mapped->output.dtype, DType::Q6_K);
    EXPECT_EQ(mapped->layers[0].router.dtype, DType::F32);
    std::unique_ptr<Model> mem = load_model(path, {WeightPlacement::kMemory, /*repack=*/true});
    ASSERT_TRUE(mem->weights_in_memory);
    const std::vector<const TensorView*> a = mapped->all_tensors(), b = mem->all_tensors();
    ASSERT_EQ(a.size(), b.size());
    int n_low = 0;
    for (size_t k = 0; k < a.size(); ++k) {
      if (a[k]->dtype != t) continue;
      ++n_low;
      SCOPED_TRACE(a[k]->name);
      ASSERT_EQ(a[k]->nbytes, b[k]->nbytes);
      if (!b[k]->x16) {  // the embedding table (read by rows), or no VNNI
        EXPECT_EQ(std::memcmp(a[k]->data, b[k]->data, a[k]->nbytes), 0);
        continue;
      }
      const int64_t D = a[k]->shape.back(), N = a[k]->numel() / D;
      std::vector<uint8_t> row(row_bytes(t, D));
      for (int64_t r = 0; r < N; ++r) {
        unpack_x16_row(t, b[k]->data, D, r, row.data());
        ASSERT_EQ(std::memcmp(row.data(), a[k]->data + r * row.size(), row.size()), 0) << "row " << r;
      }
    }
    EXPECT_GT(n_low, 2 * 8 * 3);  // every expert matrix of both layers, and wq/wo
    // Every q2_K/q3_K matrix here is [16n, 256m]: all repacked where the CPU has VNNI.
    for (const LayerWeights& l : mem->layers) {
      EXPECT_EQ(l.wq.x16, int8_gemm_fast());
      EXPECT_EQ(l.wo.x16, int8_gemm_fast());
      for (const ExpertWeights& e : l.experts)
        for (const TensorView* w : {&e.w1, &e.w2, &e.w3}) EXPECT_EQ(w->x16, int8_gemm_fast()) << w->name;
    }
    const std::vector<float> got = test::prompt_logits(*mapped), got_mem = test::prompt_logits(*mem);
    ASSERT_EQ(got.size(), want.size());
    ASSERT_EQ(got_mem.size(), want.size());
    // Repacked, the q2_K/q3_K matrices multiply int8-quantized activations (mapped, batches
    // use float activations), and the q6_K output and q8_0 k/v sum in another order: close,
    // not equal. Measured max |difference| / max |logit|: 6.7e-3 (q3_K), 7.4e-3 (q2_K); the
    // bound leaves a factor of 2.7 (without VNNI nothing is repacked: they agree to 1e-3).
    float scale = 0, diff = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      scale = std::max(scale, std::fabs(got[i]));
      diff = std::max(diff, std::fabs(got[i] - got_mem[i]));
    }
    std::printf("[ %s in memory vs mapped: max |logit difference| / max |logit| %.2e ]\n", dtype_name(t),
                diff / scale);
    EXPECT_LE(diff, 0.02f * scale);
    double corr = 0, rel = 0;
    closeness(got, &corr, &rel);
    std::printf("[ %s model vs f32: logits correlation %.4f, relative RMS difference %.4f ]\n",
                dtype_name(t), corr, rel);
    EXPECT_GT(corr, t == DType::Q3_K ? 0.92 : 0.84);
    EXPECT_LT(rel, t == DType::Q3_K ? 0.40 : 0.58);
    EXPECT_GT(rel, prev_rel);  // fewer bits, further from f32
    prev_rel = rel;
    closeness(got_mem, &corr, &rel);  // the repacked kernels too
    EXPECT_GT(corr, t == DType::Q3_K ? 0.92 : 0.84);
    EXPECT_LT(rel, t == DType::Q3_K ? 0.40 : 0.58);
  }
}

}  // namespace
}  // namespace smoe
