#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <unordered_set>

namespace dcomp {

Status SamplingParams::Validate() const {
  if (!std::isfinite(temperature) || temperature < 0.0f) {
    return InvalidArgumentError("temperature must be a finite number >= 0, got " +
                                std::to_string(temperature));
  }
  if (top_k < 0) return InvalidArgumentError("top_k must be >= 0, got " + std::to_string(top_k));
  if (!(top_p > 0.0f && top_p <= 1.0f)) {
    return InvalidArgumentError("top_p must be in (0, 1], got " + std::to_string(top_p));
  }
  if (!(min_p >= 0.0f && min_p <= 1.0f)) {
    return InvalidArgumentError("min_p must be in [0, 1], got " + std::to_string(min_p));
  }
  if (!(repetition_penalty > 0.0f) || !std::isfinite(repetition_penalty)) {
    return InvalidArgumentError("repetition_penalty must be a finite number > 0, got " +
                                std::to_string(repetition_penalty));
  }
  if (repeat_last_n < 0) {
    return InvalidArgumentError("repeat_last_n must be >= 0, got " + std::to_string(repeat_last_n));
  }
  return Status::Ok();
}

int32_t ArgMax(std::span<const float> logits) {
  int32_t best = 0;
  for (size_t i = 1; i < logits.size(); ++i) {
    if (logits[i] > logits[static_cast<size_t>(best)]) best = static_cast<int32_t>(i);
  }
  return best;
}

Sampler::Sampler(const SamplingParams& p) : p_(p), state_(p.seed) {}

double Sampler::NextUniform() {
  // SplitMix64: a fixed, portable sequence.
  uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return static_cast<double>(z >> 11) * 0x1.0p-53;
}

int32_t Sampler::Sample(std::span<float> logits, std::span<const int32_t> history) {
  if (p_.repetition_penalty != 1.0f && p_.repeat_last_n > 0) {
    const size_t n = std::min(history.size(), static_cast<size_t>(p_.repeat_last_n));
    std::unordered_set<int32_t> seen(history.end() - static_cast<std::ptrdiff_t>(n), history.end());
    for (int32_t id : seen) {
      if (id < 0 || static_cast<size_t>(id) >= logits.size()) continue;
      float& l = logits[static_cast<size_t>(id)];
      l = l > 0.0f ? l / p_.repetition_penalty : l * p_.repetition_penalty;
    }
  }
  if (p_.temperature == 0.0f) return ArgMax(logits);

  cand_.clear();
  cand_.reserve(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) cand_.emplace_back(logits[i], static_cast<int32_t>(i));
  auto by_logit = [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  size_t keep = cand_.size();
  if (p_.top_k > 0 && static_cast<size_t>(p_.top_k) < keep) {
    keep = static_cast<size_t>(p_.top_k);
    std::partial_sort(cand_.begin(), cand_.begin() + static_cast<std::ptrdiff_t>(keep), cand_.end(),
                      by_logit);
    cand_.resize(keep);
  } else {
    std::sort(cand_.begin(), cand_.end(), by_logit);
  }
  // Softmax with temperature, in double.
  const double mx = cand_[0].first;
  std::vector<double> prob(cand_.size());
  double sum = 0.0;
  for (size_t i = 0; i < cand_.size(); ++i) {
    prob[i] = std::exp((cand_[i].first - mx) / p_.temperature);
    sum += prob[i];
  }
  for (double& v : prob) v /= sum;
  size_t n = cand_.size();
  if (p_.top_p < 1.0f) {
    double cum = 0.0;
    for (size_t i = 0; i < n; ++i) {
      cum += prob[i];
      if (cum >= p_.top_p) {
        n = i + 1;
        break;
      }
    }
  }
  if (p_.min_p > 0.0f) {
    const double floor = prob[0] * p_.min_p;
    size_t m = 1;
    while (m < n && prob[m] >= floor) ++m;
    n = m;
  }
  double total = 0.0;
  for (size_t i = 0; i < n; ++i) total += prob[i];
  const double r = NextUniform() * total;
  double cum = 0.0;
  for (size_t i = 0; i < n; ++i) {
    cum += prob[i];
    if (r < cum) return cand_[i].second;
  }
  return cand_[n - 1].second;
}

}  // namespace dcomp
