#include "engine/ggml_quants.h"

#include <cstring>
#include <utility>

#include "engine/model_file.h"

namespace dcomp {

const int8_t kIq4NlValues[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                 1,    13,   25,  38,  53,  69,  89,  113};

namespace {

constexpr int kQK = 32;    // elements per block of the legacy types
constexpr int kQKK = 256;  // elements per super-block of the K and IQ4_XS types

float Half(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return HalfToFloat(h);
}

// Legacy types: blocks of 32, the first 16 elements in the low nibbles of qs, the last 16 in the
// high nibbles; Q5 types take bit 4 of element j from bit j of the 32-bit qh.
void DequantQ4_0(const uint8_t* b, float* y) {  // {f16 d; u8 qs[16]}
  const float d = Half(b);
  const uint8_t* qs = b + 2;
  for (int j = 0; j < kQK / 2; ++j) {
    y[j] = static_cast<float>((qs[j] & 0x0F) - 8) * d;
    y[j + kQK / 2] = static_cast<float>((qs[j] >> 4) - 8) * d;
  }
}

void DequantQ4_1(const uint8_t* b, float* y) {  // {f16 d, m; u8 qs[16]}
  const float d = Half(b), m = Half(b + 2);
  const uint8_t* qs = b + 4;
  for (int j = 0; j < kQK / 2; ++j) {
    y[j] = static_cast<float>(qs[j] & 0x0F) * d + m;
    y[j + kQK / 2] = static_cast<float>(qs[j] >> 4) * d + m;
  }
}

// Q5_0 ({f16 d; u8 qh[4]; u8 qs[16]}: codes - 16) and Q5_1 ({f16 d, m; u8 qh[4]; u8 qs[16]}:
// codes, plus m). Q5_0 adds no term, as ggml (adding 0.0f would turn -0.0 into +0.0).
void DequantQ5(const uint8_t* b, bool has_min, float* y) {
  const float d = Half(b), m = has_min ? Half(b + 2) : 0.0f;
  const uint8_t* qh_bytes = b + (has_min ? 4 : 2);
  const uint8_t* qs = qh_bytes + 4;
  const int offset = has_min ? 0 : 16;
  uint32_t qh;
  std::memcpy(&qh, qh_bytes, 4);
  for (int j = 0; j < kQK / 2; ++j) {
    const int lo = (qs[j] & 0x0F) | static_cast<int>(((qh >> j) << 4) & 0x10);
    const int hi = (qs[j] >> 4) | static_cast<int>((qh >> (j + 12)) & 0x10);
    y[j] = static_cast<float>(lo - offset) * d;
    y[j + kQK / 2] = static_cast<float>(hi - offset) * d;
    if (has_min) {
      y[j] += m;
      y[j + kQK / 2] += m;
    }
  }
}

void DequantQ5_0(const uint8_t* b, float* y) { DequantQ5(b, false, y); }
void DequantQ5_1(const uint8_t* b, float* y) { DequantQ5(b, true, y); }

void DequantQ8_0(const uint8_t* b, float* y) {  // {f16 d; i8 qs[32]}
  const float d = Half(b);
  for (int j = 0; j < kQK; ++j) y[j] = static_cast<float>(static_cast<int8_t>(b[2 + j])) * d;
}

void DequantIq4Nl(const uint8_t* b, float* y) {  // {f16 d; u8 qs[16]}, levels kIq4NlValues
  const float d = Half(b);
  const uint8_t* qs = b + 2;
  for (int j = 0; j < kQK / 2; ++j) {
    y[j] = d * static_cast<float>(kIq4NlValues[qs[j] & 0x0F]);
    y[j + kQK / 2] = d * static_cast<float>(kIq4NlValues[qs[j] >> 4]);
  }
}

// Q2_K: {u8 scales[16]; u8 qs[64]; f16 d, dmin}. 16 sub-blocks of 16; scales[i] holds the 4-bit
// scale (low nibble) and 4-bit min (high nibble) of sub-block i. Each 128-element half reads 32
// bytes of qs four times, 2 bits per pass.
void DequantQ2_K(const uint8_t* b, float* y) {
  const uint8_t* scales = b;
  const uint8_t* q = b + 16;
  const float d = Half(b + 80), min = Half(b + 82);
  int is = 0;
  for (int n = 0; n < kQKK; n += 128) {
    for (int shift = 0; shift < 8; shift += 2) {
      for (int half = 0; half < 2; ++half) {
        const uint8_t sc = scales[is++];
        const float dl = d * static_cast<float>(sc & 0x0F), ml = min * static_cast<float>(sc >> 4);
        const uint8_t* qq = q + 16 * half;
        for (int l = 0; l < 16; ++l) *y++ = dl * static_cast<float>((qq[l] >> shift) & 3) - ml;
      }
    }
    q += 32;
  }
}

// Q3_K: {u8 hmask[32]; u8 qs[64]; u8 scales[12]; f16 d}. 16 sub-blocks of 16 with 6-bit scales
// (offset 32) packed as: low 4 bits of scale i in byte i % 8 (nibble i / 8), top 2 bits in byte
// 8 + i % 4 (bit pair i / 4). The 3rd bit of each code is in hmask, set meaning no -4.
void DequantQ3_K(const uint8_t* b, float* y) {
  const uint8_t* hm = b;
  const uint8_t* q = b + 32;
  const uint8_t* packed = b + 96;
  const float d_all = Half(b + 108);
  int8_t scales[16];
  for (int i = 0; i < 16; ++i) {
    const int low = (packed[i % 8] >> (4 * (i / 8))) & 0x0F;
    const int high = (packed[8 + i % 4] >> (2 * (i / 4))) & 3;
    scales[i] = static_cast<int8_t>(low | (high << 4));
  }
  int is = 0;
  uint8_t m = 1;
  for (int n = 0; n < kQKK; n += 128) {
    for (int shift = 0; shift < 8; shift += 2, m = static_cast<uint8_t>(m << 1)) {
      for (int half = 0; half < 2; ++half) {
        const float dl = d_all * static_cast<float>(scales[is++] - 32);
        const uint8_t* qq = q + 16 * half;
        const uint8_t* hh = hm + 16 * half;
        for (int l = 0; l < 16; ++l) {
          const int v = ((qq[l] >> shift) & 3) - ((hh[l] & m) ? 0 : 4);
          *y++ = dl * static_cast<float>(v);
        }
      }
    }
    q += 32;
  }
}

// The 6-bit scale and min of sub-block j (0..7) of Q4_K / Q5_K from their 12 packed bytes.
void ScaleMinK4(int j, const uint8_t* q, uint8_t* sc, uint8_t* m) {
  if (j < 4) {
    *sc = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *sc = static_cast<uint8_t>((q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4));
    *m = static_cast<uint8_t>((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

// Q4_K: {f16 d, dmin; u8 scales[12]; u8 qs[128]}; Q5_K adds u8 qh[32] before qs. 8 sub-blocks of
// 32: each 64 elements read 32 bytes of qs (low nibbles, then high nibbles); Q5_K's fifth bit of
// sub-block 2i / 2i+1 is bit 2i / 2i+1 of qh[l].
void DequantQ45_K(const uint8_t* b, bool five, float* y) {
  const float d = Half(b), min = Half(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* qh = b + 16;
  const uint8_t* ql = five ? b + 48 : b + 16;
  int is = 0;
  for (int j = 0; j < kQKK; j += 64, ql += 32, is += 2) {
    for (int part = 0; part < 2; ++part) {
      uint8_t sc, m;
      ScaleMinK4(is + part, scales, &sc, &m);
      const float dl = d * static_cast<float>(sc), ml = min * static_cast<float>(m);
      const uint8_t bit = static_cast<uint8_t>(1u << (is + part));
      for (int l = 0; l < 32; ++l) {
        int v = part == 0 ? (ql[l] & 0x0F) : (ql[l] >> 4);
        if (five && (qh[l] & bit)) v += 16;
        *y++ = dl * static_cast<float>(v) - ml;
      }
    }
  }
}

// Q6_K: {u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d}. Per 128 elements: ql 64 bytes (low
// nibbles of elements 0-63, high nibbles of 64-127), qh 32 bytes (2 bits per element, four
// 32-element quarters), scales of 16-element sub-blocks.
void DequantQ6_K(const uint8_t* b, float* y) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192);
  const float d = Half(b + 208);
  for (int n = 0; n < kQKK; n += 128, y += 128, ql += 64, qh += 32, sc += 8) {
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int q1 = ((ql[l] & 0x0F) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      y[l] = d * static_cast<float>(sc[is]) * static_cast<float>(q1);
      y[l + 32] = d * static_cast<float>(sc[is + 2]) * static_cast<float>(q2);
      y[l + 64] = d * static_cast<float>(sc[is + 4]) * static_cast<float>(q3);
      y[l + 96] = d * static_cast<float>(sc[is + 6]) * static_cast<float>(q4);
    }
  }
}

// IQ4_XS: {f16 d; u16 scales_h; u8 scales_l[4]; u8 qs[128]}: 8 sub-blocks of 32 with 6-bit
// scales (offset 32; low nibble in scales_l, top 2 bits in scales_h) over the IQ4_NL levels.
void DequantIq4Xs(const uint8_t* b, float* y) {
  const float d = Half(b);
  uint16_t scales_h;
  std::memcpy(&scales_h, b + 2, 2);
  const uint8_t* scales_l = b + 4;
  const uint8_t* qs = b + 8;
  for (int ib = 0; ib < kQKK / 32; ++ib, y += 32, qs += 16) {
    const int ls =
        ((scales_l[ib / 2] >> (4 * (ib % 2))) & 0x0F) | (((scales_h >> (2 * ib)) & 3) << 4);
    const float dl = d * static_cast<float>(ls - 32);
    for (int j = 0; j < 16; ++j) {
      y[j] = dl * static_cast<float>(kIq4NlValues[qs[j] & 0x0F]);
      y[j + 16] = dl * static_cast<float>(kIq4NlValues[qs[j] >> 4]);
    }
  }
}

struct TypeEntry {
  GgmlType type;
  const char* name;
  GgmlBlock block;
  void (*dequant)(const uint8_t* block, float* y);  // null for the float types
};

void DequantQ4_K(const uint8_t* b, float* y) { DequantQ45_K(b, false, y); }
void DequantQ5_K(const uint8_t* b, float* y) { DequantQ45_K(b, true, y); }

constexpr TypeEntry kReadable[] = {
    {GgmlType::kF32, "F32", {1, 4}, nullptr},
    {GgmlType::kF16, "F16", {1, 2}, nullptr},
    {GgmlType::kBF16, "BF16", {1, 2}, nullptr},
    {GgmlType::kQ4_0, "Q4_0", {kQK, 18}, DequantQ4_0},
    {GgmlType::kQ4_1, "Q4_1", {kQK, 20}, DequantQ4_1},
    {GgmlType::kQ5_0, "Q5_0", {kQK, 22}, DequantQ5_0},
    {GgmlType::kQ5_1, "Q5_1", {kQK, 24}, DequantQ5_1},
    {GgmlType::kQ8_0, "Q8_0", {kQK, 34}, DequantQ8_0},
    {GgmlType::kQ2_K, "Q2_K", {kQKK, 84}, DequantQ2_K},
    {GgmlType::kQ3_K, "Q3_K", {kQKK, 110}, DequantQ3_K},
    {GgmlType::kQ4_K, "Q4_K", {kQKK, 144}, DequantQ4_K},
    {GgmlType::kQ5_K, "Q5_K", {kQKK, 176}, DequantQ5_K},
    {GgmlType::kQ6_K, "Q6_K", {kQKK, 210}, DequantQ6_K},
    {GgmlType::kIQ4_NL, "IQ4_NL", {kQK, 18}, DequantIq4Nl},
    {GgmlType::kIQ4_XS, "IQ4_XS", {kQKK, 136}, DequantIq4Xs},
};

const TypeEntry* FindReadable(uint32_t type) {
  for (const TypeEntry& e : kReadable) {
    if (static_cast<uint32_t>(e.type) == type) return &e;
  }
  return nullptr;
}

}  // namespace

std::string GgmlTypeName(uint32_t type) {
  if (const TypeEntry* e = FindReadable(type)) return e->name;
  // Types dcomp cannot read, named so that an error says what the file holds.
  static const std::pair<uint32_t, const char*> kOthers[] = {
      {9, "Q8_1"},   {15, "Q8_K"},  {16, "IQ2_XXS"}, {17, "IQ2_XS"}, {18, "IQ3_XXS"}, {19, "IQ1_S"},
      {21, "IQ3_S"}, {22, "IQ2_S"}, {24, "I8"},      {25, "I16"},    {26, "I32"},     {27, "I64"},
      {28, "F64"},   {29, "IQ1_M"}, {34, "TQ1_0"},   {35, "TQ2_0"},  {39, "MXFP4"}};
  for (const auto& [id, name] : kOthers) {
    if (id == type) return name;
  }
  return "ggml type " + std::to_string(type);
}

bool GgmlReadableBlock(uint32_t type, GgmlBlock* block) {
  const TypeEntry* e = FindReadable(type);
  if (e == nullptr) return false;
  *block = e->block;
  return true;
}

std::string GgmlReadableTypeNames() {
  std::string s;
  for (const TypeEntry& e : kReadable) s += (s.empty() ? "" : ", ") + std::string(e.name);
  return s;
}

namespace {
Status Unreadable(uint32_t type) {
  return UnimplementedError("tensor type " + GgmlTypeName(type) +
                            " is not supported (supported: " + GgmlReadableTypeNames() + ")");
}
}  // namespace

Result<uint64_t> GgmlRowBytes(uint32_t type, int64_t ne0) {
  GgmlBlock b;
  if (!GgmlReadableBlock(type, &b)) {
    return Unreadable(type);
  }
  if (ne0 < 0 || ne0 % b.elements != 0) {
    return InvalidArgumentError("row of " + std::to_string(ne0) +
                                " elements is not a multiple of " + GgmlTypeName(type) +
                                "'s block of " + std::to_string(b.elements));
  }
  return static_cast<uint64_t>(ne0) / b.elements * b.bytes;
}

Status GgmlToF32(uint32_t type, const uint8_t* src, int64_t n, float* dst) {
  const TypeEntry* e = FindReadable(type);
  if (e == nullptr) {
    return Unreadable(type);
  }
  if (n < 0 || n % e->block.elements != 0) {
    return InvalidArgumentError(std::to_string(n) + " elements are not a whole number of " +
                                e->name + " blocks of " + std::to_string(e->block.elements));
  }
  switch (e->type) {
    case GgmlType::kF32: std::memcpy(dst, src, static_cast<size_t>(n) * 4); break;
    case GgmlType::kF16:
      for (int64_t i = 0; i < n; ++i) dst[i] = Half(src + 2 * i);
      break;
    case GgmlType::kBF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = BFloat16ToFloat(h);
      }
      break;
    default:
      for (int64_t k = 0; k < n / e->block.elements; ++k) {
        e->dequant(src + k * e->block.bytes, dst + k * e->block.elements);
      }
  }
  return Status::Ok();
}

}  // namespace dcomp
