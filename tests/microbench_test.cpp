// microbench_test.cpp: smoe_microbench (bench/microbench.cpp) runs every kind of benchmark
// and reports rates.
#include <gtest/gtest.h>

#include <string>

#include "test_util.h"

#ifdef SMOE_MICROBENCH
TEST(Microbench, RunsAndReportsRates) {
  const smoe::test::CmdResult r = smoe::test::run_command(
      "'" SMOE_MICROBENCH "' --benchmark_min_time=0.001 --benchmark_filter='q4_0|q2_K' --benchmark_format=json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* name : {"Decode/q4_0", "Decode/q2_K", "Repack/q4_0", "Repack/q2_K", "Quantize/q4_0", "Quantize/q2_K"})
    EXPECT_NE(r.out.find(std::string("\"name\": \"") + name + "\""), std::string::npos) << name << "\n" << r.out;
  EXPECT_NE(r.out.find("\"bytes_per_second\""), std::string::npos);
  EXPECT_NE(r.out.find("\"items_per_second\""), std::string::npos);
}
#endif
