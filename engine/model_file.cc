#include "engine/model_file.h"

#include <unistd.h>

#include <cstring>
#include <filesystem>

#include "base/file.h"
#include "engine/dcm_model.h"
#include "engine/gguf.h"
#include "engine/internal/model_formats.h"
#include "engine/layer_schema.h"

namespace dcomp {

float HalfToFloat(uint16_t h) {
  const uint32_t sign = (h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1F;
  uint32_t mant = h & 0x3FF;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      exp = 127 - 15 + 1;
      while ((mant & 0x400) == 0) {
        mant <<= 1;
        --exp;
      }
      mant &= 0x3FF;
      bits = sign | (exp << 23) | (mant << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7F800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

float BFloat16ToFloat(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

const TensorDesc* ModelFile::Find(const std::string& name) const {
  for (const auto& t : tensors()) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

std::string LayerTensorName(int layer, const char* what) {
  return "blk." + std::to_string(layer) + "." + what;
}

std::vector<CanonicalTensor> CanonicalTensors(const ModelConfig& c) {
  const int64_t dim = c.dim, vocab = c.vocab_size;
  std::vector<CanonicalTensor> t = {{"token_embd.weight", -1, vocab, dim}};
  for (int l = 0; l < c.n_layers; ++l) {
    // Per input in execution order: the norm producing it, its matrices, then their biases.
    for (LinearInput in : kLayerInputs) {
      for (const LayerVector& v : kLayerNorms) {
        if (v.output == in && HasLayerVector(v, c)) {
          t.push_back({LayerTensorName(l, v.name), l, 1, ExtentOf(v.size, c)});
        }
      }
      for (const LayerMatrix& m : kLayerMatrices) {
        if (m.input == in) {
          t.push_back({LayerTensorName(l, m.name), l, ExtentOf(m.rows, c), ExtentOf(m.cols, c)});
        }
      }
      for (const LayerMatrix& m : kLayerMatrices) {
        if (m.input == in && c.qkv_bias && m.bias != nullptr) {
          t.push_back({LayerTensorName(l, m.bias), l, 1, ExtentOf(m.rows, c)});
        }
      }
    }
  }
  t.push_back({"output_norm.weight", c.n_layers, 1, dim});
  if (!c.tied_output) t.push_back({"output.weight", c.n_layers, vocab, dim});
  return t;
}

Status CheckModelTensors(const ModelFile& file) {
  const ModelConfig& c = file.config();
  for (const CanonicalTensor& want : CanonicalTensors(c)) {
    const TensorDesc* t = file.Find(want.name);
    if (t == nullptr) {
      return InvalidArgumentError(file.path() + ": missing tensor '" + want.name + "'");
    }
    if (t->rows != want.rows || t->cols != want.cols) {
      return InvalidArgumentError(file.path() + ": tensor '" + want.name + "' has shape [" +
                                  std::to_string(t->rows) + " x " + std::to_string(t->cols) +
                                  "], expected [" + std::to_string(want.rows) + " x " +
                                  std::to_string(want.cols) + "] for " + c.Summary());
    }
  }
  return Status::Ok();
}

Result<std::unique_ptr<ModelFile>> OpenModelFile(const std::string& path,
                                                 const std::string& tokenizer_path) {
  ASSIGN_OR_RETURN(UniqueFd fd, OpenReadOnly(path));
  uint32_t magic = 0;
  ssize_t n = ::pread(fd.get(), &magic, 4, 0);
  if (n < 0) return ErrnoToStatus(errno, "read " + path);
  if (n < 4) {
    return InvalidArgumentError(path + ": file is " + std::to_string(n) +
                                " bytes, too short to be a model");
  }
  std::unique_ptr<ModelFile> model;
  char head[8] = {};
  const bool dcm = ::pread(fd.get(), head, 8, 0) == 8 &&
                   storage::HasDcmMagic({reinterpret_cast<const uint8_t*>(head), 8});
  if (dcm) {
    ASSIGN_OR_RETURN(model, DcmModelFile::Open(path));
  } else if (magic == 0x46554747) {  // "GGUF"
    ASSIGN_OR_RETURN(model, internal::OpenGgufModel(path));
  } else {
    ASSIGN_OR_RETURN(model, internal::OpenLlama2cModel(path, tokenizer_path));
  }
  RETURN_IF_ERROR(CheckModelTensors(*model));
  return model;
}

}  // namespace dcomp

namespace dcomp {
Result<TokenizerSpec> LoadTokenizerSpec(const std::string& path,
                                        const std::string& tokenizer_path) {
  ASSIGN_OR_RETURN(UniqueFd fd, OpenReadOnly(path));
  uint32_t magic = 0;
  if (::pread(fd.get(), &magic, 4, 0) == 4 && magic == 0x46554747) {
    ASSIGN_OR_RETURN(auto g, GgufFile::Open(path));
    return internal::GgufTokenizerSpec(*g);
  }
  ASSIGN_OR_RETURN(auto model, OpenModelFile(path, tokenizer_path));
  return model->tokenizer();
}
}  // namespace dcomp
