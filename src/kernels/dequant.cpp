// dequant.cpp: scalar dequantization of f32/f16/bf16/q8_0/q4_0 rows.
#include "kernels/dequant.h"

#include <cstring>

#include "core/error.h"

namespace smoe {

namespace {

inline uint16_t load_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

}  // namespace

void dequantize_row(DType t, const uint8_t* src, float* dst, int64_t n) {
  switch (t) {
    case DType::F32:
      std::memcpy(dst, src, static_cast<size_t>(n) * 4);
      return;
    case DType::F16:
      for (int64_t i = 0; i < n; ++i) dst[i] = f16_to_f32(load_u16(src + 2 * i));
      return;
    case DType::BF16:
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(load_u16(src + 2 * i));
      return;
    case DType::Q8_0: {
      const int64_t nb = n / static_cast<int64_t>(kQK8_0);
      for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* blk = src + b * sizeof(BlockQ8_0);
        const float d = f16_to_f32(load_u16(blk));
        const int8_t* qs = reinterpret_cast<const int8_t*>(blk + 2);
        for (size_t i = 0; i < kQK8_0; ++i) dst[b * kQK8_0 + i] = static_cast<float>(qs[i]) * d;
      }
      return;
    }
    case DType::Q4_0: {
      const int64_t nb = n / static_cast<int64_t>(kQK4_0);
      for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* blk = src + b * sizeof(BlockQ4_0);
        const float d = f16_to_f32(load_u16(blk));
        const uint8_t* qs = blk + 2;
        float* out = dst + b * kQK4_0;
        for (size_t i = 0; i < kQK4_0 / 2; ++i) {
          out[i] = static_cast<float>((qs[i] & 0x0f) - 8) * d;
          out[i + kQK4_0 / 2] = static_cast<float>((qs[i] >> 4) - 8) * d;
        }
      }
      return;
    }
  }
  fail("dequantize_row: unsupported type ", static_cast<uint32_t>(t));
}

}  // namespace smoe
