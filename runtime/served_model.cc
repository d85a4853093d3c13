#include "runtime/served_model.h"

#include <memory>

#include "engine/dcm_model.h"

namespace dcomp::runtime {

Result<ServedModel> OpenServedModel(const std::string& path, const ServedModelOptions& options) {
  LocalModelOptions o;
  o.tokenizer_path = options.tokenizer_path;
  o.format = options.format;
  o.threads = options.threads;
  o.context_length = options.context_length;
  StreamingWeights* runtime = nullptr;
  if (options.streaming != Streaming::kNever) {
    if (o.format != WeightFormat::kW8A8) {
      return InvalidArgumentError(path + ": the streaming runtime runs w8a8 weights only");
    }
    RuntimeOptions ro = options.runtime;
    ro.context_length = options.context_length;
    ro.cores = options.threads;
    const Streaming mode = options.streaming;
    o.weights = [&runtime, ro, path, mode](
                    const ModelFile& file,
                    ThreadPool* pool) -> Result<std::unique_ptr<WeightSource>> {
      const auto* dcm = dynamic_cast<const DcmModelFile*>(&file);
      if (dcm == nullptr) {
        if (mode == Streaming::kRequired) {
          return InvalidArgumentError(path + ": streaming under a budget needs a .dcm model (" +
                                      file.format() + " given; pack it with dcomp pack)");
        }
        ASSIGN_OR_RETURN(std::unique_ptr<InMemoryWeights> w,
                         InMemoryWeights::Load(file, WeightFormat::kW8A8));
        return std::unique_ptr<WeightSource>(std::move(w));
      }
      ASSIGN_OR_RETURN(std::unique_ptr<StreamingWeights> w, StreamingWeights::Open(*dcm, ro, pool));
      runtime = w.get();
      return std::unique_ptr<WeightSource>(std::move(w));
    };
  }
  ServedModel m;
  ASSIGN_OR_RETURN(m.model, OpenLocalModel(path, o));
  m.runtime = runtime;
  return m;
}

}  // namespace dcomp::runtime
