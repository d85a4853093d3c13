// Tokenizers built from model metadata (GGUF tokenizer.ggml.* or a llama2.c tokenizer.bin).
//
// Two families: "llama" (SentencePiece-style BPE: merge the adjacent pair whose concatenation has
// the highest score, byte fallback to <0xNN> pieces, a dummy-prefix space, spaces stored as U+2581)
// and "gpt2" (byte-level BPE by merge rank within the words of the pre-tokenizer the model names:
// engine/pretokenizer.h). A Tokenizer is immutable
// after Create() and safe to use from many threads. Invalid UTF-8 input never fails: bad bytes are
// encoded through byte fallback (llama) or as single bytes (gpt2).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "base/status.h"
#include "engine/pretokenizer.h"

namespace dcomp {

// Token types as in GGUF tokenizer.ggml.token_type.
enum class TokenType : int32_t {
  kUndefined = 0,
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

struct TokenizerSpec {
  std::string model;  // "llama" or "gpt2"
  std::vector<std::string> tokens;
  std::vector<float> scores;           // llama: one per token (empty allowed for gpt2)
  std::vector<TokenType> token_types;  // optional: inferred when empty
  std::vector<std::string> merges;     // gpt2: "left right", in rank order
  std::string pre = "default";         // gpt2: the pre-tokenizer (tokenizer.ggml.pre)
  std::string chat_template;           // Jinja (tokenizer.chat_template); "" when none
  int32_t bos_id = -1;
  int32_t eos_id = -1;
  int32_t unk_id = -1;
  int32_t eot_id = -1;  // end of turn (tokenizer.ggml.eot_token_id), when the file names one
  bool add_bos = true;
  bool add_space_prefix = true;  // llama only
};

class Tokenizer {
 public:
  // Validates the spec (ids in range, sizes consistent, byte pieces present for llama...).
  static Result<std::unique_ptr<Tokenizer>> Create(TokenizerSpec spec);

  // Encodes text; prepends BOS when `add_bos` (and the model has one). Text equal to a
  // user-defined token always becomes that token; with `parse_special`, so does the text of a
  // control token ("<|im_end|>"), as chat prompts need; otherwise such text is encoded as text.
  std::vector<int32_t> Encode(std::string_view text, bool add_bos,
                              bool parse_special = false) const;
  // Raw bytes of one token as it appears in text (U+2581 -> ' ', <0xNN> -> the byte, GPT-2
  // byte-level characters -> their bytes). Control tokens give "". Out-of-range ids give "".
  std::string TokenBytes(int32_t id) const;
  // Decodes a whole sequence (BOS/EOS dropped, the dummy-prefix space after BOS removed).
  std::string Decode(const std::vector<int32_t>& ids) const;

  int32_t vocab_size() const { return static_cast<int32_t>(spec_.tokens.size()); }
  int32_t bos_id() const { return spec_.bos_id; }
  int32_t eos_id() const { return spec_.eos_id; }
  bool add_bos() const { return spec_.add_bos; }
  const std::string& model() const { return spec_.model; }
  // The pre-tokenizer's name ("" for llama tokenizers, which have none).
  std::string pre() const { return pre_ ? pre_->name() : std::string(); }
  const std::string& piece(int32_t id) const { return spec_.tokens[static_cast<size_t>(id)]; }
  bool is_control(int32_t id) const;
  // Whether generation ends at this token: EOS, the end-of-turn token the file names, and the
  // end-of-turn / end-of-text tokens of the chat families found by their text (<|im_end|>,
  // <|eot_id|>, <end_of_turn>, <|end|>, <|endoftext|>, ...), which are control tokens.
  bool is_end_of_generation(int32_t id) const;
  const std::string& chat_template() const { return spec_.chat_template; }
  bool strips_leading_space() const { return spec_.model == "llama" && spec_.add_space_prefix; }

 private:
  explicit Tokenizer(TokenizerSpec spec) : spec_(std::move(spec)) {}
  Status Init();
  void EncodeSpm(std::string_view text, std::vector<int32_t>* out) const;
  void EncodeGpt2(std::string_view text, std::vector<int32_t>* out) const;
  void BpeWord(const std::string& word, std::vector<int32_t>* out) const;

  TokenizerSpec spec_;
  std::unordered_map<std::string, int32_t> token_to_id_;
  int32_t byte_to_id_[256];
  std::unordered_map<std::string, int32_t> merge_rank_;  // "left right" -> rank
  std::string byte_to_unicode_[256];                     // gpt2 byte-level alphabet (UTF-8)
  std::unordered_map<uint32_t, uint8_t> unicode_to_byte_;
  std::unique_ptr<PreTokenizer> pre_;  // gpt2
  std::vector<int32_t> special_ids_;   // control, user-defined and unknown; longest text first
  std::vector<int32_t> end_ids_;       // is_end_of_generation
};

// Turns a token stream into text incrementally without ever emitting a partial UTF-8 sequence:
// bytes of an incomplete character are held until the character completes. Invalid sequences are
// emitted as U+FFFD. With `at_text_start` (the stream begins the text, right after BOS), the
// dummy-prefix space of the first piece is dropped for llama tokenizers; a continuation of a prompt
// keeps it.
class TextStreamer {
 public:
  TextStreamer(const Tokenizer* tok, bool at_text_start) : tok_(tok), at_start_(at_text_start) {}
  // Returns the text completed by this token (possibly empty).
  std::string Push(int32_t id);
  // Returns whatever is pending (an incomplete trailing sequence becomes U+FFFD).
  std::string Flush();

 private:
  const Tokenizer* tok_;
  std::string pending_;
  bool at_start_;
};

// Loads a llama2.c tokenizer.bin for a model of `vocab_size` tokens. Errors name the file and what
// was wrong (truncated entry N, length out of range, file too short for vocab_size...).
Result<TokenizerSpec> LoadLlama2cTokenizer(const std::string& path, int32_t vocab_size);

}  // namespace dcomp
