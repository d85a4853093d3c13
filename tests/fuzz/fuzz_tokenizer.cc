// libFuzzer: both tokenizers on arbitrary bytes: the SentencePiece-style one of the embedded model
// (models/tok512.bin) and a GPT-2 byte-level BPE built here (the 256 byte symbols and a few
// merges) with the pre-tokenizer the input's first byte picks among all of them (their words must
// concatenate to the text). Encode, Decode of the result and of arbitrary ids, and the streaming
// decoder. Both must round-trip text (SentencePiece: valid UTF-8 without a leading space or U+2581;
// GPT-2: any bytes, through the tokens' bytes), Decode must return valid UTF-8, and nothing may
// crash or read out of bounds.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "base/utf8.h"
#include "engine/tokenizer.h"
#include "tests/fuzz/embedded_tokenizer.h"

namespace {
const dcomp::Tokenizer& Tok() { return dcomp::fuzz::EmbeddedTokenizer(); }
// GPT-2's byte-to-symbol alphabet: printable Latin-1 maps to itself, the other bytes to U+0100..
std::string ByteSymbol(int b) {
  static int extra[256];
  static bool init = false;
  if (!init) {
    int n = 0;
    for (int c = 0; c < 256; ++c) {
      const bool printable = (c >= 0x21 && c <= 0x7E) || (c >= 0xA1 && c <= 0xAC) || c >= 0xAE;
      extra[c] = printable ? c : 256 + n++;
    }
    init = true;
  }
  const int cp = extra[b];
  std::string out;
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return out;
}

const dcomp::Tokenizer& Gpt2(const std::string& pre) {
  static std::map<std::string, std::unique_ptr<dcomp::Tokenizer>> cache;
  std::unique_ptr<dcomp::Tokenizer>& tok = cache[pre];
  if (tok == nullptr) {
    dcomp::TokenizerSpec spec;
    spec.model = "gpt2";
    spec.pre = pre;
    for (int b = 0; b < 256; ++b) spec.tokens.push_back(ByteSymbol(b));
    const std::string sp = ByteSymbol(' ');
    for (const auto& [l, r] : std::vector<std::pair<std::string, std::string>>{
             {sp, "t"}, {"h", "e"}, {sp + "t", "he"}, {"o", "n"}, {sp, "a"}, {"i", "n"}}) {
      spec.merges.push_back(l + " " + r);
      spec.tokens.push_back(l + r);
    }
    spec.tokens.push_back("<|endoftext|>");
    spec.bos_id = spec.eos_id = static_cast<int32_t>(spec.tokens.size()) - 1;
    spec.add_bos = false;
    auto t = dcomp::Tokenizer::Create(std::move(spec));
    if (!t.ok()) std::abort();
    tok = std::move(*t);
  }
  return *tok;
}

void Gpt2RoundTrip(const std::string& text, uint8_t selector) {
  static const std::vector<std::string> names = dcomp::PreTokenizer::KnownNames();
  const std::string& pre = names[selector % names.size()];
  static std::map<std::string, std::unique_ptr<dcomp::PreTokenizer>> splitters;
  std::unique_ptr<dcomp::PreTokenizer>& split = splitters[pre];
  if (split == nullptr) {
    auto created = dcomp::PreTokenizer::Create(pre);
    if (!created.ok()) std::abort();
    split = std::move(*created);
  }
  std::string joined;
  for (std::string_view w : split->Split(text)) {
    if (w.empty()) std::abort();
    joined += w;
  }
  if (joined != text) std::abort();
  const dcomp::Tokenizer& tok = Gpt2(pre);
  const std::vector<int32_t> ids = tok.Encode(text, false);
  for (int32_t id : ids) {
    if (id < 0 || id >= tok.vocab_size()) std::abort();
  }
  // Byte-level BPE is lossless for any bytes that do not spell the special token: the tokens'
  // bytes give the text back exactly. Decode returns text, so invalid UTF-8 comes back replaced.
  std::string bytes;
  for (int32_t id : ids) bytes += tok.TokenBytes(id);
  if (text.find("<|endoftext|>") == std::string::npos && bytes != text) std::abort();
  if (dcomp::FirstInvalidUtf8(tok.Decode(ids))) std::abort();
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
  Gpt2RoundTrip(text, size > 0 ? data[0] : 0);
  return 0;
}
