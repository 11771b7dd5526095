// gguf_writer.h: writer for GGUF v3 files (llama.cpp's format), the inverse of gguf.h.
// Layout, as the spec defines it (all little-endian):
//   "GGUF" | u32 version = 3 | u64 tensor count | u64 metadata count
//   metadata: key (u64 length + bytes) | u32 value type | value
//   tensor infos: name | u32 n_dims | u64 ne[n_dims] (innermost first) | u32 ggml type |
//                 u64 offset (relative to the data section, a multiple of the alignment)
//   zero padding to the alignment | tensor data, each padded to the alignment.
// Metadata is serialized when set; tensor data is not copied: it is read from the given
// memory (or produced by a callback, one tensor at a time) while the file is written.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "formats/gguf.h"

namespace smoe {

class GGUFWriter {
 public:
  // Fills dst[nbytes] with a tensor's data; called once, while write() runs.
  using Fill = std::function<void(uint8_t* dst, size_t nbytes)>;

  GGUFWriter() = default;

  // Metadata. Setting a key again replaces its value (keeping its position). Keys must
  // be non-empty and at most 65535 bytes; throws smoe::Error naming the key otherwise.
  void set_u8(const std::string& key, uint8_t v);
  void set_i8(const std::string& key, int8_t v);
  void set_u16(const std::string& key, uint16_t v);
  void set_i16(const std::string& key, int16_t v);
  void set_u32(const std::string& key, uint32_t v);
  void set_i32(const std::string& key, int32_t v);
  void set_u64(const std::string& key, uint64_t v);
  void set_i64(const std::string& key, int64_t v);
  void set_f32(const std::string& key, float v);
  void set_f64(const std::string& key, double v);
  void set_bool(const std::string& key, bool v);
  void set_string(const std::string& key, const std::string& v);
  // Arrays of numbers: T is one of uint8_t, int8_t, uint16_t, int16_t, uint32_t,
  // int32_t, uint64_t, int64_t, float, double.
  template <typename T>
  void set_array(const std::string& key, std::span<const T> values);
  template <typename T>
  void set_array(const std::string& key, const std::vector<T>& values) {
    set_array(key, std::span<const T>(values));
  }
  void set_bool_array(const std::string& key, const std::vector<bool>& values);
  void set_string_array(const std::string& key, const std::vector<std::string>& values);
  bool has(const std::string& key) const;

  // Data alignment (a power of two, default 32). A value other than 32 is also recorded
  // as general.alignment (u32), as the spec requires.
  void set_alignment(uint32_t alignment);
  uint32_t alignment() const { return alignment_; }

  // Tensors, in file order. `shape` is row-major (outermost first, as TensorView); it is
  // written reversed as GGUF's ne[]. Names are unique and shorter than 64 bytes (GGML's
  // limit), 1 to 4 dims, rows a whole number of blocks of `dtype`. The bytes (nbytes of
  // the shape and dtype) must stay valid until write() returns.
  void add_tensor(const std::string& name, DType dtype, const std::vector<int64_t>& shape,
                  const uint8_t* data, size_t nbytes);
  // The tensor's data is the concatenation of `chunks` (e.g. stacked experts).
  void add_tensor(const std::string& name, DType dtype, const std::vector<int64_t>& shape,
                  std::vector<std::span<const uint8_t>> chunks);
  // The tensor's data comes from `fill` (e.g. quantization on the fly).
  void add_tensor(const std::string& name, DType dtype, const std::vector<int64_t>& shape,
                  Fill fill);
  size_t tensor_count() const { return tensors_.size(); }

  // Writes the file. Throws smoe::Error naming `path` when it cannot be created or a
  // write fails (a partly written regular file is removed).
  void write(const std::string& path) const;

 private:
  struct KV {
    std::string key;
    std::string bytes;  // value type + value, serialized
  };
  struct Tensor {
    std::string name;
    DType dtype;
    std::vector<int64_t> ne;  // GGUF order
    uint64_t nbytes = 0;
    uint64_t offset = 0;  // relative to the data section
    std::vector<std::span<const uint8_t>> chunks;
    Fill fill;
  };
  void set_raw(const std::string& key, GGUFType type, std::string value);
  Tensor& new_tensor(const std::string& name, DType dtype, const std::vector<int64_t>& shape);

  std::vector<KV> kv_;
  std::vector<Tensor> tensors_;
  uint32_t alignment_ = 32;
};

}  // namespace smoe
