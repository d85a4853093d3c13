#include "engine/local_model.h"

namespace dcomp {

Result<LocalModel> OpenLocalModel(const std::string& path, const LocalModelOptions& o) {
  if (o.threads < 1 || o.threads > 256) {
    return InvalidArgumentError("threads must be in 1..256, got " + std::to_string(o.threads));
  }
  if (o.context_length < 0) {
    return InvalidArgumentError("context length must be >= 0 (0 = the model's)");
  }
  LocalModel m;
  ASSIGN_OR_RETURN(m.file, OpenModelFile(path, o.tokenizer_path));
  ASSIGN_OR_RETURN(m.tokenizer, Tokenizer::Create(m.file->tokenizer()));
  if (m.tokenizer->vocab_size() != m.file->config().vocab_size) {
    return InvalidArgumentError(path + ": the tokenizer has " +
                                std::to_string(m.tokenizer->vocab_size()) + " tokens, the model " +
                                std::to_string(m.file->config().vocab_size));
  }
  m.pool = std::make_unique<ThreadPool>(o.threads);
  if (o.weights) {
    ASSIGN_OR_RETURN(m.weights, o.weights(*m.file, m.pool.get()));
  } else {
    ASSIGN_OR_RETURN(m.weights, InMemoryWeights::Load(*m.file, o.format));
  }
  if (const auto* w = dynamic_cast<const InMemoryWeights*>(m.weights.get())) {
    m.resident_weight_bytes = w->bytes();  // a factory may also choose resident weights
  }
  ASSIGN_OR_RETURN(m.model, Transformer::Create(m.weights.get(), m.pool.get(), o.context_length));
  return m;
}

}  // namespace dcomp
