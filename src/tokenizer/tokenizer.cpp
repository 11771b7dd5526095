// tokenizer.cpp: SentencePiece tokenization via libsentencepiece (see tokenizer.h).
// A GGUF vocabulary (tokenizer.ggml.*) is turned into a SentencePiece ModelProto that we
// serialize ourselves (the system package ships no generated protobuf headers), using
// the field numbers of sentencepiece_model.proto, then loaded from those bytes.
#include "tokenizer/tokenizer.h"

#include <sentencepiece_processor.h>

#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "core/mapped_file.h"
#include "formats/gguf.h"

namespace smoe {
namespace {

// Protobuf wire format: each field is a varint tag (field_number << 3 | wire_type)
// followed by a varint (type 0), 4 little-endian bytes (type 5) or a varint length and
// that many bytes (type 2, strings and sub-messages).
class ProtoWriter {
 public:
  void varint_field(uint32_t field, uint64_t v) {
    tag(field, 0);
    varint(v);
  }
  // int32/enum fields: negative values are sign-extended to 64 bits (10 bytes).
  void int32_field(uint32_t field, int32_t v) {
    varint_field(field, static_cast<uint64_t>(static_cast<int64_t>(v)));
  }
  void bool_field(uint32_t field, bool v) { varint_field(field, v ? 1 : 0); }
  void float_field(uint32_t field, float v) {
    tag(field, 5);
    uint32_t bits;
    std::memcpy(&bits, &v, 4);
    for (int k = 0; k < 4; ++k) out_.push_back(static_cast<char>((bits >> (8 * k)) & 0xff));
  }
  void bytes_field(uint32_t field, const std::string& bytes) {
    tag(field, 2);
    varint(bytes.size());
    out_ += bytes;
  }
  const std::string& bytes() const { return out_; }

 private:
  void tag(uint32_t field, uint32_t wire_type) {
    varint(static_cast<uint64_t>(field) << 3 | wire_type);
  }
  void varint(uint64_t v) {
    while (v >= 0x80) {
      out_.push_back(static_cast<char>((v & 0x7f) | 0x80));
      v >>= 7;
    }
    out_.push_back(static_cast<char>(v));
  }
  std::string out_;
};

// Field numbers from sentencepiece_model.proto.
namespace pb {
// ModelProto
constexpr uint32_t kModelPieces = 1, kModelTrainerSpec = 2, kModelNormalizerSpec = 3;
// ModelProto.SentencePiece
constexpr uint32_t kPiecePiece = 1, kPieceScore = 2, kPieceType = 3;
// TrainerSpec
constexpr uint32_t kTrainerModelType = 3, kTrainerVocabSize = 4, kTrainerByteFallback = 35,
                   kTrainerUnkId = 40, kTrainerBosId = 41, kTrainerEosId = 42, kTrainerPadId = 43,
                   kTrainerUnkPiece = 45, kTrainerBosPiece = 46, kTrainerEosPiece = 47,
                   kTrainerPadPiece = 48;
constexpr uint64_t kModelTypeBPE = 2;
// NormalizerSpec
constexpr uint32_t kNormName = 1, kNormAddDummyPrefix = 3, kNormRemoveExtraWhitespaces = 4,
                   kNormEscapeWhitespaces = 5;
// SentencePiece types (equal to GGUF's tokenizer.ggml.token_type values).
constexpr int64_t kNormal = 1, kUnknown = 2, kControl = 3, kByte = 6;
}  // namespace pb

const GGUFValue& require_array(const GGUFFile& g, const std::string& key, const char* what) {
  const GGUFValue* v = g.find(key);
  if (!v)
    fail("GGUF ", g.path(), ": metadata key '", key, "' is missing; expected ", what,
         " (is this a GGUF file with an embedded vocabulary?)");
  return *v;
}

// An optional token-id key: -1 when absent, otherwise checked to be inside the vocabulary.
int32_t optional_token_id(const GGUFFile& g, const std::string& key, int64_t vocab) {
  if (!g.has(key)) return -1;
  const uint64_t id = g.get_uint(key);
  SMOE_CHECK(id < static_cast<uint64_t>(vocab), "GGUF ", g.path(), ": metadata key '", key, "' is ",
             id, ", outside the vocabulary of ", vocab, " tokens");
  return static_cast<int32_t>(id);
}

bool optional_bool(const GGUFFile& g, const std::string& key, bool dflt) {
  return g.has(key) ? g.get_bool(key) : dflt;
}

}  // namespace

Tokenizer::Tokenizer() : sp_(std::make_unique<sentencepiece::SentencePieceProcessor>()) {}
Tokenizer::~Tokenizer() = default;

std::unique_ptr<Tokenizer> Tokenizer::from_spm_file(const std::string& path) {
  SMOE_CHECK(std::filesystem::is_regular_file(path), "tokenizer ", path,
             ": no such file (expected a SentencePiece tokenizer.model)");
  const std::string bytes = read_text_file(path);  // throws naming the file when unreadable
  std::unique_ptr<Tokenizer> t(new Tokenizer());
  const auto status = t->sp_->LoadFromSerializedProto(bytes);
  if (!status.ok())
    fail("tokenizer ", path, ": not a valid SentencePiece model (", status.ToString(), ")");
  t->vocab_size_ = t->sp_->GetPieceSize();
  SMOE_CHECK(t->vocab_size_ > 0, "tokenizer ", path, ": the SentencePiece model has no pieces");
  t->bos_id_ = t->sp_->bos_id();
  t->eos_id_ = t->sp_->eos_id();
  t->unk_id_ = t->sp_->unk_id();
  return t;
}

std::unique_ptr<Tokenizer> Tokenizer::from_gguf(const GGUFFile& g) {
  const std::string& p = g.path();
  SMOE_CHECK(
      g.has("tokenizer.ggml.model"), "GGUF ", p,
      ": metadata key 'tokenizer.ggml.model' is missing (the file has no embedded vocabulary)");
  const std::string model = g.get_string("tokenizer.ggml.model");
  SMOE_CHECK(
      model == "llama", "GGUF ", p, ": tokenizer.ggml.model is '", model,
      "', expected 'llama' (a SentencePiece vocabulary); other tokenizers are not supported");

  const GGUFValue& tokens = require_array(g, "tokenizer.ggml.tokens", "an array of token strings");
  SMOE_CHECK(tokens.type == GGUFType::ARRAY && tokens.elem_type == GGUFType::STRING, "GGUF ", p,
             ": metadata key 'tokenizer.ggml.tokens' has type ", gguf_type_name(tokens.type),
             ", expected an array of strings");
  const int64_t n = static_cast<int64_t>(tokens.strs.size());
  SMOE_CHECK(n > 0 && n <= INT32_MAX, "GGUF ", p, ": tokenizer.ggml.tokens has ", n,
             " entries, expected 1 to 2^31-1");

  const GGUFValue& scores = require_array(g, "tokenizer.ggml.scores", "an array of token scores");
  SMOE_CHECK(scores.type == GGUFType::ARRAY && scores.elem_type != GGUFType::STRING &&
                 scores.elem_type != GGUFType::ARRAY,
             "GGUF ", p, ": metadata key 'tokenizer.ggml.scores' has type ",
             gguf_type_name(scores.type), ", expected an array of numbers");
  SMOE_CHECK(static_cast<int64_t>(scores.nums.size()) == n, "GGUF ", p,
             ": tokenizer.ggml.scores has ", scores.nums.size(),
             " entries but tokenizer.ggml.tokens has ", n, "; expected one score per token");

  // Token types are optional (llama.cpp treats a missing array as all normal).
  std::vector<int64_t> types(static_cast<size_t>(n), pb::kNormal);
  if (const GGUFValue* tt = g.find("tokenizer.ggml.token_type")) {
    SMOE_CHECK(tt->type == GGUFType::ARRAY && tt->elem_type != GGUFType::STRING &&
                   tt->elem_type != GGUFType::F32 && tt->elem_type != GGUFType::F64,
               "GGUF ", p, ": metadata key 'tokenizer.ggml.token_type' has type ",
               gguf_type_name(tt->type), ", expected an array of integers");
    SMOE_CHECK(static_cast<int64_t>(tt->ints.size()) == n, "GGUF ", p,
               ": tokenizer.ggml.token_type has ", tt->ints.size(),
               " entries but tokenizer.ggml.tokens has ", n, "; expected one type per token");
    for (int64_t k = 0; k < n; ++k) {
      const int64_t t = tt->ints[static_cast<size_t>(k)];
      SMOE_CHECK(t >= 1 && t <= 6, "GGUF ", p, ": tokenizer.ggml.token_type[", k, "] (token '",
                 tokens.strs[static_cast<size_t>(k)], "') is ", t, ", expected 1 to 6");
      types[static_cast<size_t>(k)] = t;
    }
  }

  // Special ids: GGUF keys when present, otherwise SentencePiece's conventional 0/1/2.
  int32_t unk = optional_token_id(g, "tokenizer.ggml.unknown_token_id", n);
  int32_t bos = optional_token_id(g, "tokenizer.ggml.bos_token_id", n);
  int32_t eos = optional_token_id(g, "tokenizer.ggml.eos_token_id", n);
  const int32_t pad = optional_token_id(g, "tokenizer.ggml.padding_token_id", n);
  if (unk < 0) {
    for (int64_t k = 0; k < n && unk < 0; ++k)
      if (types[static_cast<size_t>(k)] == pb::kUnknown) unk = static_cast<int32_t>(k);
    if (unk < 0) unk = 0;
  }
  if (bos < 0 && n > 1) bos = 1;
  if (eos < 0 && n > 2) eos = 2;
  // SentencePiece requires exactly one unknown piece; vocabularies without types get one.
  bool have_unknown = false;
  for (int64_t t : types) have_unknown |= t == pb::kUnknown;
  if (!have_unknown) types[static_cast<size_t>(unk)] = pb::kUnknown;
  bool have_bytes = false;
  for (int64_t t : types) have_bytes |= t == pb::kByte;

  ProtoWriter proto;
  for (int64_t k = 0; k < n; ++k) {
    const std::string& piece = tokens.strs[static_cast<size_t>(k)];
    SMOE_CHECK(!piece.empty(), "GGUF ", p, ": tokenizer.ggml.tokens[", k,
               "] is empty; SentencePiece pieces must not be empty");
    ProtoWriter sp;
    sp.bytes_field(pb::kPiecePiece, piece);
    sp.float_field(pb::kPieceScore, static_cast<float>(scores.nums[static_cast<size_t>(k)]));
    sp.varint_field(pb::kPieceType, static_cast<uint64_t>(types[static_cast<size_t>(k)]));
    proto.bytes_field(pb::kModelPieces, sp.bytes());
  }

  auto piece_of = [&](int32_t id) { return tokens.strs[static_cast<size_t>(id)]; };
  ProtoWriter trainer;
  trainer.varint_field(pb::kTrainerModelType, pb::kModelTypeBPE);
  trainer.int32_field(pb::kTrainerVocabSize, static_cast<int32_t>(n));
  trainer.bool_field(pb::kTrainerByteFallback, have_bytes);
  trainer.int32_field(pb::kTrainerUnkId, unk);
  trainer.int32_field(pb::kTrainerBosId, bos);
  trainer.int32_field(pb::kTrainerEosId, eos);
  trainer.int32_field(pb::kTrainerPadId, pad);
  trainer.bytes_field(pb::kTrainerUnkPiece, piece_of(unk));
  if (bos >= 0) trainer.bytes_field(pb::kTrainerBosPiece, piece_of(bos));
  if (eos >= 0) trainer.bytes_field(pb::kTrainerEosPiece, piece_of(eos));
  if (pad >= 0) trainer.bytes_field(pb::kTrainerPadPiece, piece_of(pad));
  proto.bytes_field(pb::kModelTrainerSpec, trainer.bytes());

  // Identity normalizer (no NFKC): only the dummy prefix and whitespace escaping.
  ProtoWriter norm;
  norm.bytes_field(pb::kNormName, "identity");
  norm.bool_field(pb::kNormAddDummyPrefix,
                  optional_bool(g, "tokenizer.ggml.add_space_prefix", true));
  norm.bool_field(pb::kNormRemoveExtraWhitespaces,
                  optional_bool(g, "tokenizer.ggml.remove_extra_whitespaces", false));
  norm.bool_field(pb::kNormEscapeWhitespaces, true);
  proto.bytes_field(pb::kModelNormalizerSpec, norm.bytes());

  std::unique_ptr<Tokenizer> t(new Tokenizer());
  const auto status = t->sp_->LoadFromSerializedProto(proto.bytes());
  if (!status.ok())
    fail("GGUF ", p, ": the embedded vocabulary is not a valid SentencePiece model (",
         status.ToString(), ")");
  t->vocab_size_ = static_cast<int32_t>(n);
  SMOE_CHECK(t->sp_->GetPieceSize() == n, "GGUF ", p, ": internal: SentencePiece loaded ",
             t->sp_->GetPieceSize(), " pieces from a vocabulary of ", n);
  t->bos_id_ = bos;
  t->eos_id_ = eos;
  t->unk_id_ = unk;
  return t;
}

std::vector<int32_t> Tokenizer::encode(const std::string& text, bool add_bos) const {
  std::vector<int> ids;
  const auto status = sp_->Encode(text, &ids);
  if (!status.ok()) fail("tokenizer: cannot encode text (", status.ToString(), ")");
  std::vector<int32_t> out;
  out.reserve(ids.size() + 1);
  if (add_bos) {
    SMOE_CHECK(bos_id_ >= 0, "tokenizer: BOS requested but the vocabulary has no BOS token");
    out.push_back(bos_id_);
  }
  out.insert(out.end(), ids.begin(), ids.end());
  return out;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  for (size_t k = 0; k < ids.size(); ++k)
    SMOE_CHECK(ids[k] >= 0 && ids[k] < vocab_size_, "tokenizer: cannot decode token id ", ids[k],
               " (position ", k, "): expected an id in [0, ", vocab_size_, ")");
  std::vector<int> in(ids.begin(), ids.end());
  std::string text;
  const auto status = sp_->Decode(in, &text);
  if (!status.ok()) fail("tokenizer: cannot decode ids (", status.ToString(), ")");
  return text;
}

std::string Tokenizer::serialized_model() const { return sp_->serialized_model_proto(); }

std::string Tokenizer::id_to_piece(int32_t id) const {
  SMOE_CHECK(id >= 0 && id < vocab_size_, "tokenizer: token id ", id,
             " is outside the vocabulary [0, ", vocab_size_, ")");
  return sp_->IdToPiece(id);
}

}  // namespace smoe
