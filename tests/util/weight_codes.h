// Test inputs for the block codecs: bytes distributed like INT8 weight codes, and the extreme
// distributions every rANS decoder must handle.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

namespace dcomp::testing {

// Bytes distributed like int8 weight codes: a rounded Gaussian of standard deviation `sigma`.
inline std::vector<uint8_t> GaussianCodes(size_t n, double sigma, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> d(0, sigma);
  std::vector<uint8_t> v(n);
  for (auto& b : v) {
    const double x = std::clamp(std::round(d(rng)), -127.0, 127.0);
    b = static_cast<uint8_t>(static_cast<int8_t>(x));
  }
  return v;
}

// The codes of non-uniform levels: +-magnitudes[k] (a table's magnitudes, e.g. LevelTable), k
// drawn from a Gaussian over the table's index; a few dozen byte values spread over all 256.
inline std::vector<uint8_t> LevelCodes(size_t n, const std::vector<uint8_t>& magnitudes,
                                       uint64_t seed) {
  std::mt19937_64 rng(seed);
  const double k_max = static_cast<double>(magnitudes.size() - 1);
  std::normal_distribution<double> d(0, k_max / 2.5);
  std::vector<uint8_t> v(n);
  for (auto& b : v) {
    const double x = d(rng);
    const int m = magnitudes[static_cast<size_t>(std::min(std::floor(std::fabs(x)), k_max))];
    b = static_cast<uint8_t>(static_cast<int8_t>(x < 0 ? -m : m));
  }
  return v;
}

// A single symbol (a constant block, no words); one very rare symbol (long runs without refills,
// then a burst); every symbol, uniform (nearly every state refills on every symbol); random bytes;
// a very skewed Gaussian.
inline std::vector<std::vector<uint8_t>> ExtremeCodeSets() {
  std::vector<std::vector<uint8_t>> sets;
  sets.emplace_back(100000, 7);
  std::vector<uint8_t>& two = sets.emplace_back(100000, 0);
  two[5000] = 255;
  std::vector<uint8_t>& all = sets.emplace_back(256 * 300);
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<uint8_t>(i * 131 + i / 256);
  std::mt19937 rng(3);
  std::vector<uint8_t>& random = sets.emplace_back(123457);
  for (auto& b : random) b = static_cast<uint8_t>(rng());
  sets.push_back(GaussianCodes(300000, 0.3, 9));
  return sets;
}

}  // namespace dcomp::testing
