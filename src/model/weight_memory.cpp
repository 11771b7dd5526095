// weight_memory.cpp: weight placement — leaving a model's weights in the mapped files or
// copying them into one huge-page buffer, q8_0/q4_0 matrices repacked on the way for the
// VNNI kernels (see model.h, WeightPlacement, and kernels/gemm_x16.h).
#include <algorithm>
#include <atomic>
#include <cstring>
#include <thread>
#include <unordered_map>

#include "core/error.h"
#include "core/mapped_file.h"
#include "kernels/gemm_x16.h"
#include "model/model.h"

namespace smoe {

namespace {

struct BufferHolder : ModelStorage {
  explicit BufferHolder(size_t n, const std::string& what) : buf(n, what) {}
  HugePageBuffer buf;
};

// The matrices matmul reads (repacked when possible).
std::vector<TensorView*> matmul_views(Model& m) {
  std::vector<TensorView*> v{&m.output};
  for (LayerWeights& l : m.layers) {
    for (TensorView* t : {&l.wq, &l.wk, &l.wv, &l.wo}) v.push_back(t);
    for (ExpertWeights& e : l.experts)
      for (TensorView* t : {&e.w1, &e.w2, &e.w3}) v.push_back(t);
  }
  return v;
}

bool can_repack(const TensorView& t) {
  return t.shape.size() == 2 && !t.x16 && x16_supports(t.dtype, t.shape[0], t.shape[1]) &&
         t.nbytes == static_cast<size_t>(t.shape[0]) * row_bytes(t.dtype, t.shape[1]);
}

// Every view that holds weights, the tied output included (it shares tok_embd's data).
std::vector<TensorView*> weight_views(Model& m) {
  std::vector<TensorView*> v{&m.tok_embd, &m.out_norm, &m.output};
  for (LayerWeights& l : m.layers) {
    for (TensorView* t : {&l.attn_norm, &l.wq, &l.wk, &l.wv, &l.wo, &l.ffn_norm, &l.router})
      v.push_back(t);
    for (ExpertWeights& e : l.experts)
      for (TensorView* t : {&e.w1, &e.w2, &e.w3}) v.push_back(t);
  }
  return v;
}

constexpr size_t kAlign = 64;

size_t aligned(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

}  // namespace

WeightPlacement parse_weight_placement(const std::string& text) {
  if (text == "mmap") return WeightPlacement::kMapped;
  if (text == "memory") return WeightPlacement::kMemory;
  if (text == "auto") return WeightPlacement::kAuto;
  fail("weight placement '", text, "' is unknown (expected mmap, memory or auto)");
}

const char* weight_placement_name(WeightPlacement p) {
  switch (p) {
    case WeightPlacement::kMapped: return "mmap";
    case WeightPlacement::kMemory: return "memory";
    case WeightPlacement::kAuto: return "auto";
  }
  return "?";
}

WeightPlacement resolve_weight_placement(WeightPlacement p, size_t weight_bytes, size_t available) {
  if (p != WeightPlacement::kAuto) return p;
  return weight_bytes <= available / 4 * 3 ? WeightPlacement::kMemory : WeightPlacement::kMapped;
}

size_t weight_bytes(const Model& m) {
  std::unordered_map<const uint8_t*, size_t> seen;
  for (TensorView* t : weight_views(const_cast<Model&>(m)))
    if (t->data) seen[t->data] = std::max(seen[t->data], t->nbytes);
  size_t total = 0;
  for (const auto& [p, n] : seen) total += n;
  return total;
}

void move_weights_to_memory(Model& m, bool repack, const std::function<void(size_t, size_t)>& progress) {
  if (m.weights_in_memory) return;
  std::vector<TensorView*> views = weight_views(m);
  // Distinct source ranges in first-seen order (tied or shared views copy once); a view's
  // range is its data pointer and its largest size.
  std::unordered_map<const uint8_t*, size_t> index;
  struct Range {
    const uint8_t* src;
    size_t n;
    const TensorView* pack = nullptr;  // repacked as this matrix
  };
  std::vector<Range> ranges;
  for (TensorView* t : views) {
    if (!t->data) continue;
    auto [it, fresh] = index.try_emplace(t->data, ranges.size());
    if (fresh) ranges.push_back({t->data, t->nbytes});
    else ranges[it->second].n = std::max(ranges[it->second].n, t->nbytes);
  }
  if (repack) {
    for (TensorView* t : matmul_views(m))
      if (t->data && can_repack(*t)) ranges[index.at(t->data)].pack = t;
    // Every view of a repacked range must be that same matrix (a tied embedding is).
    for (TensorView* t : views) {
      if (!t->data) continue;
      Range& r = ranges[index.at(t->data)];
      if (r.pack && (t->dtype != r.pack->dtype || t->shape != r.pack->shape)) r.pack = nullptr;
    }
  }
  std::vector<size_t> offset(ranges.size());
  size_t total = 0;
  for (size_t i = 0; i < ranges.size(); ++i) {
    offset[i] = total;
    total += aligned(ranges[i].n);
  }
  auto holder = std::make_unique<BufferHolder>(total, m.path + ": weights");
  uint8_t* dst = holder->buf.data();
  // Work in pieces of about 8 MiB spread over the cores (the first touch also faults the
  // pages in): byte ranges, or whole 16-row groups of a matrix being repacked.
  struct Piece {
    size_t range, begin, n;  // bytes [begin, begin + n) of the range (row-group aligned when packed)
  };
  std::vector<Piece> pieces;
  constexpr size_t kPiece = size_t{8} << 20;
  for (size_t i = 0; i < ranges.size(); ++i) {
    size_t step = kPiece;
    if (const TensorView* p = ranges[i].pack) {
      const size_t group = 16 * row_bytes(p->dtype, p->shape[1]);
      step = std::max<size_t>(1, kPiece / group) * group;
    }
    for (size_t o = 0; o < ranges[i].n; o += step) pieces.push_back({i, o, std::min(step, ranges[i].n - o)});
  }
  const size_t n_threads = std::clamp<size_t>(std::thread::hardware_concurrency(), 1, 16);
  std::vector<std::thread> workers;
  std::atomic<size_t> done{0};
  for (size_t w = 0; w < n_threads; ++w)
    workers.emplace_back([&, w] {
      for (size_t k = w; k < pieces.size(); k += n_threads) {
        if (w == 0 && progress) progress(done.load(), total);
        const Piece& pc = pieces[k];
        const Range& r = ranges[pc.range];
        uint8_t* out = dst + offset[pc.range] + pc.begin;
        if (r.pack) {
          const int64_t D = r.pack->shape[1];
          repack_x16(r.pack->dtype, r.src + pc.begin, out, static_cast<int64_t>(pc.n / row_bytes(r.pack->dtype, D)), D);
        } else {
          std::memcpy(out, r.src + pc.begin, pc.n);
        }
        release_file_pages(r.src + pc.begin, pc.n);  // copied: no longer needed mapped
        done += pc.n;
      }
    });
  for (std::thread& th : workers) th.join();
  if (progress) progress(total, total);
  for (TensorView* t : views) {
    if (!t->data) continue;
    const size_t i = index.at(t->data);
    t->data = dst + offset[i];
    t->x16 = ranges[i].pack != nullptr;
  }
  m.storage.clear();
  m.owned.clear();
  m.storage.push_back(std::move(holder));
  m.weights_in_memory = true;
}

}  // namespace smoe
