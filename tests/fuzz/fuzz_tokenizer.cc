// libFuzzer: the SentencePiece-style tokenizer of the embedded model (models/tok512.bin) on
// arbitrary bytes: Encode, Decode of the result and of arbitrary ids, and the streaming decoder.
// Encode/Decode must round-trip valid UTF-8 text; nothing may crash or read out of bounds.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "base/utf8.h"
#include "engine/tokenizer.h"

namespace {
const dcomp::Tokenizer& Tok() {
  static const std::unique_ptr<dcomp::Tokenizer> tok = [] {
    auto spec = dcomp::LoadLlama2cTokenizer(DCOMP_SOURCE_DIR "/models/tok512.bin", 512);
    if (!spec.ok()) std::abort();
    auto t = dcomp::Tokenizer::Create(std::move(*spec));
    if (!t.ok()) std::abort();
    return std::move(*t);
  }();
  return *tok;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const dcomp::Tokenizer& tok = Tok();
  const std::string text(reinterpret_cast<const char*>(data), size);
  const std::vector<int32_t> ids = tok.Encode(text, false);
  for (int32_t id : ids) {
    if (id < 0 || id >= tok.vocab_size()) std::abort();
  }
  const std::string back = tok.Decode(ids);
  // Byte fallback makes encoding lossless for valid text without a leading space (the dummy prefix
  // is added and stripped again) and without U+2581, SentencePiece's space marker, which decodes
  // to a space by design.
  if (!dcomp::FirstInvalidUtf8(text) && !text.empty() && text[0] != ' ' &&
      text.find("\xE2\x96\x81") == std::string::npos && back != text) {
    std::abort();
  }
  // Arbitrary ids (in range) through Decode and the streamer.
  std::vector<int32_t> raw;
  for (size_t i = 0; i + 1 < size; i += 2) {
    raw.push_back(static_cast<int32_t>((data[i] | (data[i + 1] << 8)) % tok.vocab_size()));
  }
  (void)tok.Decode(raw);
  dcomp::TextStreamer streamer(&tok, true);
  for (int32_t id : raw) (void)streamer.Push(id);
  (void)streamer.Flush();
  return 0;
}
