// The .dcm container as a ModelFile: config and tokenizer from the manifest, matrices as INT8 codes
// (ReadQ8, exact) or dequantized (ReadF32), vectors as f32. Every block is CRC-checked and decoded
// when read; errors name the file, the block and the tensor. Also the conversions between the
// engine's config/tokenizer and their manifest messages, shared with the packer.
#pragma once

#include <memory>
#include <string>

#include "engine/model_file.h"
#include "storage/container.h"

namespace dcomp {

class DcmModelFile : public ModelFile {
 public:
  static Result<std::unique_ptr<DcmModelFile>> Open(const std::string& path);

  const ModelConfig& config() const override { return config_; }
  const TokenizerSpec& tokenizer() const override { return tokenizer_; }
  const std::vector<TensorDesc>& tensors() const override { return tensors_; }
  Result<std::vector<float>> ReadF32(const std::string& name) const override;
  bool stores_q8(const std::string& name) const override;
  Result<Q8Tensor> ReadQ8(const std::string& name) const override;
  std::string format() const override;
  const std::string& path() const override { return reader_->path(); }

  const storage::ContainerReader& reader() const { return *reader_; }

 private:
  DcmModelFile() = default;
  // The decoded bytes of data blocks [first, first + count) of tensor t, concatenated.
  Result<std::vector<uint8_t>> DecodeTensorData(int t) const;
  Result<std::vector<float>> DecodeScales(int t) const;

  std::unique_ptr<storage::ContainerReader> reader_;
  ModelConfig config_;
  TokenizerSpec tokenizer_;
  std::vector<TensorDesc> tensors_;
};

storage::pb::ModelConfig ModelConfigToProto(const ModelConfig& c);
ModelConfig ModelConfigFromProto(const storage::pb::ModelConfig& p);
storage::pb::Tokenizer TokenizerToProto(const TokenizerSpec& t);
TokenizerSpec TokenizerFromProto(const storage::pb::Tokenizer& p);

}  // namespace dcomp
