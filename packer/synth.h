// `dcomp synth`: a GGUF model with the exact shape of a real one (dimensions, heads, vocabulary)
// and synthetic weights, for speed and memory benchmarks only (never for accuracy). It is marked
// synthetic in its metadata (dcomp.synthetic = true), which every tool prints.
//
// Weights: each row is Gaussian, clipped at K standard deviations, with one entry of exactly K
// standard deviations, so that per-row INT8 codes (step = max|row| / 127) follow a discretised
// Gaussian of standard deviation 127 / K. K is solved so that the order-0 entropy of the codes is
// the requested bits per weight: the entropy the real model's packed codes have, so that the
// entropy coder's work and the bytes streamed are realistic. Stored as Q8_0, like the llama.cpp
// baseline of the same shape.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace dcomp::packer {

// Code widths: "int8" draws every matrix's per-row INT8 codes at `entropy_bits`; "stories3m"
// draws each matrix role at the width and code entropy that the stories3M default pack chose for
// that role (BENCHMARKS.md) on the levels that pack used, records the widths and the levels' shape
// in the GGUF (dcomp.synthetic.bits.<role>, dcomp.synthetic.level_shape) and `dcomp pack` keeps
// them, so a synthetic shape packs as a real model would.
struct SynthOptions {
  std::string
      shape;  // tinyllama-1.1b | llama-3.2-1b | qwen3-0.6b | gemma-3-1b | tiny, small (tests)
  std::string output;
  std::string widths = "int8";  // int8 | stories3m
  double entropy_bits = 6.0;    // int8: target order-0 entropy of the per-row INT8 codes
  uint64_t seed = 1;
  int threads = 2;
};

// The groups of rows `--widths stories3m` splits a matrix of role `role` and `rows` rows into (the
// token matrices; an untied output takes the embedding's profile): rows per group (RowsPerGroup),
// and per group, in row order, its width and code entropy. Empty (group_rows 0) for other roles.
struct GroupProfile {
  size_t group_rows = 0;
  std::vector<int32_t> bits;
  std::vector<double> entropy;
};
GroupProfile SynthGroupProfile(std::string_view role, size_t rows);

std::vector<std::string> SynthShapes();
Status Synthesize(const SynthOptions& o);

// The clipping K (in standard deviations) whose per-row codes of `width` bits (step: max|row| to
// the largest level; 8: INT8) have `bits` of entropy, on uniform levels or (4..7 bits,
// level_shape > 0) on the non-uniform levels LevelTable(width, level_shape).
double ClipForEntropy(double bits, int width = 8, double level_shape = 0);

}  // namespace dcomp::packer
