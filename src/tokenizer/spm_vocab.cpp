// spm_vocab.cpp: a minimal protobuf reader for the parts of sentencepiece_model.proto that
// GGUF needs (the system package ships no generated protobuf headers). Wire format: each
// field is a varint tag (field << 3 | wire type); type 0 varint, 1 fixed 8 bytes, 2 varint
// length + bytes (strings, sub-messages), 5 fixed 4 bytes. Unknown fields are skipped.
#include "tokenizer/spm_vocab.h"

#include <cstring>

#include "core/error.h"

namespace smoe {
namespace {

class ProtoReader {
 public:
  ProtoReader(const std::string& bytes, size_t begin, size_t end, const std::string& source)
      : b_(bytes), pos_(begin), end_(end), source_(source) {}

  bool done() const { return pos_ >= end_; }

  // Reads the next tag; returns the field number and sets the wire type.
  uint32_t next(uint32_t& wire_type) {
    const uint64_t tag = varint();
    wire_type = static_cast<uint32_t>(tag & 7);
    return static_cast<uint32_t>(tag >> 3);
  }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      need(1);
      const uint8_t byte = static_cast<uint8_t>(b_[pos_++]);
      v |= static_cast<uint64_t>(byte & 0x7f) << shift;
      if (!(byte & 0x80)) return v;
    }
    bad("a varint longer than 10 bytes");
  }
  float fixed32_float() {
    need(4);
    float f;
    std::memcpy(&f, b_.data() + pos_, 4);
    pos_ += 4;
    return f;
  }
  // A length-delimited field: returns its [begin, end) and moves past it.
  std::pair<size_t, size_t> bytes() {
    const uint64_t n = varint();
    need(n);
    const size_t begin = pos_;
    pos_ += static_cast<size_t>(n);
    return {begin, pos_};
  }
  std::string string() {
    auto [begin, end] = bytes();
    return b_.substr(begin, end - begin);
  }
  void skip(uint32_t wire_type) {
    switch (wire_type) {
      case 0:
        varint();
        return;
      case 1:
        need(8);
        pos_ += 8;
        return;
      case 2:
        bytes();
        return;
      case 5:
        need(4);
        pos_ += 4;
        return;
      default:
        bad(cat("wire type ", wire_type));
    }
  }
  void expect(uint32_t wire_type, uint32_t want, const char* field) {
    if (wire_type != want) bad(cat("field ", field, " with wire type ", wire_type));
  }

 private:
  void need(uint64_t n) const {
    if (n > end_ - pos_) bad(cat("a field running past its end (at byte ", pos_, ")"));
  }
  [[noreturn]] void bad(const std::string& what) const {
    fail(source_, ": the SentencePiece model is malformed: ", what);
  }
  const std::string& b_;
  size_t pos_, end_;
  const std::string& source_;
};

// ModelProto field numbers (sentencepiece_model.proto).
constexpr uint32_t kPieces = 1, kTrainerSpec = 2, kNormalizerSpec = 3;
constexpr uint32_t kPiece = 1, kScore = 2, kType = 3;
constexpr uint32_t kModelType = 3, kByteFallback = 35, kUnkId = 40, kBosId = 41, kEosId = 42,
                   kPadId = 43;
constexpr uint32_t kAddDummyPrefix = 3, kRemoveExtraWhitespaces = 4;

}  // namespace

SpmVocab parse_spm_vocab(const std::string& serialized, const std::string& source) {
  SpmVocab v;
  ProtoReader model(serialized, 0, serialized.size(), source);
  while (!model.done()) {
    uint32_t wt;
    const uint32_t field = model.next(wt);
    if (field == kPieces) {
      model.expect(wt, 2, "pieces");
      auto [begin, end] = model.bytes();
      ProtoReader p(serialized, begin, end, source);
      std::string piece;
      float score = 0;
      int32_t type = 1;
      while (!p.done()) {
        uint32_t pwt;
        const uint32_t f = p.next(pwt);
        if (f == kPiece) {
          p.expect(pwt, 2, "piece");
          piece = p.string();
        } else if (f == kScore) {
          p.expect(pwt, 5, "score");
          score = p.fixed32_float();
        } else if (f == kType) {
          p.expect(pwt, 0, "type");
          type = static_cast<int32_t>(p.varint());
        } else {
          p.skip(pwt);
        }
      }
      v.pieces.push_back(std::move(piece));
      v.scores.push_back(score);
      v.types.push_back(type);
    } else if (field == kTrainerSpec) {
      model.expect(wt, 2, "trainer_spec");
      auto [begin, end] = model.bytes();
      ProtoReader t(serialized, begin, end, source);
      while (!t.done()) {
        uint32_t twt;
        const uint32_t f = t.next(twt);
        const bool is_int = f == kModelType || f == kByteFallback || f == kUnkId || f == kBosId ||
                            f == kEosId || f == kPadId;
        if (!is_int) {
          t.skip(twt);
          continue;
        }
        t.expect(twt, 0, "trainer_spec integer");
        const auto x = static_cast<int32_t>(static_cast<int64_t>(t.varint()));
        if (f == kModelType)
          v.model_type = x;
        else if (f == kByteFallback)
          v.byte_fallback = x != 0;
        else if (f == kUnkId)
          v.unk_id = x;
        else if (f == kBosId)
          v.bos_id = x;
        else if (f == kEosId)
          v.eos_id = x;
        else
          v.pad_id = x;
      }
    } else if (field == kNormalizerSpec) {
      model.expect(wt, 2, "normalizer_spec");
      auto [begin, end] = model.bytes();
      ProtoReader n(serialized, begin, end, source);
      while (!n.done()) {
        uint32_t nwt;
        const uint32_t f = n.next(nwt);
        if (f == kAddDummyPrefix || f == kRemoveExtraWhitespaces) {
          n.expect(nwt, 0, "normalizer_spec flag");
          (f == kAddDummyPrefix ? v.add_dummy_prefix : v.remove_extra_whitespaces) =
              n.varint() != 0;
        } else {
          n.skip(nwt);
        }
      }
    } else {
      model.skip(wt);
    }
  }
  SMOE_CHECK(!v.pieces.empty(), source, ": the SentencePiece model has no pieces");
  return v;
}

}  // namespace smoe
