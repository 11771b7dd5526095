// mapped_file.h: a read-only memory map of a whole file (weights are mapped, not copied).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace smoe {

class MappedFile {
 public:
  // Maps `path` read-only; throws smoe::Error naming the file when it cannot.
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// Reads a whole (small) file into a string; throws smoe::Error naming the file when it cannot.
std::string read_text_file(const std::string& path);

}  // namespace smoe
