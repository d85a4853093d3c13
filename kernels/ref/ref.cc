// Scalar reference kernels: the oracle every other variant is tested against.
#include <algorithm>
#include <cmath>

#include "kernels/internal.h"

namespace dcomp::kernels {
void internal::QuantizeRowQ8Ref(const float* x, size_t n, size_t n_padded, int8_t* q,
                                float* scale) {
  float amax = 0.0f;  // max is exact in any order
#pragma omp simd reduction(max : amax)
  for (size_t i = 0; i < n; ++i) amax = std::max(amax, std::fabs(x[i]));
  float inv;
  internal::Q8Scale(amax, scale, &inv);
  // Round to nearest, ties to even, as nearbyint() in the default rounding mode: adding and
  // subtracting 1.5 * 2^23 is exact for |v| <= 2^22 (here |v| <= 127) and vectorises.
  constexpr float kMagic = 12582912.0f;
  for (size_t i = 0; i < n; ++i) {
    const float v = std::clamp(x[i] * inv, -127.0f, 127.0f);
    q[i] = static_cast<int8_t>((v + kMagic) - kMagic);
  }
  for (size_t i = n; i < n_padded; ++i) q[i] = 0;
}

namespace {

inline int32_t DotQ8(const int8_t* a, const int8_t* b, size_t n) {
  int32_t acc = 0;
  for (size_t i = 0; i < n; ++i) acc += int32_t{a[i]} * int32_t{b[i]};
  return acc;
}

void GemvQ8Ref(const Q8MatrixView& w, const int8_t* x, float x_scale, float* y, size_t r0,
               size_t r1) {
  for (size_t r = r0; r < r1; ++r) {
    int32_t acc = DotQ8(w.q + r * w.stride, x, w.stride);
    y[r] = static_cast<float>(acc) * (x_scale * w.scale[r]);
  }
}

void GemmQ8Ref(const Q8MatrixView& w, const int8_t* x, size_t x_stride, const float* x_scale,
               size_t n_tok, float* y, size_t y_stride, size_t r0, size_t r1) {
  for (size_t t = 0; t < n_tok; ++t) {
    GemvQ8Ref(w, x + t * x_stride, x_scale[t], y + t * y_stride, r0, r1);
  }
}

void GemmF32Ref(const F32MatrixView& w, const float* x, size_t x_stride, size_t n_tok, float* y,
                size_t y_stride, size_t r0, size_t r1) {
  for (size_t t = 0; t < n_tok; ++t) {
    const float* xt = x + t * x_stride;
    for (size_t r = r0; r < r1; ++r) {
      const float* wr = w.w + r * w.stride;
      float acc = 0.0f;
      for (size_t c = 0; c < w.cols; ++c) acc += wr[c] * xt[c];
      y[t * y_stride + r] = acc;
    }
  }
}

}  // namespace

namespace internal {
bool RowSumsQ8Ref(const int8_t* q, size_t rows, size_t stride, int32_t* row_sum) {
  bool ok = true;
  for (size_t r = 0; r < rows; ++r) {
    int32_t s = 0;
    for (size_t c = 0; c < stride; ++c) {
      s += q[r * stride + c];
      ok &= q[r * stride + c] != -128;
    }
    row_sum[r] = s;
  }
  return ok;
}

const KernelTable kRefTable = {"ref",      QuantizeRowQ8Ref, GemvQ8Ref,     GemmQ8Ref,
                               GemmF32Ref, RowSumsQ8Ref,     GemvPackedRef, GemmPackedRef};
}  // namespace internal

void ComputeRowSums(const int8_t* q, size_t rows, size_t stride, int32_t* row_sum) {
  for (size_t r = 0; r < rows; ++r) {
    int32_t s = 0;
    for (size_t c = 0; c < stride; ++c) s += q[r * stride + c];
    row_sum[r] = s;
  }
}

void QuantizeMatrixQ8(const float* w, size_t rows, size_t cols, int8_t* q, float* scale,
                      int32_t* row_sum) {
  const size_t stride = PaddedCols(cols);
  for (size_t r = 0; r < rows; ++r) {
    internal::QuantizeRowQ8Ref(w + r * cols, cols, stride, q + r * stride, &scale[r]);
  }
  ComputeRowSums(q, rows, stride, row_sum);
}

}  // namespace dcomp::kernels
