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
// Parses "f32", "f16", "bf16", "q8_0", "q4_0" (case-insensitive).
std::optional<DType> dtype_from_name(const std::string& name);
// Bytes of a row of n values; throws when n is not a whole number of blocks.
size_t row_bytes(DType t, int64_t n);

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
