// out_file.cpp: buffered file output with errors naming the file (see out_file.h).
#include "core/out_file.h"

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "core/error.h"

namespace smoe {

namespace fs = std::filesystem;

namespace {
constexpr size_t kBufferBytes = 1 << 20;

void remove_if_regular(const std::string& path) {
  std::error_code ec;
  if (fs::is_regular_file(path, ec)) fs::remove(path, ec);
}
}  // namespace

OutFile::OutFile(const std::string& path, const std::string& what) : path_(path), what_(what) {
  f_ = std::fopen(path.c_str(), "wb");
  if (!f_) {
    const int err = errno;
    const fs::path parent = fs::path(path).parent_path();
    std::error_code ec;
    if (!parent.empty() && !fs::is_directory(parent, ec))
      error(cat("cannot create the file: the folder ", parent.string(), " does not exist"));
    error(cat("cannot create the file (", std::strerror(err), ")"));
  }
  std::setvbuf(f_, nullptr, _IOFBF, kBufferBytes);
}

OutFile::~OutFile() {
  if (!f_) return;
  std::fclose(f_);
  remove_if_regular(path_);
}

void OutFile::error(const std::string& msg) const { fail(what_, " ", path_, ": ", msg); }

void OutFile::write(const void* data, size_t n) {
  if (n == 0) return;
  if (std::fwrite(data, 1, n, f_) != n)
    error(cat("write failed at byte ", pos_, " (", std::strerror(errno), ")"));
  pos_ += n;
}

void OutFile::zeros(size_t n) {
  static const char kZeros[256] = {};
  while (n > 0) {
    const size_t k = n < sizeof kZeros ? n : sizeof kZeros;
    write(kZeros, k);
    n -= k;
  }
}

void OutFile::close() {
  FILE* f = f_;
  f_ = nullptr;
  errno = 0;
  const bool flushed = std::fflush(f) == 0;
  const int flush_err = errno;
  const bool closed = std::fclose(f) == 0;
  const int err = flushed ? errno : flush_err;
  if (!flushed || !closed) {
    remove_if_regular(path_);
    error(cat("write failed when finishing the file of ", pos_, " bytes (",
              std::strerror(err ? err : EIO), ")"));
  }
}

}  // namespace smoe
