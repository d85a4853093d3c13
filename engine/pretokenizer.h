// Pre-tokenizers of byte-level BPE vocabularies: the split of text into words that BPE merges never
// cross, selected by a GGUF file's `tokenizer.ggml.pre`. Each is defined, as in the tokenizer files
// the models were trained with, by an ordered list of regular expressions: every expression splits
// each piece the previous ones produced into its matches and the text between them (nothing is
// dropped). The expressions are matched by PCRE2 with Unicode properties (\p{L}, \p{N}, \p{P},
// \s as Unicode white space); `$` is the end of the piece being split, and invalid UTF-8 bytes take
// part as U+FFFD without being changed.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace dcomp {

class PreTokenizer {
 public:
  // `name` is a tokenizer.ggml.pre value; an unknown one is Unimplemented naming it and the known
  // ones.
  static Result<std::unique_ptr<PreTokenizer>> Create(const std::string& name);
  ~PreTokenizer();

  // The words of `text`, in order; their concatenation is `text`. Thread-safe.
  std::vector<std::string_view> Split(std::string_view text) const;

  const std::string& name() const { return name_; }
  // Whether a word that is a token as a whole is taken as it is, before any merge (Llama 3).
  bool ignore_merges() const { return ignore_merges_; }
  // Whether the tokenizers of pre-tokenizer `name` prepend BOS unless the model file says
  // otherwise (Llama 3: yes; most byte-level vocabularies: no).
  static bool AddsBosByDefault(const std::string& name);

  // Every accepted name, for messages and documentation.
  static std::vector<std::string> KnownNames();

 private:
  struct Pattern;
  PreTokenizer() = default;
  std::string name_;
  bool ignore_merges_ = false;
  std::vector<std::unique_ptr<Pattern>> patterns_;
};

}  // namespace dcomp
