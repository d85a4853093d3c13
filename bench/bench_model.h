// The model the benchmarks run: $DCOMP_BENCH_MODEL, else the shared stories3M, else the embedded
// stories260K.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <string>

namespace dcomp {

inline std::string BenchModelPath() {
  if (const char* e = std::getenv("DCOMP_BENCH_MODEL")) return e;
  const std::string shared =
      std::string(DCOMP_SOURCE_DIR) + "/../shared/models/llama2c/stories3M-q80.bin";
  if (std::filesystem::exists(shared)) return shared;
  return std::string(DCOMP_SOURCE_DIR) + "/models/stories260K.bin";
}

}  // namespace dcomp
