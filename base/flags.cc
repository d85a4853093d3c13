#include "base/flags.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>

namespace dcomp {

Flags& Flags::Value(const std::string& name, const std::string& help) {
  decls_[name] = {true, help};
  order_.push_back(name);
  return *this;
}

Flags& Flags::Switch(const std::string& name, const std::string& help) {
  decls_[name] = {false, help};
  order_.push_back(name);
  return *this;
}

Status Flags::Parse(const std::vector<std::string>& args) {
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a.size() > 2 && a.compare(0, 2, "--") == 0) {
      std::string name = a.substr(2), value;
      bool inline_value = false;
      if (auto eq = name.find('='); eq != std::string::npos) {
        value = name.substr(eq + 1);
        name = name.substr(0, eq);
        inline_value = true;
      }
      auto it = decls_.find(name);
      if (it == decls_.end()) return InvalidArgumentError("unknown option --" + name);
      if (it->second.takes_value) {
        if (!inline_value) {
          if (i + 1 >= args.size())
            return InvalidArgumentError("option --" + name + " needs a value");
          value = args[++i];
        }
      } else if (inline_value) {
        return InvalidArgumentError("option --" + name + " takes no value");
      }
      values_[name].push_back(value);
    } else {
      positional_.push_back(a);
    }
  }
  return Status::Ok();
}

std::optional<std::string> Flags::Get(const std::string& name) const {
  auto it = values_.find(name);
  if (it == values_.end()) return std::nullopt;
  return it->second.back();
}

std::vector<std::string> Flags::GetAll(const std::string& name) const {
  auto it = values_.find(name);
  return it == values_.end() ? std::vector<std::string>{} : it->second;
}

std::string Flags::GetOr(const std::string& name, const std::string& def) const {
  auto v = Get(name);
  return v ? *v : def;
}

Result<int64_t> ParseInt(const std::string& s, const std::string& what) {
  if (s.empty()) return InvalidArgumentError(what + ": expected an integer, got ''");
  errno = 0;
  char* end = nullptr;
  long long v = std::strtoll(s.c_str(), &end, 10);
  if (errno != 0 || end == s.c_str() || *end != '\0') {
    return InvalidArgumentError(what + ": expected an integer, got '" + s + "'");
  }
  return static_cast<int64_t>(v);
}

Result<double> ParseDouble(const std::string& s, const std::string& what) {
  if (s.empty()) return InvalidArgumentError(what + ": expected a number, got ''");
  errno = 0;
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  if (errno != 0 || end == s.c_str() || *end != '\0' || !std::isfinite(v)) {
    return InvalidArgumentError(what + ": expected a finite number, got '" + s + "'");
  }
  return v;
}

Result<int64_t> Flags::GetInt(const std::string& name, int64_t def) const {
  auto v = Get(name);
  if (!v) return def;
  return ParseInt(*v, "--" + name);
}

Result<double> Flags::GetDouble(const std::string& name, double def) const {
  auto v = Get(name);
  if (!v) return def;
  return ParseDouble(*v, "--" + name);
}

std::string Flags::Help() const {
  std::string out;
  for (const auto& name : order_) {
    const Decl& d = decls_.at(name);
    std::string left = "  --" + name + (d.takes_value ? " VALUE" : "");
    if (left.size() < 26) left.resize(26, ' ');
    out += left + " " + d.help + "\n";
  }
  return out;
}

}  // namespace dcomp
