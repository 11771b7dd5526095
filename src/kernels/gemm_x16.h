// gemm_x16.h: q8_0/q4_0/q2_K/q3_K/q4_K/q5_K/q6_K weights repacked in groups of 16 rows for
// AVX-512 VNNI, and the matmul kernels that read them. Legend: N rows, D row length, nb = D/32 blocks per row,
// G = N/16 row groups, T tokens.
//
// Layout (the tensor keeps its size and row group G starts where row 16G did): for each
// row group, for each block b, 16 block-groups of bytes:
//   scales[16]  f16, the 16 rows' block scales (32 bytes)
//   q8_0: 8 x [16 rows][4 bytes]: values 4g..4g+3 of each row as unsigned w + 128 (512 B)
//   q4_0: 4 x [16 rows][4 bytes]: bytes qs[4g..4g+3] of each row (low nibbles: values
//         4g..4g+3, high nibbles: 16+4g..16+4g+3; nibble = w + 8)          (256 B)
// One 64-byte load then feeds vpdpbusd with 4 values of 16 rows against 4 activation
// values broadcast to every lane: the 16 rows' results land in the 16 lanes of one
// register and need no horizontal sums.
//
// Arithmetic (equal bit for bit to gemm_int8_panel_ref on the unpacked rows): per block an
// exact int32 dot of the row with the token's int8 block, acc = fma(isum, d_x * d_w, acc)
// in block order.
//
// K-quants (gemm_x16_kquant.cpp), per 256-value super-block s of a row group, the same size
// as the 16 GGUF blocks. q4_K/q5_K/q6_K values are stored as q4_0's: for each 32-value
// block, 4 vectors of [16 rows][4 bytes] whose low nibbles hold values 4g..4g+3 and high
// nibbles 16+4g..16+4g+3 (g = 0..3), so value group G = 0..7 (values 4G..4G+3) is one
// nibble plane.
//   q4_K (2304 B): d[16] f16 | dmin[16] f16 | the 12 packed scale bytes [12][16 rows] |
//                  8 blocks x 256 B of nibbles
//   q5_K (2816 B): the q4_K header (256 B) | 8 blocks x (256 B of nibbles, fifth bits as
//                  8 x 64-bit masks: mask G bit 4i + c the fifth bit of value 4G + c of
//                  row i, one AVX-512 byte mask per nibble plane, as q3_K's high bits)
//   q6_K (3360 B): d[16] f16 | int8 scales [16 sub-blocks][16 rows] | 8 blocks x (256 B of
//                  low nibbles, 2 x [16 rows][4 bytes] of high 2-bit pairs: vector G/4,
//                  bits 2(G%4)..2(G%4)+1 for group G)
// q2_K and q3_K keep their 2 low bits in "2-bit planes": per 32-value block, 2 vectors of
// [16 rows][4 bytes], vector h (sub-block 2b + h, values 16h..16h+15) holding value
// 16h + 4p + c of row i in bits 2p..2p+1 of byte 4i + c, so that (v >> 2p) & 3 (p = 0..3)
// is value group G = 4h + p, one vpdpbusd operand each.
//   q2_K (1344 B): d[16] f16 | dmin[16] f16 | GGUF scale bytes [16 sub-blocks][16 rows] (low
//                  nibble scale, high nibble min) | 8 blocks x 128 B of 2-bit planes
//   q3_K (1760 B): d[16] f16 | the 12 packed scale bytes [12][16 rows] | 8 blocks x (128 B
//                  of 2-bit planes, 8 x 64-bit masks: mask G bit 4i + c the high bit of
//                  value 4G + c of row i, i.e. one AVX-512 byte mask per plane). The high
//                  bits sit beside their low bits, so each group's weights stay one
//                  sequential stream for the hardware prefetcher.
// On CPUs with AMX-INT8, batches of K-quants from a per-type token count on run on tiles over
// this same layout instead, with activations quantized per 256 values (gemm_amx_kquant.h).
// Arithmetic (gemm_x16_kquant_ref, bit for bit), per row and token, acc = 0, in order over
// the 32-value blocks b (activation scale dx, Int8Activations::dsum / corr6):
//   q4_K/q5_K, sub-block j of super-block s: isum = sum q * x_q (exact),
//     acc = fma(isum, (d * sc_j) * dx, acc); acc = fma(-(dmin * m_j), dsum_b, acc)
//   q6_K, 16-value halves h = 0, 1: isum = sum q * x_q + corr6 (= sum (q - 32) x_q),
//     acc = fma(isum, (d * sc_{2b+h}) * dx, acc)
// and for q2_K/q3_K, on activations quantized per 256-value super-block s (Int8Activations
// superblocks: q256, scale dx = d256, sub-block sums xsum_k = sum16), per super-block, with
// integer sums over its 16-value sub-blocks k (exact):
//   q2_K, q in 0..3: C = sum_k sc_k * (sum q * x_q), M = sum_k m_k * xsum_k,
//     acc = fma(C, d * dx, acc); acc = fma(M, -dmin * dx, acc)
//   q3_K, q = low + 4 * high in 0..7, sc_k the stored 6-bit scale (q3k_scale):
//     C = sum_k (sc_k - 32) * (sum (q - 4) x_q), acc = fma(C, d * dx, acc)
//   q4_K when given such activations (matmul does so for one token), over its 32-value
//     blocks j with sums xsum_j = sum32: C = sum_j sc_j * (sum q * x_q),
//     M = sum_j m_j * xsum_j, acc = fma(C, d * dx, acc); acc = fma(M, -dmin * dx, acc)
// which is gemm_amx_kquant's arithmetic: the two give the same bits on the same input.
#pragma once
#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "core/dtype.h"
#include "kernels/gemm_int8.h"

namespace smoe {

// Whether a [N, D] tensor of type t can be repacked (q8_0/q4_0 with N % 16 == 0 and
// D % 32 == 0; q2_K/q3_K/q4_K/q5_K/q6_K with D % 256 == 0) and this CPU runs the kernels (AVX-512 VNNI).
bool x16_supports(DType t, int64_t N, int64_t D);
// src: N GGUF rows; dst: the same bytes repacked (must not overlap src).
void repack_x16(DType t, const uint8_t* src, uint8_t* dst, int64_t N, int64_t D);
// Row r of a repacked tensor back as a GGUF row (row_bytes(t, D) bytes).
void unpack_x16_row(DType t, const uint8_t* packed, int64_t D, int64_t r, uint8_t* row);

// y[t * ldy + 16 G + i] for the n_groups row groups at w (repacked, row length x.D) and
// the x.T tokens of x. VNNI kernels; callers check x16_supports first.
void gemm_x16(DType t, const uint8_t* w, int64_t n_groups, const Int8Activations& x, float* y,
              int64_t ldy);

// Calls f(std::integral_constant<int, N>) for n = N in 1..8.
template <class F>
void x16_with_count(int64_t n, F&& f) {
  switch (n) {
    case 1: f(std::integral_constant<int, 1>{}); break;
    case 2: f(std::integral_constant<int, 2>{}); break;
    case 3: f(std::integral_constant<int, 3>{}); break;
    case 4: f(std::integral_constant<int, 4>{}); break;
    case 5: f(std::integral_constant<int, 5>{}); break;
    case 6: f(std::integral_constant<int, 6>{}); break;
    case 7: f(std::integral_constant<int, 7>{}); break;
    default: f(std::integral_constant<int, 8>{}); break;
  }
}

// The pass order both kernel families use: tokens in blocks of 64 (their int8 activations,
// 256 KB at D = 4096, stay in L2); within one, each row group does all its passes of up to 8
// tokens while its weights are in L1/L2. pass(std::integral_constant<int, NT>,
// std::integral_constant<int, NG>, first group g, first token t0) runs one pass of NT
// tokens over NG consecutive row groups.
//
// A block of 4 or more tokens goes kBatchNG groups per pass of up to 8 tokens: each
// activation broadcast then feeds kBatchNG vpdpbusd instead of one. Batches are bound by
// the loads and vector ports, not by memory; on an AMD EPYC (Zen 5, 2 threads, 8 expert-
// sized matrices, 64-128 tokens) 2 groups x 8 tokens ran q4_0 at 400-470 G multiply-adds/s
// against 320-370 with one group, q8_0 350 against 285, q4_K 410 against 353, q5_K 387
// against 328. Fewer tokens (decode) stay at one group per pass: at one token 2 groups read
// memory 5-15% slower on that machine (q4_0 57.5 against 60.7 GB/s, q4_K 57.0 against 66.0).
template <int kBatchNG, class Pass>
void x16_for_each_pass(int64_t n_groups, int64_t T, Pass&& pass) {
  constexpr int64_t kTokenBlock = 64, kMaxTokens = 8, kMinSharedTokens = 4;
  for (int64_t tb = 0; tb < T; tb += kTokenBlock) {
    const int64_t tb_end = std::min(T, tb + kTokenBlock);
    int64_t g = 0;
    if (tb_end - tb >= kMinSharedTokens)
      for (; g + kBatchNG <= n_groups; g += kBatchNG)
        for (int64_t t0 = tb; t0 < tb_end; t0 += kMaxTokens)
          x16_with_count(std::min(kMaxTokens, tb_end - t0),
                         [&](auto nt) { pass(nt, std::integral_constant<int, kBatchNG>{}, g, t0); });
    for (; g < n_groups; ++g)
      for (int64_t t0 = tb; t0 < tb_end; t0 += kMaxTokens)
        x16_with_count(std::min(kMaxTokens, tb_end - t0),
                       [&](auto nt) { pass(nt, std::integral_constant<int, 1>{}, g, t0); });
  }
}

// The K-quant halves of the above (gemm_x16_kquant.cpp), and the scalar reference of their
// arithmetic on n unrepacked GGUF rows (x padded or not).
bool x16_kquant(DType t);
// Whether matmul quantizes a T-token call's activations per super-block for type t
// (quantize_activations(..., superblocks = true)): q2_K/q3_K always (their kernels need it);
// q4_K for a single token, where its kernels then take gemm_amx_kquant's arithmetic (exact
// int32 sums per super-block, fewer vector instructions: one token streams 4% faster) and
// its per-32 arithmetic otherwise (2-3 tokens gain nothing, 8-token batch passes lose 8-17%).
// The kernels and gemm_x16_kquant_ref follow the activations they are given.
constexpr bool x16_superblock_activations(DType t, int64_t T) {
  return t == DType::Q2_K || t == DType::Q3_K || (t == DType::Q4_K && T == 1);
}
// The 256 values q of a GGUF K-quant super-block at blk, without offsets or scales (q2_K 0..3,
// q3_K 0..7, q4_K 0..15, q5_K 0..31, q6_K 0..63).
void kquant_block_values(DType t, const uint8_t* blk, uint8_t* q);
void repack_x16_kquant(DType t, const uint8_t* src, uint8_t* dst, int64_t N, int64_t D);
void unpack_x16_kquant_row(DType t, const uint8_t* packed, int64_t D, int64_t r, uint8_t* row);
void gemm_x16_kquant(DType t, const uint8_t* w, int64_t n_groups, const Int8Activations& x, float* y,
                     int64_t ldy);
void gemm_x16_kquant_ref(DType t, const uint8_t* w, int64_t n, const Int8Activations& x, float* y,
                         int64_t ldy);
// q2_K/q3_K planes are unpacked with GFNI affine transforms where the CPU has GFNI (same
// results); tests switch that off to run the shift path too.
void set_x16_gfni_enabled(bool on);
bool x16_gfni_active();

}  // namespace smoe
