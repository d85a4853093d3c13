// A minimal JSON reader for tests (reference outputs, CLI output). Numbers are doubles; throws
// std::runtime_error on malformed input (tests only).
#pragma once

#include <cstdlib>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace dcomp::testing {

struct Json {
  enum Kind { kNull, kBool, kNumber, kString, kArray, kObject } kind = kNull;
  bool b = false;
  double num = 0.0;
  std::string str;
  std::vector<Json> arr;
  std::map<std::string, Json> obj;

  const Json& operator[](const std::string& k) const {
    auto it = obj.find(k);
    if (it == obj.end()) throw std::runtime_error("missing key " + k);
    return it->second;
  }
  const Json& operator[](size_t i) const { return arr.at(i); }
  bool has(const std::string& k) const { return obj.count(k) > 0; }
  std::vector<int> ints() const {
    std::vector<int> v;
    for (const auto& e : arr) v.push_back(static_cast<int>(e.num));
    return v;
  }
};

class JsonParser {
 public:
  explicit JsonParser(const std::string& s) : s_(s) {}
  Json Parse() {
    Json j = Value();
    Ws();
    if (i_ != s_.size()) throw std::runtime_error("trailing characters in JSON");
    return j;
  }

 private:
  void Ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\n' || s_[i_] == '\t' || s_[i_] == '\r'))
      ++i_;
  }
  char Peek() {
    Ws();
    if (i_ >= s_.size()) throw std::runtime_error("unexpected end of JSON");
    return s_[i_];
  }
  void Expect(char c) {
    if (Peek() != c) throw std::runtime_error(std::string("expected ") + c);
    ++i_;
  }
  std::string Str() {
    Expect('"');
    std::string out;
    while (i_ < s_.size() && s_[i_] != '"') {
      char c = s_[i_++];
      if (c == '\\') {
        char e = s_.at(i_++);
        switch (e) {
          case 'n': out += '\n'; break;
          case 't': out += '\t'; break;
          case 'r': out += '\r'; break;
          case 'b': out += '\b'; break;
          case 'f': out += '\f'; break;
          case 'u': {
            unsigned cp = static_cast<unsigned>(std::stoul(s_.substr(i_, 4), nullptr, 16));
            i_ += 4;
            if (cp >= 0xD800 && cp < 0xDC00 && s_.compare(i_, 2, "\\u") == 0) {
              unsigned lo = static_cast<unsigned>(std::stoul(s_.substr(i_ + 2, 4), nullptr, 16));
              i_ += 6;
              cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            if (cp < 0x80) {
              out += static_cast<char>(cp);
            } else if (cp < 0x800) {
              out += static_cast<char>(0xC0 | (cp >> 6));
              out += static_cast<char>(0x80 | (cp & 0x3F));
            } else if (cp < 0x10000) {
              out += static_cast<char>(0xE0 | (cp >> 12));
              out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
              out += static_cast<char>(0x80 | (cp & 0x3F));
            } else {
              out += static_cast<char>(0xF0 | (cp >> 18));
              out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
              out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
              out += static_cast<char>(0x80 | (cp & 0x3F));
            }
            break;
          }
          default: out += e;
        }
      } else {
        out += c;
      }
    }
    Expect('"');
    return out;
  }
  Json Value() {
    Json j;
    char c = Peek();
    if (c == '{') {
      j.kind = Json::kObject;
      ++i_;
      if (Peek() == '}') {
        ++i_;
        return j;
      }
      for (;;) {
        std::string k = Str();
        Expect(':');
        j.obj[k] = Value();
        if (Peek() == ',') {
          ++i_;
          continue;
        }
        Expect('}');
        return j;
      }
    }
    if (c == '[') {
      j.kind = Json::kArray;
      ++i_;
      if (Peek() == ']') {
        ++i_;
        return j;
      }
      for (;;) {
        j.arr.push_back(Value());
        if (Peek() == ',') {
          ++i_;
          continue;
        }
        Expect(']');
        return j;
      }
    }
    if (c == '"') {
      j.kind = Json::kString;
      j.str = Str();
      return j;
    }
    if (s_.compare(i_, 4, "true") == 0) {
      i_ += 4;
      j.kind = Json::kBool;
      j.b = true;
      return j;
    }
    if (s_.compare(i_, 5, "false") == 0) {
      i_ += 5;
      j.kind = Json::kBool;
      return j;
    }
    if (s_.compare(i_, 4, "null") == 0) {
      i_ += 4;
      return j;
    }
    const char* start = s_.c_str() + i_;
    char* end = nullptr;
    j.num = std::strtod(start, &end);
    if (end == start) throw std::runtime_error("bad JSON value at " + std::to_string(i_));
    i_ += static_cast<size_t>(end - start);
    j.kind = Json::kNumber;
    return j;
  }
  const std::string& s_;
  size_t i_ = 0;
};

inline Json ParseJson(const std::string& s) { return JsonParser(s).Parse(); }

}  // namespace dcomp::testing
