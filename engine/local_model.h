// LocalModel: everything needed to run one model in-process, opened in one call: the model file,
// its tokenizer, the weights resident in memory, a thread pool and one Transformer stream. Used by
// the `dcomp` commands, the tests and the benchmarks. Not thread-safe (one generation stream).
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "base/status.h"
#include "base/thread_pool.h"
#include "engine/model_file.h"
#include "engine/tokenizer.h"
#include "engine/transformer.h"
#include "engine/weights.h"

namespace dcomp {

// Builds the weight source of a model (the streaming runtime supplies one); `pool` is the
// transformer's.
using WeightSourceFactory =
    std::function<Result<std::unique_ptr<WeightSource>>(const ModelFile& file, ThreadPool* pool)>;

struct LocalModelOptions {
  std::string tokenizer_path;  // llama2.c checkpoints only; "" = look beside the model
  WeightFormat format = WeightFormat::kW8A8;
  int threads = 1;
  int32_t context_length = 0;   // 0 = the model's
  WeightSourceFactory weights;  // empty: every tensor resident (InMemoryWeights)
};

struct LocalModel {
  std::unique_ptr<ModelFile> file;
  std::unique_ptr<Tokenizer> tokenizer;
  std::unique_ptr<ThreadPool> pool;
  std::unique_ptr<WeightSource> weights;
  size_t resident_weight_bytes = 0;  // InMemoryWeights only (from a factory too)
  std::unique_ptr<Transformer> model;
};

// Opens `path` and builds every part; errors name the file and the part at fault.
Result<LocalModel> OpenLocalModel(const std::string& path, const LocalModelOptions& options);

}  // namespace dcomp
