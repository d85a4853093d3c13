// Internal to engine/: the format-specific ModelFile implementations behind OpenModelFile.
#pragma once

#include <memory>
#include <string>

#include "engine/gguf.h"
#include "engine/model_file.h"

namespace dcomp::internal {

Result<std::unique_ptr<ModelFile>> OpenGgufModel(const std::string& path);
Result<std::unique_ptr<ModelFile>> OpenLlama2cModel(const std::string& path,
                                                    const std::string& tokenizer_path);
// The tokenizer of a GGUF file (works on vocabulary-only files too).
Result<TokenizerSpec> GgufTokenizerSpec(const GgufFile& g);

}  // namespace dcomp::internal
