// weight_memory.cpp: weight placement — leaving a model's weights in the mapped files or
// copying them into one huge-page buffer (see model.h, WeightPlacement).
#include <algorithm>
#include <cstring>
#include <thread>
#include <unordered_map>

#include "core/error.h"
#include "core/mapped_file.h"
#include "model/model.h"

namespace smoe {

namespace {

struct BufferHolder : ModelStorage {
  explicit BufferHolder(size_t n, const std::string& what) : buf(n, what) {}
  HugePageBuffer buf;
};

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

void move_weights_to_memory(Model& m) {
  if (m.weights_in_memory) return;
  std::vector<TensorView*> views = weight_views(m);
  // Distinct source ranges in first-seen order (tied or shared views copy once); a view's
  // range is its data pointer and its largest size.
  std::unordered_map<const uint8_t*, size_t> index;
  std::vector<std::pair<const uint8_t*, size_t>> ranges;
  for (TensorView* t : views) {
    if (!t->data) continue;
    auto [it, fresh] = index.try_emplace(t->data, ranges.size());
    if (fresh) ranges.emplace_back(t->data, t->nbytes);
    else ranges[it->second].second = std::max(ranges[it->second].second, t->nbytes);
  }
  std::vector<size_t> offset(ranges.size());
  size_t total = 0;
  for (size_t i = 0; i < ranges.size(); ++i) {
    offset[i] = total;
    total += aligned(ranges[i].second);
  }
  auto holder = std::make_unique<BufferHolder>(total, m.path + ": weights");
  uint8_t* dst = holder->buf.data();
  // Copy in 8 MiB pieces spread over the cores (the first touch also faults the pages in).
  struct Piece { const uint8_t* src; uint8_t* dst; size_t n; };
  std::vector<Piece> pieces;
  constexpr size_t kPiece = size_t{8} << 20;
  for (size_t i = 0; i < ranges.size(); ++i)
    for (size_t o = 0; o < ranges[i].second; o += kPiece)
      pieces.push_back({ranges[i].first + o, dst + offset[i] + o, std::min(kPiece, ranges[i].second - o)});
  const size_t n_threads = std::clamp<size_t>(std::thread::hardware_concurrency(), 1, 16);
  std::vector<std::thread> workers;
  for (size_t w = 0; w < n_threads; ++w)
    workers.emplace_back([&, w] {
      for (size_t i = w; i < pieces.size(); i += n_threads)
        std::memcpy(pieces[i].dst, pieces[i].src, pieces[i].n);
    });
  for (std::thread& th : workers) th.join();
  for (TensorView* t : views)
    if (t->data) t->data = dst + offset[index.at(t->data)];
  m.storage.clear();
  m.owned.clear();
  m.storage.push_back(std::move(holder));
  m.weights_in_memory = true;
}

}  // namespace smoe
