// ops.cpp: scalar reference kernels (the truth SIMD kernels are tested against).
#include "kernels/ops.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "kernels/dequant.h"
#include "kernels/dot_float.h"
#include "kernels/dot_kquant_sb.h"
#include "kernels/gemm_amx.h"
#include "kernels/gemm_amx_kquant.h"
#include "kernels/gemm_int8.h"
#include "kernels/gemm_x16.h"
#include "kernels/simd.h"

namespace smoe {

namespace {
// Below this many tokens matmul uses the fused dot products, from it the packed tiles.
constexpr int64_t kGemmMinTokens = 4;
static_assert(kGemmMinTokens - 1 <= kMaxFloatDotTokens, "decode sizes must fit dot_rows_float");
// From this many tokens f16/bf16 products run on AMX-BF16 tiles where the CPU has them
// (gemm_amx.h): a 16-token tile is their unit.
constexpr int64_t kAmxMinTokens = 16;
// Weight rows per gemm_panel call (one task of the thread pool).
constexpr int64_t kPanelRows = 48;
// Batches of q8_0/q4_0 weights use int8 activations on CPUs with AVX-512 VNNI.
bool use_int8_activations(DType t) { return int8_gemm_supports(t) && int8_gemm_fast(); }
// K-quant rows in the GGUF layout (every CPU without AVX-512 VNNI; mapped files and
// --no-repack with it) take the per-super-block kernels (dot_kquant_sb.h) on AVX2 for decode
// and batches alike. On the Xeon with VNNI and AMX (2026-12-06, 2 threads, the 2-layer
// Mixtral-shaped files, `smoe bench --load mmap -p 128 -n 32`) they ran prompts at 1.1-5x and
// decode at 1.1-1.5x the VNNI per-32 decode kernels and the float batch path they replaced.
bool use_kquant_sb(DType t) { return kquant_sb_avx2(t); }
// The int8 decode kernels (dot_rows_int8_tokens): with VNNI for decode of every int8 type;
// without it, on AVX2, for q8_0/q4_0 decode and batches alike.
bool use_int8_rows(DType t, int64_t T) {
  return int8_dot_supports(t) && (int8_gemm_fast() ? T < kGemmMinTokens : int8_dot_avx2(t));
}
// Rows per task of the int8 row kernels: decode streams the weights in chunks of about 32 K
// values; batches keep about 256 KB of rows in L2 while every token passes over them.
int64_t int8_rows_grain(int64_t T, int64_t D, size_t rb) {
  return T < kGemmMinTokens ? std::max<int64_t>(16, 32768 / std::max<int64_t>(1, D))
                            : std::max<int64_t>(4, static_cast<int64_t>((256 * 1024) / rb));
}

// Each of the T tokens x[T, D] quantized once by quantize(x_t, D, out) into this thread's
// buffers (grow-only, one per token and vector type): pointers to them, valid until the next
// call on this thread. Workers of a parallel loop must use the caller's pointers (each
// thread has its own buffers).
template <class V, class Quantize>
const V* const* quantize_tokens(const float* x, int64_t T, int64_t D, Quantize&& quantize) {
  thread_local std::vector<V> vs;
  thread_local std::vector<const V*> ptrs;
  if (vs.size() < static_cast<size_t>(T)) vs.resize(static_cast<size_t>(T));
  ptrs.resize(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) {
    quantize(x + t * D, D, vs[static_cast<size_t>(t)]);
    ptrs[static_cast<size_t>(t)] = &vs[static_cast<size_t>(t)];
  }
  return ptrs.data();
}

// matmul for use_kquant_sb's types: each token's activations quantized per super-block once.
void matmul_kquant_sb(const TensorView& w, const float* x, float* y, int64_t T, ThreadPool* pool) {
  const int64_t D = w.shape.back(), N = w.numel() / D;
  const size_t rb = row_bytes(w.dtype, D);
  const Int8SuperVector* const* xp = quantize_tokens<Int8SuperVector>(x, T, D, quantize_vector_sb);
  parallel_for(pool, N, int8_rows_grain(T, D, rb), [&](int64_t begin, int64_t end) {
    dot_kquant_sb(w.dtype, w.data + static_cast<size_t>(begin) * rb, end - begin, xp, static_cast<int>(T),
                  y + begin, N);
  });
}
}  // namespace

void matmul_rows(const TensorView& w, int64_t row0, int64_t n_rows, const float* x, float* y,
                 int64_t ldy, int64_t T) {
  const int64_t D = w.shape.back();
  const size_t rb = row_bytes(w.dtype, D);
  thread_local std::vector<float> row;
  thread_local std::vector<uint8_t> packed_row;
  row.resize(static_cast<size_t>(D));
  for (int64_t r = 0; r < n_rows; ++r) {
    const float* wr;
    if (w.x16) {
      packed_row.resize(rb);
      unpack_x16_row(w.dtype, w.data, D, row0 + r, packed_row.data());
      dequantize_row(w.dtype, packed_row.data(), row.data(), D);
      wr = row.data();
    } else if (w.dtype == DType::F32 && reinterpret_cast<uintptr_t>(w.data) % alignof(float) == 0) {
      wr = reinterpret_cast<const float*>(w.data + (row0 + r) * rb);
    } else {
      dequantize_row(w.dtype, w.data + (row0 + r) * rb, row.data(), D);
      wr = row.data();
    }
    for (int64_t t = 0; t < T; ++t) {
      const float* xt = x + t * D;
      float acc = 0.f;
      for (int64_t i = 0; i < D; ++i) acc += wr[i] * xt[i];
      y[t * ldy + row0 + r] = acc;
    }
  }
}

void matmul_ref(const TensorView& w, const float* x, float* y, int64_t T, ThreadPool* pool) {
  const int64_t N = w.numel() / w.shape.back(), D = w.shape.back();
  // Chunks of at least ~64K multiply-adds, so small products stay on one thread.
  const int64_t grain = std::max<int64_t>(16, 65536 / std::max<int64_t>(1, D * T));
  parallel_for(pool, N, grain, [&](int64_t begin, int64_t end) {
    matmul_rows(w, begin, end - begin, x, y, N, T);
  });
}

namespace {

// Repacked q8_0/q4_0/q2_K..q6_K weights of one row length D against x[T, D] (any T): int8
// activations quantized once, 16 rows per vector, no padding tokens; tasks of about 256 KB
// of weights (at least one 16-row group) over all the matrices in one parallel loop. K-quants
// run on AMX-INT8 tiles where the CPU has them, from amx_kquant_min_tokens on
// (gemm_amx_kquant.h), with activations quantized per 256 values.
void matmul_x16(const TensorView* const* ws, float* const* ys, size_t n, const float* x, int64_t T,
                ThreadPool* pool) {
  struct Job {
    const TensorView* w;
    float* y;
    size_t rb;
    int64_t N, groups, per_task, first_task;
  };
  Job jobs[4];
  const int64_t D = ws[0]->shape.back();
  int64_t tasks = 0;
  for (size_t i = 0; i < n; ++i) {
    const TensorView& w = *ws[i];
    const size_t rb = row_bytes(w.dtype, D);
    const int64_t N = w.numel() / D, groups = N / 16;
    // An even number of groups where there are several: batch passes take 2 groups at a
    // time (x16_for_each_pass), and an odd task ends in a one-group pass.
    int64_t per_task = std::max<int64_t>(1, (256 * 1024) / (16 * static_cast<int64_t>(rb)));
    if (per_task > 1) per_task &= ~int64_t{1};
    jobs[i] = {&w, ys[i], rb, N, groups, per_task, tasks};
    tasks += (groups + per_task - 1) / per_task;
  }
  bool amx = true;
  for (size_t i = 0; i < n; ++i)
    amx = amx && amx_kquant_supports(jobs[i].w->dtype, jobs[i].N, D) && T >= amx_kquant_min_tokens(jobs[i].w->dtype);
  thread_local Int8Activations xa_buf;      // grow-only
  thread_local AmxInt8Activations xk_buf;   // grow-only
  const Int8Activations& xa = xa_buf;       // the caller's: workers see their own thread_locals
  const AmxInt8Activations& xk = xk_buf;
  bool superblocks = false;  // activations quantized per super-block (gemm_x16.h)
  for (size_t i = 0; i < n; ++i) superblocks = superblocks || x16_superblock_activations(jobs[i].w->dtype, T);
  if (amx) quantize_amx_activations(x, T, D, xk_buf, pool);
  else quantize_activations(x, T, D, xa_buf, 1, pool, superblocks);
  // One gemm per task: past 64 tokens the kernels stream a call's weights once per 64-token
  // block, and 256 KB stay in L2 between them.
  parallel_for(pool, tasks, 1, [&](int64_t begin, int64_t end) {
    size_t j = 0;
    for (int64_t task = begin; task < end; ++task) {
      while (j + 1 < n && jobs[j + 1].first_task <= task) ++j;
      const Job& jb = jobs[j];
      const int64_t g0 = (task - jb.first_task) * jb.per_task, g1 = std::min(jb.groups, g0 + jb.per_task);
      const uint8_t* wg = jb.w->data + static_cast<size_t>(g0 * 16) * jb.rb;
      if (amx) gemm_amx_kquant(jb.w->dtype, wg, g1 - g0, xk, jb.y + g0 * 16, jb.N);
      else gemm_x16(jb.w->dtype, wg, g1 - g0, xa, jb.y + g0 * 16, jb.N);
    }
  });
}

// f16/bf16 weights of one row length D against x[T, D], T >= 16, on AMX tiles: the
// activations split into bf16 tiles once, then tasks of gemm_amx's batch of row groups
// over all the matrices in one parallel loop.
void matmul_amx(const TensorView* const* ws, float* const* ys, size_t n, const float* x, int64_t T,
                ThreadPool* pool) {
  constexpr int64_t kTaskGroups = kAmxBatchGroups;
  const int64_t D = ws[0]->shape.back();
  int64_t first_task[5] = {0};
  for (size_t i = 0; i < n; ++i)
    first_task[i + 1] = first_task[i] + (ws[i]->numel() / D / 16 + kTaskGroups - 1) / kTaskGroups;
  thread_local AmxActivations xa_buf;  // grow-only
  const AmxActivations& xa = xa_buf;   // the caller's: workers see their own thread_locals
  prepare_amx_activations(x, T, D, xa_buf, pool);
  parallel_for(pool, first_task[n], 1, [&](int64_t begin, int64_t end) {
    size_t i = 0;
    for (int64_t task = begin; task < end; ++task) {
      while (first_task[i + 1] <= task) ++i;
      const TensorView& w = *ws[i];
      const int64_t N = w.numel() / D, groups = N / 16, g0 = (task - first_task[i]) * kTaskGroups;
      const size_t rb = row_bytes(w.dtype, D);
      gemm_amx(w.dtype, w.data + static_cast<size_t>(g0 * 16) * rb, rb, std::min(kTaskGroups, groups - g0), xa,
               ys[i] + g0 * 16, N);
    }
  });
}

}  // namespace

void matmul_shared(std::initializer_list<const TensorView*> ws, const float* x,
                   std::initializer_list<float*> ys, int64_t T, ThreadPool* pool) {
  SMOE_CHECK(ws.size() == ys.size() && ws.size() >= 1 && ws.size() <= 4, "matmul_shared: ", ws.size(),
             " weights and ", ys.size(), " outputs (expected 1..4 of each)");
  bool x16 = true;
  for (const TensorView* w : ws) {
    SMOE_CHECK(w->shape.back() == (*ws.begin())->shape.back(), "matmul_shared: rows of ",
               w->shape.back(), " and ", (*ws.begin())->shape.back(), " values (one input for all)");
    x16 = x16 && w->x16;
  }
  if (x16) return matmul_x16(ws.begin(), ys.begin(), ws.size(), x, T, pool);
  bool amx = T >= kAmxMinTokens;
  for (const TensorView* w : ws) amx = amx && amx_supports(w->dtype, w->numel() / w->shape.back(), w->shape.back());
  if (amx) return matmul_amx(ws.begin(), ys.begin(), ws.size(), x, T, pool);
  for (size_t i = 0; i < ws.size(); ++i) matmul(*ws.begin()[i], x, ys.begin()[i], T, pool);
}

bool matmul_int8_activations(DType t, int64_t T) {
  return use_kquant_sb(t) || use_int8_rows(t, T) || (T >= kGemmMinTokens && use_int8_activations(t));
}

void matmul(const TensorView& w, const float* x, float* y, int64_t T, ThreadPool* pool) {
  const int64_t D = w.shape.back(), N = w.numel() / D;
  const size_t rb = row_bytes(w.dtype, D);
  if (w.x16) {
    const TensorView* ws[1] = {&w};
    float* ys[1] = {y};
    return matmul_x16(ws, ys, 1, x, T, pool);
  }
  if (use_kquant_sb(w.dtype)) return matmul_kquant_sb(w, x, y, T, pool);
  // Without VNNI (AVX2 CPUs), batches of q8_0/q4_0 also take the decode kernels' int8
  // activations: each chunk of rows (256 KB, in L2) meets every token in groups of 4.
  const bool int8_rows = use_int8_rows(w.dtype, T);
  if (T < kGemmMinTokens || int8_rows) {
    // Decode: fused dot products, weights streamed once per token.
    const bool k_quant = (w.dtype == DType::Q4_K || w.dtype == DType::Q5_K) && !int8_rows;
    thread_local std::vector<float> xsum;  // [T, D/32], grow-only
    if (k_quant) {
      if (xsum.size() < static_cast<size_t>(T * D / 32)) xsum.resize(static_cast<size_t>(T * D / 32));
      for (int64_t t = 0; t < T; ++t) sub_block_sums(x + t * D, D, &xsum[static_cast<size_t>(t * D / 32)]);
    }
    const float* xs = k_quant ? xsum.data() : nullptr;
    if (int8_rows && T >= kGemmMinTokens) {
      // AVX2 batches: tokens in quads, 2 rows x 2 quads per pass (gemm_int8_avx2.cpp).
      thread_local Int8QuadActivations xq_buf;  // grow-only
      const Int8QuadActivations& xq = xq_buf;   // the caller's: workers see their own thread_locals
      quantize_quads(x, T, D, xq_buf);
      parallel_for(pool, N, int8_rows_grain(T, D, rb), [&](int64_t begin, int64_t end) {
        gemm_int8_rows_avx2(w.dtype, w.data + static_cast<size_t>(begin) * rb, end - begin, xq, y + begin, N);
      });
      return;
    }
    if (int8_rows) {
      // Each token's activations quantized to int8 once, integer block dots.
      const Int8Vector* const* xp = quantize_tokens<Int8Vector>(x, T, D, quantize_vector);
      parallel_for(pool, N, int8_rows_grain(T, D, rb), [&](int64_t begin, int64_t end) {
        dot_rows_int8_tokens(w.dtype, w.data + static_cast<size_t>(begin) * rb, end - begin, xp,
                             static_cast<int>(T), y + begin, N);
      });
      return;
    }
    const int64_t grain = std::max<int64_t>(16, 32768 / std::max<int64_t>(1, D));
    if (dot_rows_float_supports(w.dtype)) {
      // f32/f16/bf16: every weight read once for all T tokens.
      parallel_for(pool, N, grain, [&](int64_t begin, int64_t end) {
        dot_rows_float(w.dtype, w.data + static_cast<size_t>(begin) * rb, end - begin, x,
                       static_cast<int>(T), D, y + begin, N);
      });
      return;
    }
    parallel_for(pool, N, grain, [&](int64_t begin, int64_t end) {
      for (int64_t t = 0; t < T; ++t)
        dot_rows(w.dtype, w.data + static_cast<size_t>(begin) * rb, end - begin, x + t * D,
                 xs ? xs + t * D / 32 : nullptr, D, y + t * N + begin);
    });
    return;
  }
  if (use_int8_activations(w.dtype)) {
    // Batch, q8_0/q4_0: activations quantized to int8 once, integer block dot products.
    thread_local Int8Activations xa_buf;  // grow-only
    const Int8Activations& xa = xa_buf;   // the caller's: workers see their own thread_locals
    quantize_activations(x, T, D, xa_buf, 16, pool);
    // Panels of about 256 KB of int8 weights (a multiple of the kernel's 6 rows), so that a
    // panel and a block of activations stay in L2 while every token block passes over it.
    const int64_t prows = std::clamp<int64_t>((256 * 1024 / D) / 6 * 6, 6, kPanelRows);
    const int64_t panels = (N + prows - 1) / prows;
    parallel_for(pool, panels, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const int64_t r0 = i * prows;
        gemm_int8_panel(w.dtype, w.data + static_cast<size_t>(r0) * rb, std::min(prows, N - r0),
                        xa, y + r0, N);
      }
    });
    return;
  }
  if (T >= kAmxMinTokens && amx_supports(w.dtype, N, D)) {
    const TensorView* ws[1] = {&w};
    float* ys[1] = {y};
    return matmul_amx(ws, ys, 1, x, T, pool);
  }
  // Batch: x transposed once ([D][Tpad], zero padded), then panels of rows converted once
  // and reused across all T tokens.
  const int64_t half = gemm_token_block() / 2;
  const int64_t Tpad = (T + half - 1) / half * half;
  thread_local std::vector<float> xT;  // grow-only
  if (xT.size() < static_cast<size_t>(D * Tpad)) xT.resize(static_cast<size_t>(D * Tpad));
  for (int64_t k = 0; k < D; ++k) {
    float* col = &xT[static_cast<size_t>(k * Tpad)];
    for (int64_t t = 0; t < T; ++t) col[t] = x[t * D + k];
    for (int64_t t = T; t < Tpad; ++t) col[t] = 0.f;
  }
  const float* xt = xT.data();
  const int64_t panels = (N + kPanelRows - 1) / kPanelRows;
  parallel_for(pool, panels, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t r0 = i * kPanelRows;
      gemm_panel(w.dtype, w.data + static_cast<size_t>(r0) * rb, std::min(kPanelRows, N - r0), xt,
                 Tpad, T, D, y + r0, N);
    }
  });
}

void rmsnorm(const float* x, const TensorView& weight, float eps, float* out, int64_t D) {
  thread_local std::vector<float> wbuf;
  wbuf.resize(static_cast<size_t>(D));
  dequantize_row(weight.dtype, weight.data, wbuf.data(), D);
  double ss = 0;
  for (int64_t i = 0; i < D; ++i) ss += static_cast<double>(x[i]) * x[i];
  const float scale = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(D) + eps));
  for (int64_t i = 0; i < D; ++i) out[i] = x[i] * scale * wbuf[i];
}

void rope_interleaved(float* v, int64_t n_heads, int64_t head_dim, int64_t pos, float theta) {
  thread_local std::vector<float> cs;  // [head_dim / 2][cos, sin], shared by the heads
  cs.resize(static_cast<size_t>(head_dim));
  for (int64_t i = 0; i < head_dim / 2; ++i) {
    const double freq = std::pow(static_cast<double>(theta),
                                 -2.0 * static_cast<double>(i) / static_cast<double>(head_dim));
    const double angle = static_cast<double>(pos) * freq;
    cs[2 * i] = static_cast<float>(std::cos(angle));
    cs[2 * i + 1] = static_cast<float>(std::sin(angle));
  }
  for (int64_t h = 0; h < n_heads; ++h) {
    float* vh = v + h * head_dim;
    for (int64_t i = 0; i < head_dim / 2; ++i) {
      const float c = cs[2 * i], s = cs[2 * i + 1];
      const float a = vh[2 * i], b = vh[2 * i + 1];
      vh[2 * i] = a * c - b * s;
      vh[2 * i + 1] = a * s + b * c;
    }
  }
}

void softmax(float* x, int64_t n) {
  float mx = -INFINITY;
  for (int64_t i = 0; i < n; ++i) mx = std::max(mx, x[i]);
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - mx);
    sum += x[i];
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

float silu(float x) { return x / (1.f + std::exp(-x)); }

void embedding_row(const TensorView& table, int64_t row, float* out) {
  const int64_t D = table.shape.back();
  if (table.x16) {
    thread_local std::vector<uint8_t> packed_row;
    packed_row.resize(row_bytes(table.dtype, D));
    unpack_x16_row(table.dtype, table.data, D, row, packed_row.data());
    return dequantize_row(table.dtype, packed_row.data(), out, D);
  }
  dequantize_row(table.dtype, table.data + row * row_bytes(table.dtype, D), out, D);
}

}  // namespace smoe
