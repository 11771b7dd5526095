// analysis_util.h: helpers for the analysis and evaluation tests: short texts from the
// fixture corpus, files in a test folder, and the tests' own (independent) arithmetic:
// log-softmax, top-K from router logits, token lists for the CLI.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "test_util.h"

namespace smoe::test {

inline const std::string kModelA = "models/tiny-mixtral-A";
inline const std::string kModelB = "models/tiny-mixtral-B";
inline std::string quoted(const std::string& s) { return "'" + s + "'"; }

// `n` bytes of tinyshakespeare.txt's validation split (from character len*9//10), from
// offset `skip` within it. The file is ASCII, so characters are bytes.
inline std::string shakespeare_val(size_t skip, size_t n) {
  const std::string all = read_file(fixture("text/tinyshakespeare.txt"));
  return all.substr(all.size() * 9 / 10 + skip, n);
}

// Writes `text` to dir/name and returns the path.
inline std::string put_file(const std::string& dir, const std::string& name, const std::string& text) {
  const std::string path = dir + "/" + name;
  write_file(path, text);
  return path;
}

inline std::string id_list(const std::vector<int32_t>& ids) {
  std::string s;
  for (int32_t id : ids) s += (s.empty() ? "" : ",") + std::to_string(id);
  return s;
}

inline std::vector<float> read_f32(const std::string& path) {
  const std::string raw = read_file(path);
  std::vector<float> v(raw.size() / 4);
  std::memcpy(v.data(), raw.data(), v.size() * 4);
  return v;
}

// log softmax(row)[i] for every i, in double (written here, not taken from the library).
inline std::vector<double> log_probs(const float* row, int64_t V) {
  double mx = -INFINITY;
  for (int64_t i = 0; i < V; ++i) mx = std::max(mx, static_cast<double>(row[i]));
  double z = 0;
  for (int64_t i = 0; i < V; ++i) z += std::exp(row[i] - mx);
  std::vector<double> out(static_cast<size_t>(V));
  for (int64_t i = 0; i < V; ++i) out[i] = row[i] - mx - std::log(z);
  return out;
}

// The K experts with the largest logits, best first, ties to the lower index.
inline std::vector<int32_t> top_k(const float* logits, int64_t E, int64_t K) {
  std::vector<int32_t> order(static_cast<size_t>(E));
  for (int64_t e = 0; e < E; ++e) order[e] = static_cast<int32_t>(e);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  order.resize(static_cast<size_t>(K));
  return order;
}

inline int64_t index_of_max(const float* row, int64_t V) {
  int64_t best = 0;
  for (int64_t i = 1; i < V; ++i)
    if (row[i] > row[best]) best = i;
  return best;
}

}  // namespace smoe::test
