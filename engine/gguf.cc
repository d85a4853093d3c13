#include "engine/gguf.h"

#include <cmath>
#include <cstring>

#include "engine/model_file.h"

namespace dcomp {
namespace {

constexpr uint32_t kGgufMagic = 0x46554747;  // "GGUF" little-endian
constexpr uint64_t kMaxCount = 1ull << 24;   // sanity bound on counts of keys, tensors, elements
constexpr uint64_t kMaxStringLen = 1ull << 24;
constexpr int kMaxArrayDepth = 4;

size_t ScalarSize(GgufType t) {
  switch (t) {
    case GgufType::kUint8:
    case GgufType::kInt8:
    case GgufType::kBool: return 1;
    case GgufType::kUint16:
    case GgufType::kInt16: return 2;
    case GgufType::kUint32:
    case GgufType::kInt32:
    case GgufType::kFloat32: return 4;
    case GgufType::kUint64:
    case GgufType::kInt64:
    case GgufType::kFloat64: return 8;
    case GgufType::kString:
    case GgufType::kArray: return 0;
  }
  return 0;
}

bool KnownType(uint32_t t) { return t <= static_cast<uint32_t>(GgufType::kFloat64); }

// Bounds-checked little-endian cursor over the mapped file.
class Cursor {
 public:
  Cursor(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  size_t offset() const { return off_; }
  bool Read(void* dst, size_t n) {
    if (n > size_ - off_) return false;
    std::memcpy(dst, data_ + off_, n);
    off_ += n;
    return true;
  }
  template <typename T>
  bool Get(T* v) {
    return Read(v, sizeof(T));
  }
  bool GetString(std::string* s) {
    uint64_t n;
    if (!Get(&n) || n > kMaxStringLen || n > size_ - off_) return false;
    s->assign(reinterpret_cast<const char*>(data_ + off_), n);
    off_ += n;
    return true;
  }
  size_t remaining() const { return size_ - off_; }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t off_ = 0;
};

// Reads one little-endian T into a wider field of GgufValue (u, i or f).
template <typename T, typename Field>
bool Scalar(Cursor* c, Field* field) {
  T x;
  if (!c->Get(&x)) return false;
  *field = static_cast<Field>(x);
  return true;
}

Status ReadValue(Cursor* c, GgufType type, int depth, GgufValue* v, const std::string& where) {
  v->type = type;
  const Status ok = Status::Ok();
  auto trunc = [&]() {
    return DataLossError(where + ": truncated value at byte " + std::to_string(c->offset()));
  };
  switch (type) {
    case GgufType::kUint8: return Scalar<uint8_t>(c, &v->u) ? ok : trunc();
    case GgufType::kInt8: return Scalar<int8_t>(c, &v->i) ? ok : trunc();
    case GgufType::kUint16: return Scalar<uint16_t>(c, &v->u) ? ok : trunc();
    case GgufType::kInt16: return Scalar<int16_t>(c, &v->i) ? ok : trunc();
    case GgufType::kUint32: return Scalar<uint32_t>(c, &v->u) ? ok : trunc();
    case GgufType::kInt32: return Scalar<int32_t>(c, &v->i) ? ok : trunc();
    case GgufType::kUint64: return Scalar<uint64_t>(c, &v->u) ? ok : trunc();
    case GgufType::kInt64: return Scalar<int64_t>(c, &v->i) ? ok : trunc();
    case GgufType::kFloat32: return Scalar<float>(c, &v->f) ? ok : trunc();
    case GgufType::kFloat64: return Scalar<double>(c, &v->f) ? ok : trunc();
    case GgufType::kBool: {
      uint8_t x;
      if (!c->Get(&x)) return trunc();
      if (x > 1) return InvalidArgumentError(where + ": bool value " + std::to_string(x));
      v->u = x;
      break;
    }
    case GgufType::kString:
      if (!c->GetString(&v->str)) return trunc();
      break;
    case GgufType::kArray: {
      if (depth >= kMaxArrayDepth) return InvalidArgumentError(where + ": arrays nested too deep");
      uint32_t et;
      uint64_t n;
      if (!c->Get(&et) || !c->Get(&n)) return trunc();
      if (!KnownType(et)) {
        return InvalidArgumentError(where + ": unknown array element type " + std::to_string(et));
      }
      v->elem_type = static_cast<GgufType>(et);
      // Each element needs at least one byte (strings need 8): reject impossible counts early.
      const size_t min_elem = v->elem_type == GgufType::kString || v->elem_type == GgufType::kArray
                                  ? 8
                                  : ScalarSize(v->elem_type);
      if (n > kMaxCount || n * min_elem > c->remaining()) {
        return DataLossError(where + ": array of " + std::to_string(n) +
                             " elements does not fit in the file");
      }
      v->arr.resize(n);
      for (uint64_t k = 0; k < n; ++k) {
        RETURN_IF_ERROR(ReadValue(c, v->elem_type, depth + 1, &v->arr[k], where));
      }
      break;
    }
  }
  return Status::Ok();
}

uint16_t FloatToHalf(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000;
  int32_t exp = static_cast<int32_t>((x >> 23) & 0xFF) - 127 + 15;
  uint32_t mant = x & 0x7FFFFF;
  if (((x >> 23) & 0xFF) == 0xFF) return static_cast<uint16_t>(sign | 0x7C00 | (mant ? 0x200 : 0));
  if (exp >= 31) return static_cast<uint16_t>(sign | 0x7C00);
  if (exp <= 0) {
    if (exp < -10) return static_cast<uint16_t>(sign);
    mant |= 0x800000;
    const uint32_t shift = static_cast<uint32_t>(14 - exp);
    uint32_t h = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (h & 1))) ++h;
    return static_cast<uint16_t>(sign | h);
  }
  uint32_t h = (static_cast<uint32_t>(exp) << 10) | (mant >> 13);
  const uint32_t rem = mant & 0x1FFF;
  if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) ++h;  // may carry into the exponent: correct
  return static_cast<uint16_t>(sign | h);
}

}  // namespace

bool GgufValue::is_integer() const {
  switch (type) {
    case GgufType::kUint8:
    case GgufType::kInt8:
    case GgufType::kUint16:
    case GgufType::kInt16:
    case GgufType::kUint32:
    case GgufType::kInt32:
    case GgufType::kUint64:
    case GgufType::kInt64: return true;
    default: return false;
  }
}

Result<std::unique_ptr<GgufFile>> GgufFile::Open(const std::string& path) {
  std::unique_ptr<GgufFile> g(new GgufFile());
  ASSIGN_OR_RETURN(g->file_, MappedFile::Open(path));
  RETURN_IF_ERROR(g->Parse().WithContext("GGUF " + path));
  return g;
}

Status GgufFile::Parse() {
  Cursor c(file_->data(), file_->size());
  uint32_t magic = 0;
  if (!c.Get(&magic)) return DataLossError("file is empty or shorter than the 4-byte magic");
  if (magic != kGgufMagic) return InvalidArgumentError("bad magic (not a GGUF file)");
  if (!c.Get(&version_)) return DataLossError("truncated header (version)");
  if (version_ != 2 && version_ != 3) {
    return UnimplementedError("GGUF version " + std::to_string(version_) + " (supported: 2 and 3)");
  }
  uint64_t n_tensors = 0, n_kv = 0;
  if (!c.Get(&n_tensors) || !c.Get(&n_kv)) return DataLossError("truncated header (counts)");
  if (n_tensors > kMaxCount || n_kv > kMaxCount) {
    return InvalidArgumentError("implausible counts: " + std::to_string(n_tensors) + " tensors, " +
                                std::to_string(n_kv) + " metadata keys");
  }
  for (uint64_t k = 0; k < n_kv; ++k) {
    std::string key;
    uint32_t type;
    if (!c.GetString(&key)) return DataLossError("truncated metadata key " + std::to_string(k));
    if (!c.Get(&type)) return DataLossError("truncated type of metadata key '" + key + "'");
    if (!KnownType(type)) {
      return InvalidArgumentError("metadata key '" + key + "' has unknown value type " +
                                  std::to_string(type));
    }
    GgufValue v;
    RETURN_IF_ERROR(ReadValue(&c, static_cast<GgufType>(type), 0, &v, "metadata '" + key + "'"));
    if (!kv_.emplace(key, std::move(v)).second) {
      return InvalidArgumentError("duplicate metadata key '" + key + "'");
    }
  }
  uint64_t alignment = 32;
  if (auto* a = Find("general.alignment")) {
    if (!a->is_integer() || a->u == 0 || (a->u & (a->u - 1)) != 0 || a->u > (1u << 20)) {
      return InvalidArgumentError("general.alignment must be a power of two up to 1 MiB");
    }
    alignment = a->u;
  }
  // Each tensor record takes at least a name length, a rank, one dimension, a type and an offset
  // (32 bytes): a count the rest of the file cannot hold is refused before anything is allocated.
  constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 8 + 4 + 8;
  if (n_tensors > c.remaining() / kMinTensorInfoBytes) {
    return DataLossError("header declares " + std::to_string(n_tensors) + " tensors but only " +
                         std::to_string(c.remaining()) + " bytes of tensor records follow");
  }
  tensors_.resize(n_tensors);
  for (uint64_t k = 0; k < n_tensors; ++k) {
    GgufTensorInfo& t = tensors_[k];
    uint32_t n_dims;
    if (!c.GetString(&t.name) || !c.Get(&n_dims)) {
      return DataLossError("truncated tensor info " + std::to_string(k));
    }
    if (n_dims == 0 || n_dims > 4) {
      return InvalidArgumentError("tensor '" + t.name + "' has " + std::to_string(n_dims) +
                                  " dimensions (expected 1..4)");
    }
    t.ne.resize(n_dims);
    uint64_t numel = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      uint64_t ne;
      if (!c.Get(&ne)) return DataLossError("truncated dims of tensor '" + t.name + "'");
      if (ne == 0 || ne > (1ull << 40) || numel > (1ull << 40) / ne) {
        return InvalidArgumentError("tensor '" + t.name + "' has an implausible dimension " +
                                    std::to_string(ne));
      }
      numel *= ne;
      t.ne[d] = static_cast<int64_t>(ne);
    }
    if (!c.Get(&t.type) || !c.Get(&t.offset)) {
      return DataLossError("truncated tensor info of '" + t.name + "'");
    }
    if (t.offset % alignment != 0) {
      return InvalidArgumentError("tensor '" + t.name + "' offset " + std::to_string(t.offset) +
                                  " is not aligned to " + std::to_string(alignment));
    }
    if (!tensor_index_.emplace(t.name, k).second) {
      return InvalidArgumentError("duplicate tensor '" + t.name + "'");
    }
  }
  const uint64_t data_start = (c.offset() + alignment - 1) / alignment * alignment;
  for (GgufTensorInfo& t : tensors_) {
    GgmlBlock block;
    if (GgmlReadableBlock(t.type, &block)) {
      auto row = GgmlRowBytes(t.type, t.ne[0]);
      if (!row.ok()) return row.status().WithContext("tensor '" + t.name + "'");
      t.nbytes = *row;
      for (size_t d = 1; d < t.ne.size(); ++d) t.nbytes *= static_cast<uint64_t>(t.ne[d]);
    } else {
      t.nbytes = 0;  // unknown type: reported when the tensor is read
    }
    if (data_start > file_->size() || t.offset > file_->size() - data_start ||
        t.nbytes > file_->size() - data_start - t.offset) {
      return DataLossError("tensor '" + t.name + "' data [" +
                           std::to_string(data_start + t.offset) + ", +" +
                           std::to_string(t.nbytes) + ") extends past the end of the file (" +
                           std::to_string(file_->size()) + " bytes): truncated file?");
    }
    t.data = file_->data() + data_start + t.offset;
  }
  return Status::Ok();
}

const GgufTensorInfo* GgufFile::FindTensor(const std::string& name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

const GgufValue* GgufFile::Find(const std::string& key) const {
  auto it = kv_.find(key);
  return it == kv_.end() ? nullptr : &it->second;
}

Result<std::string> GgufFile::GetString(const std::string& key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return NotFoundError("GGUF " + path() + ": missing metadata '" + key + "'");
  if (v->type != GgufType::kString) {
    return InvalidArgumentError("GGUF " + path() + ": metadata '" + key + "' is not a string");
  }
  return v->str;
}

Result<int64_t> GgufFile::GetInt(const std::string& key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return NotFoundError("GGUF " + path() + ": missing metadata '" + key + "'");
  switch (v->type) {
    case GgufType::kUint8:
    case GgufType::kUint16:
    case GgufType::kUint32:
    case GgufType::kUint64:
      if (v->u > static_cast<uint64_t>(INT64_MAX)) break;
      return static_cast<int64_t>(v->u);
    case GgufType::kInt8:
    case GgufType::kInt16:
    case GgufType::kInt32:
    case GgufType::kInt64: return v->i;
    default: break;
  }
  return InvalidArgumentError("GGUF " + path() + ": metadata '" + key +
                              "' is not an integer in range");
}

Result<double> GgufFile::GetFloat(const std::string& key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return NotFoundError("GGUF " + path() + ": missing metadata '" + key + "'");
  if (v->is_float()) return v->f;
  if (v->is_integer()) {
    ASSIGN_OR_RETURN(int64_t i, GetInt(key));
    return static_cast<double>(i);
  }
  return InvalidArgumentError("GGUF " + path() + ": metadata '" + key + "' is not a number");
}

Result<bool> GgufFile::GetBool(const std::string& key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return NotFoundError("GGUF " + path() + ": missing metadata '" + key + "'");
  if (v->type != GgufType::kBool) {
    return InvalidArgumentError("GGUF " + path() + ": metadata '" + key + "' is not a bool");
  }
  return v->u != 0;
}

Result<const std::vector<GgufValue>*> GgufFile::GetArray(const std::string& key,
                                                         GgufType elem) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return NotFoundError("GGUF " + path() + ": missing metadata '" + key + "'");
  if (v->type != GgufType::kArray) {
    return InvalidArgumentError("GGUF " + path() + ": metadata '" + key + "' is not an array");
  }
  if (v->elem_type != elem) {
    return InvalidArgumentError("GGUF " + path() + ": metadata '" + key +
                                "' has elements of type " +
                                std::to_string(static_cast<uint32_t>(v->elem_type)) +
                                ", expected " + std::to_string(static_cast<uint32_t>(elem)));
  }
  return &v->arr;
}

// ---- writer ----

void GgufWriter::SetString(const std::string& key, std::string v) {
  GgufValue x;
  x.type = GgufType::kString;
  x.str = std::move(v);
  kv_.emplace_back(key, std::move(x));
}
void GgufWriter::SetU32(const std::string& key, uint32_t v) {
  GgufValue x;
  x.type = GgufType::kUint32;
  x.u = v;
  kv_.emplace_back(key, std::move(x));
}
void GgufWriter::SetI32(const std::string& key, int32_t v) {
  GgufValue x;
  x.type = GgufType::kInt32;
  x.i = v;
  kv_.emplace_back(key, std::move(x));
}
void GgufWriter::SetF32(const std::string& key, float v) {
  GgufValue x;
  x.type = GgufType::kFloat32;
  x.f = v;
  kv_.emplace_back(key, std::move(x));
}
void GgufWriter::SetBool(const std::string& key, bool v) {
  GgufValue x;
  x.type = GgufType::kBool;
  x.u = v ? 1 : 0;
  kv_.emplace_back(key, std::move(x));
}
void GgufWriter::SetStringArray(const std::string& key, const std::vector<std::string>& v) {
  GgufValue x;
  x.type = GgufType::kArray;
  x.elem_type = GgufType::kString;
  for (const auto& s : v) {
    GgufValue e;
    e.type = GgufType::kString;
    e.str = s;
    x.arr.push_back(std::move(e));
  }
  kv_.emplace_back(key, std::move(x));
}
void GgufWriter::SetF32Array(const std::string& key, const std::vector<float>& v) {
  GgufValue x;
  x.type = GgufType::kArray;
  x.elem_type = GgufType::kFloat32;
  for (float f : v) {
    GgufValue e;
    e.type = GgufType::kFloat32;
    e.f = f;
    x.arr.push_back(e);
  }
  kv_.emplace_back(key, std::move(x));
}
void GgufWriter::SetI32Array(const std::string& key, const std::vector<int32_t>& v) {
  GgufValue x;
  x.type = GgufType::kArray;
  x.elem_type = GgufType::kInt32;
  for (int32_t i : v) {
    GgufValue e;
    e.type = GgufType::kInt32;
    e.i = i;
    x.arr.push_back(e);
  }
  kv_.emplace_back(key, std::move(x));
}

Status GgufWriter::AddTensor(const std::string& name, int64_t rows, int64_t cols, GgmlType type,
                             std::span<const float> data) {
  if (static_cast<int64_t>(data.size()) != rows * cols) {
    return InvalidArgumentError("tensor '" + name + "': data size does not match shape");
  }
  Tensor t{
      name, rows == 1 ? std::vector<int64_t>{cols} : std::vector<int64_t>{cols, rows}, type, {}};
  const size_t n = data.size();
  switch (type) {
    case GgmlType::kF32:
      t.bytes.resize(n * 4);
      std::memcpy(t.bytes.data(), data.data(), n * 4);
      break;
    case GgmlType::kF16:
      t.bytes.resize(n * 2);
      for (size_t i = 0; i < n; ++i) {
        uint16_t h = FloatToHalf(data[i]);
        std::memcpy(&t.bytes[2 * i], &h, 2);
      }
      break;
    case GgmlType::kQ8_0: {
      if (cols % 32 != 0) {
        return InvalidArgumentError("tensor '" + name + "': Q8_0 needs cols % 32 == 0");
      }
      t.bytes.resize(n / 32 * 34);
      for (size_t b = 0; b < n / 32; ++b) {
        float amax = 0.0f;
        for (int k = 0; k < 32; ++k) amax = std::max(amax, std::fabs(data[b * 32 + k]));
        const float d = amax / 127.0f;
        const uint16_t h = FloatToHalf(d);
        const float id = d > 0.0f ? 1.0f / d : 0.0f;
        uint8_t* blk = &t.bytes[b * 34];
        std::memcpy(blk, &h, 2);
        for (int k = 0; k < 32; ++k) {
          blk[2 + k] =
              static_cast<uint8_t>(static_cast<int8_t>(std::nearbyint(data[b * 32 + k] * id)));
        }
      }
      break;
    }
    default:
      return UnimplementedError("GgufWriter: tensor type " +
                                GgmlTypeName(static_cast<uint32_t>(type)));
  }
  tensors_.push_back(std::move(t));
  return Status::Ok();
}

Status GgufWriter::AddRawTensor(const std::string& name, int64_t rows, int64_t cols, GgmlType type,
                                std::vector<uint8_t> bytes) {
  ASSIGN_OR_RETURN(uint64_t row_bytes, GgmlRowBytes(static_cast<uint32_t>(type), cols));
  if (rows < 1 || bytes.size() != row_bytes * static_cast<uint64_t>(rows)) {
    return InvalidArgumentError("tensor '" + name + "': " + std::to_string(bytes.size()) +
                                " bytes, expected " + std::to_string(rows) + " rows of " +
                                std::to_string(row_bytes));
  }
  tensors_.push_back({name,
                      rows == 1 ? std::vector<int64_t>{cols} : std::vector<int64_t>{cols, rows},
                      type, std::move(bytes)});
  return Status::Ok();
}

namespace {
void PutValue(std::string* out, const GgufValue& v) {
  auto put = [out](const void* p, size_t n) { out->append(static_cast<const char*>(p), n); };
  auto put_as = [&put](auto x) { put(&x, sizeof(x)); };
  switch (v.type) {
    case GgufType::kUint8:
    case GgufType::kBool: put_as(static_cast<uint8_t>(v.u)); break;
    case GgufType::kInt8: put_as(static_cast<int8_t>(v.i)); break;
    case GgufType::kUint16: put_as(static_cast<uint16_t>(v.u)); break;
    case GgufType::kInt16: put_as(static_cast<int16_t>(v.i)); break;
    case GgufType::kUint32: put_as(static_cast<uint32_t>(v.u)); break;
    case GgufType::kInt32: put_as(static_cast<int32_t>(v.i)); break;
    case GgufType::kUint64: put_as(v.u); break;
    case GgufType::kInt64: put_as(v.i); break;
    case GgufType::kFloat32: put_as(static_cast<float>(v.f)); break;
    case GgufType::kFloat64: put_as(v.f); break;
    case GgufType::kString: {
      uint64_t n = v.str.size();
      put(&n, 8);
      put(v.str.data(), n);
      break;
    }
    case GgufType::kArray: {
      uint32_t et = static_cast<uint32_t>(v.elem_type);
      uint64_t n = v.arr.size();
      put(&et, 4);
      put(&n, 8);
      for (const auto& e : v.arr) PutValue(out, e);
      break;
    }
  }
}
}  // namespace

Status GgufWriter::Write(const std::string& path) const {
  std::string out;
  auto put = [&out](const void* p, size_t n) { out.append(static_cast<const char*>(p), n); };
  const uint32_t magic = kGgufMagic, version = 3;
  const uint64_t nt = tensors_.size(), nkv = kv_.size();
  put(&magic, 4);
  put(&version, 4);
  put(&nt, 8);
  put(&nkv, 8);
  for (const auto& [key, v] : kv_) {
    uint64_t n = key.size();
    put(&n, 8);
    put(key.data(), n);
    uint32_t t = static_cast<uint32_t>(v.type);
    put(&t, 4);
    PutValue(&out, v);
  }
  constexpr uint64_t kAlign = 32;
  uint64_t offset = 0;
  for (const auto& t : tensors_) {
    uint64_t n = t.name.size();
    put(&n, 8);
    put(t.name.data(), n);
    uint32_t nd = static_cast<uint32_t>(t.ne.size());
    put(&nd, 4);
    for (int64_t ne : t.ne) put(&ne, 8);
    uint32_t ty = static_cast<uint32_t>(t.type);
    put(&ty, 4);
    put(&offset, 8);
    offset = (offset + t.bytes.size() + kAlign - 1) / kAlign * kAlign;
  }
  out.resize((out.size() + kAlign - 1) / kAlign * kAlign, '\0');
  for (const auto& t : tensors_) {
    out.append(reinterpret_cast<const char*>(t.bytes.data()), t.bytes.size());
    out.resize((out.size() + kAlign - 1) / kAlign * kAlign, '\0');
  }
  return WriteFileAtomically(
      path, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(out.data()), out.size()));
}

}  // namespace dcomp
