#include "kernels/ops.h"

#include <algorithm>
#include <cmath>

namespace dcomp::kernels {

void RmsNorm(const float* x, const float* weight, size_t n, float eps, float* out) {
  // Sum of squares in double: RMSNorm feeds every layer, and the reference is float64.
  double ss = 0.0;
  for (size_t i = 0; i < n; ++i) ss += double{x[i]} * double{x[i]};
  const float inv = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(n) + eps));
  for (size_t i = 0; i < n; ++i) out[i] = x[i] * inv * weight[i];
}

void RopeInterleaved(float* v, size_t head_dim, const float* cos_sin) {
  for (size_t i = 0; i < head_dim / 2; ++i) {
    const float c = cos_sin[2 * i], s = cos_sin[2 * i + 1];
    const float a = v[2 * i], b = v[2 * i + 1];
    v[2 * i] = a * c - b * s;
    v[2 * i + 1] = a * s + b * c;
  }
}

void RopeNeox(float* v, size_t head_dim, const float* cos_sin) {
  const size_t half = head_dim / 2;
  for (size_t i = 0; i < half; ++i) {
    const float c = cos_sin[2 * i], s = cos_sin[2 * i + 1];
    const float a = v[i], b = v[i + half];
    v[i] = a * c - b * s;
    v[i + half] = a * s + b * c;
  }
}

void Softmax(float* x, size_t n) {
  if (n == 0) return;
  float mx = *std::max_element(x, x + n);
  double sum = 0.0;
  for (size_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - mx);
    sum += x[i];
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (size_t i = 0; i < n; ++i) x[i] *= inv;
}

void SiluMul(float* gate, const float* up, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    const float g = gate[i];
    gate[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

void GeluTanhMul(float* gate, const float* up, size_t n) {
  constexpr float kSqrt2OverPi = 0.7978845608028654f;
  for (size_t i = 0; i < n; ++i) {
    const float g = gate[i];
    gate[i] = 0.5f * g * (1.0f + std::tanh(kSqrt2OverPi * (g + 0.044715f * g * g * g))) * up[i];
  }
}

float DotF32(const float* a, const float* b, size_t n) {
  float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
  for (size_t i = 0; i < n; ++i) acc += a[i] * b[i];
  return acc;
}

void AxpyF32(float a, const float* x, float* y, size_t n) {
  for (size_t i = 0; i < n; ++i) y[i] += a * x[i];
}

void AttentionHeadQ8(const float* q, const int8_t* k, const float* k_scale, const int8_t* v,
                     const float* v_scale, size_t kv_stride, size_t scale_stride, size_t n_keys,
                     size_t head_dim, float scale, float* scores, float* out) {
  for (size_t j = 0; j < n_keys; ++j) {
    const int8_t* kj = k + j * kv_stride;
    float d = 0.0f;
#pragma omp simd reduction(+ : d)
    for (size_t i = 0; i < head_dim; ++i) d += q[i] * static_cast<float>(kj[i]);
    scores[j] = d * k_scale[j * scale_stride] * scale;
  }
  Softmax(scores, n_keys);
  for (size_t i = 0; i < head_dim; ++i) out[i] = 0.0f;
  for (size_t j = 0; j < n_keys; ++j) {
    const float p = scores[j] * v_scale[j * scale_stride];
    const int8_t* vj = v + j * kv_stride;
    for (size_t i = 0; i < head_dim; ++i) out[i] += p * static_cast<float>(vj[i]);
  }
}

float QuantizeHeadQ8(const float* x, size_t n, int8_t* q) {
  float m = 0.0f;
  for (size_t i = 0; i < n; ++i) m = std::max(m, std::fabs(x[i]));
  if (m == 0.0f) {
    for (size_t i = 0; i < n; ++i) q[i] = 0;
    return 0.0f;
  }
  const float inv = 127.0f / m;
  for (size_t i = 0; i < n; ++i) {
    q[i] = static_cast<int8_t>(std::clamp(std::nearbyint(x[i] * inv), -127.0f, 127.0f));
  }
  return m / 127.0f;
}

}  // namespace dcomp::kernels

namespace dcomp::kernels {

void AttentionHead(const float* q, const float* k, const float* v, size_t kv_stride, size_t n_keys,
                   size_t head_dim, float scale, float* scores, float* out) {
  for (size_t j = 0; j < n_keys; ++j) {
    const float* kj = k + j * kv_stride;
    float d = 0.0f;
#pragma omp simd reduction(+ : d)
    for (size_t i = 0; i < head_dim; ++i) d += q[i] * kj[i];
    scores[j] = d * scale;
  }
  Softmax(scores, n_keys);
  for (size_t i = 0; i < head_dim; ++i) out[i] = 0.0f;
  for (size_t j = 0; j < n_keys; ++j) {
    const float p = scores[j];
    const float* vj = v + j * kv_stride;
    for (size_t i = 0; i < head_dim; ++i) out[i] += p * vj[i];
  }
}

size_t HadamardBlock(size_t n) { return n & (~n + 1); }

void HadamardTransform(float* x, size_t n) {
  const size_t b = HadamardBlock(n);
  for (size_t o = 0; o < n; o += b) {
    float* v = x + o;
    // Stage h pairs entries h apart: (a, c) -> (a + c, a - c).
    for (size_t h = 1; h < b; h *= 2) {
      for (size_t i = 0; i < b; i += 2 * h) {
        for (size_t k = i; k < i + h; ++k) {
          const float a = v[k], c = v[k + h];
          v[k] = a + c;
          v[k + h] = a - c;
        }
      }
    }
  }
}

}  // namespace dcomp::kernels
