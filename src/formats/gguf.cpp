// gguf.cpp: the GGUF v2/v3 reader (see gguf.h). Parses the header, the metadata and the
// tensor infos of a memory-mapped file. Every count, length, dimension and offset is
// checked against the bytes that are actually there before it is used, so a truncated
// or corrupted file gives a smoe::Error naming the file and the field, never a bad read.
#include "formats/gguf.h"

#include <bit>
#include <cstring>
#include <limits>

#include "core/error.h"

namespace smoe {

static_assert(std::endian::native == std::endian::little,
              "the GGUF reader assumes a little-endian host");

namespace {

constexpr uint64_t kDefaultAlignment = 32;
constexpr uint32_t kMaxDims = 4;
// Smallest possible encodings, used to reject counts that cannot fit in the file.
// A metadata entry: key length, value type, a 1-byte value.
constexpr uint64_t kMinKVBytes = 8 + 4 + 1;
// A tensor info: name length, n_dims, ne[0], type, offset.
constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 8 + 4 + 8;

// Block layout of every GGML type whose size we know, supported by smoe or not: the
// reader needs the size of each tensor to validate its data range, even when smoe
// cannot compute with its type.
struct GGMLTypeLayout {
  uint32_t id;
  const char* name;
  uint64_t block_elems;
  uint64_t block_bytes;
};
constexpr GGMLTypeLayout kGGMLTypes[] = {
    {0, "f32", 1, 4},         {1, "f16", 1, 2},         {2, "q4_0", 32, 18},
    {3, "q4_1", 32, 20},      {6, "q5_0", 32, 22},      {7, "q5_1", 32, 24},
    {8, "q8_0", 32, 34},      {9, "q8_1", 32, 36},      {10, "q2_K", 256, 84},
    {11, "q3_K", 256, 110},   {12, "q4_K", 256, 144},   {13, "q5_K", 256, 176},
    {14, "q6_K", 256, 210},   {15, "q8_K", 256, 292},   {16, "iq2_xxs", 256, 66},
    {17, "iq2_xs", 256, 74},  {18, "iq3_xxs", 256, 98}, {19, "iq1_s", 256, 50},
    {20, "iq4_nl", 32, 18},   {21, "iq3_s", 256, 110},  {22, "iq2_s", 256, 82},
    {23, "iq4_xs", 256, 136}, {24, "i8", 1, 1},         {25, "i16", 1, 2},
    {26, "i32", 1, 4},        {27, "i64", 1, 8},        {28, "f64", 1, 8},
    {29, "iq1_m", 256, 56},   {30, "bf16", 1, 2},       {34, "tq1_0", 256, 54},
    {35, "tq2_0", 256, 66},   {39, "mxfp4", 32, 17},
};

const GGMLTypeLayout* ggml_layout(uint32_t id) {
  for (const GGMLTypeLayout& t : kGGMLTypes)
    if (t.id == id) return &t;
  return nullptr;
}

std::string type_name(uint32_t ggml_type) {
  const GGMLTypeLayout* t = ggml_layout(ggml_type);
  return t ? std::string(t->name) : ggml_type_name(ggml_type);
}

// Bytes of one scalar of a metadata value type (0 for string/array).
uint64_t scalar_bytes(GGUFType t) {
  switch (t) {
    case GGUFType::U8:
    case GGUFType::I8:
    case GGUFType::BOOL:
      return 1;
    case GGUFType::U16:
    case GGUFType::I16:
      return 2;
    case GGUFType::U32:
    case GGUFType::I32:
    case GGUFType::F32:
      return 4;
    case GGUFType::U64:
    case GGUFType::I64:
    case GGUFType::F64:
      return 8;
    case GGUFType::STRING:
    case GGUFType::ARRAY:
      return 0;
  }
  return 0;
}

bool is_integer(GGUFType t) {
  switch (t) {
    case GGUFType::U8:
    case GGUFType::I8:
    case GGUFType::U16:
    case GGUFType::I16:
    case GGUFType::U32:
    case GGUFType::I32:
    case GGUFType::U64:
    case GGUFType::I64:
      return true;
    default:
      return false;
  }
}
bool is_signed(GGUFType t) {
  return t == GGUFType::I8 || t == GGUFType::I16 || t == GGUFType::I32 || t == GGUFType::I64;
}
bool is_float(GGUFType t) { return t == GGUFType::F32 || t == GGUFType::F64; }

// Sequential reader over the mapped bytes. `context_` names the item being read
// ("metadata key 'general.name'", "tensor 'blk.0.attn_q.weight'") for error messages.
class Cursor {
 public:
  Cursor(const std::string& path, const uint8_t* data, size_t size)
      : path_(path), data_(data), size_(size) {}

  size_t pos() const { return pos_; }
  uint64_t remaining() const { return size_ - pos_; }
  void set_context(std::string context) { context_ = std::move(context); }

  // Throws "GGUF <path>: <context> <msg>".
  [[noreturn]] void error(const std::string& msg) const {
    fail("GGUF ", path_, ": ", context_, context_.empty() ? "" : " ", msg);
  }

  void need(uint64_t n, const char* what) const {
    if (n > remaining())
      fail("GGUF ", path_, ": file ends inside ", what, context_.empty() ? "" : " of ", context_,
           " (at offset ", pos_, ": need ", n, " bytes, only ", remaining(), " left; file size ",
           size_, ")");
  }

  template <typename T>
  T read(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  std::string read_string(const char* what) {
    uint64_t len = read<uint64_t>(what);
    if (len > remaining())
      fail("GGUF ", path_, ": ", what, context_.empty() ? "" : " of ", context_, " has length ",
           len, " but only ", remaining(), " bytes are left in the file (at offset ", pos_,
           ", file size ", size_, ")");
    std::string s(reinterpret_cast<const char*>(data_ + pos_), static_cast<size_t>(len));
    pos_ += static_cast<size_t>(len);
    return s;
  }

 private:
  const std::string& path_;
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
  std::string context_;
};

// Reads one scalar of type `t` into v.i / v.u / v.f (all numeric fields are filled).
void read_scalar(Cursor& cur, GGUFType t, const char* what, GGUFValue& v) {
  switch (t) {
    case GGUFType::U8:
      v.u = cur.read<uint8_t>(what);
      break;
    case GGUFType::BOOL:
      v.u = cur.read<uint8_t>(what) != 0;
      break;
    case GGUFType::U16:
      v.u = cur.read<uint16_t>(what);
      break;
    case GGUFType::U32:
      v.u = cur.read<uint32_t>(what);
      break;
    case GGUFType::U64:
      v.u = cur.read<uint64_t>(what);
      break;
    case GGUFType::I8:
      v.i = cur.read<int8_t>(what);
      break;
    case GGUFType::I16:
      v.i = cur.read<int16_t>(what);
      break;
    case GGUFType::I32:
      v.i = cur.read<int32_t>(what);
      break;
    case GGUFType::I64:
      v.i = cur.read<int64_t>(what);
      break;
    case GGUFType::F32:
      v.f = cur.read<float>(what);
      break;
    case GGUFType::F64:
      v.f = cur.read<double>(what);
      break;
    case GGUFType::STRING:
    case GGUFType::ARRAY:
      break;  // not scalars
  }
  if (is_signed(t)) {
    v.u = static_cast<uint64_t>(v.i);
    v.f = static_cast<double>(v.i);
  } else if (is_integer(t) || t == GGUFType::BOOL) {
    v.i = static_cast<int64_t>(v.u);
    v.f = static_cast<double>(v.u);
  }
}

GGUFType checked_type(Cursor& cur, uint32_t raw, const char* what) {
  if (raw > static_cast<uint32_t>(GGUFType::F64))
    cur.error(cat("has unknown ", what, " ", raw, " (expected 0 to 12)"));
  return static_cast<GGUFType>(raw);
}

GGUFValue read_value(Cursor& cur, GGUFType type) {
  GGUFValue v;
  v.type = type;
  if (type == GGUFType::STRING) {
    v.s = cur.read_string("the string value");
    return v;
  }
  if (type != GGUFType::ARRAY) {
    read_scalar(cur, type, "the value", v);
    return v;
  }
  v.elem_type =
      checked_type(cur, cur.read<uint32_t>("the array element type"), "array element type");
  if (v.elem_type == GGUFType::ARRAY)
    cur.error("is an array of arrays, which smoe does not support");
  v.array_len = cur.read<uint64_t>("the array length");
  const uint64_t min_elem = v.elem_type == GGUFType::STRING ? 8 : scalar_bytes(v.elem_type);
  if (v.array_len > cur.remaining() / min_elem)
    cur.error(cat("has array length ", v.array_len, " but only ", cur.remaining(),
                  " bytes are left in the file (at least ", min_elem, " per element)"));
  const size_t n = static_cast<size_t>(v.array_len);
  if (v.elem_type == GGUFType::STRING) {
    v.strs.reserve(n);
    for (size_t k = 0; k < n; ++k) v.strs.push_back(cur.read_string("an array string"));
    return v;
  }
  v.nums.reserve(n);
  const bool integral = is_integer(v.elem_type) || v.elem_type == GGUFType::BOOL;
  if (integral) v.ints.reserve(n);
  GGUFValue e;
  for (size_t k = 0; k < n; ++k) {
    read_scalar(cur, v.elem_type, "an array element", e);
    v.nums.push_back(e.f);
    if (integral) v.ints.push_back(e.i);
  }
  return v;
}

bool checked_mul(uint64_t a, uint64_t b, uint64_t* out) {
  return !__builtin_mul_overflow(a, b, out);
}
bool checked_add(uint64_t a, uint64_t b, uint64_t* out) {
  return !__builtin_add_overflow(a, b, out);
}

}  // namespace

const char* gguf_type_name(GGUFType t) {
  switch (t) {
    case GGUFType::U8:
      return "u8";
    case GGUFType::I8:
      return "i8";
    case GGUFType::U16:
      return "u16";
    case GGUFType::I16:
      return "i16";
    case GGUFType::U32:
      return "u32";
    case GGUFType::I32:
      return "i32";
    case GGUFType::F32:
      return "f32";
    case GGUFType::BOOL:
      return "bool";
    case GGUFType::STRING:
      return "string";
    case GGUFType::ARRAY:
      return "array";
    case GGUFType::U64:
      return "u64";
    case GGUFType::I64:
      return "i64";
    case GGUFType::F64:
      return "f64";
  }
  return "unknown";
}

GGUFFile::GGUFFile(const std::string& path) : file_(std::make_unique<MappedFile>(path)) {
  const std::string& p = file_->path();
  const uint8_t* data = file_->data();
  const size_t size = file_->size();
  Cursor cur(p, data, size);

  // Header.
  if (size < 4)
    fail("GGUF ", p, ": not a GGUF file (only ", size, " bytes; expected the magic \"GGUF\")");
  if (std::memcmp(data, "GGUF", 4) != 0) {
    std::string found;
    for (int k = 0; k < 4; ++k) {
      char c = static_cast<char>(data[k]);
      found += (c >= 0x20 && c < 0x7f)
                   ? std::string(1, c)
                   : cat("\\x", "0123456789abcdef"[data[k] >> 4], "0123456789abcdef"[data[k] & 15]);
    }
    fail("GGUF ", p, ": not a GGUF file (expected the magic \"GGUF\" at offset 0, found \"", found,
         "\")");
  }
  cur.read<uint32_t>("the magic");
  version_ = cur.read<uint32_t>("the version");
  if (version_ != 2 && version_ != 3) {
    const uint32_t swapped = __builtin_bswap32(version_);
    if (swapped >= 1 && swapped <= 3)
      fail("GGUF ", p, ": unsupported GGUF version ", version_,
           " (this looks like a big-endian GGUF file, version ", swapped,
           "; smoe reads little-endian versions 2 and 3)");
    fail("GGUF ", p, ": unsupported GGUF version ", version_, " (smoe reads versions 2 and 3",
         version_ == 1 ? "; convert the model again with a current llama.cpp)" : ")");
  }
  const uint64_t n_tensors = cur.read<uint64_t>("the tensor count");
  const uint64_t n_kv = cur.read<uint64_t>("the metadata entry count");
  if (n_tensors > cur.remaining() / kMinTensorInfoBytes)
    fail("GGUF ", p, ": tensor count ", n_tensors,
         " does not fit in the file: each tensor info needs at least ", kMinTensorInfoBytes,
         " bytes but only ", cur.remaining(), " bytes follow the header (file size ", size,
         "); the file is truncated or corrupt");
  if (n_kv > cur.remaining() / kMinKVBytes)
    fail("GGUF ", p, ": metadata entry count ", n_kv,
         " does not fit in the file: each entry needs at least ", kMinKVBytes, " bytes but only ",
         cur.remaining(), " bytes follow the header (file size ", size,
         "); the file is truncated or corrupt");

  // Metadata.
  for (uint64_t k = 0; k < n_kv; ++k) {
    cur.set_context(cat("metadata entry ", k, " (of ", n_kv, ")"));
    std::string key = cur.read_string("the key");
    cur.set_context(cat("metadata key '", key, "'"));
    if (kv_.count(key)) cur.error("appears more than once; keys must be unique");
    GGUFType type = checked_type(cur, cur.read<uint32_t>("the value type"), "value type");
    kv_.emplace(std::move(key), read_value(cur, type));
  }

  if (const GGUFValue* a = find("general.alignment")) {
    SMOE_CHECK(is_integer(a->type) && !(is_signed(a->type) && a->i < 0), "GGUF ", p,
               ": metadata key 'general.alignment' has type ", gguf_type_name(a->type), " value ",
               a->type == GGUFType::STRING ? a->s : cat(a->f), ", expected a positive integer");
    alignment_ = a->u;
    SMOE_CHECK(alignment_ != 0 && (alignment_ & (alignment_ - 1)) == 0, "GGUF ", p,
               ": general.alignment is ", alignment_, ", expected a power of two");
  } else {
    alignment_ = kDefaultAlignment;
  }

  // Tensor infos.
  infos_.reserve(static_cast<size_t>(n_tensors));
  for (uint64_t t = 0; t < n_tensors; ++t) {
    cur.set_context(cat("tensor info ", t, " (of ", n_tensors, ")"));
    GGUFTensorInfo info;
    info.name = cur.read_string("the tensor name");
    cur.set_context(cat("tensor '", info.name, "'"));
    if (index_.count(info.name)) cur.error("appears more than once; tensor names must be unique");
    const uint32_t n_dims = cur.read<uint32_t>("the dimension count");
    if (n_dims == 0 || n_dims > kMaxDims)
      cur.error(cat("has ", n_dims, " dimensions, expected 1 to ", kMaxDims));
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t ne = cur.read<uint64_t>("a dimension");
      if (ne == 0 || ne > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        cur.error(cat("has ne[", d, "] = ", static_cast<int64_t>(ne),
                      ", expected a size from 1 to 2^63-1"));
      info.ne.push_back(static_cast<int64_t>(ne));
    }
    info.ggml_type = cur.read<uint32_t>("the type");
    info.offset = cur.read<uint64_t>("the data offset");
    index_.emplace(info.name, infos_.size());
    infos_.push_back(std::move(info));
  }

  // Data section: starts at the next multiple of the alignment after the infos.
  const uint64_t end_of_infos = cur.pos();
  data_offset_ =
      static_cast<size_t>(end_of_infos + (alignment_ - end_of_infos % alignment_) % alignment_);

  for (GGUFTensorInfo& info : infos_) {
    cur.set_context(cat("tensor '", info.name, "'"));
    const GGMLTypeLayout* layout = ggml_layout(info.ggml_type);
    if (!layout)
      cur.error(
          cat("has unknown ggml type ", info.ggml_type, ", so its size cannot be determined"));
    uint64_t numel = 1;
    for (int64_t ne : info.ne)
      if (!checked_mul(numel, static_cast<uint64_t>(ne), &numel) ||
          numel > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        cur.error(cat("has shape ne=", shape_str(info.ne), " whose element count overflows"));
    const uint64_t row = static_cast<uint64_t>(info.ne[0]);
    if (row % layout->block_elems != 0)
      cur.error(cat("has type ", layout->name, " but its rows of ne[0] = ", row,
                    " values are not a whole number of blocks of ", layout->block_elems));
    uint64_t nbytes = 0;
    if (!checked_mul(numel / layout->block_elems, layout->block_bytes, &nbytes))
      cur.error(cat("has shape ne=", shape_str(info.ne), " whose byte size overflows"));
    if (auto dt = dtype_from_ggml(info.ggml_type)) {  // cross-check with smoe's own table
      const uint64_t rb = row_bytes(*dt, info.ne[0]);
      SMOE_CHECK(rb * (numel / row) == nbytes, "internal: size tables disagree for ", layout->name);
    }
    info.nbytes = nbytes;
    if (info.offset % alignment_ != 0)
      cur.error(cat("has data offset ", info.offset, ", which is not a multiple of the alignment ",
                    alignment_));
    uint64_t begin = 0, end = 0;
    if (!checked_add(data_offset_, info.offset, &begin) || !checked_add(begin, nbytes, &end) ||
        end > size)
      fail("GGUF ", p, ": tensor '", info.name, "' data [", begin, ", ", begin, "+", nbytes,
           ") runs past the end of the file (size ", size, "; data offset ", info.offset,
           " relative to the data section at ", data_offset_, ")");
  }
}

const GGUFValue* GGUFFile::find(const std::string& key) const {
  auto it = kv_.find(key);
  return it == kv_.end() ? nullptr : &it->second;
}

namespace {
const GGUFValue& require(const GGUFFile& f, const std::string& key) {
  const GGUFValue* v = f.find(key);
  if (!v) fail("GGUF ", f.path(), ": metadata key '", key, "' is missing");
  return *v;
}
[[noreturn]] void wrong_type(const GGUFFile& f, const std::string& key, const GGUFValue& v,
                             const char* expected) {
  fail("GGUF ", f.path(), ": metadata key '", key, "' has type ", gguf_type_name(v.type),
       v.type == GGUFType::ARRAY ? cat(" of ", gguf_type_name(v.elem_type)) : std::string(),
       ", expected ", expected);
}
}  // namespace

std::string GGUFFile::get_string(const std::string& key) const {
  const GGUFValue& v = require(*this, key);
  if (v.type != GGUFType::STRING) wrong_type(*this, key, v, "string");
  return v.s;
}

uint64_t GGUFFile::get_uint(const std::string& key) const {
  const GGUFValue& v = require(*this, key);
  if (!is_integer(v.type)) wrong_type(*this, key, v, "an integer");
  if (is_signed(v.type) && v.i < 0)
    fail("GGUF ", path(), ": metadata key '", key, "' is ", v.i, ", expected a value >= 0");
  return v.u;
}

double GGUFFile::get_float(const std::string& key) const {
  const GGUFValue& v = require(*this, key);
  if (!is_integer(v.type) && !is_float(v.type)) wrong_type(*this, key, v, "a number");
  return v.f;
}

bool GGUFFile::get_bool(const std::string& key) const {
  const GGUFValue& v = require(*this, key);
  if (v.type != GGUFType::BOOL) wrong_type(*this, key, v, "bool");
  return v.u != 0;
}

const GGUFTensorInfo* GGUFFile::find_tensor(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &infos_[it->second];
}

TensorView GGUFFile::tensor(const std::string& name) const {
  const GGUFTensorInfo* info = find_tensor(name);
  if (!info)
    fail("GGUF ", path(), ": no tensor named '", name, "' (the file has ", infos_.size(),
         " tensors)");
  std::optional<DType> dt = dtype_from_ggml(info->ggml_type);
  if (!dt)
    fail("GGUF ", path(), ": tensor '", name, "' has type ", type_name(info->ggml_type),
         ", which smoe does not support yet; supported: ", supported_dtype_names());
  TensorView v;
  v.name = name;
  v.dtype = *dt;
  v.shape.assign(info->ne.rbegin(), info->ne.rend());
  v.data = file_->data() + data_offset_ + info->offset;
  v.nbytes = static_cast<size_t>(info->nbytes);
  return v;
}

}  // namespace smoe
