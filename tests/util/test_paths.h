// Where tests find data: the repository (embedded model) and ../shared (real models, reference
// outputs, evaluation text). Tests that need ../shared skip with a message when it is absent.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <string>

namespace dcomp::testing {

inline std::string SourceDir() { return DCOMP_SOURCE_DIR; }
inline std::string BinaryDir() { return DCOMP_BINARY_DIR; }

inline std::string SharedDir() {
  if (const char* e = std::getenv("DCOMP_SHARED_DIR"); e != nullptr && *e != '\0') return e;
  return SourceDir() + "/../shared";
}

// Full path of a file under shared/, or "" when it does not exist.
inline std::string SharedFile(const std::string& rel) {
  std::string p = SharedDir() + "/" + rel;
  return std::filesystem::exists(p) ? p : std::string();
}

}  // namespace dcomp::testing

#define DCOMP_REQUIRE_SHARED(var, rel)                                                    \
  const std::string var = ::dcomp::testing::SharedFile(rel);                              \
  if (var.empty()) {                                                                      \
    GTEST_SKIP() << "shared data absent: " << ::dcomp::testing::SharedDir() << "/" << rel \
                 << " (set DCOMP_SHARED_DIR)";                                            \
  }
