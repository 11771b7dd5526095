// out_file.h: sequential, buffered output to a new file, for the model file writers.
// Every failure (cannot create, short write, flush or close error) throws smoe::Error
// naming the file and the system's reason; a file left unfinished by an error is removed
// (only when it is a regular file, never a device such as /dev/full).
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>

namespace smoe {

class OutFile {
 public:
  // Creates (or truncates) `path`. `what` prefixes messages: "GGUF", "safetensors".
  OutFile(const std::string& path, const std::string& what);
  ~OutFile();  // closes and removes the file unless close() succeeded
  OutFile(const OutFile&) = delete;
  OutFile& operator=(const OutFile&) = delete;

  void write(const void* data, size_t n);
  void zeros(size_t n);
  uint64_t pos() const { return pos_; }  // bytes written so far
  // Flushes and closes; throws when the data could not be written (e.g. disk full).
  void close();

  [[noreturn]] void error(const std::string& msg) const;  // "<what> <path>: <msg>"

 private:
  std::string path_, what_;
  FILE* f_ = nullptr;
  uint64_t pos_ = 0;
};

}  // namespace smoe
