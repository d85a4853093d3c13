// A small command-line parser for dcomp's tools: positional arguments, "--name value",
// "--name=value" and boolean "--name". Every option must be declared; an unknown option, a missing
// value or a malformed number is an InvalidArgument error naming the option.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "base/status.h"

namespace dcomp {

class Flags {
 public:
  // Declares an option taking a value (repeatable: the last one wins; all are kept in values()).
  Flags& Value(const std::string& name, const std::string& help);
  // Declares a boolean switch.
  Flags& Switch(const std::string& name, const std::string& help);

  Status Parse(const std::vector<std::string>& args);

  const std::vector<std::string>& positional() const { return positional_; }
  bool Has(const std::string& name) const { return values_.count(name) > 0; }
  std::optional<std::string> Get(const std::string& name) const;
  std::vector<std::string> GetAll(const std::string& name) const;
  std::string GetOr(const std::string& name, const std::string& def) const;
  Result<int64_t> GetInt(const std::string& name, int64_t def) const;
  Result<double> GetDouble(const std::string& name, double def) const;
  bool IsSet(const std::string& name) const { return Has(name); }
  std::string Help() const;

 private:
  struct Decl {
    bool takes_value;
    std::string help;
  };
  std::map<std::string, Decl> decls_;
  std::vector<std::string> order_;
  std::map<std::string, std::vector<std::string>> values_;
  std::vector<std::string> positional_;
};

// Parses a whole-string integer / floating-point number.
Result<int64_t> ParseInt(const std::string& s, const std::string& what);
Result<double> ParseDouble(const std::string& s, const std::string& what);

}  // namespace dcomp
