// cpu_features.h: which instruction sets the kernels may use. By default everything the CPU
// has; SMOE_CPU=avx2 (or sse4, scalar) in the environment, or set_cpu_cap (tests,
// benchmarks), caps them, so that one machine runs, tests and measures the paths that CPUs
// without AVX-512 take: the Highway kernels' lower targets (hwy::DisableTargets) and no
// AVX-512 function-target kernels (the VNNI int8 kernels, the repacked x16 layout, the AMX
// tiles, the AVX-512 quantizers).
#pragma once
#include <optional>
#include <string_view>

namespace smoe {

enum class CpuCap { kScalar = 0, kSse4 = 1, kAvx2 = 2, kAvx512 = 3 };

// "scalar", "sse4", "avx2" or "avx512".
const char* cpu_cap_name(CpuCap c);
std::optional<CpuCap> parse_cpu_cap(std::string_view s);

// The cap in effect: the lower of what the CPU has (avx2: AVX2, FMA and F16C; avx512: those
// and AVX-512 F/BW/VL; sse4: SSE4.1) and SMOE_CPU. Throws an Error naming the accepted values
// when SMOE_CPU holds anything else (the CLI calls it at start-up; the kernels' own checks
// below ignore a bad value).
CpuCap cpu_cap();
// Sets the cap for the whole process (at most what the CPU has). Weights repacked for the
// AVX-512 kernels under a higher cap must not be used under a lower one: set it before
// loading a model.
void set_cpu_cap(CpuCap c);
// Whether the AVX-512 function-target kernels may run (they check their own further
// features, such as VNNI or AMX, besides).
bool avx512_allowed();
// Whether AVX2 function-target kernels (AVX2, FMA, F16C) may run: the cap is avx2 or avx512.
bool avx2_allowed();
// The Highway target the SIMD kernels dispatch to now ("AVX3", "AVX2", "SSE4", "EMU128", ...).
const char* simd_target();

}  // namespace smoe
