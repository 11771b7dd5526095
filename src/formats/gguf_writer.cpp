// gguf_writer.cpp: the GGUF v3 writer (see gguf_writer.h for the layout). Metadata is
// serialized into bytes as it is set; tensor infos get their offsets when added; write()
// streams header, metadata, infos, padding and each tensor's data (then padding) in order.
#include "formats/gguf_writer.h"

#include <bit>
#include <cstring>
#include <limits>
#include <memory>

#include "core/error.h"
#include "core/out_file.h"

namespace smoe {

static_assert(std::endian::native == std::endian::little,
              "the GGUF writer assumes a little-endian host");

namespace {

constexpr uint32_t kVersion = 3;
constexpr uint32_t kDefaultAlignment = 32;
constexpr size_t kMaxKeyBytes = 65535;
constexpr size_t kMaxNameBytes = 63;  // GGML_MAX_NAME (64) includes the terminating NUL
constexpr size_t kMaxDims = 4;

template <typename T>
void put(std::string& b, T v) {
  b.append(reinterpret_cast<const char*>(&v), sizeof(T));
}
void put_str(std::string& b, const std::string& s) {
  put<uint64_t>(b, s.size());
  b += s;
}

template <typename T>
constexpr GGUFType gguf_type_of() {
  if constexpr (std::is_same_v<T, uint8_t>)
    return GGUFType::U8;
  else if constexpr (std::is_same_v<T, int8_t>)
    return GGUFType::I8;
  else if constexpr (std::is_same_v<T, uint16_t>)
    return GGUFType::U16;
  else if constexpr (std::is_same_v<T, int16_t>)
    return GGUFType::I16;
  else if constexpr (std::is_same_v<T, uint32_t>)
    return GGUFType::U32;
  else if constexpr (std::is_same_v<T, int32_t>)
    return GGUFType::I32;
  else if constexpr (std::is_same_v<T, uint64_t>)
    return GGUFType::U64;
  else if constexpr (std::is_same_v<T, int64_t>)
    return GGUFType::I64;
  else if constexpr (std::is_same_v<T, float>)
    return GGUFType::F32;
  else if constexpr (std::is_same_v<T, double>)
    return GGUFType::F64;
  else
    static_assert(sizeof(T) == 0, "not a GGUF number type");
}

uint64_t align_up(uint64_t n, uint64_t a) { return (n + a - 1) / a * a; }

}  // namespace

void GGUFWriter::set_raw(const std::string& key, GGUFType type, std::string value) {
  SMOE_CHECK(!key.empty() && key.size() <= kMaxKeyBytes, "GGUF writer: metadata key '",
             key.substr(0, 80), "' has ", key.size(), " bytes, expected 1 to ", kMaxKeyBytes);
  if (key == "general.alignment") {  // must describe the layout write() uses
    std::string expected;
    put<uint32_t>(expected, alignment_);
    SMOE_CHECK(type == GGUFType::U32 && value == expected,
               "GGUF writer: set general.alignment with set_alignment() (a u32 power of two)");
  }
  std::string bytes;
  put<uint32_t>(bytes, static_cast<uint32_t>(type));
  bytes += value;
  for (KV& kv : kv_)
    if (kv.key == key) {
      kv.bytes = std::move(bytes);
      return;
    }
  kv_.push_back({key, std::move(bytes)});
}

bool GGUFWriter::has(const std::string& key) const {
  for (const KV& kv : kv_)
    if (kv.key == key) return true;
  return false;
}

#define SMOE_GGUF_SCALAR(fn, T, TYPE)                \
  void GGUFWriter::fn(const std::string& key, T v) { \
    std::string b;                                   \
    put<T>(b, v);                                    \
    set_raw(key, GGUFType::TYPE, std::move(b));      \
  }
SMOE_GGUF_SCALAR(set_u8, uint8_t, U8)
SMOE_GGUF_SCALAR(set_i8, int8_t, I8)
SMOE_GGUF_SCALAR(set_u16, uint16_t, U16)
SMOE_GGUF_SCALAR(set_i16, int16_t, I16)
SMOE_GGUF_SCALAR(set_u32, uint32_t, U32)
SMOE_GGUF_SCALAR(set_i32, int32_t, I32)
SMOE_GGUF_SCALAR(set_u64, uint64_t, U64)
SMOE_GGUF_SCALAR(set_i64, int64_t, I64)
SMOE_GGUF_SCALAR(set_f32, float, F32)
SMOE_GGUF_SCALAR(set_f64, double, F64)
#undef SMOE_GGUF_SCALAR

void GGUFWriter::set_bool(const std::string& key, bool v) {
  set_raw(key, GGUFType::BOOL, std::string(1, v ? '\1' : '\0'));
}

void GGUFWriter::set_string(const std::string& key, const std::string& v) {
  std::string b;
  put_str(b, v);
  set_raw(key, GGUFType::STRING, std::move(b));
}

template <typename T>
void GGUFWriter::set_array(const std::string& key, std::span<const T> values) {
  std::string b;
  put<uint32_t>(b, static_cast<uint32_t>(gguf_type_of<T>()));
  put<uint64_t>(b, values.size());
  b.append(reinterpret_cast<const char*>(values.data()), values.size_bytes());
  set_raw(key, GGUFType::ARRAY, std::move(b));
}
template void GGUFWriter::set_array(const std::string&, std::span<const uint8_t>);
template void GGUFWriter::set_array(const std::string&, std::span<const int8_t>);
template void GGUFWriter::set_array(const std::string&, std::span<const uint16_t>);
template void GGUFWriter::set_array(const std::string&, std::span<const int16_t>);
template void GGUFWriter::set_array(const std::string&, std::span<const uint32_t>);
template void GGUFWriter::set_array(const std::string&, std::span<const int32_t>);
template void GGUFWriter::set_array(const std::string&, std::span<const uint64_t>);
template void GGUFWriter::set_array(const std::string&, std::span<const int64_t>);
template void GGUFWriter::set_array(const std::string&, std::span<const float>);
template void GGUFWriter::set_array(const std::string&, std::span<const double>);

void GGUFWriter::set_bool_array(const std::string& key, const std::vector<bool>& values) {
  std::string b;
  put<uint32_t>(b, static_cast<uint32_t>(GGUFType::BOOL));
  put<uint64_t>(b, values.size());
  for (bool v : values) b += v ? '\1' : '\0';
  set_raw(key, GGUFType::ARRAY, std::move(b));
}

void GGUFWriter::set_string_array(const std::string& key, const std::vector<std::string>& values) {
  std::string b;
  put<uint32_t>(b, static_cast<uint32_t>(GGUFType::STRING));
  put<uint64_t>(b, values.size());
  for (const std::string& s : values) put_str(b, s);
  set_raw(key, GGUFType::ARRAY, std::move(b));
}

void GGUFWriter::set_alignment(uint32_t alignment) {
  SMOE_CHECK(alignment != 0 && (alignment & (alignment - 1)) == 0, "GGUF writer: alignment ",
             alignment, " is not a power of two");
  SMOE_CHECK(tensors_.empty(), "GGUF writer: set the alignment before adding tensors");
  alignment_ = alignment;
  if (alignment != kDefaultAlignment || has("general.alignment"))
    set_u32("general.alignment", alignment);
}

GGUFWriter::Tensor& GGUFWriter::new_tensor(const std::string& name, DType dtype,
                                           const std::vector<int64_t>& shape) {
  SMOE_CHECK(!name.empty() && name.size() <= kMaxNameBytes, "GGUF writer: tensor name '", name,
             "' has ", name.size(), " bytes, expected 1 to ", kMaxNameBytes);
  for (const Tensor& t : tensors_)
    SMOE_CHECK(t.name != name, "GGUF writer: tensor '", name, "' is added twice");
  SMOE_CHECK(!shape.empty() && shape.size() <= kMaxDims, "GGUF writer: tensor '", name,
             "' has shape ", shape_str(shape), ", expected 1 to ", kMaxDims, " dimensions");
  uint64_t rows = 1;
  for (int64_t d : shape) {
    SMOE_CHECK(d > 0, "GGUF writer: tensor '", name, "' has shape ", shape_str(shape),
               ", expected sizes >= 1");
    SMOE_CHECK(!__builtin_mul_overflow(rows, static_cast<uint64_t>(d), &rows) &&
                   rows <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()),
               "GGUF writer: tensor '", name, "' shape ", shape_str(shape), " is too large");
  }
  rows /= static_cast<uint64_t>(shape.back());
  const DTypeInfo& info = dtype_info(dtype);
  SMOE_CHECK(shape.back() % static_cast<int64_t>(info.block_elems) == 0, "GGUF writer: tensor '",
             name, "' has type ", info.name, " but its rows of ", shape.back(),
             " values are not a whole number of blocks of ", info.block_elems);
  Tensor t;
  t.name = name;
  t.dtype = dtype;
  t.ne.assign(shape.rbegin(), shape.rend());
  t.nbytes = rows * row_bytes(dtype, shape.back());
  t.offset =
      tensors_.empty() ? 0 : align_up(tensors_.back().offset + tensors_.back().nbytes, alignment_);
  tensors_.push_back(std::move(t));
  return tensors_.back();
}

void GGUFWriter::add_tensor(const std::string& name, DType dtype, const std::vector<int64_t>& shape,
                            const uint8_t* data, size_t nbytes) {
  add_tensor(name, dtype, shape, {std::span<const uint8_t>(data, nbytes)});
}

void GGUFWriter::add_tensor(const std::string& name, DType dtype, const std::vector<int64_t>& shape,
                            std::vector<std::span<const uint8_t>> chunks) {
  uint64_t total = 0;
  for (const auto& c : chunks) {
    SMOE_CHECK(c.data() || c.empty(), "GGUF writer: tensor '", name, "' has no data");
    total += c.size();
  }
  Tensor& t = new_tensor(name, dtype, shape);
  if (total != t.nbytes) {
    const std::string msg =
        cat("GGUF writer: tensor '", name, "' of shape ", shape_str(shape), " and type ",
            dtype_name(dtype), " needs ", t.nbytes, " bytes, but ", total, " were given");
    tensors_.pop_back();
    fail(msg);
  }
  t.chunks = std::move(chunks);
}

void GGUFWriter::add_tensor(const std::string& name, DType dtype, const std::vector<int64_t>& shape,
                            Fill fill) {
  SMOE_CHECK(fill != nullptr, "GGUF writer: tensor '", name, "' has no data");
  new_tensor(name, dtype, shape).fill = std::move(fill);
}

void GGUFWriter::write(const std::string& path) const {
  OutFile out(path, "GGUF");
  std::string head = "GGUF";
  put<uint32_t>(head, kVersion);
  put<uint64_t>(head, tensors_.size());
  put<uint64_t>(head, kv_.size());
  for (const KV& kv : kv_) {
    put_str(head, kv.key);
    head += kv.bytes;
  }
  for (const Tensor& t : tensors_) {
    put_str(head, t.name);
    put<uint32_t>(head, static_cast<uint32_t>(t.ne.size()));
    for (int64_t ne : t.ne) put<uint64_t>(head, static_cast<uint64_t>(ne));
    put<uint32_t>(head, static_cast<uint32_t>(t.dtype));  // DType values are GGML type ids
    put<uint64_t>(head, t.offset);
  }
  out.write(head.data(), head.size());
  out.zeros(align_up(head.size(), alignment_) - head.size());
  const uint64_t data_start = out.pos();

  std::unique_ptr<uint8_t[]> scratch;
  size_t scratch_bytes = 0;
  for (const Tensor& t : tensors_) {
    // Offsets were laid out by new_tensor(); the stream must agree.
    SMOE_CHECK(out.pos() == data_start + t.offset, "internal: GGUF writer at byte ", out.pos(),
               " for tensor '", t.name, "', expected ", data_start + t.offset);
    if (t.fill) {
      if (scratch_bytes < t.nbytes) {
        scratch = std::make_unique<uint8_t[]>(t.nbytes);
        scratch_bytes = t.nbytes;
      }
      std::memset(scratch.get(), 0, t.nbytes);
      t.fill(scratch.get(), t.nbytes);
      out.write(scratch.get(), t.nbytes);
    } else {
      for (const auto& c : t.chunks) out.write(c.data(), c.size());
    }
    out.zeros(align_up(t.nbytes, alignment_) - t.nbytes);
  }
  out.close();
}

}  // namespace smoe
