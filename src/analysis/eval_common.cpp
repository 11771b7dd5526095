// eval_common.cpp: texts, splits, windows, chunked forward passes and log-softmax
// arithmetic shared by the analysis tools (see eval_common.h).
#include "analysis/eval_common.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "tokenizer/tokenizer.h"

namespace smoe {

std::string read_eval_text(const std::string& path) {
  namespace fs = std::filesystem;
  SMOE_CHECK(!path.empty(), "no text file given");
  SMOE_CHECK(fs::exists(path), path, ": no such file");
  SMOE_CHECK(!fs::is_directory(path), path, ": is a directory, expected a text file");
  std::ifstream in(path, std::ios::binary);
  SMOE_CHECK(in, path, ": cannot open for reading");
  std::ostringstream ss;
  ss << in.rdbuf();
  std::string text = ss.str();
  SMOE_CHECK(!text.empty(), path, ": the file is empty, expected some text");
  return text;
}

TextSplit parse_split(const std::string& name, const std::string& what) {
  if (name == "all") return TextSplit::All;
  if (name == "train") return TextSplit::Train;
  if (name == "val") return TextSplit::Val;
  fail(what, " \"", name, "\" is not a split (expected all, train or val)");
}

const char* split_name(TextSplit split) {
  switch (split) {
    case TextSplit::All: return "all";
    case TextSplit::Train: return "train";
    case TextSplit::Val: return "val";
  }
  return "?";
}

size_t val_split_offset(const std::string& text) {
  // Count code points (bytes that are not UTF-8 continuation bytes), as Python's len(str).
  auto is_start = [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; };
  int64_t n_chars = 0;
  for (char c : text) n_chars += is_start(c);
  const int64_t want = n_chars * 9 / 10;
  int64_t seen = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    if (!is_start(text[i])) continue;
    if (seen == want) return i;
    ++seen;
  }
  return text.size();
}

std::string select_split(const std::string& text, TextSplit split, const std::string& source) {
  std::string part;
  switch (split) {
    case TextSplit::All: part = text; break;
    case TextSplit::Train: part = text.substr(0, val_split_offset(text)); break;
    case TextSplit::Val: part = text.substr(val_split_offset(text)); break;
  }
  SMOE_CHECK(!part.empty(), source, ": the ", split_name(split), " split of the text is empty");
  return part;
}

std::vector<int32_t> tokenize_with_bos(const Model& model, const std::string& text,
                                       const std::string& source) {
  SMOE_CHECK(model.tokenizer, model.path, ": the model has no tokenizer, cannot tokenize ", source);
  std::vector<int32_t> ids = model.tokenizer->encode(text, /*add_bos=*/true);
  SMOE_CHECK(ids.size() >= 2, source, ": the text gives no tokens (expected some text)");
  return ids;
}

std::vector<Window> split_windows(int64_t n, int64_t ctx) {
  SMOE_CHECK(ctx >= 1, "context window of ", ctx, " tokens: expected at least 1");
  std::vector<Window> out;
  for (int64_t b = 0; b < n; b += ctx) out.push_back({b, std::min(n, b + ctx)});
  return out;
}

void feed_chunked(Session& session, std::span<const int32_t> tokens, bool all_logits,
                  const ChunkFn& on_chunk, std::vector<float>* last_logits) {
  const int64_t T = static_cast<int64_t>(tokens.size());
  std::vector<float> logits;
  for (int64_t first = 0; first < T; first += kForwardChunk) {
    const int64_t n = std::min(kForwardChunk, T - first);
    session.forward(tokens.subspan(static_cast<size_t>(first), static_cast<size_t>(n)), all_logits, logits);
    if (on_chunk) on_chunk(first, n, logits);
  }
  if (last_logits && T > 0) {
    const int64_t V = session.model().config.vocab_size;
    last_logits->assign(logits.end() - V, logits.end());  // the last row either way
  }
}

double log_sum_exp(const float* row, int64_t V) {
  double mx = row[0];
  for (int64_t i = 1; i < V; ++i) mx = std::max(mx, static_cast<double>(row[i]));
  double sum = 0;
  for (int64_t i = 0; i < V; ++i) sum += std::exp(static_cast<double>(row[i]) - mx);
  return mx + std::log(sum);
}

double token_nll(const float* row, int64_t V, int32_t target) {
  SMOE_CHECK(target >= 0 && target < V, "token id ", target, " is out of range (expected 0..", V - 1, ")");
  return log_sum_exp(row, V) - static_cast<double>(row[target]);
}

double kl_divergence(const float* p, const float* q, int64_t V) {
  const double lp = log_sum_exp(p, V), lq = log_sum_exp(q, V);
  double kl = 0;
  for (int64_t i = 0; i < V; ++i) {
    const double a = p[i] - lp, b = q[i] - lq;
    kl += std::exp(a) * (a - b);
  }
  return std::max(0.0, kl);  // rounding can leave a tiny negative value
}

namespace {
template <typename T, typename Parse>
std::vector<T> parse_list(const std::string& text, const std::string& what, Parse parse) {
  std::vector<T> out;
  std::string item;
  std::istringstream ss(text);
  while (std::getline(ss, item, ',')) {
    item.erase(0, item.find_first_not_of(" \t"));
    item.erase(item.find_last_not_of(" \t") + 1);
    SMOE_CHECK(!item.empty(), what, ": empty item in \"", text, "\" (expected numbers separated by commas)");
    size_t used = 0;
    T v{};
    try {
      v = parse(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    SMOE_CHECK(used == item.size(), what, ": \"", item, "\" is not a number (expected numbers separated by commas)");
    out.push_back(v);
  }
  SMOE_CHECK(!out.empty(), what, ": no numbers given (expected e.g. 1,2,3)");
  return out;
}
}  // namespace

std::vector<int64_t> parse_int_list(const std::string& text, const std::string& what) {
  return parse_list<int64_t>(text, what, [](const std::string& s, size_t* used) { return std::stoll(s, used); });
}

std::vector<double> parse_double_list(const std::string& text, const std::string& what) {
  return parse_list<double>(text, what, [](const std::string& s, size_t* used) { return std::stod(s, used); });
}

void progress(const std::string& tool, const std::string& message, bool force) {
  using clock = std::chrono::steady_clock;
  static clock::time_point last{};
  const clock::time_point now = clock::now();
  if (!force && now - last < std::chrono::seconds(1)) return;
  last = now;
  std::fprintf(stderr, "smoe %s: %s\n", tool.c_str(), message.c_str());
}

}  // namespace smoe
