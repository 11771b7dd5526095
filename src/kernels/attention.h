// attention.h: causal attention for one token and one kv head (all the query heads that
// share it), over a range of cached keys and values. Legend: G query heads per kv head,
// hd head dim, n keys. Knows nothing of models or caches: rows and strides are arguments.
#pragma once
#include <cstdint>

namespace smoe {

// For each query head g < G: out[g * out_stride + i] (i < hd) =
//   sum_j softmax_j(scale * q_g . k_j) * v_j[i]  over j < n,
// with q_g = q + g * q_stride, k_j = k + j * kv_stride, v_j = v + j * kv_stride.
// Keys are visited in blocks with an online softmax (running max and sum, earlier partial
// sums rescaled when the max grows), so no score row longer than a block is stored and
// each key and value row is read once for all G heads. n >= 1.
void attention_heads(const float* q, int64_t q_stride, int64_t G, const float* k, const float* v,
                     int64_t kv_stride, int64_t n, int64_t hd, float scale, float* out,
                     int64_t out_stride);

// Scalar reference: the full score row, softmax, then the weighted sum.
void attention_heads_ref(const float* q, int64_t q_stride, int64_t G, const float* k, const float* v,
                         int64_t kv_stride, int64_t n, int64_t hd, float scale, float* out,
                         int64_t out_stride);

}  // namespace smoe
