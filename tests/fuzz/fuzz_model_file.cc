// libFuzzer: the model importers (GGUF v2/v3 header, metadata and tensor directory; llama2.c
// header), the tokenizer built from a GGUF's vocabulary, and the first tensor's dequantization.
// Any input must end in OK or an error naming the file, never a crash, a leak, an out-of-bounds
// access or an allocation the file's size does not justify.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "engine/model_file.h"
#include "engine/tokenizer.h"

namespace {
// One file per process in /dev/shm (tmpfs), rewritten for every input: the importers open paths.
const std::string& Path() {
  static const std::string p = "/dev/shm/dcomp-fuzz-model-" + std::to_string(getpid()) + ".gguf";
  return p;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FILE* f = std::fopen(Path().c_str(), "wb");
  if (f == nullptr) return 0;
  std::fwrite(data, 1, size, f);
  std::fclose(f);
  // llama2.c checkpoints take the embedded model's tokenizer (vocabulary 512; other sizes end at
  // that error, after their header has been validated). GGUF files carry their own.
  auto m = dcomp::OpenModelFile(Path(), DCOMP_SOURCE_DIR "/models/tok512.bin");
  if (!m.ok()) return 0;
  (void)dcomp::Tokenizer::Create((*m)->tokenizer());
  const auto& tensors = (*m)->tensors();
  if (!tensors.empty()) (void)(*m)->ReadF32(tensors.front().name);
  return 0;
}
