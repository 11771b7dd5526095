// data.h: training text: reading files, holding out the validation split (the tail of each
// file), training a SentencePiece BPE tokenizer on the training part only, and cutting
// token streams into batches. Sequences start with BOS, as `smoe run` prompts do.
// Legend: B sequences per batch, T tokens per sequence.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace smoe::train {

// Where the validation tail starts in a text of `len` bytes: len * (1000 - round(1000 *
// val_frac)) / 1000 in integers (tinyshakespeare, 0.1: 1,003,854 = len * 9 // 10), moved
// forward to a UTF-8 character boundary.
size_t val_split_point(const std::string& text, double val_frac);

struct TextSplit {
  std::string train, val;  // every file's head / tail, joined in file order
};
// Reads each file and splits it at val_split_point. Throws naming an unreadable/empty file.
TextSplit load_text(const std::vector<std::string>& files, double val_frac);

// Trains a SentencePiece BPE model (byte fallback, split digits, identity normalisation,
// unk 0 / bos 1 / eos 2) on `text`; writes PREFIX.model and PREFIX.vocab.
void train_tokenizer(const std::string& text, int vocab_size, const std::string& prefix, int threads);

// Batch `step` of a run: B windows at positions drawn from (seed, step) only, so a resumed
// run sees the same batches. Sequence b: inputs [BOS, t_p .. t_{p+T-2}], targets [t_p .. t_{p+T-1}].
void sample_batch(const std::vector<int32_t>& tokens, int64_t B, int64_t T, int32_t bos, uint64_t seed,
                  int64_t step, std::vector<int32_t>& inputs, std::vector<int32_t>& targets);

// Consecutive windows covering every token of `tokens` once as a target (the last one
// padded with target -1): window w predicts tokens [w*T, w*T+T). Returns the window count.
int64_t eval_windows(const std::vector<int32_t>& tokens, int64_t T, int32_t bos, std::vector<int32_t>& inputs,
                     std::vector<int32_t>& targets);

}  // namespace smoe::train
