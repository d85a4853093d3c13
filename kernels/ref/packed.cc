// The packed layout (kernels.h, PackedMatrixView): packing, unpacking and the reference products.
#include <cstring>

#include "kernels/internal.h"

namespace dcomp::kernels {
namespace {

constexpr size_t kChunk = 64;

// The 64 unsigned codes of one chunk.
void UnpackChunk(const uint8_t* c, int bits, uint8_t* u) {
  for (size_t j = 0; j < 32; ++j) {
    u[j] = c[j] & 15;
    u[j + 32] = c[j] >> 4;
  }
  if (bits >= 6) {
    for (size_t j = 0; j < 16; ++j) {
      for (size_t k = 0; k < 4; ++k) u[j + 16 * k] |= ((c[32 + j] >> (2 * k)) & 3) << 4;
    }
  }
  if (bits & 1) {
    const uint8_t* t = c + 8 * static_cast<size_t>(bits) - 8;
    const int shift = bits == 5 ? 4 : 6;
    for (size_t i = 0; i < kChunk; ++i) u[i] |= ((t[i / 8] >> (i % 8)) & 1) << shift;
  }
}

void PackChunk(const uint8_t* u, int bits, uint8_t* c) {
  std::memset(c, 0, 8 * static_cast<size_t>(bits));
  for (size_t j = 0; j < 32; ++j) c[j] = (u[j] & 15) | (u[j + 32] & 15) << 4;
  if (bits >= 6) {
    for (size_t j = 0; j < 16; ++j) {
      for (size_t k = 0; k < 4; ++k) c[32 + j] |= ((u[j + 16 * k] >> 4) & 3) << (2 * k);
    }
  }
  if (bits & 1) {
    uint8_t* t = c + 8 * static_cast<size_t>(bits) - 8;
    const int shift = bits == 5 ? 4 : 6;
    for (size_t i = 0; i < kChunk; ++i) t[i / 8] |= ((u[i] >> shift) & 1) << (i % 8);
  }
}

}  // namespace

size_t PackRows(const int8_t* q, size_t rows, size_t cols, int bits, uint8_t* out) {
  const size_t stride = PaddedCols(cols), row_bytes = PackedRowBytes(cols, bits);
  const int off = 1 << (bits - 1), lim = MaxCode(bits);
  uint8_t u[kChunk];
  for (size_t r = 0; r < rows; ++r) {
    const int8_t* row = q + r * stride;
    for (size_t c = 0; c < stride; ++c) {
      if (row[c] < -lim || row[c] > lim) return r;
    }
    for (size_t k = 0; k < stride; k += kChunk) {
      for (size_t i = 0; i < kChunk; ++i) u[i] = static_cast<uint8_t>(row[k + i] + off);
      PackChunk(u, bits, out + r * row_bytes + k / kChunk * 8 * static_cast<size_t>(bits));
    }
  }
  return rows;
}

size_t UnpackRows(const uint8_t* packed, size_t rows, size_t cols, int bits, int8_t* q) {
  const size_t stride = PaddedCols(cols), row_bytes = PackedRowBytes(cols, bits);
  const int off = 1 << (bits - 1);
  uint8_t u[kChunk];
  for (size_t r = 0; r < rows; ++r) {
    for (size_t k = 0; k < stride; k += kChunk) {
      UnpackChunk(packed + r * row_bytes + k / kChunk * 8 * static_cast<size_t>(bits), bits, u);
      for (size_t i = 0; i < kChunk; ++i) {
        if (u[i] == 0) return r;
        q[r * stride + k + i] = static_cast<int8_t>(u[i] - off);
      }
    }
  }
  return rows;
}

namespace internal {

void GemvPackedRef(const PackedMatrixView& w, const int8_t* x, float x_scale, float* y, size_t r0,
                   size_t r1) {
  const size_t stride = PaddedCols(w.cols);
  const int32_t off = 1 << (w.bits - 1);
  uint8_t u[kChunk];
  for (size_t r = r0; r < r1; ++r) {
    int32_t acc = 0;
    for (size_t k = 0; k < stride; k += kChunk) {
      UnpackChunk(w.data + r * w.row_bytes + k / kChunk * 8 * static_cast<size_t>(w.bits), w.bits,
                  u);
      for (size_t i = 0; i < kChunk; ++i) acc += (int32_t{u[i]} - off) * int32_t{x[k + i]};
    }
    y[r] = static_cast<float>(acc) * (x_scale * w.scale[r]);
  }
}

void GemmPackedRef(const PackedMatrixView& w, const int8_t* x, size_t x_stride,
                   const float* x_scale, size_t n_tok, float* y, size_t y_stride, size_t r0,
                   size_t r1) {
  for (size_t t = 0; t < n_tok; ++t) {
    GemvPackedRef(w, x + t * x_stride, x_scale[t], y + t * y_stride, r0, r1);
  }
}

}  // namespace internal
}  // namespace dcomp::kernels
