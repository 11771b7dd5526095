// safetensors_writer.cpp: builds the JSON header (tensors in the order added, offsets
// contiguous), pads it with spaces to a multiple of 8 bytes and streams the data.
#include "formats/safetensors_writer.h"

#include <bit>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/out_file.h"
#include "core/tensor.h"

namespace smoe {

static_assert(std::endian::native == std::endian::little,
              "the safetensors writer assumes a little-endian host");

const char* safetensors_dtype(DType dtype, const std::string& tensor) {
  switch (dtype) {
    case DType::F32:
      return "F32";
    case DType::F16:
      return "F16";
    case DType::BF16:
      return "BF16";
    default:
      fail("safetensors: tensor '", tensor, "' has type ", dtype_name(dtype),
           ", which safetensors cannot hold (expected f32, f16 or bf16; write quantized "
           "models as GGUF)");
  }
}

void SafetensorsWriter::set_metadata(const std::string& key, const std::string& value) {
  metadata_[key] = value;
}

void SafetensorsWriter::add_tensor(const std::string& name, DType dtype,
                                   const std::vector<int64_t>& shape,
                                   std::vector<std::span<const uint8_t>> chunks) {
  safetensors_dtype(dtype, name);  // throws for quantized types
  SMOE_CHECK(!name.empty() && name != "__metadata__", "safetensors: invalid tensor name '", name,
             "'");
  for (const Tensor& t : tensors_)
    SMOE_CHECK(t.name != name, "safetensors: tensor '", name, "' is added twice");
  uint64_t numel = 1;
  for (int64_t d : shape) {
    SMOE_CHECK(d >= 0, "safetensors: tensor '", name, "' has shape ", shape_str(shape),
               ", expected sizes >= 0");
    SMOE_CHECK(!__builtin_mul_overflow(numel, static_cast<uint64_t>(d), &numel),
               "safetensors: tensor '", name, "' shape ", shape_str(shape), " is too large");
  }
  const uint64_t nbytes = numel * dtype_info(dtype).block_bytes;
  uint64_t total = 0;
  for (const auto& c : chunks) total += c.size();
  SMOE_CHECK(total == nbytes, "safetensors: tensor '", name, "' of shape ", shape_str(shape),
             " and type ", dtype_name(dtype), " needs ", nbytes, " bytes, but ", total,
             " were given");
  Tensor t{name, dtype, shape, next_offset_, next_offset_ + nbytes, std::move(chunks)};
  next_offset_ = t.end;
  tensors_.push_back(std::move(t));
}

void SafetensorsWriter::write(const std::string& path) const {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata_.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata_) meta[k] = v;
    header["__metadata__"] = std::move(meta);
  }
  for (const Tensor& t : tensors_)
    header[t.name] = {{"dtype", safetensors_dtype(t.dtype, t.name)},
                      {"shape", t.shape},
                      {"data_offsets", {t.begin, t.end}}};
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {
    fail("safetensors ", path, ": cannot encode the header (", e.what(), ")");
  }
  text.resize((text.size() + 7) / 8 * 8, ' ');
  OutFile out(path, "safetensors");
  const uint64_t n = text.size();
  out.write(&n, 8);
  out.write(text.data(), text.size());
  for (const Tensor& t : tensors_)
    for (const auto& c : t.chunks) out.write(c.data(), c.size());
  out.close();
}

}  // namespace smoe
