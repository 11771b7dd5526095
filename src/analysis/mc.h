// mc.h: multiple-choice evaluation by log-likelihood, the protocol behind the benchmark
// tables of the Mixtral paper (MMLU, HellaSwag, ARC, ...): each choice is scored by the
// log-probability the model gives its tokens after the question's context, and the
// question counts as right when the correct choice scores highest. Reports accuracy
// (summed log-likelihood) and length-normalised accuracy (log-likelihood per character).
//
// Task files are JSON Lines, one question per non-blank line:
//   {"context": "Question: ... Answer:", "choices": [" Paris", " Rome"], "label": 0}
// "question" is accepted for "context", and "answer" for "label" (a 0-based index or a
// letter "A", "B", ...). Choices are appended to the context as given, so a choice usually
// starts with a space.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/thread_pool.h"
#include "model/model.h"

namespace smoe {

struct McQuestion {
  std::string context;
  std::vector<std::string> choices;
  int64_t label = 0;
  int64_t line = 0;  // 1-based line in the task file
};

// Parses a task file's text. Throws naming `source`, the line and the field for malformed
// JSON, missing or mistyped fields, fewer than 2 choices, empty choices, labels out of
// range, or a file with no questions.
std::vector<McQuestion> parse_mc_jsonl(const std::string& text, const std::string& source);

// Which tokens of "context + choice" a choice is scored on: BOS + encode(context + choice)
// after its longest common prefix with BOS + encode(context) (a token merging the context's
// end with the choice's start is scored as part of the choice).
struct McTokens {
  std::vector<int32_t> full;  // BOS + encode(context + choice)
  int64_t first_scored = 0;   // index in full of the first token scored
};
McTokens mc_tokens(const Model& model, const std::string& context, const std::string& choice);

struct McScore {
  std::vector<double> loglik;     // [choices] summed log p of the choice's tokens
  std::vector<int64_t> n_tokens;  // [choices] tokens scored
  std::vector<int64_t> n_chars;   // [choices] characters (code points) of the choice
  int64_t pred = 0;               // argmax loglik (the first on ties)
  int64_t pred_norm = 0;          // argmax loglik / n_chars
};

struct McResult {
  std::vector<McScore> scores;  // one per question
  int64_t correct = 0, correct_norm = 0;
  double random_baseline = 0;   // mean of 1 / number of choices
  double accuracy() const;
  double accuracy_norm() const;
};

// Scores every question (the context runs once; each choice continues from its KV cache).
McResult run_mc(const Model& model, const std::vector<McQuestion>& questions, ThreadPool* pool,
                const char* progress_tool = nullptr);

}  // namespace smoe
