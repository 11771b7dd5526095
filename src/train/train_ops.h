// train_ops.h: the dense kernels of training, each forward beside its backward: matrix
// products (y = x W^T and its two gradients), RMSNorm, SiLU. Row-parallel on a thread
// pool with disjoint outputs per thread, so results do not depend on the thread count.
// Legend: N rows, I inputs, O outputs; W is [O, I] row-major.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "core/thread_pool.h"

namespace smoe::train {

template <typename Real>
inline Real dot(const Real* a, const Real* b, int64_t n) {
  Real acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t i = 0; i < n; ++i) acc += a[i] * b[i];
  return acc;
}

template <typename Real>
inline void axpy(Real a, const Real* x, Real* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

// y[N, O] = x[N, I] · W[O, I]^T
template <typename Real>
void mm_forward(const Real* x, const Real* w, Real* y, int64_t N, int64_t I, int64_t O, ThreadPool* pool) {
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, I * O));
  parallel_for(pool, N, grain, [&](int64_t b, int64_t e) {
    for (int64_t n = b; n < e; ++n)
      for (int64_t o = 0; o < O; ++o) y[n * O + o] = dot(x + n * I, w + o * I, I);
  });
}

// Backward of y = x W^T, for x:  dx[N, I] (+)= dy[N, O] · W[O, I]
template <typename Real>
void mm_backward_x(const Real* dy, const Real* w, Real* dx, int64_t N, int64_t I, int64_t O, bool accumulate,
                   ThreadPool* pool) {
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, I * O));
  parallel_for(pool, N, grain, [&](int64_t b, int64_t e) {
    for (int64_t n = b; n < e; ++n) {
      Real* d = dx + n * I;
      if (!accumulate) std::fill_n(d, I, Real(0));
      for (int64_t o = 0; o < O; ++o)
        if (dy[n * O + o] != Real(0)) axpy(dy[n * O + o], w + o * I, d, I);
    }
  });
}

// Backward of y = x W^T, for W:  dW[O, I] += dy[N, O]^T · x[N, I]
template <typename Real>
void mm_backward_w(const Real* dy, const Real* x, Real* dw, int64_t N, int64_t I, int64_t O, ThreadPool* pool) {
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, I * N));
  parallel_for(pool, O, grain, [&](int64_t b, int64_t e) {
    for (int64_t o = b; o < e; ++o)
      for (int64_t n = 0; n < N; ++n)
        if (dy[n * O + o] != Real(0)) axpy(dy[n * O + o], x + n * I, dw + o * I, I);
  });
}

// out[D] = x[D] * r * w[D], r = 1 / sqrt(mean(x^2) + eps) (as kernels/ops.cpp computes it).
template <typename Real>
Real rmsnorm_forward(const Real* x, const Real* w, Real eps, Real* out, int64_t D) {
  double ss = 0;
  for (int64_t i = 0; i < D; ++i) ss += static_cast<double>(x[i]) * x[i];
  const Real r = static_cast<Real>(1.0 / std::sqrt(ss / static_cast<double>(D) + static_cast<double>(eps)));
  for (int64_t i = 0; i < D; ++i) out[i] = x[i] * r * w[i];
  return r;
}

// Backward of out = x * r * w:  dw += dout * x * r;
// dx += r * (dout * w) - x * r^3 / D * sum(dout * w * x).
template <typename Real>
void rmsnorm_backward(const Real* x, const Real* w, Real r, const Real* dout, Real* dx, Real* dw, int64_t D) {
  double s = 0;
  for (int64_t i = 0; i < D; ++i) s += static_cast<double>(dout[i]) * w[i] * x[i];
  const Real c = static_cast<Real>(s * r * r * r / static_cast<double>(D));
  for (int64_t i = 0; i < D; ++i) {
    dw[i] += dout[i] * x[i] * r;
    dx[i] += r * dout[i] * w[i] - x[i] * c;
  }
}

template <typename Real>
inline Real sigmoid(Real x) { return Real(1) / (Real(1) + std::exp(-x)); }
// silu(x) = x * sigmoid(x);  silu'(x) = s * (1 + x * (1 - s))
template <typename Real>
inline Real silu_grad(Real x) {
  const Real s = sigmoid(x);
  return s * (Real(1) + x * (Real(1) - s));
}

}  // namespace smoe::train
