// Sampler: picks the next token from logits. Greedy when temperature == 0; otherwise repetition
// penalty, top-k, temperature, top-p and min-p filtering, then a draw from a seeded generator whose
// sequence is fully specified here (SplitMix64), so a (seed, logits) sequence gives the same tokens
// on every platform and build. Not thread-safe: one Sampler per generation stream.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "base/status.h"

namespace dcomp {

struct SamplingParams {
  float temperature = 0.0f;         // 0: greedy
  int32_t top_k = 0;                // 0: off
  float top_p = 1.0f;               // 1: off
  float min_p = 0.0f;               // 0: off
  float repetition_penalty = 1.0f;  // 1: off
  int32_t repeat_last_n = 64;       // window of previous tokens the penalty looks at
  uint64_t seed = 0;

  // InvalidArgument naming the field (temperature < 0 or not finite, top_p outside (0, 1], ...).
  Status Validate() const;
};

class Sampler {
 public:
  explicit Sampler(const SamplingParams& p);
  // `logits` is modified. `history` is the sequence so far (prompt and generated).
  int32_t Sample(std::span<float> logits, std::span<const int32_t> history);

 private:
  double NextUniform();  // [0, 1)
  SamplingParams p_;
  uint64_t state_;
  std::vector<std::pair<float, int32_t>> cand_;
};

int32_t ArgMax(std::span<const float> logits);

}  // namespace dcomp
