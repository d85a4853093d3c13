#include "storage/codec.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>

#include "base/packed_codes.h"
#include "storage/crc32c.h"
#include "storage/rans.h"
#include "tests/util/weight_codes.h"

namespace dcomp::storage {
namespace {

using testing::GaussianCodes;

TEST(Crc32cTest, KnownVectors) {
  const std::string s = "123456789";
  EXPECT_EQ(Crc32c(s.data(), s.size()), 0xE3069283u);
  EXPECT_EQ(Crc32cPortable(s.data(), s.size()), 0xE3069283u);
  EXPECT_EQ(Crc32c(nullptr, 0), 0u);
  std::vector<uint8_t> zeros(32, 0);
  EXPECT_EQ(Crc32c(zeros.data(), zeros.size()), 0x8A9136AAu);  // RFC 3720 B.4
}

TEST(Crc32cTest, HardwareMatchesPortableAndExtends) {
  auto v = GaussianCodes(10007, 30, 1);
  for (size_t n : {0, 1, 7, 8, 9, 63, 64, 65, 1000, 10007}) {
    EXPECT_EQ(Crc32c(v.data(), n), Crc32cPortable(v.data(), n)) << n;
  }
  EXPECT_EQ(Crc32c(v.data() + 100, 900, Crc32c(v.data(), 100)), Crc32c(v.data(), 1000));
}

// The hardware path runs three chains over pieces of 3 x 4096 and 3 x 256 bytes and joins them:
// lengths around those pieces, at every alignment, and extension across their boundaries.
TEST(Crc32cTest, ThreeChainsMatchPortableAroundPieceSizes) {
  auto v = GaussianCodes(3 * 12288 + 2010, 60, 2);
  for (size_t n : {767, 768, 769, 775, 1536, 12287, 12288, 12289, 12288 + 768 + 9, 24576 + 3 * 768,
                   3 * 12288 + 1999}) {
    for (size_t off : {0, 1, 3, 7}) {
      ASSERT_LE(off + n, v.size());
      EXPECT_EQ(Crc32c(v.data() + off, n), Crc32cPortable(v.data() + off, n)) << n << " @" << off;
    }
  }
  for (size_t cut : {1, 768, 5000, 12288, 20000}) {
    const size_t n = 3 * 12288 + 1999;
    EXPECT_EQ(Crc32c(v.data() + cut, n - cut, Crc32c(v.data(), cut)), Crc32cPortable(v.data(), n))
        << cut;
  }
  const std::vector<uint8_t> zeros(3 * 4096, 0);  // a piece of zeros: only the join shifts
  EXPECT_EQ(Crc32c(zeros.data(), zeros.size(), 0x12345678u),
            Crc32cPortable(zeros.data(), zeros.size(), 0x12345678u));
}

void ExpectRoundTrip(const std::vector<uint8_t>& in) {
  std::vector<uint8_t> enc;
  RansEncode(in, &enc);
  std::vector<uint8_t> out(in.size(), 0xAA), out2(in.size(), 0x55);
  ASSERT_TRUE(RansDecode(enc, out).ok()) << in.size();
  ASSERT_TRUE(RansDecodePortable(enc, out2).ok()) << in.size();
  EXPECT_EQ(out, in) << in.size();
  EXPECT_EQ(out2, in) << in.size();
}

TEST(RansTest, RoundTripsEverySizeAroundTheLaneCount) {
  for (size_t n = 0; n <= 200; ++n) ExpectRoundTrip(GaussianCodes(n, 20, n));
  for (size_t n : {1023, 1024, 1025, 4095, 65536, 65537, 262144 + 17}) {
    ExpectRoundTrip(GaussianCodes(n, 25, n));
  }
}

TEST(RansTest, RoundTripsExtremeDistributions) {
  for (const auto& v : testing::ExtremeCodeSets()) ExpectRoundTrip(v);
}

TEST(RansTest, SizeIsCloseToTheEntropy) {
  auto v = GaussianCodes(1 << 18, 20, 5);
  std::vector<uint8_t> enc;
  RansEncode(v, &enc);
  const double ideal = Order0EntropyBits(v) * v.size() / 8;
  // Table, states and 12-bit frequency rounding cost well under 1%.
  EXPECT_LT(static_cast<double>(enc.size()), ideal * 1.01 + 600);
  EXPECT_GT(static_cast<double>(enc.size()), ideal);
}

// The codes of non-uniform levels are a few dozen byte values spread over all 256: the encoder
// writes layout 3, whose table codes an absent symbol in one bit, and the stream is shorter than in
// layout 2 by two bytes or more per level; dense codes keep layout 2's table.
TEST(RansTest, SparseAlphabetsGetTheShorterTable) {
  for (int bits : {4, 5, 6, 7}) {
    const auto v = testing::LevelCodes(16384, LevelTable(bits, 2.0), bits);
    std::vector<uint8_t> enc, layout2;
    RansEncode(v, &enc);
    RansEncodeLayout(v, 2, &layout2);
    EXPECT_EQ(enc[0], 3) << bits;
    // Two bytes or more per level magnitude (4 bits: 8 magnitudes; 7 bits: 64).
    EXPECT_GE(layout2.size(), enc.size() + 2 * LevelTable(bits, 2.0).size()) << bits;
    ExpectRoundTrip(v);
  }
  std::vector<uint8_t> enc;
  RansEncode(GaussianCodes(16384, 20, 5), &enc);
  EXPECT_EQ(enc[0], 2);
}

// Layout 3 codes a present symbol as its difference to the previous present one plus 2: one that
// comes out at 0 is malformed, as is a table that does not sum to 4096.
TEST(RansTest, MalformedSparseTablesAreRefused) {
  std::vector<uint8_t> out(1000);
  // Symbol 0 present (gamma(2) = 010) with frequency 0 + 0.
  const std::vector<uint8_t> zero = {3, 0b01000000, 0, 0, 0, 0};
  Status st = RansDecode(zero, out);
  EXPECT_EQ(st.code(), StatusCode::kDataLoss);
  EXPECT_NE(st.message().find("symbol 0 out of range"), std::string::npos) << st.message();
  // Every symbol absent (256 one-bits): the frequencies sum to 0.
  std::vector<uint8_t> empty(1 + 32 + 256, 0xFF);
  empty[0] = 3;
  st = RansDecode(empty, out);
  EXPECT_EQ(st.code(), StatusCode::kDataLoss);
  EXPECT_NE(st.message().find("sum to 0"), std::string::npos) << st.message();
}

TEST(RansTest, CorruptStreamsFailCleanly) {
  auto v = GaussianCodes(50000, 20, 11);
  std::vector<uint8_t> enc;
  RansEncode(v, &enc);
  std::vector<uint8_t> out(v.size());
  // Truncation anywhere is always detected.
  for (size_t cut = 0; cut < enc.size(); cut += 997) {
    std::span<const uint8_t> t(enc.data(), cut);
    EXPECT_FALSE(RansDecode(t, out).ok()) << cut;
    EXPECT_FALSE(RansDecodePortable(t, out).ok()) << cut;
  }
  // Wrong output size.
  std::vector<uint8_t> small(v.size() - 1), big(v.size() + 1);
  EXPECT_FALSE(RansDecode(enc, small).ok());
  EXPECT_FALSE(RansDecode(enc, big).ok());
  // Bit flips never crash; both decoders agree on the verdict and the bytes.
  std::mt19937 rng(4);
  for (int k = 0; k < 300; ++k) {
    auto bad = enc;
    bad[rng() % bad.size()] ^= static_cast<uint8_t>(1u << (rng() % 8));
    std::vector<uint8_t> a(v.size()), b(v.size());
    Status sa = RansDecode(bad, a), sb = RansDecodePortable(bad, b);
    EXPECT_EQ(sa.ok(), sb.ok());
    if (sa.ok()) {
      EXPECT_EQ(a, b);
    } else {
      EXPECT_EQ(sa.code(), StatusCode::kDataLoss) << sa.message();
    }
  }
  // Bad header tag, bad table.
  auto bad = enc;
  bad[0] = 9;
  EXPECT_NE(RansDecode(bad, out).message().find("layout 9"), std::string::npos);
  std::vector<uint8_t> zeros(64, 0);
  zeros[0] = 1;
  EXPECT_FALSE(RansDecode(zeros, out).ok());
}

TEST(CodecTest, AllCodecsRoundTripAndNameTheirErrors) {
  auto v = GaussianCodes(100000, 15, 2);
  BlockDecoder dec;
  for (Codec c : {Codec::kRaw, Codec::kZstd, Codec::kRans}) {
    std::vector<uint8_t> enc;
    ASSERT_TRUE(EncodeBlock(c, v, 3, &enc).ok());
    std::vector<uint8_t> out(v.size());
    ASSERT_TRUE(dec.Decode(c, enc, out).ok()) << CodecName(c);
    EXPECT_EQ(out, v) << CodecName(c);
    std::vector<uint8_t> wrong(v.size() + 3);
    Status s = dec.Decode(c, enc, wrong);
    EXPECT_EQ(s.code(), StatusCode::kDataLoss) << CodecName(c);
    if (c != Codec::kRaw) {
      std::span<const uint8_t> cut(enc.data(), enc.size() / 2);
      EXPECT_EQ(dec.Decode(c, cut, out).code(), StatusCode::kDataLoss) << CodecName(c);
    }
  }
  EXPECT_FALSE(ParseCodecName("lz4").ok());
  EXPECT_EQ(*ParseCodecName("rans"), Codec::kRans);
  std::vector<uint8_t> enc;
  EXPECT_EQ(EncodeBlock(Codec::kZstd, v, 99, &enc).code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace dcomp::storage
