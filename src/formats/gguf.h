// gguf.h: reader for GGUF v2/v3 files (llama.cpp's format): metadata and tensor views.
// The file is memory-mapped; tensor views point into the mapping. Every offset, length
// and count is checked against the file size before it is used, so a truncated or
// corrupted file gives a smoe::Error naming the file and the field, never a bad read.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "core/mapped_file.h"
#include "core/tensor.h"

namespace smoe {

// GGUF metadata value types (the spec's gguf_metadata_value_type).
enum class GGUFType : uint32_t {
  U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, BOOL = 7,
  STRING = 8, ARRAY = 9, U64 = 10, I64 = 11, F64 = 12,
};

struct GGUFValue {
  GGUFType type = GGUFType::U32;
  GGUFType elem_type = GGUFType::U32;  // for ARRAY
  // Scalars: integers in i (sign-extended) or u, floats in f, bools in u, strings in s.
  int64_t i = 0;
  uint64_t u = 0;
  double f = 0;
  std::string s;
  // Arrays: numbers in nums (as double; exact for the ints GGUF vocabularies use),
  // integers also in ints, strings in strs.
  std::vector<double> nums;
  std::vector<int64_t> ints;
  std::vector<std::string> strs;
  uint64_t array_len = 0;
};

struct GGUFTensorInfo {
  std::string name;
  uint32_t ggml_type = 0;        // raw type id from the file
  std::vector<int64_t> ne;       // GGUF order: ne[0] is the innermost (contiguous) dim
  uint64_t offset = 0;           // relative to the start of the data section
  uint64_t nbytes = 0;           // size of its data in bytes (computed by the reader)
};

class GGUFFile {
 public:
  // Opens, maps and validates `path`. Throws smoe::Error on any problem.
  explicit GGUFFile(const std::string& path);

  const std::string& path() const { return file_->path(); }
  uint32_t version() const { return version_; }
  size_t file_size() const { return file_->size(); }
  // Start of the data section (tensor offsets are relative to it) and its alignment.
  size_t data_offset() const { return data_offset_; }
  uint64_t alignment() const { return alignment_; }

  // Metadata access. The get_* helpers throw smoe::Error naming the key when it is
  // missing or has an incompatible type; find() returns nullptr when missing.
  const GGUFValue* find(const std::string& key) const;
  bool has(const std::string& key) const { return find(key) != nullptr; }
  std::string get_string(const std::string& key) const;
  uint64_t get_uint(const std::string& key) const;   // any integer type, must be >= 0
  double get_float(const std::string& key) const;    // any numeric type
  bool get_bool(const std::string& key) const;
  const std::map<std::string, GGUFValue>& metadata() const { return kv_; }

  const std::vector<GGUFTensorInfo>& tensor_infos() const { return infos_; }
  const GGUFTensorInfo* find_tensor(const std::string& name) const;
  // View of a tensor; throws when missing or when its type is not supported by smoe
  // (naming the tensor and the type). Shape is reversed into row-major order.
  TensorView tensor(const std::string& name) const;

 private:
  std::unique_ptr<MappedFile> file_;
  uint32_t version_ = 0;
  std::map<std::string, GGUFValue> kv_;
  std::vector<GGUFTensorInfo> infos_;
  std::map<std::string, size_t> index_;
  size_t data_offset_ = 0;
  uint64_t alignment_ = 32;
};

// Name of a GGUF metadata value type ("u32", "string", "array"...), for messages.
const char* gguf_type_name(GGUFType t);

}  // namespace smoe
