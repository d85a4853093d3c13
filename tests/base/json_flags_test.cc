#include <gtest/gtest.h>

#include "base/flags.h"
#include "base/json.h"

namespace dcomp {
namespace {

TEST(JsonTest, EscapesControlQuotesAndInvalidUtf8) {
  EXPECT_EQ(JsonEscape("a\"b\\c\n\t"), "\"a\\\"b\\\\c\\n\\t\"");
  EXPECT_EQ(JsonEscape(std::string("\x01", 1)), "\"\\u0001\"");
  EXPECT_EQ(JsonEscape("\xC3\xA9"), "\"\xC3\xA9\"");                   // é kept
  EXPECT_EQ(JsonEscape("\xC3"), "\"\\ufffd\"");                        // truncated sequence
  EXPECT_EQ(JsonEscape("\xED\xA0\x80"), "\"\\ufffd\\ufffd\\ufffd\"");  // surrogate
}

TEST(JsonTest, Writer) {
  JsonWriter w;
  w.BeginObject().IntArray("ids", {1, 2}).String("text", "hi").Double("x", 0.5).Bool("b", true);
  w.EndObject();
  EXPECT_EQ(w.str(), R"({"ids":[1,2],"text":"hi","x":0.5,"b":true})");
}

TEST(FlagsTest, ParsesValuesSwitchesAndPositionals) {
  Flags f;
  f.Value("n", "count").Switch("json", "json").Value("name", "name");
  ASSERT_TRUE(f.Parse({"model.bin", "--n", "5", "--json", "--name=x y"}).ok());
  EXPECT_EQ(f.positional(), std::vector<std::string>{"model.bin"});
  EXPECT_EQ(*f.GetInt("n", 0), 5);
  EXPECT_TRUE(f.IsSet("json"));
  EXPECT_EQ(*f.Get("name"), "x y");
}

TEST(FlagsTest, ErrorsNameTheOption) {
  Flags f;
  f.Value("n", "count").Switch("json", "json");
  Status s = f.Parse({"--bogus"});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("--bogus"), std::string::npos);
  Flags g;
  g.Value("n", "count");
  EXPECT_FALSE(g.Parse({"--n"}).ok());
  Flags h;
  h.Value("n", "count");
  ASSERT_TRUE(h.Parse({"--n", "5x"}).ok());
  auto r = h.GetInt("n", 0);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("--n"), std::string::npos);
}

}  // namespace
}  // namespace dcomp
