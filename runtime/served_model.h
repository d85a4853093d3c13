// Opening a model for generation with the right weight source: a .dcm container through the
// streaming runtime (under a RAM budget), other formats with every tensor resident. Shared by
// dcompd and the `dcomp generate | eval` commands.
#pragma once

#include <string>

#include "base/status.h"
#include "engine/local_model.h"
#include "runtime/streaming_weights.h"

namespace dcomp::runtime {

enum class Streaming {
  kNever,     // every tensor resident (InMemoryWeights)
  kIfDcm,     // .dcm containers stream through the runtime; other formats are resident
  kRequired,  // the model must be a .dcm container (InvalidArgument otherwise)
};

struct ServedModelOptions {
  std::string tokenizer_path;  // llama2.c checkpoints ("" = beside the model)
  WeightFormat format = WeightFormat::kW8A8;
  int threads = 1;
  int32_t context_length = 0;  // 0 = the model's
  Streaming streaming = Streaming::kNever;
  RuntimeOptions runtime;  // context_length and cores are taken from the fields above
};

struct ServedModel {
  LocalModel model;
  StreamingWeights* runtime = nullptr;  // owned by model.weights; null when resident
};

Result<ServedModel> OpenServedModel(const std::string& path, const ServedModelOptions& options);

}  // namespace dcomp::runtime
