// safetensors_writer.h: writer for safetensors files (the inverse of safetensors.h).
// Layout: u64 little-endian header length N | N bytes of JSON, padded with spaces so that
// N is a multiple of 8: {"__metadata__": {...}, "name": {"dtype": "BF16", "shape": [...],
// "data_offsets": [begin, end]}, ...} | the data, tensors back to back in the order added.
// Tensor data is not copied: it is read from the given memory while the file is written.
#pragma once
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace smoe {

class SafetensorsWriter {
 public:
  // String metadata ("__metadata__"), e.g. {"format": "pt"}.
  void set_metadata(const std::string& key, const std::string& value);
  // Adds a tensor of row-major `shape` whose data is the concatenation of `chunks`
  // (nbytes of the shape and dtype in all). dtype must be F32, F16 or BF16: throws
  // smoe::Error naming the tensor otherwise, or on a duplicate name or a size mismatch.
  // The memory must stay valid until write() returns.
  void add_tensor(const std::string& name, DType dtype, const std::vector<int64_t>& shape,
                  std::vector<std::span<const uint8_t>> chunks);
  void add_tensor(const std::string& name, DType dtype, const std::vector<int64_t>& shape,
                  const uint8_t* data, size_t nbytes) {
    add_tensor(name, dtype, shape, {std::span<const uint8_t>(data, nbytes)});
  }
  size_t tensor_count() const { return tensors_.size(); }
  uint64_t data_bytes() const { return next_offset_; }

  // Writes the file; throws smoe::Error naming `path` when it cannot be written.
  void write(const std::string& path) const;

 private:
  struct Tensor {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    uint64_t begin = 0, end = 0;
    std::vector<std::span<const uint8_t>> chunks;
  };
  std::vector<Tensor> tensors_;
  std::map<std::string, std::string> metadata_;
  uint64_t next_offset_ = 0;
};

// "F32", "F16", "BF16"; throws smoe::Error naming `tensor` for types safetensors cannot hold.
const char* safetensors_dtype(DType dtype, const std::string& tensor);

}  // namespace smoe
