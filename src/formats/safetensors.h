// safetensors.h: reader for safetensors files (Hugging Face and Mistral checkpoints),
// single files and shard sets listed by model.safetensors.index.json.
// Files are memory-mapped; every header field is validated against the file size.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/mapped_file.h"
#include "core/tensor.h"

namespace smoe {

class SafetensorsFile {
 public:
  // Maps and validates `path`; throws smoe::Error naming the file and field on any problem.
  explicit SafetensorsFile(const std::string& path);
  const std::string& path() const { return file_->path(); }
  const std::map<std::string, TensorView>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  std::unique_ptr<MappedFile> file_;
  std::map<std::string, TensorView> tensors_;
  std::map<std::string, std::string> metadata_;
};

// All tensors of a checkpoint: one file, or the shards named by an index json.
class SafetensorsSet {
 public:
  // Opens `dir/model.safetensors.index.json` shards, or every single file given.
  static SafetensorsSet open_index(const std::string& index_path);
  static SafetensorsSet open_files(const std::vector<std::string>& paths);

  const TensorView* find(const std::string& name) const;
  // Throws smoe::Error "tensor 'name' not found in <where>" when missing.
  const TensorView& get(const std::string& name) const;
  const std::map<std::string, const TensorView*>& all() const { return by_name_; }
  std::string where() const;  // file(s) for error messages
  size_t total_bytes() const;

 private:
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorView*> by_name_;
  void add(std::unique_ptr<SafetensorsFile> f);
};

}  // namespace smoe
