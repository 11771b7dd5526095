// mapped_file.cpp: POSIX mmap of read-only files and of anonymous huge-page memory.
#include "core/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>

#include "core/error.h"

namespace smoe {

namespace {

// The live read-only file mappings, begin -> end, for release_file_pages.
std::mutex g_maps_mutex;
std::map<uintptr_t, uintptr_t> g_maps;

}  // namespace

MappedFile::MappedFile(const std::string& path) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) fail(path, ": cannot open (", std::strerror(errno), ")");
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    fail(path, ": cannot stat (", std::strerror(e), ")");
  }
  if (S_ISDIR(st.st_mode)) {
    ::close(fd);
    fail(path, ": is a directory, expected a file");
  }
  size_ = static_cast<size_t>(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      int e = errno;
      ::close(fd);
      fail(path, ": cannot mmap ", size_, " bytes (", std::strerror(e), ")");
    }
    data_ = static_cast<const uint8_t*>(p);
    std::lock_guard<std::mutex> lock(g_maps_mutex);
    g_maps[reinterpret_cast<uintptr_t>(p)] = reinterpret_cast<uintptr_t>(p) + size_;
  }
  ::close(fd);
}

MappedFile::~MappedFile() {
  if (!data_) return;
  {
    std::lock_guard<std::mutex> lock(g_maps_mutex);
    g_maps.erase(reinterpret_cast<uintptr_t>(data_));
  }
  ::munmap(const_cast<uint8_t*>(data_), size_);
}

void release_file_pages(const void* p, size_t n) {
  static const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  uintptr_t begin = reinterpret_cast<uintptr_t>(p), end = begin + n;
  std::lock_guard<std::mutex> lock(g_maps_mutex);
  auto it = g_maps.upper_bound(begin);
  if (it == g_maps.begin()) return;
  --it;  // the mapping starting at or before begin
  end = std::min(end, it->second);
  if (begin >= end) return;
  begin = (begin + page - 1) / page * page;  // whole pages only
  end = end / page * page;
  if (begin < end) (void)::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

HugePageBuffer::HugePageBuffer(size_t size, const std::string& what) : size_(size) {
  constexpr size_t kHuge = size_t{2} << 20;
  if (size == 0) return;
  // Round up and over-allocate one huge page so the data can start on a 2 MiB boundary.
  map_size_ = (size + kHuge - 1) / kHuge * kHuge + kHuge;
  void* p = ::mmap(nullptr, map_size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED)
    fail(what, ": cannot allocate ", size, " bytes of memory (", std::strerror(errno), ")");
  map_ = p;
  const uintptr_t a = (reinterpret_cast<uintptr_t>(p) + kHuge - 1) / kHuge * kHuge;
  data_ = reinterpret_cast<uint8_t*>(a);
  // Advice only: kernels without transparent huge pages keep 4 KiB pages.
  (void)::madvise(data_, map_size_ - (a - reinterpret_cast<uintptr_t>(p)), MADV_HUGEPAGE);
}

HugePageBuffer::~HugePageBuffer() {
  if (map_) ::munmap(map_, map_size_);
}

size_t available_memory_bytes() {
  std::ifstream in("/proc/meminfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("MemAvailable:", 0) == 0) return std::strtoull(line.c_str() + 13, nullptr, 10) * 1024;
  return 0;
}

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, ": cannot open (", std::strerror(errno), ")");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace smoe
