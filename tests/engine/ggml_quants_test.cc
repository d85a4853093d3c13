// ggml's quantized types against their published block layouts. Each case builds blocks element
// by element from the layout's description (where element e's code bits, scale and min live) and
// checks that the dequantizer returns scale * code - min for every element; the loop-structured
// dequantizers in the engine are written from the ggml reference loops, so the two formulations
// agree only if both read the layout right. The real files (llama.cpp's quantizations of
// stories3M) are checked against llama.cpp's own perplexities in reference_test.cc.
#include "engine/ggml_quants.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

namespace dcomp {
namespace {

uint16_t HalfOf(float f) {  // exact for the values used here (small dyadic rationals)
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const int exp = static_cast<int>((x >> 23) & 0xFF) - 127 + 15;
  EXPECT_GT(exp, 0);
  EXPECT_EQ(x & 0x1FFF, 0u);
  return static_cast<uint16_t>(((x >> 16) & 0x8000) | (exp << 10) | ((x >> 13) & 0x3FF));
}

void PutHalf(uint8_t* p, float f) {
  const uint16_t h = HalfOf(f);
  std::memcpy(p, &h, 2);
}

void SetBits(uint8_t* p, int bit_offset, int nbits, int value) {
  for (int k = 0; k < nbits; ++k) {
    const int b = bit_offset + k;
    p[b / 8] = static_cast<uint8_t>((p[b / 8] & ~(1 << (b % 8))) | (((value >> k) & 1) << (b % 8)));
  }
}

// One block of a type and the value each element must dequantize to.
struct Built {
  std::vector<uint8_t> bytes;
  std::vector<float> expect;
};

class LayoutTest : public ::testing::Test {
 protected:
  std::mt19937 rng_{7};
  int Rand(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }
  // d values are powers of two times small integers so that f16 holds them exactly.
  float RandScale() { return static_cast<float>(Rand(1, 15)) / 256.0f; }

  void Check(GgmlType type, const Built& b) {
    std::vector<float> y(b.expect.size());
    Status s = GgmlToF32(static_cast<uint32_t>(type), b.bytes.data(),
                         static_cast<int64_t>(y.size()), y.data());
    ASSERT_TRUE(s.ok()) << s.ToString();
    for (size_t e = 0; e < y.size(); ++e) {
      ASSERT_EQ(y[e], b.expect[e]) << GgmlTypeName(static_cast<uint32_t>(type)) << " element " << e;
    }
  }

  // Legacy 32-element blocks: element e's low 4 bits in byte e % 16 (low nibble for e < 16),
  // Q5's bit 4 in bit e of the 32-bit qh.
  Built Legacy(GgmlType type) {
    const bool has_min = type == GgmlType::kQ4_1 || type == GgmlType::kQ5_1;
    const bool five = type == GgmlType::kQ5_0 || type == GgmlType::kQ5_1;
    const bool nl = type == GgmlType::kIQ4_NL;
    GgmlBlock blk;
    EXPECT_TRUE(GgmlReadableBlock(static_cast<uint32_t>(type), &blk));
    Built b{std::vector<uint8_t>(blk.bytes), std::vector<float>(32)};
    const float d = RandScale(), m = has_min ? -RandScale() : 0.0f;
    PutHalf(&b.bytes[0], d);
    if (has_min) PutHalf(&b.bytes[2], m);
    const int qh = has_min ? 4 : 2, qs = qh + (five ? 4 : 0);
    for (int e = 0; e < 32; ++e) {
      const int code = Rand(0, five ? 31 : 15);
      SetBits(&b.bytes[static_cast<size_t>(qs)], 8 * (e % 16) + 4 * (e / 16), 4, code & 15);
      if (five) SetBits(&b.bytes[static_cast<size_t>(qh)], e, 1, code >> 4);
      const int offset = has_min || nl ? 0 : (five ? 16 : 8);
      const float level = static_cast<float>(nl ? kIq4NlValues[code] : code - offset);
      b.expect[static_cast<size_t>(e)] = level * d + m;
    }
    return b;
  }
};

TEST_F(LayoutTest, LegacyBlocks) {
  for (GgmlType t :
       {GgmlType::kQ4_0, GgmlType::kQ4_1, GgmlType::kQ5_0, GgmlType::kQ5_1, GgmlType::kIQ4_NL}) {
    for (int rep = 0; rep < 20; ++rep) Check(t, Legacy(t));
  }
}

// Q2_K {scales[16], qs[64], d, dmin}: element e is in sub-block e / 16 (scale = low nibble, min =
// high nibble of scales[e / 16]); its 2 bits are qs[32 * (e / 128) + e % 32] >> 2 * ((e % 128) /
// 32).
TEST_F(LayoutTest, Q2_K) {
  for (int rep = 0; rep < 20; ++rep) {
    Built b{std::vector<uint8_t>(84), std::vector<float>(256)};
    const float d = RandScale(), dmin = RandScale();
    PutHalf(&b.bytes[80], d);
    PutHalf(&b.bytes[82], dmin);
    int sc[16], mn[16];
    for (int s = 0; s < 16; ++s) {
      sc[s] = Rand(0, 15);
      mn[s] = Rand(0, 15);
      b.bytes[static_cast<size_t>(s)] = static_cast<uint8_t>(sc[s] | (mn[s] << 4));
    }
    for (int e = 0; e < 256; ++e) {
      const int q = Rand(0, 3), s = e / 16;
      SetBits(&b.bytes[16 + 32 * (e / 128) + e % 32], 2 * ((e % 128) / 32), 2, q);
      b.expect[static_cast<size_t>(e)] =
          d * static_cast<float>(sc[s]) * static_cast<float>(q) - dmin * static_cast<float>(mn[s]);
    }
    Check(GgmlType::kQ2_K, b);
  }
}

// Q3_K {hmask[32], qs[64], scales[12], d}: 2 low bits as in Q2_K; the third bit is bit e / 32 of
// hmask[e % 32], and a clear bit subtracts 4. Scale s (6 bits, minus 32): low 4 bits in nibble
// s / 8 of byte s % 8, top 2 bits at bit 2 * (s / 4) of byte 8 + s % 4.
TEST_F(LayoutTest, Q3_K) {
  for (int rep = 0; rep < 20; ++rep) {
    Built b{std::vector<uint8_t>(110), std::vector<float>(256)};
    const float d = RandScale();
    PutHalf(&b.bytes[108], d);
    int sc[16];
    for (int s = 0; s < 16; ++s) {
      sc[s] = Rand(0, 63);
      SetBits(&b.bytes[96 + s % 8], 4 * (s / 8), 4, sc[s] & 15);
      SetBits(&b.bytes[104 + s % 4], 2 * (s / 4), 2, sc[s] >> 4);
    }
    for (int e = 0; e < 256; ++e) {
      const int q = Rand(-4, 3), s = e / 16;
      SetBits(&b.bytes[32 + 32 * (e / 128) + e % 32], 2 * ((e % 128) / 32), 2, q & 3);
      SetBits(&b.bytes[static_cast<size_t>(e % 32)], e / 32, 1, q >= 0 ? 1 : 0);
      b.expect[static_cast<size_t>(e)] = d * static_cast<float>(sc[s] - 32) * static_cast<float>(q);
    }
    Check(GgmlType::kQ3_K, b);
  }
}

// Q4_K {d, dmin, scales[12], qs[128]} and Q5_K (qh[32] before qs): element e is in sub-block
// e / 32, its nibble is (e / 32) % 2 of qs[32 * (e / 64) + e % 32], Q5_K's fifth bit is bit e / 32
// of qh[e % 32]. 6-bit scale/min of sub-block j: j < 4 in the low 6 bits of bytes j / j + 4;
// j >= 4: low nibbles in byte j + 4 (scale low, min high), top 2 bits in bits 6-7 of bytes j - 4
// (scale) and j (min).
void KScaleMin(uint8_t* scales, int j, int sc, int m) {
  if (j < 4) {
    SetBits(&scales[j], 0, 6, sc);
    SetBits(&scales[j + 4], 0, 6, m);
  } else {
    SetBits(&scales[j + 4], 0, 4, sc & 15);
    SetBits(&scales[j + 4], 4, 4, m & 15);
    SetBits(&scales[j - 4], 6, 2, sc >> 4);
    SetBits(&scales[j], 6, 2, m >> 4);
  }
}

TEST_F(LayoutTest, Q4_KAndQ5_K) {
  for (bool five : {false, true}) {
    for (int rep = 0; rep < 20; ++rep) {
      Built b{std::vector<uint8_t>(five ? 176 : 144), std::vector<float>(256)};
      const float d = RandScale(), dmin = RandScale();
      PutHalf(&b.bytes[0], d);
      PutHalf(&b.bytes[2], dmin);
      int sc[8], mn[8];
      for (int j = 0; j < 8; ++j) {
        sc[j] = Rand(0, 63);
        mn[j] = Rand(0, 63);
        KScaleMin(&b.bytes[4], j, sc[j], mn[j]);
      }
      const size_t qs = five ? 48 : 16;
      for (int e = 0; e < 256; ++e) {
        const int q = Rand(0, five ? 31 : 15), j = e / 32;
        SetBits(&b.bytes[qs + static_cast<size_t>(32 * (e / 64) + e % 32)], 4 * (j % 2), 4, q & 15);
        if (five) SetBits(&b.bytes[16 + static_cast<size_t>(e % 32)], j, 1, q >> 4);
        b.expect[static_cast<size_t>(e)] = d * static_cast<float>(sc[j]) * static_cast<float>(q) -
                                           dmin * static_cast<float>(mn[j]);
      }
      Check(five ? GgmlType::kQ5_K : GgmlType::kQ4_K, b);
    }
  }
}

// Q6_K {ql[128], qh[64], scales[16] (int8), d}: per 128-element half n, quarter k = (e % 128) / 32,
// l = e % 32: low 4 bits in nibble k / 2 of ql[64n + l + 32 (k % 2)], top 2 bits at bit 2k of
// qh[32n + l]; code minus 32; scale scales[e / 16].
TEST_F(LayoutTest, Q6_K) {
  for (int rep = 0; rep < 20; ++rep) {
    Built b{std::vector<uint8_t>(210), std::vector<float>(256)};
    const float d = RandScale();
    PutHalf(&b.bytes[208], d);
    int sc[16];
    for (int s = 0; s < 16; ++s) {
      sc[s] = Rand(-128, 127);
      b.bytes[192 + static_cast<size_t>(s)] = static_cast<uint8_t>(static_cast<int8_t>(sc[s]));
    }
    for (int e = 0; e < 256; ++e) {
      const int q = Rand(0, 63), n = e / 128, k = (e % 128) / 32, l = e % 32;
      SetBits(&b.bytes[static_cast<size_t>(64 * n + l + 32 * (k % 2))], 4 * (k / 2), 4, q & 15);
      SetBits(&b.bytes[128 + static_cast<size_t>(32 * n + l)], 2 * k, 2, q >> 4);
      b.expect[static_cast<size_t>(e)] =
          d * static_cast<float>(sc[e / 16]) * static_cast<float>(q - 32);
    }
    Check(GgmlType::kQ6_K, b);
  }
}

// IQ4_XS {d, scales_h (u16), scales_l[4], qs[128]}: sub-block s = e / 32 with a 6-bit scale (minus
// 32): low nibble s % 2 of scales_l[s / 2], top 2 bits at bit 2s of scales_h; element e's 4-bit
// index in nibble (e % 32) / 16 of qs[16 s + e % 16], value kIq4NlValues[index].
TEST_F(LayoutTest, IQ4_XS) {
  for (int rep = 0; rep < 20; ++rep) {
    Built b{std::vector<uint8_t>(136), std::vector<float>(256)};
    const float d = RandScale();
    PutHalf(&b.bytes[0], d);
    int sc[8];
    for (int s = 0; s < 8; ++s) {
      sc[s] = Rand(0, 63);
      SetBits(&b.bytes[4 + static_cast<size_t>(s / 2)], 4 * (s % 2), 4, sc[s] & 15);
      SetBits(&b.bytes[2], 2 * s, 2, sc[s] >> 4);
    }
    for (int e = 0; e < 256; ++e) {
      const int q = Rand(0, 15), s = e / 32;
      SetBits(&b.bytes[8 + static_cast<size_t>(16 * s + e % 16)], 4 * ((e % 32) / 16), 4, q);
      b.expect[static_cast<size_t>(e)] =
          d * static_cast<float>(sc[s] - 32) * static_cast<float>(kIq4NlValues[q]);
    }
    Check(GgmlType::kIQ4_XS, b);
  }
}

TEST(GgmlTypesTest, RowLengthsAndUnknownTypesAreNamed) {
  auto r = GgmlRowBytes(static_cast<uint32_t>(GgmlType::kQ4_K), 192);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(
      r.status().message().find("row of 192 elements is not a multiple of Q4_K's block of 256"),
      std::string::npos)
      << r.status().ToString();
  EXPECT_EQ(*GgmlRowBytes(static_cast<uint32_t>(GgmlType::kQ6_K), 512), 420u);
  auto u = GgmlRowBytes(16, 256);
  ASSERT_FALSE(u.ok());
  EXPECT_EQ(u.status().code(), StatusCode::kUnimplemented);
  EXPECT_NE(u.status().message().find("IQ2_XXS"), std::string::npos) << u.status().ToString();
  EXPECT_EQ(GgmlTypeName(200), "ggml type 200");
  std::vector<float> y(32);
  std::vector<uint8_t> blk(18);
  Status s = GgmlToF32(static_cast<uint32_t>(GgmlType::kQ4_0), blk.data(), 31, y.data());
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
}

}  // namespace
}  // namespace dcomp
