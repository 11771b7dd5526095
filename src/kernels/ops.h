// ops.h: scalar reference implementations of the transformer's building blocks.
// They know nothing of models; shapes are given as arguments. Legend: T tokens,
// D dim, N output rows (a weight matrix is [N, D] row-major in any DType).
#pragma once
#include <cstdint>
#include <initializer_list>

#include "core/tensor.h"
#include "core/thread_pool.h"

namespace smoe {

// y[T, N] = x[T, D] · W[N, D]^T with the SIMD kernels (simd.h): fused per-type dot products
// for few tokens (decode), packed tiles reused across the tokens for more. Rows are split
// across `pool`'s threads when given; each row's result does not depend on the split.
void matmul(const TensorView& w, const float* x, float* y, int64_t T, ThreadPool* pool = nullptr);
// Whether matmul quantizes T tokens' activations to int8 for weights of type t that are not
// repacked: with VNNI, q8_0/q4_0 always and the other int8 types below 4 tokens; without
// VNNI, on AVX2, q8_0/q4_0 and the K-quants at any T (their decode kernels, rows in L2 for
// batches; the K-quants' activations per super-block, dot_kquant_sb.h).
bool matmul_int8_activations(DType t, int64_t T);
// Several products of one input, ys[i][T, N_i] = x[T, D] · W_i[N_i, D]^T (the same results as
// one matmul each, bit for bit). When every W_i is repacked (x16) the activations are
// quantized once and all products run as one parallel loop: decode's q/k/v and an expert's
// gate/up products stream back to back without a barrier between them. f16/bf16 weights in
// batches on AMX tiles likewise share one split of the activations and one loop. At most 4
// weights.
void matmul_shared(std::initializer_list<const TensorView*> ws, const float* x,
                   std::initializer_list<float*> ys, int64_t T, ThreadPool* pool = nullptr);
// The scalar reference of matmul (same contract): each weight row is converted to float32
// once and reused for all T.
void matmul_ref(const TensorView& w, const float* x, float* y, int64_t T, ThreadPool* pool = nullptr);
// Rows [row0, row0 + n_rows) of the product only, written to y[t * ldy + row] (ldy >= rows).
void matmul_rows(const TensorView& w, int64_t row0, int64_t n_rows, const float* x, float* y,
                 int64_t ldy, int64_t T);
// out[D] = x[D] / sqrt(mean(x^2) + eps) * weight[D]; weight in any float DType.
void rmsnorm(const float* x, const TensorView& weight, float eps, float* out, int64_t D);
// In place rotary embedding of n_heads consecutive head vectors v[n_heads][hd] at position
// pos, interleaved pairs (v[2i], v[2i+1]) rotated by pos * theta^(-2i/hd) (Mistral / GGUF
// convention); each angle's cosine and sine are computed once (in double) for all heads.
void rope_interleaved(float* v, int64_t n_heads, int64_t head_dim, int64_t pos, float theta);
// In place softmax over x[n].
void softmax(float* x, int64_t n);
float silu(float x);
// Row r of an embedding table [V, D] as float32.
void embedding_row(const TensorView& table, int64_t row, float* out);

}  // namespace smoe
