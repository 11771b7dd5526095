// cpu_features_test.cpp: the instruction-set cap (kernels/cpu_features.h): each cap reaches
// Highway's dispatch and the AVX-512 kernels, and a bad SMOE_CPU is refused. (CMake also runs
// the whole suite a second and third time under SMOE_CPU=avx2 and SMOE_CPU=scalar.)
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "kernels/cpu_features.h"
#include "kernels/dequant.h"
#include "kernels/gemm_amx.h"
#include "kernels/gemm_amx_kquant.h"
#include "kernels/gemm_int8.h"
#include "kernels/quantize.h"
#include "kernels/simd.h"
#include "test_util.h"

namespace smoe {
namespace {

using test::randn;

TEST(CpuFeatures, NamesRoundTripAndOthersAreRefused) {
  for (CpuCap c : {CpuCap::kScalar, CpuCap::kSse4, CpuCap::kAvx2, CpuCap::kAvx512})
    EXPECT_EQ(parse_cpu_cap(cpu_cap_name(c)), c);
  for (const char* bad : {"", "AVX2", "avx", "avx512f", "neon"}) EXPECT_FALSE(parse_cpu_cap(bad).has_value()) << bad;
}

// Every cap this CPU allows: the Highway target dispatched to, whether the AVX-512 kernels
// may run, and a dispatched kernel still equal to its scalar reference.
TEST(CpuFeatures, EachCapReachesTheDispatchAndTheAvx512Kernels) {
  const CpuCap before = cpu_cap();
  set_cpu_cap(CpuCap::kAvx512);  // at most what the CPU has
  const CpuCap top = cpu_cap();
  const bool vnni = int8_gemm_fast();
  for (CpuCap c : {CpuCap::kScalar, CpuCap::kSse4, CpuCap::kAvx2, CpuCap::kAvx512}) {
    if (static_cast<int>(c) > static_cast<int>(top)) continue;
    set_cpu_cap(c);
    const std::string target = simd_target(), what = std::string(cpu_cap_name(c)) + " -> " + target;
    EXPECT_EQ(cpu_cap(), c);
    switch (c) {
      case CpuCap::kAvx512: EXPECT_EQ(target.rfind("AVX3", 0), 0u) << what; break;
      case CpuCap::kAvx2: EXPECT_EQ(target, "AVX2") << what; break;
      case CpuCap::kSse4: EXPECT_EQ(target, "SSE4") << what; break;
      case CpuCap::kScalar: EXPECT_TRUE(target == "EMU128" || target == "SCALAR") << what; break;
    }
    EXPECT_EQ(avx512_allowed(), c == CpuCap::kAvx512) << what;
    EXPECT_EQ(int8_gemm_fast(), c == CpuCap::kAvx512 && vnni) << what;
    if (c != CpuCap::kAvx512) {
      EXPECT_FALSE(amx_available()) << what;
      EXPECT_FALSE(amx_int8_available()) << what;
    }
    // q4_K rows through the dispatched decode dot (float activations) against the
    // dequantized rows' dot in double precision.
    const int64_t D = 512, N = 5;
    const std::vector<float> w = randn(static_cast<size_t>(N * D), 3), x = randn(static_cast<size_t>(D), 4);
    const size_t rb = row_bytes(DType::Q4_K, D);
    std::vector<uint8_t> q(rb * N);
    for (int64_t r = 0; r < N; ++r) quantize_row(DType::Q4_K, w.data() + r * D, q.data() + r * rb, D);
    std::vector<float> xsum(static_cast<size_t>(D / 32)), y(static_cast<size_t>(N)), row(static_cast<size_t>(D));
    sub_block_sums(x.data(), D, xsum.data());
    dot_rows(DType::Q4_K, q.data(), N, x.data(), xsum.data(), D, y.data());
    for (int64_t r = 0; r < N; ++r) {
      dequantize_row(DType::Q4_K, q.data() + r * rb, row.data(), D);
      double dot = 0, mag = 0;
      for (int64_t i = 0; i < D; ++i) {
        dot += static_cast<double>(row[static_cast<size_t>(i)]) * x[static_cast<size_t>(i)];
        mag += std::fabs(static_cast<double>(row[static_cast<size_t>(i)]) * x[static_cast<size_t>(i)]);
      }
      EXPECT_NEAR(y[static_cast<size_t>(r)], dot, 1e-5 * mag) << what << " row " << r;
    }
  }
  set_cpu_cap(before);
  EXPECT_EQ(cpu_cap(), before);
}

TEST(CpuFeatures, TheCliRefusesAnUnknownCap) {
  const test::CmdResult r = test::run_command(std::string("SMOE_CPU=avx3 ") + SMOE_BINARY + " info --help");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("SMOE_CPU=avx3: expected avx512, avx2, sse4 or scalar"), std::string::npos) << r.err;
  const test::CmdResult ok = test::run_command(std::string("SMOE_CPU=sse4 ") + SMOE_BINARY + " info --help");
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
}

}  // namespace
}  // namespace smoe
