// gemm_amx.cpp: f16/bf16 weights times float32 activations on AMX-BF16 tiles (see
// gemm_amx.h for the split into bf16 parts and its accuracy).
#include "kernels/gemm_amx.h"
#include "kernels/gemm_amx_kquant.h"

#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cpuid.h>
#include <cstdlib>
#include <cstring>

#include "core/error.h"
#include "core/thread_pool.h"
#include "kernels/cpu_features.h"

#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace smoe {

namespace {

constexpr int64_t kGroup = 16, kStep = 32, kTile = 16;  // rows, values per step, tokens per tile
constexpr int64_t kTileUnits = 256;                     // 32-bit units of a 1 KB tile
constexpr int kChunk = 4;                               // token tiles per pass (C tiles tmm4..tmm7)

// Linux: a process asks once for the AMX tile data state (arch_prctl); without it the first
// tile instruction faults.
constexpr int kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;

// CPUID leaf 7 EDX: bit 22 AMX-BF16, bit 24 AMX-TILE, bit 25 AMX-INT8.
struct AmxFeatures {
  bool bf16 = false, int8 = false;
};
AmxFeatures detect_amx() {
  unsigned a, b, c, d;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return {};
  const bool tile = (d >> 24) & 1;
  if (!tile || !__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bw") ||
      !__builtin_cpu_supports("avx512vl") || !__builtin_cpu_supports("f16c"))
    return {};
  if (syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) != 0) return {};
  return {((d >> 22) & 1) != 0, ((d >> 25) & 1) != 0};
}
const AmxFeatures& amx_features() {
  static const AmxFeatures f = detect_amx();
  return f;
}

bool env_allows_amx() {
  const char* v = std::getenv("SMOE_AMX");
  return !(v && std::strcmp(v, "0") == 0);
}

std::atomic<bool> g_enabled{env_allows_amx()};

// Palette 1's configuration block (64 bytes): rows and bytes per row of each tile.
struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0, reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

}  // namespace

__attribute__((target("amx-tile"))) void load_amx_tile_config() {
  TileConfig c;
  for (int i = 0; i < 8; ++i) c.rows[i] = 16, c.colsb[i] = 64;
  amx_memory_barrier(&c);  // ldtilecfg's asm names only 8 bytes of c as read
  _tile_loadconfig(&c);
}

namespace {

// v rounded to its nearest bf16 (ties to even), as a float32: the bf16 is its top 16 bits.
// Infinities and NaN stay what they are.
__attribute__((target("avx512f"), always_inline)) inline __m512 bf16_round(__m512 v) {
  const __m512i i = _mm512_castps_si512(v);
  const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(i, 16), _mm512_set1_epi32(1));
  const __m512i r = _mm512_add_epi32(_mm512_add_epi32(i, _mm512_set1_epi32(0x7FFF)), odd);
  return _mm512_castsi512_ps(_mm512_and_si512(r, _mm512_set1_epi32(static_cast<int>(0xFFFF0000u))));
}

// 32 floats (v0: values 0-15, v1: 16-31) as 32 bf16 hi parts and 32 bf16 lo parts, in value
// order: hi exact (already bf16), lo = v - hi (exact in float32) rounded to bf16. An infinite
// value's lo part is NaN (inf - inf), so its products are NaN where float32 gives infinities:
// either way a model that has overflowed.
__attribute__((target("avx512f,avx512bw,avx512bf16"), always_inline)) inline void split(__m512 v0, __m512 v1,
                                                                                     __m512i& hi, __m512i& lo) {
  const __m512 h0 = bf16_round(v0), h1 = bf16_round(v1);
  hi = (__m512i)_mm512_cvtne2ps_pbh(h1, h0);
  lo = (__m512i)_mm512_cvtne2ps_pbh(_mm512_sub_ps(v1, h1), _mm512_sub_ps(v0, h0));
}

// The 16 tokens of tile j (zeros past T): each token's 32 values of step ks give 16 pairs
// (32-bit units), which go to column n of the tile's 16 pair rows (a scatter, stride 16).
__attribute__((target("avx512f,avx512bw,avx512bf16"))) void prepare_tile(const float* x, int64_t T, int64_t D,
                                                                        int64_t j, uint32_t* units) {
  const __m512i idx = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                         _mm512_set1_epi32(kTile));
  for (int64_t n = 0; n < kTile; ++n) {
    const int64_t t = j * kTile + n;
    for (int64_t ks = 0; ks < D / kStep; ++ks) {
      uint32_t* base = units + ((j * (D / kStep) + ks) * 2) * kTileUnits + n;
      __m512i hi = _mm512_setzero_si512(), lo = _mm512_setzero_si512();
      if (t < T) split(_mm512_loadu_ps(x + t * D + ks * kStep), _mm512_loadu_ps(x + t * D + ks * kStep + 16), hi, lo);
      _mm512_i32scatter_epi32(base, idx, hi, 4);
      _mm512_i32scatter_epi32(base + kTileUnits, idx, lo, 4);
    }
  }
}

// D values of the f16 rows of one row group (16 rows, rb bytes apart) as A tiles: for each
// step ks, [hi, lo][16 rows][32 bf16] (2 KB) at out + 2048 ks, exact.
__attribute__((target("avx512f,avx512bw,avx512bf16,f16c"))) void split_f16_rows(const uint8_t* w, size_t rb,
                                                                               int64_t D, uint8_t* out) {
  for (int64_t r = 0; r < kGroup; ++r) {
    const uint8_t* row = w + static_cast<size_t>(r) * rb;
    for (int64_t ks = 0; ks < D / kStep; ++ks) {
      const __m512i h = _mm512_loadu_si512(row + ks * kStep * 2);
      __m512i hi, lo;
      split(_mm512_cvtph_ps(_mm512_castsi512_si256(h)), _mm512_cvtph_ps(_mm512_extracti64x4_epi64(h, 1)), hi, lo);
      uint8_t* dst = out + ks * 2048 + r * 64;
      _mm512_store_si512(dst, hi);
      _mm512_store_si512(dst + 1024, lo);
    }
  }
}

// Tiles here: tmm0/tmm1 the weights' hi/lo parts (A), tmm2/tmm3 the activations' hi/lo parts
// (B), tmm4..tmm7 the results of 4 token tiles (C).
// C tile J (tmm4 + J) += the products of step ks: A hi . B hi + A hi . B lo (+ A lo . B hi
// for f16). The tile instructions name their registers in the assembly text, hence the
// spelled-out tiles.
template <bool kF16, int J>
__attribute__((target("amx-tile,amx-bf16"), always_inline)) inline void products() {
#define SMOE_AMX_PRODUCTS(C)         \
  _tile_dpbf16ps(C, 0, 2);           \
  _tile_dpbf16ps(C, 0, 3);           \
  if constexpr (kF16) _tile_dpbf16ps(C, 1, 2);
  if constexpr (J == 0) {
    SMOE_AMX_PRODUCTS(4)
  } else if constexpr (J == 1) {
    SMOE_AMX_PRODUCTS(5)
  } else if constexpr (J == 2) {
    SMOE_AMX_PRODUCTS(6)
  } else {
    SMOE_AMX_PRODUCTS(7)
  }
#undef SMOE_AMX_PRODUCTS
}

// Token tile J of a chunk of NJ (none when J >= NJ): its B tiles for the step (at xb + J *
// tile_stride, hi then lo) loaded, then the products into C tile J.
template <bool kF16, int J, int NJ>
__attribute__((target("amx-tile,amx-bf16"), always_inline)) inline void tile_products(const uint32_t* xb,
                                                                                   int64_t tile_stride) {
  if constexpr (J < NJ) {
    _tile_loadd(2, xb + J * tile_stride, 64);
    _tile_loadd(3, xb + J * tile_stride + kTileUnits, 64);
    products<kF16, J>();
  }
}

// NJ token tiles (j0 ..) against one row group over the steps [s0, s1): the weights' tiles
// for step ks at a + (ks - s0) * a_step (rows a_stride apart; f16: the lo tile 1 KB after the
// hi one). The C tiles start from zero (first segment) or from c[jj] (16 rows x 16 tokens),
// and end in c[jj].
template <bool kF16, int NJ>
__attribute__((target("amx-tile,amx-bf16"))) void chunk(const uint8_t* a, size_t a_stride, size_t a_step,
                                                       const AmxActivations& x, int64_t j0, int64_t s0, int64_t s1,
                                                       float* c) {
  const int64_t nks = x.D / kStep, tile_stride = nks * 2 * kTileUnits;
  amx_memory_barrier(a);  // the split rows and c, written by plain stores, before the tile loads
  amx_memory_barrier(c);
  if (s0 == 0) {
    _tile_zero(4);
    if constexpr (NJ > 1) _tile_zero(5);
    if constexpr (NJ > 2) _tile_zero(6);
    if constexpr (NJ > 3) _tile_zero(7);
  } else {
    _tile_loadd(4, c, 64);
    if constexpr (NJ > 1) _tile_loadd(5, c + 256, 64);
    if constexpr (NJ > 2) _tile_loadd(6, c + 512, 64);
    if constexpr (NJ > 3) _tile_loadd(7, c + 768, 64);
  }
  for (int64_t ks = s0; ks < s1; ++ks) {
    _tile_loadd(0, a + (ks - s0) * a_step, a_stride);
    if constexpr (kF16) _tile_loadd(1, a + (ks - s0) * a_step + 1024, 64);
    const uint32_t* xb = x.units.data() + (j0 * nks + ks) * 2 * kTileUnits;
    tile_products<kF16, 0, NJ>(xb, tile_stride);
    tile_products<kF16, 1, NJ>(xb, tile_stride);
    tile_products<kF16, 2, NJ>(xb, tile_stride);
    tile_products<kF16, 3, NJ>(xb, tile_stride);
  }
  _tile_stored(4, c, 64);
  if constexpr (NJ > 1) _tile_stored(5, c + 256, 64);
  if constexpr (NJ > 2) _tile_stored(6, c + 512, 64);
  if constexpr (NJ > 3) _tile_stored(7, c + 768, 64);
  amx_memory_barrier(c);  // c, written by tile stores, before plain loads
}

// Row groups go kBatch at a time, and the row in segments of kSegment steps: the activations'
// tiles of one segment and 4 token tiles (256 KB) stay in L2 while every group of the batch
// passes over them, instead of all the activations (T x D x 4 bytes) streaming once per
// group. The C tiles wait in c between segments; f16 rows are split once per segment.
constexpr int64_t kBatch = kAmxBatchGroups, kSegment = 32;


template <bool kF16>
void amx_groups(const uint8_t* w, size_t rb, int64_t n_groups, const AmxActivations& x, float* y, int64_t ldy) {
  load_amx_tile_config();
  const int64_t TT = x.Tpad / kTile, nks = x.D / kStep;
  thread_local std::vector<float> c_buf;    // [kBatch][TT][16 rows][16 tokens]
  thread_local std::vector<uint8_t> a_buf;  // f16: [kBatch][kSegment][hi, lo][16 rows][32 bf16]
  float* cb = aligned64(c_buf, static_cast<size_t>(kBatch * TT * 256));
  uint8_t* ab = kF16 ? aligned64(a_buf, static_cast<size_t>(kBatch * kSegment * 2048)) : nullptr;
  for (int64_t g0 = 0; g0 < n_groups; g0 += kBatch) {
    const int64_t ng = std::min(kBatch, n_groups - g0);
    for (int64_t s0 = 0; s0 < nks; s0 += kSegment) {
      const int64_t s1 = std::min(nks, s0 + kSegment);
      if constexpr (kF16)
        for (int64_t g = 0; g < ng; ++g)
          split_f16_rows(w + static_cast<size_t>((g0 + g) * kGroup) * rb + s0 * kStep * 2, rb, (s1 - s0) * kStep,
                         ab + g * kSegment * 2048);
      if constexpr (kF16) amx_memory_barrier(ab);
      for (int64_t j0 = 0; j0 < TT; j0 += kChunk) {
        const int64_t nj = std::min<int64_t>(kChunk, TT - j0);
        for (int64_t g = 0; g < ng; ++g) {
          const uint8_t* a = kF16 ? ab + g * kSegment * 2048
                                  : w + static_cast<size_t>((g0 + g) * kGroup) * rb + s0 * kStep * 2;
          const size_t a_stride = kF16 ? 64 : rb, a_step = kF16 ? 2048 : kStep * 2;
          float* c = cb + (g * TT + j0) * 256;
          switch (nj) {
            case 1: chunk<kF16, 1>(a, a_stride, a_step, x, j0, s0, s1, c); break;
            case 2: chunk<kF16, 2>(a, a_stride, a_step, x, j0, s0, s1, c); break;
            case 3: chunk<kF16, 3>(a, a_stride, a_step, x, j0, s0, s1, c); break;
            default: chunk<kF16, 4>(a, a_stride, a_step, x, j0, s0, s1, c); break;
          }
        }
      }
    }
    for (int64_t g = 0; g < ng; ++g)
      for (int64_t t = 0; t < x.T; ++t) {
        const float* c = cb + (g * TT + t / kTile) * 256 + t % kTile;
        float* yt = y + t * ldy + (g0 + g) * kGroup;
        for (int64_t m = 0; m < kGroup; ++m) yt[m] = c[m * kTile];
      }
  }
}

}  // namespace

bool amx_available() { return amx_features().bf16 && g_enabled.load(std::memory_order_relaxed) && avx512_allowed(); }

bool amx_int8_available() { return amx_features().int8 && g_enabled.load(std::memory_order_relaxed) && avx512_allowed(); }

void set_amx_enabled(bool on) { g_enabled.store(on, std::memory_order_relaxed); }

bool amx_supports(DType t, int64_t N, int64_t D) {
  return (t == DType::F16 || t == DType::BF16) && N > 0 && N % kGroup == 0 && D > 0 && D % kStep == 0 &&
         amx_available();
}

void prepare_amx_activations(const float* x, int64_t T, int64_t D, AmxActivations& out, ThreadPool* pool) {
  SMOE_CHECK(T > 0 && D > 0 && D % kStep == 0, "AMX activations: [", T, ", ", D,
             "] (expected tokens and a row length that is a multiple of 32)");
  SMOE_CHECK(amx_available(), "AMX activations: this CPU or OS has no AMX-BF16 tiles (or SMOE_AMX=0)");
  out.T = T;
  out.D = D;
  out.Tpad = (T + kTile - 1) / kTile * kTile;
  const int64_t TT = out.Tpad / kTile;
  const size_t n = static_cast<size_t>(D / kStep * TT * 2 * kTileUnits);
  if (out.units.size() < n) out.units.resize(n);
  parallel_for(pool, TT, 1, [&](int64_t j0, int64_t j1) {
    for (int64_t j = j0; j < j1; ++j) prepare_tile(x, T, D, j, out.units.data());
  });
}

void gemm_amx(DType t, const uint8_t* w, size_t rb, int64_t n_groups, const AmxActivations& x, float* y,
              int64_t ldy) {
  SMOE_CHECK(amx_supports(t, n_groups * kGroup, x.D), "AMX kernel: ", dtype_name(t), " rows of ", x.D,
             " values (expected f16 or bf16, a multiple of 32, and a CPU with AMX-BF16)");
  SMOE_CHECK(rb == row_bytes(t, x.D), "AMX kernel: rows ", rb, " bytes apart (expected ", row_bytes(t, x.D), ")");
  if (t == DType::F16) amx_groups<true>(w, rb, n_groups, x, y, ldy);
  else amx_groups<false>(w, rb, n_groups, x, y, ldy);
}

}  // namespace smoe
