// eval_common.h: what every analysis and evaluation tool shares: reading a text file,
// choosing its train/validation split, tokenizing it (BOS first), cutting a token stream
// into context windows, feeding a window through a Session in bounded chunks, and the
// log-softmax arithmetic (in double) that perplexity, KL and log-likelihood scores use.
// It does not know about any particular metric.
// Legend: T tokens, V vocab.
#pragma once
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "model/model.h"
#include "model/transformer.h"

namespace smoe {

// ---------------------------------------------------------------- texts and splits

// A text to evaluate on, as bytes. Throws naming the file when it is missing, unreadable
// or empty.
std::string read_eval_text(const std::string& path);

// Which part of a text to use. The validation split of a text is its last 10%: from
// character (Unicode code point) floor(n * 9 / 10) of its n characters; train is the rest.
enum class TextSplit { All, Train, Val };
// "all", "train" or "val" (throws naming `what` and the accepted names otherwise).
TextSplit parse_split(const std::string& name, const std::string& what = "--split");
const char* split_name(TextSplit split);
// Byte offset where the validation split of `text` starts (UTF-8 aware).
size_t val_split_offset(const std::string& text);
// The `split` part of `text`; throws naming `source` when that part is empty.
std::string select_split(const std::string& text, TextSplit split, const std::string& source);

// BOS followed by the tokens of `text`. Throws naming `source` when the model has no
// tokenizer or the text gives no tokens.
std::vector<int32_t> tokenize_with_bos(const Model& model, const std::string& text,
                                       const std::string& source);

// ---------------------------------------------------------------- windows and chunks

// [begin, end) token ranges.
struct Window {
  int64_t begin = 0, end = 0;
  int64_t size() const { return end - begin; }
};
// Consecutive windows of at most `ctx` tokens covering [0, n), no overlap.
std::vector<Window> split_windows(int64_t n, int64_t ctx);

// Tokens fed to the model per forward call: bounds the activations and logits held at once
// ([chunk, V] logits) whatever the window length. Results do not depend on it.
constexpr int64_t kForwardChunk = 256;

// Feeds tokens[T] to `session` (appending to what it holds) in chunks of kForwardChunk.
// After each chunk, on_chunk(first, n, logits) (when given) sees the chunk's offset in
// `tokens`, its length and its logits: [n, V] when all_logits, else [1, V] for its last
// token; the session's route record then holds the chunk's routing. last_logits (when
// given) receives the logits of the last token, [V].
using ChunkFn = std::function<void(int64_t first, int64_t n, const std::vector<float>& logits)>;
void feed_chunked(Session& session, std::span<const int32_t> tokens, bool all_logits,
                  const ChunkFn& on_chunk, std::vector<float>* last_logits = nullptr);

// ---------------------------------------------------------------- log-softmax arithmetic

// log(sum(exp(row[0..V)))) in double.
double log_sum_exp(const float* row, int64_t V);
// -log softmax(row)[target].
double token_nll(const float* row, int64_t V, int32_t target);
// KL(softmax(p) || softmax(q)) over V entries, in double.
double kl_divergence(const float* p, const float* q, int64_t V);

// Parses "1,2,3" into numbers (throws naming `what` on bad text or an empty list).
std::vector<int64_t> parse_int_list(const std::string& text, const std::string& what);
std::vector<double> parse_double_list(const std::string& text, const std::string& what);

// A progress line on stderr ("smoe <tool>: ..."), at most about once a second unless
// `force`. Long-running tools call it as they go.
void progress(const std::string& tool, const std::string& message, bool force = false);

}  // namespace smoe
