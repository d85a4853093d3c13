// Minimal JSON output for command-line tools: string escaping (always valid UTF-8 output, invalid
// bytes become U+FFFD) and a tiny streaming object/array writer. No parsing.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace dcomp {

std::string JsonEscape(std::string_view s);  // with the surrounding quotes

class JsonWriter {
 public:
  JsonWriter& BeginObject();
  JsonWriter& EndObject();
  JsonWriter& BeginArray(std::string_view key = {});
  JsonWriter& EndArray();
  JsonWriter& Key(std::string_view key);
  JsonWriter& String(std::string_view key, std::string_view v);
  JsonWriter& Int(std::string_view key, int64_t v);
  JsonWriter& Double(std::string_view key, double v);
  JsonWriter& Bool(std::string_view key, bool v);
  JsonWriter& IntArray(std::string_view key, const std::vector<int32_t>& v);
  JsonWriter& BeginObjectIn(std::string_view key);  // nested object as a member
  JsonWriter& RawValue(std::string_view raw);       // an element inside an array
  const std::string& str() const { return out_; }

 private:
  void Sep();
  std::string out_;
  std::vector<bool> first_;
};

}  // namespace dcomp
