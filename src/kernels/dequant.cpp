// dequant.cpp: scalar dequantization of f32/f16/bf16/q8_0/q4_0/q2_K/q3_K/q4_K/q5_K/q6_K rows.
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

// One Q4_K (qh == nullptr) or Q5_K super-block: 256 values.
void dequant_k4_k5(uint16_t d16, uint16_t dmin16, const uint8_t* scales, const uint8_t* qh,
                   const uint8_t* qs, float* out) {
  const float d = f16_to_f32(d16), dmin = f16_to_f32(dmin16);
  for (int c = 0; c < 4; ++c) {  // pairs of 32-value sub-blocks
    uint8_t sc0, m0, sc1, m1;
    kquant_scale_min(2 * c, scales, &sc0, &m0);
    kquant_scale_min(2 * c + 1, scales, &sc1, &m1);
    const float d0 = d * sc0, mm0 = dmin * m0, d1 = d * sc1, mm1 = dmin * m1;
    const uint8_t* q = qs + 32 * c;
    for (int l = 0; l < 32; ++l) {
      int lo = q[l] & 0xF, hi = q[l] >> 4;
      if (qh) {
        lo |= ((qh[l] >> (2 * c)) & 1) << 4;
        hi |= ((qh[l] >> (2 * c + 1)) & 1) << 4;
      }
      out[64 * c + l] = d0 * static_cast<float>(lo) - mm0;
      out[64 * c + 32 + l] = d1 * static_cast<float>(hi) - mm1;
    }
  }
}

// Q2_K (layout in dtype.h). Same float operations as ggml, so bit-exact with it:
// dl = d * scale, ml = dmin * min, value = dl * q - ml.
void dequant_q2_k(const BlockQ2_K& b, float* out) {
  const float d = f16_to_f32(b.d), dmin = f16_to_f32(b.dmin);
  for (int i = 0; i < static_cast<int>(kQK_K); ++i) {
    const int h = i / 128, j = (i % 128) / 32, l = i % 32;
    const uint8_t sc = b.scales[i / 16];
    const float dl = d * static_cast<float>(sc & 0xF), ml = dmin * static_cast<float>(sc >> 4);
    const int q = (b.qs[32 * h + l] >> (2 * j)) & 3;
    out[i] = dl * static_cast<float>(q) - ml;
  }
}

// Q3_K (layout in dtype.h): dl = d * (scale - 32), value = dl * (q - (high bit ? 0 : 4)).
void dequant_q3_k(const BlockQ3_K& b, float* out) {
  const float d = f16_to_f32(b.d);
  for (int i = 0; i < static_cast<int>(kQK_K); ++i) {
    const int h = i / 128, j = (i % 128) / 32, l = i % 32;
    const float dl = d * static_cast<float>(q3k_scale(i / 16, b.scales) - 32);
    const int low = (b.qs[32 * h + l] >> (2 * j)) & 3;
    const int high = (b.hmask[i % 32] >> (i / 32)) & 1;
    out[i] = dl * static_cast<float>(low - (high ? 0 : 4));
  }
}

void dequant_q6_k(const BlockQ6_K& b, float* out) {
  const float d = f16_to_f32(b.d);
  for (int h = 0; h < 2; ++h) {
    const uint8_t* ql = b.ql + 64 * h;
    const uint8_t* qh = b.qh + 32 * h;
    for (int l = 0; l < 32; ++l) {
      for (int j = 0; j < 4; ++j) {
        const uint8_t low = ql[l + 32 * (j & 1)];
        const int q = ((j < 2 ? low & 0xF : low >> 4) | (((qh[l] >> (2 * j)) & 3) << 4)) - 32;
        const int i = 128 * h + 32 * j + l;
        out[i] = d * static_cast<float>(b.scales[i / 16]) * static_cast<float>(q);
      }
    }
  }
}

}  // namespace

void dequantize_row(DType t, const uint8_t* src, float* dst, int64_t n) {
  if (n == 0) return;
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
    case DType::Q2_K:
    case DType::Q3_K:
    case DType::Q4_K:
    case DType::Q5_K:
    case DType::Q6_K: {
      const int64_t nb = n / static_cast<int64_t>(kQK_K);
      const size_t bb = dtype_info(t).block_bytes;
      for (int64_t b = 0; b < nb; ++b) {
        float* out = dst + b * kQK_K;
        if (t == DType::Q2_K) {
          BlockQ2_K k;
          std::memcpy(&k, src + b * bb, sizeof k);
          dequant_q2_k(k, out);
        } else if (t == DType::Q3_K) {
          BlockQ3_K k;
          std::memcpy(&k, src + b * bb, sizeof k);
          dequant_q3_k(k, out);
        } else if (t == DType::Q4_K) {
          BlockQ4_K k;
          std::memcpy(&k, src + b * bb, sizeof k);
          dequant_k4_k5(k.d, k.dmin, k.scales, nullptr, k.qs, out);
        } else if (t == DType::Q5_K) {
          BlockQ5_K k;
          std::memcpy(&k, src + b * bb, sizeof k);
          dequant_k4_k5(k.d, k.dmin, k.scales, k.qh, k.qs, out);
        } else {
          BlockQ6_K k;
          std::memcpy(&k, src + b * bb, sizeof k);
          dequant_q6_k(k, out);
        }
      }
      return;
    }
  }
  fail("dequantize_row: unsupported type ", static_cast<uint32_t>(t));
}

}  // namespace smoe
