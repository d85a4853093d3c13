// UTF-8 validation for text that crosses a trust boundary (requests, tokens sent to clients).
// Strict RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace dcomp {

// Byte offset of the first invalid or truncated sequence, or nullopt when `s` is valid UTF-8.
std::optional<size_t> FirstInvalidUtf8(std::string_view s);

// `s` with every invalid or truncated sequence replaced by U+FFFD (one per maximal invalid
// subpart, as the Unicode standard recommends).
std::string SanitizeUtf8(std::string_view s);

}  // namespace dcomp
