// The embedded stories260K made untied: a llama2.c v0 copy whose output matrix is its own tensor
// (a negative vocabulary size in the header): each token's embedding row with a little of the next
// token's mixed in, so that the two token matrices differ. For tests of models with two token
// matrices.
#pragma once

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "tests/util/test_paths.h"

namespace dcomp::testing {

// Writes untied.bin and its tokenizer (tok512.bin) into `dir`; returns the model's path, or ""
// when the embedded model cannot be read or the copy cannot be written.
inline std::string WriteUntiedStories260K(const std::filesystem::path& dir) {
  namespace fs = std::filesystem;
  const std::string src = SourceDir() + "/models/stories260K.bin";
  std::error_code ec;
  fs::create_directories(dir, ec);
  fs::copy_file(SourceDir() + "/models/tok512.bin", dir / "tok512.bin",
                fs::copy_options::overwrite_existing, ec);
  if (ec) return "";
  std::string bytes;
  {
    std::ifstream in(src, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  int32_t h[7];
  if (bytes.size() < sizeof(h)) return "";
  std::memcpy(h, bytes.data(), sizeof(h));
  constexpr int32_t kVersionedMagic = 0x616b3432;  // "ak42": llama2.c v1/v2, not v0
  if (h[0] == kVersionedMagic || h[0] <= 0 || h[5] <= 0) return "";  // not v0, or untied
  const size_t dim = static_cast<size_t>(h[0]), vocab = static_cast<size_t>(h[5]);
  if (bytes.size() < sizeof(h) + vocab * dim * sizeof(float)) return "";
  h[5] = -h[5];
  std::memcpy(bytes.data(), h, sizeof(h));
  std::vector<float> emb(vocab * dim), out(vocab * dim);
  std::memcpy(emb.data(), bytes.data() + sizeof(h), emb.size() * sizeof(float));
  for (size_t v = 0; v < vocab; ++v) {
    for (size_t j = 0; j < dim; ++j)
      out[v * dim + j] = emb[v * dim + j] + 0.1f * emb[((v + 1) % vocab) * dim + j];
  }
  bytes.append(reinterpret_cast<const char*>(out.data()), out.size() * sizeof(float));
  const fs::path model = dir / "untied.bin";
  std::ofstream f(model, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  f.close();
  return f.good() ? model.string() : "";
}

}  // namespace dcomp::testing
