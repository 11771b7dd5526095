// gemm_amx.h: batched products of f16 and bf16 weights on Intel AMX-BF16 tiles (Sapphire
// Rapids and later), for prompts and batches. Legend: T tokens (Tpad: padded to 16), D row
// length, N rows (16 per row group), ks = 32-value step of D.
//
// A tile product C[16 rows][16 tokens] += A[16 rows][32 bf16] . B[16 value pairs][16 tokens
// x 2 bf16] (tdpbf16ps) multiplies bf16 values exactly and adds in float32, and C stays in
// its tile over the whole row: one store per 16 x 16 results. Float32 activations are split
// x = x_hi + x_lo (both bf16: x_hi its leading 8 significant bits, x_lo the next 8, rounded),
// and f16 weights w = w_hi + w_lo exactly (an f16 has 11 significant bits), so that
//   bf16 weights: w . x = w . x_hi + w . x_lo
//   f16 weights:  w . x = w_hi . x_hi + w_hi . x_lo + w_lo . x_hi
// leave out terms of about 2^-16 of each product: the results agree with float32 arithmetic
// to about 1e-5 relative (not bit for bit: the decode path, below 16 tokens, sums in its own
// order). Results do not depend on the number of tokens or on how rows are split.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/dtype.h"

namespace smoe {

class ThreadPool;

// Whether this CPU and OS run AMX-BF16 tiles (CPUID, then the kernel's permission for the
// tile state, asked once per process) and they are not switched off: SMOE_AMX=0 in the
// environment, or set_amx_enabled(false) (tests and benchmarks comparing both paths).
bool amx_available();
void set_amx_enabled(bool on);
// Sets this thread's tile configuration: palette 1, all eight tiles 16 rows x 64 bytes (what
// gemm_amx and gemm_amx_kquant use).
void load_amx_tile_config();
// GCC's tile loads and stores (_tile_loadd, _tile_stored) are asm statements that name no
// memory: the compiler may drop or move plain stores that a tile load reads (GCC 12 removed a
// whole call that filled a buffer only tile loads read), or plain loads of what a tile store
// wrote. The kernels put this barrier, which takes the buffer's address and clobbers memory,
// between the two kinds of access.
inline void amx_memory_barrier(const void* p) { asm volatile("" : : "r"(p) : "memory"); }

// A grow-only buffer of at least n T's whose returned start is 64-byte aligned (tile rows).
template <class T>
T* aligned64(std::vector<T>& buf, size_t n) {
  if (buf.size() < n + 64 / sizeof(T)) buf.resize(n + 64 / sizeof(T));
  return buf.data() + (64 - reinterpret_cast<uintptr_t>(buf.data()) % 64) % 64 / sizeof(T);
}
// Whether gemm_amx takes a [N, D] matrix of type t: f16 or bf16, N % 16 == 0, D % 32 == 0,
// and amx_available().
bool amx_supports(DType t, int64_t N, int64_t D);

// x[T, D] split and laid out as B tiles: units[Tpad/16][ks][hi, lo][16 pairs][16 tokens] of
// 32-bit units (2 bf16 values each, the pair 2p, 2p + 1 of step ks), padding tokens zero.
// A token tile's steps are contiguous: a segment of them is one run of memory (as steps of
// all tiles, 2 KB runs 2 KB x Tpad/16 apart, they crowded into a few L2 sets).
struct AmxActivations {
  int64_t T = 0, Tpad = 0, D = 0;
  std::vector<uint32_t> units;
};
void prepare_amx_activations(const float* x, int64_t T, int64_t D, AmxActivations& out, ThreadPool* pool);

// Row groups gemm_amx takes together (one pass over the activations per group batch):
// callers give it tasks of this many groups.
constexpr int64_t kAmxBatchGroups = 4;

// y[t * ldy + 16 G + i] for the n_groups row groups starting at w (row i of the matrix at
// w + i * rb, rb = row_bytes(t, x.D)) and the x.T tokens of x.
void gemm_amx(DType t, const uint8_t* w, size_t rb, int64_t n_groups, const AmxActivations& x, float* y,
              int64_t ldy);

}  // namespace smoe
