// dtype.h: the element types smoe stores weights in, with their block layout.
// Enum values equal GGML's type ids, so GGUF files map directly. Quantized types pack
// `block_elems` values into `block_bytes` bytes; rows must be a whole number of blocks.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>

namespace smoe {

enum class DType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q8_0 = 8,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  BF16 = 30,
};

struct DTypeInfo {
  const char* name;
  size_t block_elems;  // values per block (1 for plain floats)
  size_t block_bytes;  // bytes per block
};

// Layout of a supported type.
const DTypeInfo& dtype_info(DType t);
inline const char* dtype_name(DType t) { return dtype_info(t).name; }
// The DType for a GGML type id, or nullopt when smoe does not support it.
std::optional<DType> dtype_from_ggml(uint32_t id);
// Name of any GGML type id, supported or not (for error messages): "q4_K", "type 99", ...
std::string ggml_type_name(uint32_t id);
// Parses "f32", "f16", "bf16", "q8_0", "q4_0", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k"
// (case-insensitive).
std::optional<DType> dtype_from_name(const std::string& name);
// Bytes of a row of n values; throws when n is not a whole number of blocks.
size_t row_bytes(DType t, int64_t n);
// Every supported type, and their names joined by ", " (for error messages).
const DType* all_dtypes(size_t* count);
std::string supported_dtype_names();

// Block layouts, exactly as GGUF defines them.
constexpr size_t kQK8_0 = 32;
struct BlockQ8_0 {
  uint16_t d;          // scale, IEEE half
  int8_t qs[kQK8_0];   // value = qs[i] * d
};
static_assert(sizeof(BlockQ8_0) == 34);

constexpr size_t kQK4_0 = 32;
struct BlockQ4_0 {
  uint16_t d;               // scale, IEEE half
  uint8_t qs[kQK4_0 / 2];   // value i (< 16) = ((qs[i] & 15) - 8) * d; value i+16 = ((qs[i] >> 4) - 8) * d
};
static_assert(sizeof(BlockQ4_0) == 18);

// K-quants: super-blocks of 256 values (GGUF's "QK_K").
constexpr size_t kQK_K = 256;
// Q2_K and Q3_K share one value order: a super-block is two halves of 128 values, each
// reading 32 bytes of qs at bit shifts 0, 2, 4, 6. Value i = 128h + 32j + l (l < 32) has
// its 2 low bits at (qs[32h + l] >> 2j) & 3; its 16-value sub-block is i / 16.
// Q2_K: value = d * (scales[s] & 15) * q - dmin * (scales[s] >> 4), q in 0..3, s = i / 16.
// Note d and dmin come after the arrays (unlike Q4_K).
struct BlockQ2_K {
  uint8_t scales[kQK_K / 16];  // per sub-block: low nibble 4-bit scale, high nibble 4-bit min
  uint8_t qs[kQK_K / 4];       // 2-bit quants
  uint16_t d;                  // super-block scale of the scales, half
  uint16_t dmin;               // super-block scale of the mins, half
};
static_assert(sizeof(BlockQ2_K) == 84);
// Q3_K: value = d * (sc_s - 32) * (q - 4 * !high), q the 2 low bits as above, high bit of
// value i in bit i / 32 of hmask[i % 32]; sc_s the 6-bit scale of sub-block s
// (q3k_scale).
struct BlockQ3_K {
  uint8_t hmask[kQK_K / 8];  // high bit of each 3-bit quant
  uint8_t qs[kQK_K / 4];     // low 2 bits
  uint8_t scales[12];        // 16 x 6-bit scales (stored as scale + 32), packed
  uint16_t d;                // super-block scale, half
};
static_assert(sizeof(BlockQ3_K) == 110);
// The 6-bit stored scale (0..63, i.e. scale + 32) of Q3_K sub-block s (0..15): its low 4
// bits are the low nibble of scales[s] for s < 8, the high nibble of scales[s - 8] for
// s >= 8; its top 2 bits are bits 2(s/4), 2(s/4)+1 of scales[8 + s % 4].
inline int q3k_scale(int s, const uint8_t* scales) {
  const int low = s < 8 ? scales[s] & 0xF : scales[s - 8] >> 4;
  const int high = (scales[8 + s % 4] >> (2 * (s / 4))) & 3;
  return low | high << 4;
}
// Q4_K: 8 sub-blocks of 32, each with a 6-bit scale sc and 6-bit min m packed in `scales`
// (see kquant_scale_min). Value = d * sc * q - dmin * m, q in 0..15. Sub-block pair c
// (values 64c..64c+63) uses qs[32c..32c+32): low nibbles first 32 values, high nibbles next.
struct BlockQ4_K {
  uint16_t d;            // super-block scale of the scales, half
  uint16_t dmin;         // super-block scale of the mins, half
  uint8_t scales[12];    // 8 x (6-bit scale, 6-bit min)
  uint8_t qs[kQK_K / 2];
};
static_assert(sizeof(BlockQ4_K) == 144);
// Q5_K: as Q4_K with a fifth bit: for value 64c + l (l < 32) bit 2c of qh[l], for value
// 64c + 32 + l bit 2c+1. q in 0..31.
struct BlockQ5_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[12];
  uint8_t qh[kQK_K / 8];
  uint8_t qs[kQK_K / 2];
};
static_assert(sizeof(BlockQ5_K) == 176);
// Q6_K: 16 sub-blocks of 16 with int8 scales; value = d * scales[s] * (q - 32), q in 0..63.
// Half h (values 128h..128h+127), l < 32: q of value 128h + 32j + l takes its low 4 bits
// from ql[64h + l + 32(j&1)] (low nibble for j < 2, high for j >= 2) and its high 2 bits
// from qh[32h + l] >> 2j. Sub-block of value i is i / 16.
struct BlockQ6_K {
  uint8_t ql[kQK_K / 2];
  uint8_t qh[kQK_K / 4];
  int8_t scales[kQK_K / 16];
  uint16_t d;
};
static_assert(sizeof(BlockQ6_K) == 210);
// Sub-block j (0..7) scale and min of a Q4_K/Q5_K block's 12 packed bytes: the first four
// pairs are the low 6 bits of bytes j and j+4; the last four take their low 4 bits from
// byte j+4 (scale: low nibble, min: high nibble) and their top 2 bits from the top 2 bits
// of bytes j-4 (scale) and j (min).
inline void kquant_scale_min(int j, const uint8_t* q, uint8_t* sc, uint8_t* m) {
  if (j < 4) {
    *sc = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *sc = static_cast<uint8_t>((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    *m = static_cast<uint8_t>((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

// IEEE half <-> float, exact for every half value (round-to-nearest-even on the way in).
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);
// bfloat16 <-> float (round-to-nearest-even on the way in, NaN kept NaN).
inline float bf16_to_f32(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
uint16_t f32_to_bf16(float f);

}  // namespace smoe
