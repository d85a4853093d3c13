// ggml's tensor types as stored in GGUF files: block geometry and dequantization to f32 of every
// type a model file people download is likely to hold (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1,
// Q8_0, Q2_K .. Q6_K, IQ4_NL, IQ4_XS). Each dequantizer follows the type's published block layout
// and evaluates in the same f32 order as ggml's reference dequantization, so an imported model
// computes exactly what llama.cpp's own f32 conversion of the file computes.
#pragma once

#include <cstdint>
#include <string>

#include "base/status.h"

namespace dcomp {

// ggml type ids (ggml.h's enum ggml_type); those dcomp reads have a dequantizer below.
enum class GgmlType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ8_1 = 9,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kQ8_K = 15,
  kIQ4_NL = 20,
  kIQ4_XS = 23,
  kBF16 = 30,
};

// "Q4_K", or "ggml type N" for a type dcomp does not know.
std::string GgmlTypeName(uint32_t type);

struct GgmlBlock {
  uint32_t elements = 0;  // per block (1 for the float types)
  uint32_t bytes = 0;     // per block
};
// Geometry of a type dcomp can read; false for any other (including types it knows by name but
// never expects in a model file, such as Q8_1 and Q8_K).
bool GgmlReadableBlock(uint32_t type, GgmlBlock* block);
// "F32, F16, ..." for error messages.
std::string GgmlReadableTypeNames();

// Bytes of a row of `ne0` elements; InvalidArgument naming the type and its block size when the
// row length is not a whole number of blocks, Unimplemented for a type dcomp cannot read.
Result<uint64_t> GgmlRowBytes(uint32_t type, int64_t ne0);

// Dequantizes `n` elements (a whole number of blocks) of `type` at `src` into `dst`.
Status GgmlToF32(uint32_t type, const uint8_t* src, int64_t n, float* dst);

// The 16 non-uniform levels of IQ4_NL and IQ4_XS.
extern const int8_t kIq4NlValues[16];

}  // namespace dcomp
