// GGUF (versions 2 and 3) reader and writer. The reader memory-maps the file, validates the header,
// every metadata value (all scalar types, strings, nested arrays), the tensor infos, the alignment
// and that every tensor's data lies inside the file, and gives typed access to metadata. Errors
// name the file and the key or tensor at fault. A GgufFile is immutable after Open(); thread-safe
// to read. The writer (used by `dcomp synth` and tests) produces GGUF v3 with F32 / F16 / Q8_0
// tensors.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "base/file.h"
#include "base/status.h"
#include "engine/ggml_quants.h"

namespace dcomp {

enum class GgufType : uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};

struct GgufValue {
  GgufType type = GgufType::kUint8;
  GgufType elem_type = GgufType::kUint8;  // for arrays
  uint64_t u = 0;                         // unsigned integers and bool
  int64_t i = 0;                          // signed integers
  double f = 0.0;                         // floats
  std::string str;
  std::vector<GgufValue> arr;

  bool is_integer() const;
  bool is_float() const { return type == GgufType::kFloat32 || type == GgufType::kFloat64; }
};

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> ne;  // ne[0] is the fastest-varying (columns)
  uint32_t type = 0;
  uint64_t offset = 0;  // relative to the data section
  const uint8_t* data = nullptr;
  uint64_t nbytes = 0;
};

class GgufFile {
 public:
  static Result<std::unique_ptr<GgufFile>> Open(const std::string& path);

  uint32_t version() const { return version_; }
  const std::string& path() const { return file_->path(); }
  const std::map<std::string, GgufValue>& metadata() const { return kv_; }
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* FindTensor(const std::string& name) const;
  const GgufValue* Find(const std::string& key) const;

  // Typed getters: NotFound if absent, InvalidArgument naming the key if of the wrong type.
  Result<std::string> GetString(const std::string& key) const;
  Result<int64_t> GetInt(const std::string& key) const;   // any integer type
  Result<double> GetFloat(const std::string& key) const;  // any float or integer type
  Result<bool> GetBool(const std::string& key) const;
  Result<const std::vector<GgufValue>*> GetArray(const std::string& key, GgufType elem) const;

 private:
  GgufFile() = default;
  Status Parse();
  std::unique_ptr<MappedFile> file_;
  uint32_t version_ = 0;
  std::map<std::string, GgufValue> kv_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, size_t> tensor_index_;
};

class GgufWriter {
 public:
  void SetString(const std::string& key, std::string v);
  void SetU32(const std::string& key, uint32_t v);
  void SetI32(const std::string& key, int32_t v);
  void SetF32(const std::string& key, float v);
  void SetBool(const std::string& key, bool v);
  void SetStringArray(const std::string& key, const std::vector<std::string>& v);
  void SetF32Array(const std::string& key, const std::vector<float>& v);
  void SetI32Array(const std::string& key, const std::vector<int32_t>& v);
  // A tensor [rows][cols] (rows = 1 for vectors) stored as F32, F16 or Q8_0.
  Status AddTensor(const std::string& name, int64_t rows, int64_t cols, GgmlType type,
                   std::span<const float> data);
  // A tensor [rows][cols] of any readable type, given as its ggml bytes (checked for size).
  Status AddRawTensor(const std::string& name, int64_t rows, int64_t cols, GgmlType type,
                      std::vector<uint8_t> bytes);
  Status Write(const std::string& path) const;

 private:
  struct Tensor {
    std::string name;
    std::vector<int64_t> ne;
    GgmlType type;
    std::vector<uint8_t> bytes;
  };
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::vector<Tensor> tensors_;
};

}  // namespace dcomp
