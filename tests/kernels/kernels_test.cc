// Every kernel variant compiled in and supported by this CPU, against the scalar reference.
// Tolerances: int8 products are exact (integer accumulation, same final multiply) -> bit-identical;
// f32 products differ only in summation order -> relative 1e-5 of the sum of |terms|.
#include "kernels/kernels.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace dcomp::kernels {
namespace {

constexpr double kF32RelTol = 1e-5;

struct Q8Matrix {
  std::vector<int8_t> q;
  std::vector<float> scale;
  std::vector<int32_t> row_sum;
  Q8MatrixView view;
};

std::vector<float> RandomF32(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

Q8Matrix MakeQ8(size_t rows, size_t cols, uint32_t seed) {
  Q8Matrix m;
  std::vector<float> w = RandomF32(rows * cols, seed);
  const size_t stride = PaddedCols(cols);
  m.q.resize(rows * stride);
  m.scale.resize(rows);
  m.row_sum.resize(rows);
  QuantizeMatrixQ8(w.data(), rows, cols, m.q.data(), m.scale.data(), m.row_sum.data());
  // Extreme codes must work too: force some rows to +-127.
  if (rows > 1) {
    for (size_t c = 0; c < cols; ++c) {
      m.q[c] = 127;
      m.q[stride + c] = static_cast<int8_t>(c % 2 ? -127 : 127);
    }
    ComputeRowSums(m.q.data(), rows, stride, m.row_sum.data());
  }
  m.view = {m.q.data(), m.scale.data(), m.row_sum.data(), rows, cols, stride};
  return m;
}

class KernelVariantTest : public ::testing::TestWithParam<const KernelTable*> {};

TEST_P(KernelVariantTest, QuantizeRowMatchesReference) {
  const KernelTable& k = *GetParam();
  for (size_t n : {1u, 63u, 64u, 172u, 2048u}) {
    std::vector<float> x = RandomF32(n, 7 + static_cast<uint32_t>(n), 3.0f);
    const size_t p = PaddedCols(n);
    std::vector<int8_t> qa(p, 99), qb(p, 99);
    float sa, sb;
    k.quantize_row_q8(x.data(), n, p, qa.data(), &sa);
    RefKernels().quantize_row_q8(x.data(), n, p, qb.data(), &sb);
    EXPECT_EQ(qa, qb);
    EXPECT_EQ(sa, sb);
    for (size_t i = n; i < p; ++i) EXPECT_EQ(qa[i], 0);
    for (int8_t v : qa) EXPECT_GE(v, -127);
  }
  std::vector<float> zeros(64, 0.0f);
  std::vector<int8_t> q(64);
  float s = -1;
  k.quantize_row_q8(zeros.data(), 64, 64, q.data(), &s);
  EXPECT_EQ(s, 0.0f);
}

TEST_P(KernelVariantTest, GemvQ8IsBitExact) {
  const KernelTable& k = *GetParam();
  const std::pair<size_t, size_t> shapes[] = {{1, 64},   {3, 64},    {4, 172},    {7, 192},
                                              {64, 512}, {13, 2048}, {192, 4096}, {33, 5632}};
  for (auto [rows, cols] : shapes) {
    Q8Matrix m = MakeQ8(rows, cols, static_cast<uint32_t>(rows * 31 + cols));
    std::vector<float> x = RandomF32(cols, 5);
    std::vector<int8_t> xq(PaddedCols(cols));
    float xs;
    RefKernels().quantize_row_q8(x.data(), cols, xq.size(), xq.data(), &xs);
    std::vector<float> ya(rows, -1.0f), yb(rows, -2.0f);
    k.gemv_q8_q8(m.view, xq.data(), xs, ya.data(), 0, rows);
    RefKernels().gemv_q8_q8(m.view, xq.data(), xs, yb.data(), 0, rows);
    for (size_t r = 0; r < rows; ++r) {
      ASSERT_EQ(ya[r], yb[r]) << k.name << " rows=" << rows << " cols=" << cols << " r=" << r;
    }
    // A sub-range writes only its rows.
    if (rows >= 3) {
      std::vector<float> yc(rows, 42.0f);
      k.gemv_q8_q8(m.view, xq.data(), xs, yc.data(), 1, rows - 1);
      EXPECT_EQ(yc[0], 42.0f);
      EXPECT_EQ(yc[rows - 1], 42.0f);
      for (size_t r = 1; r + 1 < rows; ++r) EXPECT_EQ(yc[r], yb[r]);
    }
  }
}

TEST_P(KernelVariantTest, RowSumsMatchReferenceAndFindMinus128) {
  const KernelTable& k = *GetParam();
  for (auto [rows, cols] : {std::pair<size_t, size_t>{1, 64}, {5, 172}, {33, 5632}, {64, 2048}}) {
    Q8Matrix m = MakeQ8(rows, cols, static_cast<uint32_t>(rows + cols));
    const size_t stride = PaddedCols(cols);
    std::vector<int32_t> a(rows, -1), b(rows, -2);
    EXPECT_TRUE(k.row_sums_q8(m.q.data(), rows, stride, a.data())) << k.name;
    EXPECT_TRUE(RefKernels().row_sums_q8(m.q.data(), rows, stride, b.data()));
    EXPECT_EQ(a, b) << k.name << " rows=" << rows << " cols=" << cols;
    EXPECT_EQ(a, m.row_sum) << k.name;
    // One -128 anywhere is reported.
    for (size_t at : {size_t{0}, rows * stride / 2, rows * stride - 1}) {
      std::vector<int8_t> q = m.q;
      q[at] = -128;
      EXPECT_FALSE(k.row_sums_q8(q.data(), rows, stride, a.data())) << k.name << " at " << at;
    }
  }
}

TEST_P(KernelVariantTest, GemmQ8IsBitExact) {
  const KernelTable& k = *GetParam();
  for (size_t n_tok : {1u, 2u, 4u, 5u, 9u}) {
    for (auto [rows, cols] : {std::pair<size_t, size_t>{6, 64}, {17, 172}, {32, 512}}) {
      Q8Matrix m = MakeQ8(rows, cols, static_cast<uint32_t>(rows + cols + n_tok));
      const size_t p = PaddedCols(cols);
      std::vector<int8_t> xq(n_tok * p);
      std::vector<float> xs(n_tok);
      for (size_t t = 0; t < n_tok; ++t) {
        std::vector<float> x = RandomF32(cols, static_cast<uint32_t>(100 + t), 2.0f);
        RefKernels().quantize_row_q8(x.data(), cols, p, xq.data() + t * p, &xs[t]);
      }
      const size_t ys = rows + 3;  // output stride larger than rows
      std::vector<float> ya(n_tok * ys, -1.0f), yb(n_tok * ys, -1.0f);
      k.gemm_q8_q8(m.view, xq.data(), p, xs.data(), n_tok, ya.data(), ys, 0, rows);
      RefKernels().gemm_q8_q8(m.view, xq.data(), p, xs.data(), n_tok, yb.data(), ys, 0, rows);
      ASSERT_EQ(ya, yb) << k.name << " n_tok=" << n_tok << " rows=" << rows;
    }
  }
}

// Codes of `bits` bits (extremes included), packed; the same codes as an INT8 matrix.
struct PackedPair {
  Q8Matrix q8;
  std::vector<uint8_t> packed;
  PackedMatrixView view;
};

PackedPair MakePacked(size_t rows, size_t cols, int bits, uint32_t seed) {
  PackedPair p;
  Q8Matrix& m = p.q8;
  const size_t stride = PaddedCols(cols);
  std::mt19937 rng(seed);
  const int lim = MaxCode(bits);
  std::uniform_int_distribution<int> d(MinCode(bits), lim);  // -2^(bits-1) included
  m.q.assign(rows * stride, 0);
  for (size_t r = 0; r < rows; ++r) {
    for (size_t c = 0; c < cols; ++c) {
      const int v = r == 0 ? lim : r == 1 ? (c % 2 ? MinCode(bits) : lim) : d(rng);
      m.q[r * stride + c] = static_cast<int8_t>(v);
    }
  }
  m.scale = RandomF32(rows, seed + 1);
  m.row_sum.resize(rows);
  ComputeRowSums(m.q.data(), rows, stride, m.row_sum.data());
  m.view = {m.q.data(), m.scale.data(), m.row_sum.data(), rows, cols, stride};
  p.packed.resize(rows * PackedRowBytes(cols, bits));
  EXPECT_EQ(PackRows(m.q.data(), rows, cols, stride, bits, p.packed.data()), rows);
  p.view = {p.packed.data(), m.scale.data(), rows, cols, PackedRowBytes(cols, bits), bits};
  return p;
}

TEST(PackedLayoutTest, RoundTripsAndRejectsWhatDoesNotFit) {
  for (int bits = kMinPackedBits; bits <= kMaxPackedBits; ++bits) {
    for (size_t cols : {size_t{64}, size_t{172}, size_t{2048}}) {
      PackedPair p = MakePacked(5, cols, bits, static_cast<uint32_t>(bits * 1000 + cols));
      EXPECT_EQ(p.packed.size(), 5 * PaddedCols(cols) / 8 * static_cast<size_t>(bits));
      std::vector<int8_t> back(5 * PaddedCols(cols), 0);  // padding is left alone
      UnpackRows(p.packed.data(), 5, cols, bits, back.data(), PaddedCols(cols));
      EXPECT_EQ(back, p.q8.q) << bits << " bits, " << cols << " cols";
      // A code one past the width is refused, naming its row.
      std::vector<int8_t> q = p.q8.q;
      q[3 * PaddedCols(cols) + cols - 1] = static_cast<int8_t>(MinCode(bits) - 1);
      std::vector<uint8_t> out(p.packed.size());
      EXPECT_EQ(PackRows(q.data(), 5, cols, PaddedCols(cols), bits, out.data()), 3u);
    }
  }
}

// The packed view's GEMM and GEMV (rows 1.., as the compute threads split them) equal the reference
// INT8 GEMM of `q` on n_tok random activation rows, the first with extreme values.
void ExpectPackedProductsEqualInt8(const KernelTable& k, const PackedMatrixView& v,
                                   const Q8MatrixView& q, size_t n_tok, uint32_t seed,
                                   const std::string& what) {
  const size_t rows = v.rows, cols = v.cols, pc = PaddedCols(cols);
  std::vector<int8_t> xq(n_tok * pc);
  std::vector<float> xs(n_tok);
  for (size_t t = 0; t < n_tok; ++t) {
    std::vector<float> x = RandomF32(cols, seed + 100 + static_cast<uint32_t>(t), 2.0f);
    RefKernels().quantize_row_q8(x.data(), cols, pc, xq.data() + t * pc, &xs[t]);
  }
  for (size_t c = 0; c < cols; ++c) xq[c] = static_cast<int8_t>(c % 3 ? 127 : -127);
  const size_t ys = rows + 5;
  std::vector<float> ya(n_tok * ys, -1.0f), yb(n_tok * ys, -1.0f), yc(n_tok * ys, -1.0f);
  k.gemm_packed_q8(v, xq.data(), pc, xs.data(), n_tok, ya.data(), ys, 1, rows);
  RefKernels().gemm_q8_q8(q, xq.data(), pc, xs.data(), n_tok, yb.data(), ys, 1, rows);
  ASSERT_EQ(ya, yb) << k.name << " gemm, " << what << ", n_tok=" << n_tok << " rows=" << rows
                    << " cols=" << cols;
  for (size_t t = 0; t < n_tok; ++t) {
    k.gemv_packed_q8(v, xq.data() + t * pc, xs[t], yc.data() + t * ys, 1, rows);
  }
  ASSERT_EQ(yc, yb) << k.name << " gemv, " << what << ", rows=" << rows;
}

TEST_P(KernelVariantTest, PackedProductsEqualTheInt8Products) {
  const KernelTable& k = *GetParam();
  for (int bits = kMinPackedBits; bits <= kMaxPackedBits; ++bits) {
    for (size_t n_tok : {1u, 3u, 4u, 9u}) {
      for (auto [rows, cols] : {std::pair<size_t, size_t>{7, 64}, {37, 172}, {40, 1024}}) {
        const uint32_t seed = static_cast<uint32_t>(bits * 7919 + rows + cols + n_tok);
        PackedPair p = MakePacked(rows, cols, bits, seed);
        ExpectPackedProductsEqualInt8(k, p.view, p.q8.view, n_tok, seed,
                                      std::to_string(bits) + " bits");
      }
    }
  }
}

// Row scales held in one byte (base/row_scales.h) give the products of the same scales in f32.
TEST_P(KernelVariantTest, PackedProductsWithCodedScalesEqualTheInt8Products) {
  const KernelTable& k = *GetParam();
  for (int bits : {4, 6, 7}) {
    for (size_t n_tok : {1u, 5u}) {
      const size_t rows = 37, cols = 172;
      const uint32_t seed = static_cast<uint32_t>(bits * 31 + n_tok);
      PackedPair p = MakePacked(rows, cols, bits, seed);
      std::mt19937 rng(seed);
      std::uniform_int_distribution<int> d(0, 254);
      for (size_t r = 0; r < rows; ++r) p.q8.scale[r] = ScaleGridValue(-250 + d(rng));
      p.q8.scale[4] = 0.0f;
      const RowScales coded = MakeRowScales(p.q8.scale);
      ASSERT_TRUE(coded.coded());
      PackedMatrixView v = p.view;
      v.scale = RowScaleView(coded);
      ExpectPackedProductsEqualInt8(k, v, p.q8.view, n_tok, seed, "coded scales");
    }
  }
}

// A strictly increasing table from `first` (0, or above 0 for a midrise table) with random steps,
// its largest entry at most 127.
std::vector<uint8_t> RandomLevels(int bits, uint32_t seed, int first = 0) {
  std::mt19937 rng(seed);
  const size_t n = size_t{1} << (bits - 1);
  std::vector<uint8_t> t(n, static_cast<uint8_t>(first));
  const int spare = 127 - first - static_cast<int>(n - 1);  // steps of 1 plus this much extra
  std::uniform_int_distribution<int> d(0, spare / static_cast<int>(n - 1) * 2);
  int v = first, left = spare;
  for (size_t k = 1; k < n; ++k) {
    const int extra = std::min(left, d(rng));
    left -= extra;
    v += 1 + extra;
    t[k] = static_cast<uint8_t>(v);
  }
  return t;
}

TEST(PackedLayoutTest, LevelTablesAreCheckedAndRoundTrip) {
  EXPECT_NE(CodeLevelsProblem(3, std::vector<uint8_t>{0, 1, 2, 3}), "");
  EXPECT_NE(CodeLevelsProblem(4, std::vector<uint8_t>{0, 1, 2}), "");
  EXPECT_EQ(CodeLevelsProblem(4, std::vector<uint8_t>{1, 2, 3, 4, 5, 6, 7, 8}), "") << "midrise";
  EXPECT_NE(CodeLevelsProblem(4, std::vector<uint8_t>{1, 2, 3, 4, 5, 6, 7, 8}, true), "");
  EXPECT_NE(CodeLevelsProblem(4, std::vector<uint8_t>{0, 2, 2, 4, 5, 6, 7, 8}), "");
  EXPECT_NE(CodeLevelsProblem(4, std::vector<uint8_t>{0, 1, 2, 3, 4, 5, 6, 128}), "");
  EXPECT_NE(CodeLevelsProblem(4, std::vector<uint8_t>{128, 129, 130, 131, 132, 133, 134, 135}), "");
  for (int bits = kMinPackedBits; bits <= kMaxPackedBits; ++bits) {
    const std::vector<uint8_t> sinh = SinhLevels(bits, 2.0);
    ASSERT_EQ(CodeLevelsProblem(bits, sinh), "") << bits;
    EXPECT_EQ(sinh.back(), 127);
    EXPECT_GT(sinh[0], 0) << "midrise";
    const std::vector<uint8_t> sinh0 = SinhLevels(bits, 2.0, /*zero_level=*/true);
    ASSERT_EQ(CodeLevelsProblem(bits, sinh0, true), "") << bits;
    EXPECT_EQ(sinh0.back(), 127);
    const int half = 1 << (bits - 1);
    // The packer's table (three slopes at 7 bits: knots found) and the code of each value: sign
    // and magnitude, "-0" standing for 0 where T[0] = 0.
    const std::vector<uint8_t> packer = LevelTable(bits, 2.0);
    ASSERT_EQ(CodeLevelsProblem(bits, packer), "") << bits;
    const CodeLevels lp = MakeCodeLevels(bits, packer);
    EXPECT_TRUE(lp.sign_magnitude);
    EXPECT_EQ(lp.value[5], packer[5]);
    EXPECT_EQ(lp.value[half + 5], -packer[5]);
    EXPECT_EQ(lp.u_of[static_cast<uint8_t>(-packer[half - 2])], half + half - 2);
    if (bits == 7) {
      EXPECT_EQ(packer, ThreeSlopeLevels(7, 21, 42));
      EXPECT_EQ(packer.back(), 126);
      EXPECT_EQ(lp.knot[0], 21);
      EXPECT_EQ(lp.knot[1], 42);
      EXPECT_EQ(lp.value[64], 0);
      EXPECT_EQ(lp.u_of[0], 0);
      ASSERT_EQ(CodeLevelsProblem(7, ThreeSlopeLevels(7, 15, 50)), "");  // T(63) = 124
      EXPECT_NE(CodeLevelsProblem(7, ThreeSlopeLevels(7, 9, 50)), "");   // T(63) = 130
      const CodeLevels other = MakeCodeLevels(7, ThreeSlopeLevels(7, 15, 50));
      EXPECT_EQ(other.knot[0], 15);
      EXPECT_EQ(other.knot[1], 50);
      // The bytes of format 7: -T[5] is u = 64 + 5 (nibble 5, bits 4-5 clear, top bit set), T[63]
      // is u = 63 (nibble 15, bits 4-5 set, top bit clear).
      std::vector<int8_t> row(64, 0);
      row[0] = static_cast<int8_t>(-packer[5]);
      row[9] = static_cast<int8_t>(packer[63]);
      std::vector<uint8_t> chunk(PackedRowBytes(64, 7));
      ASSERT_EQ(PackRows(row.data(), 1, 64, 64, 7, chunk.data(), &lp), 1u);
      EXPECT_EQ(chunk[0] & 15, 5);
      EXPECT_EQ(chunk[32] & 3, 0);
      EXPECT_EQ(chunk[48] & 1, 1);
      EXPECT_EQ(chunk[9] & 15, 15);
      EXPECT_EQ(chunk[32 + 9] & 3, 3);
      EXPECT_EQ((chunk[48 + 1] >> 1) & 1, 0);
      EXPECT_EQ(chunk[48 + 2], 0) << "padding and zeros are u = 0";
    } else {
      // Midrise (format 9): every code a level, none of them 0; -T[0] is u = 2^(bits-1).
      EXPECT_EQ(packer, sinh);
      EXPECT_EQ(lp.knot[0], 0);
      EXPECT_EQ(lp.value[0], packer[0]);
      EXPECT_EQ(lp.value[half], -packer[0]);
      EXPECT_EQ(lp.u_of[0], -1) << "0 is not a level";
      EXPECT_FALSE(CodesFit(std::vector<int8_t>{0}.data(), 1, bits, &lp));
      // The bytes of format 9 at 6 bits: -T[5] is u = 32 + 5 = 37 (nibble 5, bits 4-5 = 2);
      // padding past the row's 40 values is u = 0.
      std::vector<int8_t> row(40, static_cast<int8_t>(packer[1]));
      row[0] = static_cast<int8_t>(-packer[5]);
      std::vector<uint8_t> chunk(PackedRowBytes(40, bits));
      ASSERT_EQ(PackRows(row.data(), 1, 40, 40, bits, chunk.data(), &lp), 1u);
      std::vector<uint8_t> u(64);
      UnpackPackedChunk(chunk.data(), bits, u.data());
      EXPECT_EQ(u[0], half + 5);
      EXPECT_EQ(u[39], 1);
      EXPECT_EQ(u[40], 0);
      EXPECT_EQ(u[63], 0);
      // Offset codes (4-6 bits of formats 5 to 8): c = u - 2^(bits-1), and c = -2^(bits-1) is 0.
      const CodeLevels lo = MakeCodeLevels(bits, sinh0, /*sign_magnitude=*/false);
      EXPECT_FALSE(lo.sign_magnitude);
      EXPECT_EQ(lo.value[half + 5], sinh0[5]);
      EXPECT_EQ(lo.value[half - 5], -sinh0[5]);
      EXPECT_EQ(lo.value[0], 0);
      EXPECT_EQ(lo.value[half], 0);
      EXPECT_EQ(lo.u_of[0], half);
      if (bits == 6) {  // the bytes of formats 5 to 8: -T[5] is u = 32 - 5 = 27
        std::vector<int8_t> r6(64, 0);
        r6[0] = static_cast<int8_t>(-sinh0[5]);
        std::vector<uint8_t> c6(PackedRowBytes(64, 6));
        ASSERT_EQ(PackRows(r6.data(), 1, 64, 64, 6, c6.data(), &lo), 1u);
        EXPECT_EQ(c6[0] & 15, 27 & 15);
        EXPECT_EQ(c6[32] & 3, 27 >> 4);
      }
    }
    // Random tables round trip in every coding: with a zero level and midrise in sign and
    // magnitude, with a zero level as offset codes below 7 bits.
    for (int coding = 0; coding < (bits < 7 ? 3 : 2); ++coding) {
      const std::vector<uint8_t> t =
          RandomLevels(bits, static_cast<uint32_t>(bits + 10 * coding), coding == 1 ? 3 : 0);
      ASSERT_EQ(CodeLevelsProblem(bits, t, coding != 1), "") << bits;
      const CodeLevels l = MakeCodeLevels(bits, t, coding != 2);
      EXPECT_EQ(l.knot[0], 0) << "a random table is looked up";
      const size_t cols = 172, pc = PaddedCols(cols);
      std::mt19937 rng(static_cast<uint32_t>(bits) * 31 + static_cast<uint32_t>(coding));
      std::vector<int8_t> q(5 * pc, 0);
      for (size_t r = 0; r < 5; ++r) {
        for (size_t c = 0; c < cols; ++c) {
          const int k = static_cast<int>(rng() % t.size());
          q[r * pc + c] = static_cast<int8_t>(rng() % 2 ? t[static_cast<size_t>(k)]
                                                        : -t[static_cast<size_t>(k)]);
        }
      }
      for (size_t r = 0; r < 5; ++r) ASSERT_TRUE(CodesFit(q.data() + r * pc, cols, bits, &l));
      std::vector<uint8_t> packed(5 * PackedRowBytes(cols, bits));
      ASSERT_EQ(PackRows(q.data(), 5, cols, pc, bits, packed.data(), &l), 5u);
      std::vector<int8_t> back(5 * pc, 0);
      UnpackRows(packed.data(), 5, cols, bits, back.data(), pc, &l);
      EXPECT_EQ(back, q) << bits << " bits, coding " << coding;
      // A value that is not a level is refused, naming its row.
      int gap = 1;
      while (std::find(t.begin(), t.end(), gap) != t.end()) ++gap;
      q[2 * pc + 7] = static_cast<int8_t>(-gap);
      EXPECT_FALSE(CodesFit(q.data() + 2 * pc, cols, bits, &l));
      EXPECT_EQ(FirstMisfit(q.data() + 2 * pc, cols, bits, &l), 7u);
      EXPECT_EQ(PackRows(q.data(), 5, cols, pc, bits, packed.data(), &l), 2u);
    }
  }
}

// Every packed byte pattern (the code -2^(bits-1) included) with a level table: each variant's
// products equal the INT8 products of the values the reference unpacker gives.
TEST_P(KernelVariantTest, PackedProductsWithLevelsEqualTheInt8Products) {
  const KernelTable& k = *GetParam();
  for (int bits = kMinPackedBits; bits <= kMaxPackedBits; ++bits) {
    // In sign and magnitude: sinh (midrise below 7 bits), random with a zero level, random
    // midrise and, at 7 bits, three-slope tables (which x86 computes): the packer's, other knots,
    // and T(63) = 127, the largest. Below 7 bits, offset codes (formats 5 to 8): sinh and random
    // tables with a zero level.
    for (int table = 0; table < (bits == 7 ? 6 : 5); ++table) {
      const bool offset = bits < 7 && table >= 3;
      const CodeLevels l = MakeCodeLevels(
          bits,
          table == 0   ? SinhLevels(bits, 2.0)
          : table == 1 ? RandomLevels(bits, static_cast<uint32_t>(bits + 50))
          : table == 2 ? RandomLevels(bits, static_cast<uint32_t>(bits + 60), 2)
          : offset     ? (table == 3 ? SinhLevels(bits, 2.0, true)
                                     : RandomLevels(bits, static_cast<uint32_t>(bits + 70)))
          : table == 3 ? LevelTable(bits, 2.0)
          : table == 4 ? ThreeSlopeLevels(bits, 15, 50)
                       : ThreeSlopeLevels(bits, 21, 41),
          !offset);
      if (bits == 7 && table >= 3) {
        ASSERT_NE(l.knot[0], 0) << "table " << table << " is computed on x86";
      }
      for (size_t n_tok : {1u, 5u}) {
        for (auto [rows, cols] : {std::pair<size_t, size_t>{7, 64}, {37, 172}, {40, 1024}}) {
          const uint32_t seed = static_cast<uint32_t>(bits * 7919 + rows + cols + n_tok + table);
          std::mt19937 rng(seed);
          const size_t pc = PaddedCols(cols), rb = PackedRowBytes(cols, bits);
          std::vector<uint8_t> packed(rows * rb);
          for (uint8_t& b : packed) b = static_cast<uint8_t>(rng());
          // Row 0: every u 0 (offset codes: the code -2^(bits-1)). Row 1 in sign and magnitude:
          // every u 2^(bits-1) ("-0", or -T[0]): the top-bit plane set at odd widths, nibbles 8
          // at 4 bits, every 2-bit field 2 at 6.
          std::memset(packed.data(), 0, rb);
          if (l.sign_magnitude) {
            for (size_t c = 0; c < rb; c += 8 * static_cast<size_t>(bits)) {
              uint8_t* chunk = packed.data() + rb + c;
              std::memset(chunk, bits == 4 ? 0x88 : 0, 8 * static_cast<size_t>(bits));
              if (bits == 6) std::memset(chunk + 32, 0xAA, 16);
              if (bits % 2 == 1) std::memset(chunk + 8 * bits - 8, 0xFF, 8);
            }
          }
          Q8Matrix m;
          m.q.assign(rows * pc, 0);
          UnpackRows(packed.data(), rows, pc, bits, m.q.data(), pc, &l);
          m.scale = RandomF32(rows, seed + 1);
          m.row_sum.resize(rows);
          ComputeRowSums(m.q.data(), rows, pc, m.row_sum.data());
          m.view = {m.q.data(), m.scale.data(), m.row_sum.data(), rows, cols, pc};
          const PackedMatrixView v{packed.data(), m.scale.data(), rows, cols, rb, bits, &l};
          ExpectPackedProductsEqualInt8(
              k, v, m.view, n_tok, seed,
              std::to_string(bits) + " bits, table " + std::to_string(table));
        }
      }
    }
  }
}

TEST_P(KernelVariantTest, GemmF32WithinTolerance) {
  const KernelTable& k = *GetParam();
  for (size_t n_tok : {1u, 3u}) {
    for (auto [rows, cols] : {std::pair<size_t, size_t>{5, 7}, {8, 64}, {9, 172}, {4, 1000}}) {
      std::vector<float> w = RandomF32(rows * cols, 11);
      std::vector<float> x = RandomF32(n_tok * cols, 12);
      F32MatrixView v{w.data(), rows, cols, cols};
      std::vector<float> ya(n_tok * rows), yb(n_tok * rows);
      k.gemm_f32(v, x.data(), cols, n_tok, ya.data(), rows, 0, rows);
      RefKernels().gemm_f32(v, x.data(), cols, n_tok, yb.data(), rows, 0, rows);
      for (size_t t = 0; t < n_tok; ++t) {
        for (size_t r = 0; r < rows; ++r) {
          double mag = 0.0;
          for (size_t c = 0; c < cols; ++c) mag += std::fabs(w[r * cols + c] * x[t * cols + c]);
          ASSERT_NEAR(ya[t * rows + r], yb[t * rows + r], kF32RelTol * mag + 1e-30)
              << k.name << " rows=" << rows << " cols=" << cols;
        }
      }
    }
  }
}

TEST_P(KernelVariantTest, Q8ProductApproximatesF32) {
  // Sanity of the whole W8A8 scheme, not just agreement with ref: relative error of a 512-wide
  // dot product of Gaussian data stays small.
  const KernelTable& k = *GetParam();
  const size_t rows = 16, cols = 512;
  std::vector<float> w = RandomF32(rows * cols, 21), x = RandomF32(cols, 22);
  Q8Matrix m;
  m.q.resize(rows * cols);
  m.scale.resize(rows);
  m.row_sum.resize(rows);
  QuantizeMatrixQ8(w.data(), rows, cols, m.q.data(), m.scale.data(), m.row_sum.data());
  m.view = {m.q.data(), m.scale.data(), m.row_sum.data(), rows, cols, cols};
  std::vector<int8_t> xq(cols);
  float xs;
  k.quantize_row_q8(x.data(), cols, cols, xq.data(), &xs);
  std::vector<float> y(rows);
  k.gemv_q8_q8(m.view, xq.data(), xs, y.data(), 0, rows);
  double err = 0.0, norm = 0.0;
  for (size_t r = 0; r < rows; ++r) {
    double exact = 0.0;
    for (size_t c = 0; c < cols; ++c) exact += static_cast<double>(w[r * cols + c]) * x[c];
    err += (y[r] - exact) * (y[r] - exact);
    norm += exact * exact;
  }
  EXPECT_LT(std::sqrt(err / norm), 0.03);
}

INSTANTIATE_TEST_SUITE_P(AllVariants, KernelVariantTest,
                         ::testing::ValuesIn(AvailableKernelTables()),
                         [](const ::testing::TestParamInfo<const KernelTable*>& p) {
                           return std::string(p.param->name);
                         });

TEST(KernelDispatchTest, SelectsASupportedVariant) {
  const KernelTable& k = Kernels();
  bool found = false;
  for (const KernelTable* t : AvailableKernelTables()) found |= t == &k;
  EXPECT_TRUE(found);
  EXPECT_FALSE(KernelSelectionNote().empty());
  EXPECT_STREQ(AvailableKernelTables().front()->name, "ref");
}

}  // namespace
}  // namespace dcomp::kernels
