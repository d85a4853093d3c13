// Internal to engine/: UTF-8 helpers for the tokenizers (Unicode categories: PCRE2, in
// engine/pretokenizer.cc).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace dcomp::unicode {

// Length of the UTF-8 sequence introduced by lead byte `c` (1 for invalid lead bytes).
size_t Utf8SeqLen(uint8_t c);

// Decodes one code point at `s[i]`; on invalid input returns U+FFFD with *len = 1.
uint32_t DecodeUtf8(std::string_view s, size_t i, size_t* len);
void AppendUtf8(uint32_t cp, std::string* out);

// Length of the longest prefix of `s` that is complete, valid UTF-8 or definitely invalid (i.e. all
// but a trailing incomplete-yet-valid-so-far sequence).
size_t CompleteUtf8Prefix(std::string_view s);
// Replaces invalid sequences with U+FFFD.
std::string SanitizeUtf8(std::string_view s);
bool IsValidUtf8(std::string_view s);

}  // namespace dcomp::unicode
