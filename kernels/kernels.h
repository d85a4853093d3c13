// kernels: the numeric core of dcomp. W8A8 matrix-vector/matrix-matrix products (int8 weights with
// one fp32 scale per output row, int8 activations with one fp32 scale per token, int32
// accumulation) and f32 products, behind one table of function pointers chosen once at start-up
// from CPU features (ref, avx2, avx512_vnni, avx512_vbmi, neon, neon_dotprod).
//
// Layout contract for every int8 operand: rows are `stride` bytes apart, stride is a multiple of
// kQ8RowAlign, and the bytes past `cols` in each row are zero (weights and activations alike), so
// no kernel needs a tail loop. Weight codes and activation codes lie in [-127, 127] (never -128).
// Every kernel writes only outputs [r0, r1) and reads only its inputs: disjoint row ranges may run
// on different threads. The int8 kernels are exact (integer accumulation, then one float multiply
// by x_scale * w.scale[r]), so every variant returns bit-identical results to kernels/ref. This
// module depends on nothing else in dcomp (base/ excepted for the thread pool's users).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "base/packed_codes.h"
#include "base/row_scales.h"

namespace dcomp::kernels {

inline constexpr size_t kQ8RowAlign = kPackedChunk;
using dcomp::CodeLevels;
using dcomp::MaxCode;
using dcomp::PackedRowBytes;
using dcomp::PackRows;
using dcomp::PaddedCols;
using dcomp::RowScaleView;  // a packed matrix's row scales: f32 or coded (base/row_scales.h)
using dcomp::UnpackRows;

// An int8 weight matrix [rows][cols] with per-row scales: w[r][c] ~= q[r*stride + c] * scale[r].
// row_sum[r] = sum_c q[r][c] (used by kernels that bias activations to unsigned).
struct Q8MatrixView {
  const int8_t* q = nullptr;
  const float* scale = nullptr;
  const int32_t* row_sum = nullptr;
  size_t rows = 0;
  size_t cols = 0;
  size_t stride = 0;
};

// A packed low-bit weight matrix (the packed tier; layout in base/packed_codes.h). The products are
// exact: sum u*x - 2^(bits-1) * sum x = sum code*x, then the same float multiply as the INT8
// kernels, so a packed matrix gives bit-identical results to the INT8 matrix of the same codes.
// The GEMM unpacks tiles of rows and runs the INT8 product on them (their row sums computed then),
// so a view needs nothing but the packed rows and their scales: it can point into a file's block.
struct PackedMatrixView {
  const uint8_t* data = nullptr;
  RowScaleView scale;
  size_t rows = 0;
  size_t cols = 0;
  size_t row_bytes = 0;  // PackedRowBytes(cols, bits)
  int bits = 0;
  // Non-uniform levels of this width (null: linear, the value is the code). The products then
  // look each code's magnitude up in registers (or compute a three-slope T) and multiply it by
  // the activation carrying the code's sign: sum T[|c|] * (sign(c) x), the same sums as the INT8
  // product of the values.
  const CodeLevels* levels = nullptr;
};

// An f32 matrix [rows][cols], rows `stride` floats apart.
struct F32MatrixView {
  const float* w = nullptr;
  size_t rows = 0;
  size_t cols = 0;
  size_t stride = 0;
};

struct KernelTable {
  const char* name;
  // Symmetric per-row quantization: scale = max|x| / 127 (0 if x is all zero), q = rint(x / scale)
  // clamped to [-127, 127]; q[n..n_padded) = 0.
  void (*quantize_row_q8)(const float* x, size_t n, size_t n_padded, int8_t* q, float* scale);
  // y[r] = (sum_c x[c] * w.q[r][c]) * x_scale * w.scale[r] for r in [r0, r1).
  void (*gemv_q8_q8)(const Q8MatrixView& w, const int8_t* x, float x_scale, float* y, size_t r0,
                     size_t r1);
  // For each of n_tok tokens t (codes x + t*x_stride, scale x_scale[t]):
  // y[t*y_stride + r] = gemv of that token, for r in [r0, r1).
  void (*gemm_q8_q8)(const Q8MatrixView& w, const int8_t* x, size_t x_stride, const float* x_scale,
                     size_t n_tok, float* y, size_t y_stride, size_t r0, size_t r1);
  // y[t*y_stride + r] = sum_c w[r][c] * x[t*x_stride + c], f32 accumulation.
  void (*gemm_f32)(const F32MatrixView& w, const float* x, size_t x_stride, size_t n_tok, float* y,
                   size_t y_stride, size_t r0, size_t r1);
  // row_sum[r] = sum of the `stride` codes of row r (stride a multiple of kQ8RowAlign, rows
  // zero-padded); returns false if any code is -128 (valid codes are in [-127, 127]). Runs over
  // every byte the streaming runtime decodes.
  bool (*row_sums_q8)(const int8_t* q, size_t rows, size_t stride, int32_t* row_sum);
  // gemv_q8_q8 / gemm_q8_q8 of a packed matrix, with the same results bit for bit as on the INT8
  // matrix of the same codes. Activations as for the INT8 products (rows padded with zeros). The
  // GEMM runs the GEMV itself for few tokens, so callers need not choose.
  void (*gemv_packed_q8)(const PackedMatrixView& w, const int8_t* x, float x_scale, float* y,
                         size_t r0, size_t r1);
  void (*gemm_packed_q8)(const PackedMatrixView& w, const int8_t* x, size_t x_stride,
                         const float* x_scale, size_t n_tok, float* y, size_t y_stride, size_t r0,
                         size_t r1);
};

// The table chosen for this CPU (once, thread-safe). The environment variable DCOMP_KERNELS=<name>
// forces a variant (e.g. "ref"); an unknown or unsupported name falls back to the best and is
// reported by KernelSelectionNote().
const KernelTable& Kernels();
// A one-line human description of the choice ("avx512_vnni (cpu: avx2 avx512bw avx512vnni)").
std::string KernelSelectionNote();
// Every variant compiled in and runnable on this CPU, ref first.
std::vector<const KernelTable*> AvailableKernelTables();
// The scalar reference (the test oracle).
const KernelTable& RefKernels();

// Helpers for building operands.
// Quantizes an f32 matrix [rows][cols] to per-row int8 into caller-provided storage
// (q: rows*PaddedCols(cols), scale/row_sum: rows). Uses the reference rounding.
void QuantizeMatrixQ8(const float* w, size_t rows, size_t cols, int8_t* q, float* scale,
                      int32_t* row_sum);
void ComputeRowSums(const int8_t* q, size_t rows, size_t stride, int32_t* row_sum);

}  // namespace dcomp::kernels
