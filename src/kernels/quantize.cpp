// quantize.cpp: scalar float32 -> f16/bf16/q8_0/q4_0/q4_K/q5_K/q6_K row quantizers.
// q8_0 and q4_0 round the way llama.cpp's reference quantizers do; the K-quants take each
// sub-block's scale (and min) from its range, then 6-bit (8-bit for q6_K) super-block
// quantization of those scales, then round every value with the scales actually stored.
#include "kernels/quantize.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"

namespace smoe {

namespace {

void store_u16(uint8_t* p, uint16_t v) { std::memcpy(p, &v, 2); }

int nearest_int(float x) { return static_cast<int>(std::lround(x)); }

// The value of largest magnitude in x[n] (its sign kept; the first on ties).
float signed_absmax(const float* x, int n) {
  float best = 0.f;
  for (int i = 0; i < n; ++i)
    if (std::fabs(x[i]) > std::fabs(best)) best = x[i];
  return best;
}

void quantize_q8_0(const float* x, BlockQ8_0& b) {
  float amax = 0.f;
  for (size_t i = 0; i < kQK8_0; ++i) amax = std::max(amax, std::fabs(x[i]));
  const float d = amax / 127.f, id = d != 0.f ? 1.f / d : 0.f;
  b.d = f32_to_f16(d);
  for (size_t i = 0; i < kQK8_0; ++i) b.qs[i] = static_cast<int8_t>(std::roundf(x[i] * id));
}

void quantize_q4_0(const float* x, BlockQ4_0& b) {
  const float max = signed_absmax(x, kQK4_0);
  const float d = max / -8.f, id = d != 0.f ? 1.f / d : 0.f;
  b.d = f32_to_f16(d);
  for (size_t i = 0; i < kQK4_0 / 2; ++i) {
    const int lo = std::min(15, static_cast<int>(static_cast<int8_t>(x[i] * id + 8.5f)));
    const int hi = std::min(15, static_cast<int>(static_cast<int8_t>(x[i + kQK4_0 / 2] * id + 8.5f)));
    b.qs[i] = static_cast<uint8_t>(lo | hi << 4);
  }
}

// Q4_K (nmax 15, qh null) or Q5_K (nmax 31): fills d, dmin, scales and q[256] (0..nmax).
void quantize_k4_k5(const float* x, int nmax, uint16_t* d16, uint16_t* dmin16, uint8_t* scales,
                    uint8_t* q) {
  float scale[8], min[8];  // per 32-value sub-block: value ~ scale * q - min
  float max_scale = 0.f, max_min = 0.f;
  for (int j = 0; j < 8; ++j) {
    const float* s = x + 32 * j;
    float lo = 0.f, hi = -INFINITY;
    for (int l = 0; l < 32; ++l) {
      lo = std::min(lo, s[l]);
      hi = std::max(hi, s[l]);
    }
    scale[j] = (hi - lo) / static_cast<float>(nmax);
    min[j] = -lo;
    max_scale = std::max(max_scale, scale[j]);
    max_min = std::max(max_min, min[j]);
  }
  *d16 = f32_to_f16(max_scale / 63.f);
  *dmin16 = f32_to_f16(max_min / 63.f);
  const float d = f16_to_f32(*d16), dmin = f16_to_f32(*dmin16);
  uint8_t sc[8], mn[8];
  for (int j = 0; j < 8; ++j) {
    sc[j] = static_cast<uint8_t>(d > 0 ? std::clamp(nearest_int(scale[j] / d), 0, 63) : 0);
    mn[j] = static_cast<uint8_t>(dmin > 0 ? std::clamp(nearest_int(min[j] / dmin), 0, 63) : 0);
  }
  std::memset(scales, 0, 12);
  for (int j = 0; j < 8; ++j) {
    if (j < 4) {
      scales[j] = sc[j];
      scales[j + 4] = mn[j];
    } else {
      scales[j + 4] = static_cast<uint8_t>((sc[j] & 0xF) | (mn[j] & 0xF) << 4);
      scales[j - 4] |= static_cast<uint8_t>((sc[j] >> 4) << 6);
      scales[j] |= static_cast<uint8_t>((mn[j] >> 4) << 6);
    }
  }
  for (int j = 0; j < 8; ++j) {
    const float ds = d * sc[j], m = dmin * mn[j];
    for (int l = 0; l < 32; ++l) {
      const int v = ds > 0 ? nearest_int((x[32 * j + l] + m) / ds) : 0;
      q[32 * j + l] = static_cast<uint8_t>(std::clamp(v, 0, nmax));
    }
  }
}

void quantize_q4_k(const float* x, BlockQ4_K& b) {
  uint8_t q[kQK_K];
  quantize_k4_k5(x, 15, &b.d, &b.dmin, b.scales, q);
  for (int c = 0; c < 4; ++c)
    for (int l = 0; l < 32; ++l)
      b.qs[32 * c + l] = static_cast<uint8_t>(q[64 * c + l] | q[64 * c + 32 + l] << 4);
}

void quantize_q5_k(const float* x, BlockQ5_K& b) {
  uint8_t q[kQK_K];
  quantize_k4_k5(x, 31, &b.d, &b.dmin, b.scales, q);
  std::memset(b.qh, 0, sizeof b.qh);
  for (int c = 0; c < 4; ++c)
    for (int l = 0; l < 32; ++l) {
      const uint8_t lo = q[64 * c + l], hi = q[64 * c + 32 + l];
      b.qs[32 * c + l] = static_cast<uint8_t>((lo & 0xF) | (hi & 0xF) << 4);
      b.qh[l] |= static_cast<uint8_t>((lo >> 4) << (2 * c) | (hi >> 4) << (2 * c + 1));
    }
}

void quantize_q6_k(const float* x, BlockQ6_K& b) {
  float scale[16];  // per 16-value sub-block: value ~ scale * q, q in -32..31
  float max_scale = 0.f;
  for (int j = 0; j < 16; ++j) {
    scale[j] = signed_absmax(x + 16 * j, 16) / -32.f;
    max_scale = std::max(max_scale, std::fabs(scale[j]));
  }
  b.d = f32_to_f16(max_scale / 127.f);
  const float d = f16_to_f32(b.d);
  uint8_t q[kQK_K];
  for (int j = 0; j < 16; ++j) {
    const int sc = d > 0 ? std::clamp(nearest_int(scale[j] / d), -128, 127) : 0;
    b.scales[j] = static_cast<int8_t>(sc);
    const float ds = d * static_cast<float>(sc);
    for (int l = 0; l < 16; ++l) {
      const int v = ds != 0.f ? nearest_int(x[16 * j + l] / ds) : 0;
      q[16 * j + l] = static_cast<uint8_t>(std::clamp(v, -32, 31) + 32);
    }
  }
  std::memset(b.ql, 0, sizeof b.ql);
  std::memset(b.qh, 0, sizeof b.qh);
  for (int h = 0; h < 2; ++h)
    for (int j = 0; j < 4; ++j)
      for (int l = 0; l < 32; ++l) {
        const uint8_t v = q[128 * h + 32 * j + l];
        b.ql[64 * h + l + 32 * (j & 1)] |= static_cast<uint8_t>((v & 0xF) << (j < 2 ? 0 : 4));
        b.qh[32 * h + l] |= static_cast<uint8_t>((v >> 4) << (2 * j));
      }
}

template <typename Block, typename Fn>
void per_block(const float* src, uint8_t* dst, int64_t n, size_t block_elems, Fn fn) {
  for (int64_t b = 0; b < n / static_cast<int64_t>(block_elems); ++b) {
    Block blk;
    fn(src + b * static_cast<int64_t>(block_elems), blk);
    std::memcpy(dst + b * sizeof(Block), &blk, sizeof(Block));
  }
}

}  // namespace

void quantize_row(DType t, const float* src, uint8_t* dst, int64_t n) {
  row_bytes(t, n);  // checks n is a whole number of blocks
  if (n == 0) return;
  switch (t) {
    case DType::F32:
      std::memcpy(dst, src, static_cast<size_t>(n) * 4);
      return;
    case DType::F16:
      for (int64_t i = 0; i < n; ++i) store_u16(dst + 2 * i, f32_to_f16(src[i]));
      return;
    case DType::BF16:
      for (int64_t i = 0; i < n; ++i) store_u16(dst + 2 * i, f32_to_bf16(src[i]));
      return;
    case DType::Q8_0: return per_block<BlockQ8_0>(src, dst, n, kQK8_0, quantize_q8_0);
    case DType::Q4_0: return per_block<BlockQ4_0>(src, dst, n, kQK4_0, quantize_q4_0);
    case DType::Q4_K: return per_block<BlockQ4_K>(src, dst, n, kQK_K, quantize_q4_k);
    case DType::Q5_K: return per_block<BlockQ5_K>(src, dst, n, kQK_K, quantize_q5_k);
    case DType::Q6_K: return per_block<BlockQ6_K>(src, dst, n, kQK_K, quantize_q6_k);
  }
  fail("quantize_row: unsupported type ", static_cast<uint32_t>(t));
}

}  // namespace smoe
