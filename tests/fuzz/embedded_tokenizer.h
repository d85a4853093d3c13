// The embedded model's tokenizer (models/tok512.bin), built once per fuzzer process.
#pragma once

#include <cstdlib>
#include <memory>

#include "engine/tokenizer.h"

namespace dcomp::fuzz {

inline const Tokenizer& EmbeddedTokenizer() {
  static const std::unique_ptr<Tokenizer> tok = [] {
    auto spec = LoadLlama2cTokenizer(DCOMP_SOURCE_DIR "/models/tok512.bin", 512);
    if (!spec.ok()) std::abort();
    auto t = Tokenizer::Create(std::move(*spec));
    if (!t.ok()) std::abort();
    return std::move(*t);
  }();
  return *tok;
}

}  // namespace dcomp::fuzz
