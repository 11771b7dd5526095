// mc.cpp: multiple-choice task files and log-likelihood scoring (see mc.h).
#include "analysis/mc.h"

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <sstream>

#include "analysis/eval_common.h"
#include "core/error.h"
#include "model/transformer.h"
#include "tokenizer/tokenizer.h"

namespace smoe {

namespace {

int64_t count_chars(const std::string& s) {
  int64_t n = 0;
  for (char c : s) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  return n;
}

}  // namespace

std::vector<McQuestion> parse_mc_jsonl(const std::string& text, const std::string& source) {
  std::vector<McQuestion> out;
  std::istringstream in(text);
  std::string line;
  int64_t n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = cat(source, ": line ", n);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      fail(where, ": not valid JSON (", e.what(), "); expected one object per line");
    }
    SMOE_CHECK(j.is_object(), where, ": expected a JSON object {\"context\", \"choices\", \"label\"}");
    McQuestion q;
    q.line = n;
    const char* ctx_key = j.contains("context") ? "context" : "question";
    SMOE_CHECK(j.contains(ctx_key) && j[ctx_key].is_string(), where,
               ": expected a string field \"context\" (or \"question\")");
    q.context = j[ctx_key].get<std::string>();
    SMOE_CHECK(j.contains("choices") && j["choices"].is_array(), where, ": expected an array field \"choices\"");
    for (const auto& c : j["choices"]) {
      SMOE_CHECK(c.is_string(), where, ": every choice must be a string");
      SMOE_CHECK(!c.get<std::string>().empty(), where, ": choice ", q.choices.size(), " is empty");
      q.choices.push_back(c.get<std::string>());
    }
    SMOE_CHECK(q.choices.size() >= 2, where, ": ", q.choices.size(), " choice(s); expected at least 2");
    const char* label_key = j.contains("label") ? "label" : "answer";
    SMOE_CHECK(j.contains(label_key), where, ": expected a field \"label\" (or \"answer\"): the index of the right choice");
    const auto& lab = j[label_key];
    if (lab.is_number_integer()) {
      q.label = lab.get<int64_t>();
    } else if (lab.is_string() && lab.get<std::string>().size() == 1 && std::isupper(static_cast<unsigned char>(lab.get<std::string>()[0]))) {
      q.label = lab.get<std::string>()[0] - 'A';
    } else {
      fail(where, ": \"", label_key, "\" must be a 0-based index or a letter A, B, ...; got ", lab.dump());
    }
    SMOE_CHECK(q.label >= 0 && q.label < static_cast<int64_t>(q.choices.size()), where, ": label ", q.label,
               " is out of range (expected 0..", q.choices.size() - 1, ")");
    out.push_back(std::move(q));
  }
  SMOE_CHECK(!out.empty(), source, ": no questions found (expected JSON Lines: one object per line)");
  return out;
}

McTokens mc_tokens(const Model& model, const std::string& context, const std::string& choice) {
  SMOE_CHECK(model.tokenizer, model.path, ": the model has no tokenizer, cannot score text choices");
  const std::vector<int32_t> ctx = model.tokenizer->encode(context, true);
  McTokens t;
  t.full = model.tokenizer->encode(context + choice, true);
  size_t i = 0;
  while (i < ctx.size() && i < t.full.size() && ctx[i] == t.full[i]) ++i;
  t.first_scored = static_cast<int64_t>(std::max<size_t>(i, 1));  // never score BOS
  return t;
}

double McResult::accuracy() const {
  return scores.empty() ? 0.0 : static_cast<double>(correct) / static_cast<double>(scores.size());
}
double McResult::accuracy_norm() const {
  return scores.empty() ? 0.0 : static_cast<double>(correct_norm) / static_cast<double>(scores.size());
}

McResult run_mc(const Model& model, const std::vector<McQuestion>& questions, ThreadPool* pool,
                const char* progress_tool) {
  const ModelConfig& c = model.config;
  const int64_t V = c.vocab_size;
  Transformer transformer(model);
  transformer.pool = pool;
  McResult res;
  std::vector<float> logits, prefix_logits;
  for (size_t qi = 0; qi < questions.size(); ++qi) {
    const McQuestion& q = questions[qi];
    const size_t n_choices = q.choices.size();
    std::vector<McTokens> toks;
    int64_t shared = INT64_MAX, longest = 0;
    for (size_t k = 0; k < n_choices; ++k) {
      toks.push_back(mc_tokens(model, q.context, q.choices[k]));
      const McTokens& t = toks.back();
      SMOE_CHECK(t.first_scored < static_cast<int64_t>(t.full.size()), "line ", q.line, ": choice ", k,
                 " gives no tokens to score");
      shared = std::min(shared, t.first_scored);
      longest = std::max<int64_t>(longest, static_cast<int64_t>(t.full.size()));
    }
    SMOE_CHECK(longest <= c.max_seq_len, "line ", q.line, ": the question takes ", longest,
               " tokens, more than the model's context length ", c.max_seq_len);
    // The shared prefix [0, shared) runs once; its last logits predict token `shared`.
    KVCache cache(c, longest);
    auto run = [&](std::span<const int32_t> tokens, bool all, std::vector<float>& out) {
      const BatchSeq seq{&cache, tokens, all};
      transformer.forward(std::span<const BatchSeq>(&seq, 1), out);
    };
    run(std::span<const int32_t>(toks[0].full).first(static_cast<size_t>(shared)), false, prefix_logits);
    McScore score;
    for (size_t k = 0; k < n_choices; ++k) {
      const McTokens& t = toks[k];
      const int64_t len = static_cast<int64_t>(t.full.size());
      cache.truncate(shared);
      // Row r of these logits predicts full[shared + 1 + r].
      if (len - 1 > shared) run(std::span<const int32_t>(t.full).subspan(shared, len - 1 - shared), true, logits);
      double ll = 0;
      for (int64_t i = t.first_scored; i < len; ++i) {
        const float* row = i == shared ? prefix_logits.data() : &logits[(i - shared - 1) * V];
        ll -= token_nll(row, V, t.full[static_cast<size_t>(i)]);
      }
      score.loglik.push_back(ll);
      score.n_tokens.push_back(len - t.first_scored);
      score.n_chars.push_back(std::max<int64_t>(1, count_chars(q.choices[k])));
    }
    for (size_t k = 1; k < n_choices; ++k) {
      if (score.loglik[k] > score.loglik[score.pred]) score.pred = static_cast<int64_t>(k);
      if (score.loglik[k] / static_cast<double>(score.n_chars[k]) >
          score.loglik[score.pred_norm] / static_cast<double>(score.n_chars[score.pred_norm]))
        score.pred_norm = static_cast<int64_t>(k);
    }
    res.correct += score.pred == q.label;
    res.correct_norm += score.pred_norm == q.label;
    res.random_baseline += 1.0 / static_cast<double>(n_choices);
    res.scores.push_back(std::move(score));
    if (progress_tool)
      progress(progress_tool,
               cat(qi + 1, "/", questions.size(), " questions, accuracy so far ",
                   static_cast<double>(res.correct) / static_cast<double>(qi + 1)),
               qi + 1 == questions.size());
  }
  res.random_baseline /= static_cast<double>(std::max<size_t>(1, questions.size()));
  return res;
}

}  // namespace smoe
