// Row scales held in one byte per row. The packer rounds every row scale it chooses to the log
// grid 2^(n / 32) (n an integer: steps of 2.2%, finer than its clip candidates' 5%) before it
// rounds the row's codes, so a tensor's scales are grid values; when they all lie within 254 steps
// of the smallest, the file stores each as its step above that smallest one (one byte; 255 stands
// for 0; format 6, Tensor.scale_grid_base), and a reader holds them so and computes the f32 back
// exactly, with integer operations only, so every tier, thread count and ISA multiplies by the
// same float. Scales not on the grid (older packs, the plain INT8 quantization) stay f32.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace dcomp {

inline constexpr int kScaleGridSteps = 32;      // grid values per octave
inline constexpr uint8_t kZeroScaleCode = 255;  // the code of scale 0 (an all-zero row)

// The mantissa field (23 bits) of the f32 nearest 2^(j / 32), j = 0..31 (correctly rounded).
inline constexpr uint32_t kScaleGridMantissa[kScaleGridSteps] = {
    0x000000, 0x02cd87, 0x05aac3, 0x08980f, 0x0b95c2, 0x0ea43a, 0x11c3d3, 0x14f4f0,
    0x1837f0, 0x1b8d3a, 0x1ef532, 0x227043, 0x25fed7, 0x29a15b, 0x2d583f, 0x3123f6,
    0x3504f3, 0x38fbaf, 0x3d08a4, 0x412c4d, 0x45672a, 0x49b9be, 0x4e248c, 0x52a81e,
    0x5744fd, 0x5bfbb8, 0x60ccdf, 0x65b907, 0x6ac0c7, 0x6fe4ba, 0x75257d, 0x7a83b3};

// Grid indices whose values are normal f32: [kMinScaleGridIndex, kMaxScaleGridIndex].
inline constexpr int32_t kMinScaleGridIndex = -126 * kScaleGridSteps;
inline constexpr int32_t kMaxScaleGridIndex = 128 * kScaleGridSteps - 1;

// The grid value of index n (in the range above): exponent floor(n / 32), mantissa of j = n mod 32.
inline float ScaleGridValue(int32_t n) {
  const uint32_t e = static_cast<uint32_t>((n >> 5) + 127);  // >> floors (C++20)
  return std::bit_cast<float>(e << 23 | kScaleGridMantissa[n & (kScaleGridSteps - 1)]);
}

// The f32 of code c of a tensor whose smallest nonzero scale has index n0.
inline float RowScaleOfCode(uint8_t c, int32_t n0) {
  return c == kZeroScaleCode ? 0.0f : ScaleGridValue(n0 + c);
}

// The grid value nearest s (s > 0 and finite; values past the grid's ends clamp to them); 0 for
// s <= 0.
float RoundScaleToGrid(float s);

// The index of s when s is exactly a grid value, else -1 - kMaxScaleGridIndex (no index).
int32_t ScaleGridIndex(float s);
inline constexpr int32_t kNoScaleGridIndex = -1 - kMaxScaleGridIndex;
// The largest n0 whose every code (n0 + 0 .. n0 + 254) is a normal f32.
inline constexpr int32_t kMaxScaleGridBase = kMaxScaleGridIndex - (kZeroScaleCode - 1);

struct RowScales;

// Row scales as the products read them: f32, or one byte per row with n0 (RowScales), whose
// f32 is computed exactly, so both give the same products. Non-owning.
struct RowScaleView {
  const float* f32 = nullptr;
  const uint8_t* code = nullptr;  // set: coded, with n0
  int32_t n0 = 0;
  RowScaleView() = default;
  RowScaleView(const float* s) : f32(s) {}  // NOLINT(google-explicit-constructor): f32 scales
  RowScaleView(const uint8_t* c, int32_t n) : code(c), n0(n) {}
  explicit RowScaleView(const RowScales& s);  // over s's f32 or codes
  float operator[](size_t r) const { return code ? RowScaleOfCode(code[r], n0) : f32[r]; }
  // The scales from row r on.
  RowScaleView operator+(size_t r) const {
    return code ? RowScaleView(code + r, n0) : RowScaleView(f32 + r);
  }
  // Writes rows [r0, r0 + n) as f32 to out.
  void Expand(size_t r0, size_t n, float* out) const;
};

// Row scales as a reader holds them: one byte per row (`code`, with `n0`) when every scale is 0 or
// a grid value at most 254 steps above the smallest, else the f32 values.
struct RowScales {
  std::vector<float> f32;     // set when not coded
  std::vector<uint8_t> code;  // set when coded
  int32_t n0 = 0;

  bool coded() const { return !code.empty() || f32.empty(); }
  float operator[](size_t r) const { return RowScaleView(*this)[r]; }
  void Expand(size_t r0, size_t n, float* out) const { RowScaleView(*this).Expand(r0, n, out); }
  size_t bytes() const { return coded() ? code.capacity() : f32.capacity() * sizeof(float); }
};

inline RowScaleView::RowScaleView(const RowScales& s)
    : f32(s.coded() ? nullptr : s.f32.data()),
      code(s.coded() ? s.code.data() : nullptr),
      n0(s.n0) {}

// `s` coded when it can be (see RowScales), else kept as f32.
RowScales MakeRowScales(std::span<const float> s);
// Whether MakeRowScales would code `s`: the bytes per row a reader holds (1 or 4).
size_t RowScaleBytesPerRow(std::span<const float> s);

}  // namespace dcomp
