// The reference products of packed matrices (layout in base/packed_codes.h).
#include "kernels/internal.h"

namespace dcomp::kernels {
namespace {

constexpr size_t kChunk = kPackedChunk;

}  // namespace

namespace internal {

void GemvPackedRef(const PackedMatrixView& w, const int8_t* x, float x_scale, float* y, size_t r0,
                   size_t r1) {
  const size_t stride = PaddedCols(w.cols);
  const int32_t off = 1 << (w.bits - 1);
  uint8_t u[kChunk];
  for (size_t r = r0; r < r1; ++r) {
    int32_t acc = 0;
    for (size_t k = 0; k < stride; k += kChunk) {
      UnpackPackedChunk(w.data + r * w.row_bytes + k / kChunk * 8 * static_cast<size_t>(w.bits),
                        w.bits, u);
      if (w.levels != nullptr) {
        for (size_t i = 0; i < kChunk; ++i)
          acc += int32_t{w.levels->value[u[i]]} * int32_t{x[k + i]};
      } else {
        for (size_t i = 0; i < kChunk; ++i) acc += (int32_t{u[i]} - off) * int32_t{x[k + i]};
      }
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
