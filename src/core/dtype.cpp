// dtype.cpp: type table and the scalar half/bfloat16 conversions.
#include "core/dtype.h"

#include <algorithm>
#include <cctype>

#include "core/error.h"

namespace smoe {

const DTypeInfo& dtype_info(DType t) {
  static const DTypeInfo f32{"f32", 1, 4}, f16{"f16", 1, 2}, bf16{"bf16", 1, 2},
      q8_0{"q8_0", kQK8_0, sizeof(BlockQ8_0)}, q4_0{"q4_0", kQK4_0, sizeof(BlockQ4_0)},
      q2_k{"q2_K", kQK_K, sizeof(BlockQ2_K)}, q3_k{"q3_K", kQK_K, sizeof(BlockQ3_K)},
      q4_k{"q4_K", kQK_K, sizeof(BlockQ4_K)}, q5_k{"q5_K", kQK_K, sizeof(BlockQ5_K)},
      q6_k{"q6_K", kQK_K, sizeof(BlockQ6_K)};
  switch (t) {
    case DType::F32: return f32;
    case DType::F16: return f16;
    case DType::BF16: return bf16;
    case DType::Q8_0: return q8_0;
    case DType::Q4_0: return q4_0;
    case DType::Q2_K: return q2_k;
    case DType::Q3_K: return q3_k;
    case DType::Q4_K: return q4_k;
    case DType::Q5_K: return q5_k;
    case DType::Q6_K: return q6_k;
  }
  fail("internal: unknown DType ", static_cast<uint32_t>(t));
}

std::optional<DType> dtype_from_ggml(uint32_t id) {
  switch (id) {
    case 0: return DType::F32;
    case 1: return DType::F16;
    case 2: return DType::Q4_0;
    case 8: return DType::Q8_0;
    case 10: return DType::Q2_K;
    case 11: return DType::Q3_K;
    case 12: return DType::Q4_K;
    case 13: return DType::Q5_K;
    case 14: return DType::Q6_K;
    case 30: return DType::BF16;
    default: return std::nullopt;
  }
}

std::string ggml_type_name(uint32_t id) {
  static const char* names[] = {"f32",  "f16",  "q4_0", "q4_1", "q4_2", "q4_3", "q5_0",
                                "q5_1", "q8_0", "q8_1", "q2_K", "q3_K", "q4_K", "q5_K",
                                "q6_K", "q8_K", "iq2_xxs", "iq2_xs", "iq3_xxs", "iq1_s",
                                "iq4_nl", "iq3_s", "iq2_s", "iq4_xs", "i8", "i16", "i32",
                                "i64", "f64", "iq1_m", "bf16"};
  if (id < sizeof(names) / sizeof(names[0])) return names[id];
  return cat("type ", id);
}

std::optional<DType> dtype_from_name(const std::string& name) {
  std::string s = name;
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  size_t n = 0;
  const DType* all = all_dtypes(&n);
  for (size_t i = 0; i < n; ++i) {
    std::string tn = dtype_info(all[i]).name;
    std::transform(tn.begin(), tn.end(), tn.begin(), [](unsigned char c) { return std::tolower(c); });
    if (s == tn) return all[i];
  }
  return std::nullopt;
}

const DType* all_dtypes(size_t* count) {
  static const DType all[] = {DType::F32,  DType::F16,  DType::BF16, DType::Q8_0, DType::Q4_0,
                              DType::Q2_K, DType::Q3_K, DType::Q4_K, DType::Q5_K, DType::Q6_K};
  *count = sizeof(all) / sizeof(all[0]);
  return all;
}

std::string supported_dtype_names() {
  size_t n = 0;
  const DType* all = all_dtypes(&n);
  std::string out;
  for (size_t i = 0; i < n; ++i) out += (i ? ", " : "") + std::string(dtype_info(all[i]).name);
  return out;
}

size_t row_bytes(DType t, int64_t n) {
  const DTypeInfo& info = dtype_info(t);
  SMOE_CHECK(n >= 0 && static_cast<size_t>(n) % info.block_elems == 0, "a row of ", n,
             " values is not a whole number of ", info.name, " blocks (", info.block_elems,
             " values each)");
  return static_cast<size_t>(n) / info.block_elems * info.block_bytes;
}

float f16_to_f32(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      int e = -1;
      do {
        mant <<= 1;
        ++e;
      } while ((mant & 0x400) == 0);
      bits = sign | static_cast<uint32_t>(127 - 15 - e) << 23 | (mant & 0x3ff) << 13;
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | mant << 13;
  } else {
    bits = sign | (exp + 127 - 15) << 23 | mant << 13;
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t f32_to_f16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000);
  uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) return sign | 0x7c00 | (ax > 0x7f800000u ? 0x200 : 0);  // inf/nan
  if (ax >= 0x477ff000u) return sign | 0x7c00;                                     // overflow
  if (ax < 0x38800000u) {  // result is subnormal or zero
    if (ax < 0x33000000u) return sign;
    uint32_t e = ax >> 23;
    uint32_t mant = (ax & 0x7fffff) | 0x800000;
    uint32_t shift = 126 - e;  // value = mant * 2^(e-150); half subnormal unit is 2^-24
    uint32_t half = mant >> shift;
    uint32_t rem = mant & ((1u << shift) - 1);
    uint32_t halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (half & 1))) ++half;
    return sign | static_cast<uint16_t>(half);
  }
  uint32_t e = (ax >> 23) - 127 + 15;
  uint32_t mant = ax & 0x7fffff;
  uint32_t half = e << 10 | mant >> 13;
  uint32_t rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (half & 1))) ++half;  // may carry into exponent: fine
  return sign | static_cast<uint16_t>(half);
}

uint16_t f32_to_bf16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40);
  x += 0x7fff + ((x >> 16) & 1);
  return static_cast<uint16_t>(x >> 16);
}

}  // namespace smoe
