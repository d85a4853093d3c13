#include "base/json.h"

#include <cmath>
#include <cstdio>

namespace dcomp {
namespace {
size_t ValidUtf8Len(std::string_view s, size_t i) {
  const uint8_t c = static_cast<uint8_t>(s[i]);
  size_t n = c < 0x80             ? 1
             : (c & 0xE0) == 0xC0 ? 2
             : (c & 0xF0) == 0xE0 ? 3
             : (c & 0xF8) == 0xF0 ? 4
                                  : 0;
  if (n == 0 || i + n > s.size()) return 0;
  uint32_t cp = n == 1 ? c : c & (0x7F >> n);
  for (size_t k = 1; k < n; ++k) {
    const uint8_t b = static_cast<uint8_t>(s[i + k]);
    if ((b & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (b & 0x3F);
  }
  static constexpr uint32_t kMin[5] = {0, 0, 0x80, 0x800, 0x10000};
  if (n > 1 && (cp < kMin[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))) return 0;
  return n;
}
}  // namespace

std::string JsonEscape(std::string_view s) {
  std::string out = "\"";
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    size_t n = ValidUtf8Len(s, i);
    if (n == 0) {
      out += "\\ufffd";
      ++i;
      continue;
    }
    if (n > 1) {
      out.append(s.substr(i, n));
      i += n;
      continue;
    }
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20 || c == 0x7F) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", c);
          out += buf;
        } else {
          out.push_back(static_cast<char>(c));
        }
    }
    ++i;
  }
  out += "\"";
  return out;
}

void JsonWriter::Sep() {
  if (first_.empty()) return;
  if (!first_.back()) out_ += ",";
  first_.back() = false;
}

JsonWriter& JsonWriter::BeginObject() {
  Sep();
  out_ += "{";
  first_.push_back(true);
  return *this;
}
JsonWriter& JsonWriter::EndObject() {
  out_ += "}";
  first_.pop_back();
  return *this;
}
JsonWriter& JsonWriter::BeginArray(std::string_view key) {
  if (key.empty()) {
    Sep();
  } else {
    Key(key);
  }
  out_ += "[";
  first_.push_back(true);
  return *this;
}
JsonWriter& JsonWriter::EndArray() {
  out_ += "]";
  first_.pop_back();
  return *this;
}
JsonWriter& JsonWriter::Key(std::string_view key) {
  Sep();
  out_ += JsonEscape(key);
  out_ += ":";
  return *this;
}
JsonWriter& JsonWriter::BeginObjectIn(std::string_view key) {
  Key(key);
  out_ += "{";
  first_.push_back(true);
  return *this;
}
JsonWriter& JsonWriter::String(std::string_view key, std::string_view v) {
  Key(key);
  out_ += JsonEscape(v);
  return *this;
}
JsonWriter& JsonWriter::Int(std::string_view key, int64_t v) {
  Key(key);
  out_ += std::to_string(v);
  return *this;
}
JsonWriter& JsonWriter::Double(std::string_view key, double v) {
  Key(key);
  if (!std::isfinite(v)) {
    out_ += "null";
  } else {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%.9g", v);
    out_ += buf;
  }
  return *this;
}
JsonWriter& JsonWriter::Bool(std::string_view key, bool v) {
  Key(key);
  out_ += v ? "true" : "false";
  return *this;
}
JsonWriter& JsonWriter::IntArray(std::string_view key, const std::vector<int32_t>& v) {
  Key(key);
  out_ += "[";
  for (size_t i = 0; i < v.size(); ++i) {
    if (i) out_ += ",";
    out_ += std::to_string(v[i]);
  }
  out_ += "]";
  return *this;
}
JsonWriter& JsonWriter::RawValue(std::string_view raw) {
  Sep();
  out_.append(raw);
  return *this;
}

}  // namespace dcomp
