// spm_vocab.h: the vocabulary of a SentencePiece model, read back from its serialized
// ModelProto (Tokenizer::serialized_model()), for writing it into GGUF files as
// tokenizer.ggml.* (pieces, scores, types, special ids, normalizer flags).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace smoe {

struct SpmVocab {
  std::vector<std::string> pieces;
  std::vector<float> scores;
  std::vector<int32_t> types;  // 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte
  int32_t model_type = 1;      // TrainerSpec.model_type: 1 unigram, 2 BPE, 3 word, 4 char
  int32_t unk_id = 0, bos_id = 1, eos_id = 2, pad_id = -1;
  bool byte_fallback = false;
  bool add_dummy_prefix = true;  // NormalizerSpec defaults
  bool remove_extra_whitespaces = true;
};

// Parses a serialized ModelProto; throws smoe::Error naming `source` when it is malformed.
SpmVocab parse_spm_vocab(const std::string& serialized, const std::string& source);

}  // namespace smoe
