#include "base/utf8.h"

#include <gtest/gtest.h>

namespace dcomp {
namespace {

TEST(Utf8, AcceptsValidText) {
  EXPECT_EQ(FirstInvalidUtf8(""), std::nullopt);
  EXPECT_EQ(FirstInvalidUtf8("Once upon a time"), std::nullopt);
  EXPECT_EQ(FirstInvalidUtf8("h\xC3\xA9llo \xE2\x82\xAC \xF0\x9F\x98\x80"), std::nullopt);
  EXPECT_EQ(FirstInvalidUtf8("\xF4\x8F\xBF\xBF"), std::nullopt);  // U+10FFFF
}

TEST(Utf8, FindsTheFirstBadByte) {
  EXPECT_EQ(FirstInvalidUtf8("ab\xFF"), 2u);
  EXPECT_EQ(FirstInvalidUtf8("a\xC3"), 1u);                 // truncated
  EXPECT_EQ(FirstInvalidUtf8("a\xC0\xAF"), 1u);             // overlong '/'
  EXPECT_EQ(FirstInvalidUtf8("\xE0\x80\xAF"), 0u);          // overlong
  EXPECT_EQ(FirstInvalidUtf8("xy\xED\xA0\x80"), 2u);        // surrogate U+D800
  EXPECT_EQ(FirstInvalidUtf8("\xF4\x90\x80\x80"), 0u);      // above U+10FFFF
  EXPECT_EQ(FirstInvalidUtf8("ok\x80"), 2u);                // lone continuation
  EXPECT_EQ(FirstInvalidUtf8("\xE2\x82\xAC\xE2\x82"), 3u);  // truncated after a valid one
}

TEST(Utf8, SanitizeReplacesMaximalSubparts) {
  EXPECT_EQ(SanitizeUtf8("fine \xE2\x82\xAC"), "fine \xE2\x82\xAC");
  EXPECT_EQ(SanitizeUtf8("a\xFF"
                         "b"),
            "a\xEF\xBF\xBD"
            "b");
  // A truncated 3-byte sequence is one maximal subpart: one replacement character.
  EXPECT_EQ(SanitizeUtf8("a\xE2\x82"
                         "b"),
            "a\xEF\xBF\xBD"
            "b");
  EXPECT_EQ(SanitizeUtf8("\x80\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD");
  for (int c = 0; c < 256; ++c) {
    const std::string s(1, static_cast<char>(c));
    EXPECT_EQ(FirstInvalidUtf8(SanitizeUtf8(s + s + "\xC3")), std::nullopt) << c;
  }
}

}  // namespace
}  // namespace dcomp
