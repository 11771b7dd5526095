// safetensors.cpp: safetensors parsing and validation.
// Layout: u64 little-endian header length N, N bytes of JSON
// {"name": {"dtype": "BF16", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {..}},
// then the data section; offsets are relative to its start.
#include "formats/safetensors.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"

namespace smoe {

using json = nlohmann::json;

namespace {

DType parse_dtype(const std::string& file, const std::string& name, const std::string& s) {
  if (s == "F32") return DType::F32;
  if (s == "F16") return DType::F16;
  if (s == "BF16") return DType::BF16;
  fail(file, ": tensor '", name, "' has dtype ", s,
       ", which smoe does not support (expected F32, F16 or BF16)");
}

}  // namespace

SafetensorsFile::SafetensorsFile(const std::string& path)
    : file_(std::make_unique<MappedFile>(path)) {
  const size_t size = file_->size();
  SMOE_CHECK(size >= 8, path, ": file is ", size,
             " bytes, too short for a safetensors header (expected at least 8)");
  uint64_t header_len;
  std::memcpy(&header_len, file_->data(), 8);
  SMOE_CHECK(header_len <= size - 8, path, ": header length ", header_len,
             " runs past the end of the file (size ", size, "): truncated or not safetensors");
  const size_t data_start = 8 + header_len;
  const size_t data_size = size - data_start;
  json header;
  try {
    header = json::parse(file_->data() + 8, file_->data() + data_start);
  } catch (const json::exception& e) {
    fail(path, ": header is not valid JSON (", e.what(), ")");
  }
  SMOE_CHECK(header.is_object(), path, ": header must be a JSON object, found ",
             header.type_name());

  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      SMOE_CHECK(entry.is_object(), path, ": __metadata__ must be an object");
      for (const auto& [k, v] : entry.items())
        metadata_[k] = v.is_string() ? v.get<std::string>() : v.dump();
      continue;
    }
    SMOE_CHECK(entry.is_object() && entry.contains("dtype") && entry.contains("shape") &&
                   entry.contains("data_offsets"),
               path, ": tensor '", name, "' entry must have dtype, shape and data_offsets");
    SMOE_CHECK(entry["dtype"].is_string(), path, ": tensor '", name, "': dtype must be a string");
    TensorView t;
    t.name = name;
    t.dtype = parse_dtype(path, name, entry["dtype"].get<std::string>());
    const json& shape = entry["shape"];
    SMOE_CHECK(shape.is_array() && shape.size() <= 8, path, ": tensor '", name,
               "': shape must be an array of at most 8 dims");
    uint64_t numel = 1;
    for (const json& d : shape) {
      SMOE_CHECK(d.is_number_unsigned() || (d.is_number_integer() && d.get<int64_t>() >= 0), path,
                 ": tensor '", name, "': shape entries must be non-negative integers, found ",
                 d.dump());
      uint64_t v = d.get<uint64_t>();
      SMOE_CHECK(v == 0 || numel <= std::numeric_limits<uint32_t>::max() * 64ull / v, path,
                 ": tensor '", name, "': shape ", shape.dump(), " is absurdly large");
      numel *= v;
      t.shape.push_back(static_cast<int64_t>(v));
    }
    const json& off = entry["data_offsets"];
    SMOE_CHECK(off.is_array() && off.size() == 2 && off[0].is_number_unsigned() &&
                   off[1].is_number_unsigned(),
               path, ": tensor '", name, "': data_offsets must be two non-negative integers");
    uint64_t begin = off[0].get<uint64_t>(), end = off[1].get<uint64_t>();
    SMOE_CHECK(begin <= end && end <= data_size, path, ": tensor '", name, "': data_offsets [",
               begin, ", ", end, ") lie outside the data section (", data_size,
               " bytes): the file is truncated or corrupt");
    uint64_t expected = numel * dtype_info(t.dtype).block_bytes;
    SMOE_CHECK(end - begin == expected, path, ": tensor '", name, "': ", end - begin,
               " bytes of data but shape ", shape_str(t.shape), " of ", dtype_name(t.dtype),
               " needs ", expected);
    t.data = file_->data() + data_start + begin;
    t.nbytes = end - begin;
    ranges.emplace_back(begin, end);
    tensors_[name] = std::move(t);
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i)
    SMOE_CHECK(ranges[i].first >= ranges[i - 1].second || ranges[i].first == ranges[i].second,
               path, ": tensors' data ranges overlap at byte ", ranges[i].first);
}

void SafetensorsSet::add(std::unique_ptr<SafetensorsFile> f) {
  for (const auto& [name, t] : f->tensors()) {
    SMOE_CHECK(!by_name_.count(name), "tensor '", name, "' appears in both ",
               where(), " and ", f->path());
    by_name_[name] = &t;
  }
  files_.push_back(std::move(f));
}

SafetensorsSet SafetensorsSet::open_files(const std::vector<std::string>& paths) {
  SafetensorsSet set;
  for (const auto& p : paths) set.add(std::make_unique<SafetensorsFile>(p));
  return set;
}

SafetensorsSet SafetensorsSet::open_index(const std::string& index_path) {
  json index;
  try {
    index = json::parse(read_text_file(index_path));
  } catch (const json::exception& e) {
    fail(index_path, ": not valid JSON (", e.what(), ")");
  }
  SMOE_CHECK(index.is_object() && index.contains("weight_map") && index["weight_map"].is_object(),
             index_path, ": expected an object with a \"weight_map\" object");
  const auto dir = std::filesystem::path(index_path).parent_path();
  std::set<std::string> shards;
  for (const auto& [name, file] : index["weight_map"].items()) {
    SMOE_CHECK(file.is_string(), index_path, ": weight_map[\"", name, "\"] must be a file name");
    std::string f = file.get<std::string>();
    SMOE_CHECK(f.find('/') == std::string::npos && f.find("..") == std::string::npos, index_path,
               ": weight_map[\"", name, "\"] = \"", f, "\" must be a plain file name in ",
               dir.string());
    shards.insert(f);
  }
  SMOE_CHECK(!shards.empty(), index_path, ": weight_map is empty");
  std::vector<std::string> paths;
  for (const auto& s : shards) paths.push_back((dir / s).string());
  SafetensorsSet set = open_files(paths);
  for (const auto& [name, file] : index["weight_map"].items()) {
    const TensorView* t = set.find(name);
    SMOE_CHECK(t, index_path, ": lists tensor '", name, "' in ", file.get<std::string>(),
               ", but that file does not contain it");
  }
  return set;
}

const TensorView* SafetensorsSet::find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}

const TensorView& SafetensorsSet::get(const std::string& name) const {
  const TensorView* t = find(name);
  SMOE_CHECK(t, "tensor '", name, "' not found in ", where());
  return *t;
}

std::string SafetensorsSet::where() const {
  if (files_.empty()) return "(no files)";
  if (files_.size() == 1) return files_[0]->path();
  return cat(files_[0]->path(), " and ", files_.size() - 1, " other shard(s)");
}

size_t SafetensorsSet::total_bytes() const {
  size_t n = 0;
  for (const auto& [name, t] : by_name_) n += t->nbytes;
  return n;
}

}  // namespace smoe
