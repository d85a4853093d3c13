#include "base/row_scales.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace dcomp {

float RoundScaleToGrid(float s) {
  if (!(s > 0)) return 0.0f;
  if (!std::isfinite(s)) return ScaleGridValue(kMaxScaleGridIndex);
  // log2 picks the neighbourhood; the exact distances decide between neighbours.
  const double l = std::floor(std::log2(static_cast<double>(s)) * kScaleGridSteps);
  const auto guess =
      static_cast<int32_t>(std::clamp<double>(l, kMinScaleGridIndex, kMaxScaleGridIndex));
  float best = ScaleGridValue(guess);
  for (int32_t n = std::max(kMinScaleGridIndex, guess - 1);
       n <= std::min(kMaxScaleGridIndex, guess + 2); ++n) {
    const float v = ScaleGridValue(n);
    if (std::fabs(static_cast<double>(v) - s) < std::fabs(static_cast<double>(best) - s)) best = v;
  }
  return best;
}

int32_t ScaleGridIndex(float s) {
  if (!(s > 0) || !std::isfinite(s)) return kNoScaleGridIndex;
  const uint32_t bits = std::bit_cast<uint32_t>(s);
  const int32_t e = static_cast<int32_t>(bits >> 23) - 127;
  if (e < -126) return kNoScaleGridIndex;  // subnormal
  const uint32_t mant = bits & 0x7fffff;
  const uint32_t* end = kScaleGridMantissa + kScaleGridSteps;
  const uint32_t* it = std::lower_bound(kScaleGridMantissa, end, mant);
  if (it == end || *it != mant) return kNoScaleGridIndex;
  return e * kScaleGridSteps + static_cast<int32_t>(it - kScaleGridMantissa);
}

namespace {

// The smallest grid index of the nonzero scales, or false when a scale is off the grid or the
// span exceeds a byte's codes.
bool GridRange(std::span<const float> s, int32_t* n0) {
  int32_t lo = std::numeric_limits<int32_t>::max(), hi = std::numeric_limits<int32_t>::min();
  for (float v : s) {
    if (v == 0.0f && !std::signbit(v)) continue;
    const int32_t n = ScaleGridIndex(v);
    if (n == kNoScaleGridIndex) return false;
    lo = std::min(lo, n);
    hi = std::max(hi, n);
  }
  if (lo > hi) lo = hi = 0;  // every row zero
  if (hi - lo >= kZeroScaleCode) return false;
  *n0 = lo;
  return true;
}

}  // namespace

void RowScaleView::Expand(size_t r0, size_t n, float* out) const {
  if (code == nullptr) {
    std::copy_n(f32 + r0, n, out);
    return;
  }
  for (size_t i = 0; i < n; ++i) out[i] = RowScaleOfCode(code[r0 + i], n0);
}

RowScales MakeRowScales(std::span<const float> s) {
  RowScales r;
  if (!s.empty() && GridRange(s, &r.n0)) {
    r.code.resize(s.size());
    for (size_t i = 0; i < s.size(); ++i) {
      r.code[i] = s[i] == 0.0f ? kZeroScaleCode : static_cast<uint8_t>(ScaleGridIndex(s[i]) - r.n0);
    }
  } else {
    r.f32.assign(s.begin(), s.end());
  }
  return r;
}

size_t RowScaleBytesPerRow(std::span<const float> s) {
  int32_t n0 = 0;
  return !s.empty() && GridRange(s, &n0) ? 1 : sizeof(float);
}

}  // namespace dcomp
