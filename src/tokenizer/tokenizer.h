// tokenizer.h: SentencePiece tokenization (via libsentencepiece) for `tokenizer.model`
// files and for vocabularies embedded in GGUF files (tokenizer.ggml.*), which are turned
// into an equivalent SentencePiece model. Encode/decode are exact, byte fallback included.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace smoe {

class GGUFFile;

class Tokenizer {
 public:
  // Loads a SentencePiece model file; throws smoe::Error naming the file on failure.
  static std::unique_ptr<Tokenizer> from_spm_file(const std::string& path);
  // Builds the tokenizer from a GGUF file's embedded vocabulary (tokenizer.ggml.model
  // "llama"); throws smoe::Error naming the missing or malformed key.
  static std::unique_ptr<Tokenizer> from_gguf(const GGUFFile& gguf);
  ~Tokenizer();

  // Ids for `text`, without BOS unless add_bos.
  std::vector<int32_t> encode(const std::string& text, bool add_bos = false) const;
  // Text for `ids` (BOS/EOS and other control tokens produce no text). Throws on ids
  // outside [0, vocab_size).
  std::string decode(const std::vector<int32_t>& ids) const;
  // The piece string of one id (e.g. "▁the", "<0x0A>").
  std::string id_to_piece(int32_t id) const;

  int32_t vocab_size() const { return vocab_size_; }
  int32_t bos_id() const { return bos_id_; }
  int32_t eos_id() const { return eos_id_; }
  int32_t unk_id() const { return unk_id_; }
  // The SentencePiece model, serialized as a tokenizer.model file holds it.
  std::string serialized_model() const;

 private:
  Tokenizer();
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
  int32_t vocab_size_ = 0, bos_id_ = -1, eos_id_ = -1, unk_id_ = -1;
};

}  // namespace smoe
