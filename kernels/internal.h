// Internal to kernels/: the per-ISA tables, each defined in its own translation unit compiled with
// that ISA's flags. Only dispatch.cc and the kernel tests see these.
#pragma once

#include "kernels/kernels.h"

namespace dcomp::kernels::internal {

extern const KernelTable kRefTable;
#if defined(__x86_64__)
extern const KernelTable kAvx2Table;
extern const KernelTable kAvx512VnniTable;
#endif
#if defined(__aarch64__)
extern const KernelTable kNeonTable;
extern const KernelTable kNeonDotprodTable;
#endif

bool RowSumsQ8Ref(const int8_t* q, size_t rows, size_t stride, int32_t* row_sum);

// The reference quantizer, shared by every table (O(n) per token; the products dominate).
void QuantizeRowQ8Ref(const float* x, size_t n, size_t n_padded, int8_t* q, float* scale);

// Reference rounding shared by every quantize_row_q8 variant: scale and its inverse.
inline void Q8Scale(float amax, float* scale, float* inv) {
  *scale = amax / 127.0f;
  *inv = amax > 0.0f ? 127.0f / amax : 0.0f;
}

}  // namespace dcomp::kernels::internal
