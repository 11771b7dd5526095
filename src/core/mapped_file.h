// mapped_file.h: a read-only memory map of a whole file, and anonymous huge-page memory
// that weights can be copied into (see model/weight_memory.h).
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

// Drops this process's mappings of the whole pages of [p, p + n) that lie inside a live
// MappedFile (madvise MADV_DONTNEED): the file's pages stay in the page cache and are read
// back on the next access, but stop counting as this process's memory. Does nothing for
// memory that is not such a mapping (it never discards anonymous memory). Used after the
// weights are copied out of a file, so the copy does not double the process's footprint.
void release_file_pages(const void* p, size_t n);

// Anonymous zero-filled memory, 2 MiB aligned, with transparent huge pages requested
// (madvise): streaming gigabytes of weights through 2 MiB pages misses the TLB far less
// often than through 4 KiB file pages. Released on destruction.
class HugePageBuffer {
 public:
  // Throws smoe::Error (naming the size and `what`) when the memory cannot be had.
  HugePageBuffer(size_t size, const std::string& what);
  ~HugePageBuffer();
  HugePageBuffer(const HugePageBuffer&) = delete;
  HugePageBuffer& operator=(const HugePageBuffer&) = delete;

  uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  void* map_ = nullptr;
  size_t map_size_ = 0;
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// MemAvailable from /proc/meminfo (memory that can be had without swapping, page cache
// included) in bytes; 0 when it cannot be read.
size_t available_memory_bytes();

// Reads a whole (small) file into a string; throws smoe::Error naming the file when it cannot.
std::string read_text_file(const std::string& path);

}  // namespace smoe
