// cpu_features.cpp: the instruction-set cap (cpu_features.h): CPU detection, SMOE_CPU, and
// the Highway targets it rules out.
#include "kernels/cpu_features.h"

#include <atomic>
#include <cstdlib>

#include "core/error.h"
#include "hwy/targets.h"

namespace smoe {
namespace {

CpuCap detect() {
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  if (avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl"))
    return CpuCap::kAvx512;
  if (avx2) return CpuCap::kAvx2;
  if (__builtin_cpu_supports("sse4.1")) return CpuCap::kSse4;
  return CpuCap::kScalar;
}

// Highway targets better than the cap (on x86 a lower bit is a better target).
int64_t disabled_targets(CpuCap c) {
  switch (c) {
    case CpuCap::kAvx512: return 0;
    case CpuCap::kAvx2: return HWY_AVX2 - 1;
    case CpuCap::kSse4: return HWY_SSE4 - 1;
    case CpuCap::kScalar: return HWY_EMU128 - 1;
  }
  return 0;
}

struct State {
  CpuCap detected = detect();
  const char* env = std::getenv("SMOE_CPU");
  bool env_bad = false;
  std::atomic<int> cap{static_cast<int>(detected)};
  State() {
    if (env && *env) {
      if (const auto c = parse_cpu_cap(env)) apply(*c);
      else env_bad = true;
    }
  }
  void apply(CpuCap c) {
    if (static_cast<int>(c) > static_cast<int>(detected)) c = detected;
    cap.store(static_cast<int>(c), std::memory_order_relaxed);
    hwy::DisableTargets(disabled_targets(c));
  }
};

State& state() {
  static State s;
  return s;
}
// Applies SMOE_CPU to Highway's dispatch before main, whichever kernel runs first.
[[maybe_unused]] const bool g_applied = (state(), true);

}  // namespace

const char* cpu_cap_name(CpuCap c) {
  switch (c) {
    case CpuCap::kScalar: return "scalar";
    case CpuCap::kSse4: return "sse4";
    case CpuCap::kAvx2: return "avx2";
    case CpuCap::kAvx512: return "avx512";
  }
  return "?";
}

std::optional<CpuCap> parse_cpu_cap(std::string_view s) {
  for (CpuCap c : {CpuCap::kScalar, CpuCap::kSse4, CpuCap::kAvx2, CpuCap::kAvx512})
    if (s == cpu_cap_name(c)) return c;
  return std::nullopt;
}

CpuCap cpu_cap() {
  State& s = state();
  SMOE_CHECK(!s.env_bad, "SMOE_CPU=", s.env, ": expected avx512, avx2, sse4 or scalar");
  return static_cast<CpuCap>(s.cap.load(std::memory_order_relaxed));
}

void set_cpu_cap(CpuCap c) { state().apply(c); }

bool avx2_allowed() { return state().cap.load(std::memory_order_relaxed) >= static_cast<int>(CpuCap::kAvx2); }

bool avx512_allowed() { return state().cap.load(std::memory_order_relaxed) == static_cast<int>(CpuCap::kAvx512); }

}  // namespace smoe
