// Element-wise and small f32 operations of the transformer forward pass (RMSNorm, RoPE, softmax,
// SwiGLU). They are memory-light next to the matrix products, so one portable implementation,
// compiled with optimisation and auto-vectorised, serves every CPU. All functions are pure: they
// touch only their arguments and are safe to call from any thread.
#pragma once

#include <cstddef>
#include <cstdint>

namespace dcomp::kernels {

// out[i] = x[i] / sqrt(mean(x^2) + eps) * weight[i]. `out` may alias `x`.
void RmsNorm(const float* x, const float* weight, size_t n, float eps, float* out);

// Rotary embedding of one head vector of `head_dim` at position `pos`. `cos_sin` holds, for this
// position, head_dim/2 pairs (cos, sin) of frequency i. Interleaved: pairs (2i, 2i+1) (llama2.c,
// GGUF llama). NeoX: pairs (i, i + head_dim/2) (qwen2).
void RopeInterleaved(float* v, size_t head_dim, const float* cos_sin);
void RopeNeox(float* v, size_t head_dim, const float* cos_sin);

// In-place softmax over x[0..n). Uses the max for stability.
void Softmax(float* x, size_t n);

// gate[i] = silu(gate[i]) * up[i].
void SiluMul(float* gate, const float* up, size_t n);
// gate[i] = gelu(gate[i]) * up[i], GELU in its tanh approximation (GeGLU: Gemma).
void GeluTanhMul(float* gate, const float* up, size_t n);

float DotF32(const float* a, const float* b, size_t n);

// One attention head for one query: scores[j] = scale * q.k_j for j < n_keys (keys `kv_stride`
// floats apart), softmax, out = sum_j p_j v_j. `scores` has room for n_keys floats.
void AttentionHead(const float* q, const float* k, const float* v, size_t kv_stride, size_t n_keys,
                   size_t head_dim, float scale, float* scores, float* out);
// The same over an 8-bit cache: key j is k[j * kv_stride + i] * k_scale[j * scale_stride] (one
// scale per head and position), values alike.
void AttentionHeadQ8(const float* q, const int8_t* k, const float* k_scale, const int8_t* v,
                     const float* v_scale, size_t kv_stride, size_t scale_stride, size_t n_keys,
                     size_t head_dim, float scale, float* scores, float* out);
// q[i] = round(x[i] / s) with s = max |x| / 127 (0 when x is all zeros); returns s.
float QuantizeHeadQ8(const float* x, size_t n, int8_t* q);
// y += a * x.
void AxpyF32(float a, const float* x, float* y, size_t n);

// The Hadamard transform of a matrix input (ModelConfig::hadamard_inputs): each consecutive block
// of HadamardBlock(n) entries of x is multiplied by the unnormalised Sylvester-Hadamard matrix of
// that order (entries +-1; H * H = block * I), in place. Additions and subtractions only, in a
// fixed order: every CPU computes the same floats. A matrix W reading the transformed input holds
// W * H / block, so that its product is W's.
void HadamardTransform(float* x, size_t n);
// The largest power of two dividing n (n > 0): the transform's block. 1 for odd n.
size_t HadamardBlock(size_t n);

}  // namespace dcomp::kernels
