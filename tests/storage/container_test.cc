// The .dcm container: round trip, and every kind of damaged file rejected with a precise error
// (truncated, bit-flipped, wrong magic, newer version, trailing bytes), never a crash. The golden
// files under tests/storage/golden/ were written by this test's toy container and are checked too,
// so that the format and its error messages stay stable.
#include "storage/container.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>

#include "base/file.h"
#include "base/packed_codes.h"
#include "base/row_scales.h"
#include "storage/crc32c.h"
#include "tests/util/test_paths.h"

namespace dcomp::storage {
namespace {

std::vector<uint8_t> ReadAll(const std::string& path) {
  auto s = ReadFileToString(path);
  EXPECT_TRUE(s.ok()) << path;
  return std::vector<uint8_t>(s->begin(), s->end());
}

// A toy container: an f32 vector (layer 0) and an 8x40 Q8_ROW matrix in 3 blocks of 3 rows
// (layer 0), then a second layer with one more matrix, coded with rans, zstd and raw; the config's
// hadamard_inputs mask is `hadamard`.
std::string WriteToy(const std::string& path, uint32_t hadamard = 0) {
  auto w = ContainerWriter::Create(path);
  EXPECT_TRUE(w.ok());
  std::mt19937 rng(1);
  auto add_q8 = [&](const std::string& name, int layer, int rows, int cols, int rpb, Codec c) {
    pb::Tensor t;
    t.set_name(name);
    t.set_type(pb::TENSOR_Q8_ROW);
    t.set_rows(rows);
    t.set_cols(cols);
    t.set_layer(layer);
    t.set_rows_per_block(rpb);
    (*w)->BeginTensor(t);
    std::vector<float> scales(rows, 0.01f);
    std::vector<uint8_t> enc;
    std::span<const uint8_t> sb(reinterpret_cast<const uint8_t*>(scales.data()), rows * 4);
    EXPECT_TRUE((*w)->AddBlock(Codec::kRaw, sb.size(), sb).ok());
    for (int r0 = 0; r0 < rows; r0 += rpb) {
      std::vector<uint8_t> codes(static_cast<size_t>(std::min(rpb, rows - r0) * cols));
      for (auto& b : codes) b = static_cast<uint8_t>(static_cast<int8_t>(rng() % 41) - 20);
      EXPECT_TRUE(EncodeBlock(c, codes, 3, &enc).ok());
      EXPECT_TRUE((*w)->AddBlock(c, codes.size(), enc).ok());
    }
  };
  pb::Tensor v;
  v.set_name("norm");
  v.set_type(pb::TENSOR_F32);
  v.set_rows(1);
  v.set_cols(16);
  v.set_layer(0);
  v.set_rows_per_block(1);
  (*w)->BeginTensor(v);
  std::vector<float> ones(16, 1.0f);
  EXPECT_TRUE(
      (*w)->AddBlock(Codec::kRaw, 64, {reinterpret_cast<const uint8_t*>(ones.data()), 64}).ok());
  add_q8("m0", 0, 8, 40, 3, Codec::kRans);
  add_q8("m1", 1, 5, 64, 5, Codec::kZstd);
  pb::Manifest m;
  m.mutable_config()->set_arch("toy");
  m.mutable_config()->set_hadamard_inputs(hadamard);
  EXPECT_TRUE((*w)->Finish(m).ok());
  return path;
}

std::string TempPath(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("dcomp_container_test_" + name)).string();
}

Status OpenAndDecodeAll(std::span<const uint8_t> bytes) {
  ASSIGN_OR_RETURN(auto r, ContainerReader::FromBytes(bytes, "f.dcm"));
  BlockDecoder dec;
  for (size_t b = 0; b < r->num_blocks(); ++b) {
    std::vector<uint8_t> out(r->block(b).raw_size());
    RETURN_IF_ERROR(r->ReadBlock(b, out, &dec));
  }
  return Status::Ok();
}

TEST(ContainerTest, RoundTripAndLayout) {
  const std::string p = WriteToy(TempPath("toy.dcm"));
  auto r = ContainerReader::Open(p);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ((*r)->manifest().tensors_size(), 3);
  EXPECT_EQ((*r)->num_blocks(), 1u + 4u + 2u);
  EXPECT_EQ((*r)->header().file_size % kDcmAlignment, 0u);
  // Layer ranges start on pages; every block is 64-byte aligned.
  EXPECT_EQ((*r)->block(0).offset() % kDcmAlignment, 0u);
  EXPECT_EQ((*r)->block(5).offset() % kDcmAlignment, 0u);
  for (size_t b = 0; b < (*r)->num_blocks(); ++b) EXPECT_EQ((*r)->block(b).offset() % 64, 0u);
  EXPECT_EQ((*r)->DescribeBlock(3), "block 3 (m0, codes rows 3..5)");
  EXPECT_EQ((*r)->DescribeBlock(1), "block 1 (m0, row scales)");
  EXPECT_TRUE(OpenAndDecodeAll(ReadAll(p)).ok());
  EXPECT_EQ((*r)->FindTensor("m1"), 2);
  EXPECT_EQ((*r)->FindTensor("nope"), -1);
}

TEST(ContainerTest, EveryTruncationIsRejectedAtOpen) {
  auto bytes = ReadAll(WriteToy(TempPath("trunc.dcm")));
  for (size_t cut = 0; cut < bytes.size(); cut += (cut < 256 ? 1 : 61)) {
    Status s = OpenAndDecodeAll(std::span<const uint8_t>(bytes.data(), cut));
    ASSERT_FALSE(s.ok()) << cut;
    EXPECT_NE(s.message().find("f.dcm"), std::string::npos) << s.message();
  }
  Status s = OpenAndDecodeAll(std::span<const uint8_t>(bytes.data(), bytes.size() - 4096));
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("(truncated)"), std::string::npos) << s.message();
  bytes.push_back(0);
  s = OpenAndDecodeAll(bytes);
  EXPECT_NE(s.message().find("trailing bytes"), std::string::npos) << s.message();
}

TEST(ContainerTest, EveryBitFlipIsDetected) {
  auto bytes = ReadAll(WriteToy(TempPath("flip.dcm")));
  auto r = ContainerReader::FromBytes(bytes);
  ASSERT_TRUE(r.ok());
  // Flip every bit of the header and manifest, and bits across every block.
  std::vector<size_t> positions;
  for (size_t i = 0; i < kDcmHeaderSize + (*r)->header().manifest_size; ++i) positions.push_back(i);
  for (size_t b = 0; b < (*r)->num_blocks(); ++b) {
    for (size_t k = 0; k < (*r)->block(b).stored_size(); k += 7) {
      positions.push_back((*r)->block(b).offset() + k);
    }
  }
  for (size_t pos : positions) {
    for (int bit = 0; bit < 8; ++bit) {
      auto bad = bytes;
      bad[pos] ^= static_cast<uint8_t>(1 << bit);
      Status s = OpenAndDecodeAll(bad);
      ASSERT_FALSE(s.ok()) << "flip at " << pos << " bit " << bit << " went unnoticed";
    }
  }
  // A flip inside a block names the block and the tensor.
  auto bad = bytes;
  bad[(*r)->block(3).offset() + 5] ^= 0x10;
  Status s = OpenAndDecodeAll(bad);
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("block 3 (m0, codes rows 3..5): CRC32C mismatch"), std::string::npos)
      << s.message();
}

TEST(ContainerTest, WrongMagicAndNewerVersion) {
  auto bytes = ReadAll(WriteToy(TempPath("ver.dcm")));
  auto bad = bytes;
  bad[0] = 'X';
  Status s = OpenAndDecodeAll(bad);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("not a .dcm file"), std::string::npos);
  // A newer major version with a valid CRC: a clear "upgrade" error, not "corrupt".
  bad = bytes;
  const uint16_t newer = kDcmVersionMajor + 1;
  std::memcpy(bad.data() + 8, &newer, 2);
  const uint32_t crc = Crc32c(bad.data(), 60);
  std::memcpy(bad.data() + 60, &crc, 4);
  s = OpenAndDecodeAll(bad);
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(
      s.message().find("format version " + std::to_string(newer) + ".0 is newer than this reader"),
      std::string::npos)
      << s.message();
  // A newer minor version is read (fields are only ever added within a major version).
  bad = bytes;
  const uint16_t minor = 7;
  std::memcpy(bad.data() + 10, &minor, 2);
  const uint32_t crc2 = Crc32c(bad.data(), 60);
  std::memcpy(bad.data() + 60, &crc2, 4);
  EXPECT_TRUE(OpenAndDecodeAll(bad).ok());
}

// Format 2: a 6-bit tensor with one packed block and one rans block. Both decode to the same
// codes; a packed block of the wrong size, a coded block whose codes exceed the width and an
// unknown width are each refused, naming the block.
struct PackedToy {
  std::vector<uint8_t> bytes;
  std::vector<int8_t> codes;  // 6 x 100, unpadded
};

// A 6 x 100 TENSOR_Q8_ROW tensor `name` of layer 0 in blocks of 3 rows, declaring `bits_field`.
pb::Tensor ToyTensor(const std::string& name, int bits_field) {
  pb::Tensor t;
  t.set_name(name);
  t.set_type(pb::TENSOR_Q8_ROW);
  t.set_rows(6);
  t.set_cols(100);
  t.set_layer(0);
  t.set_rows_per_block(3);
  t.set_bits(bits_field);
  return t;
}

PackedToy WritePackedToy(int bits_field, int coded_code_at_0 = 0, bool short_packed = false,
                         bool zero_code_in_row1 = false) {
  const std::string path = TempPath("packed_" + std::to_string(::getpid()) + ".dcm");
  auto w = ContainerWriter::Create(path);
  EXPECT_TRUE(w.ok());
  constexpr int kRows = 6, kCols = 100, kBits = 6;
  PackedToy toy;
  std::mt19937 rng(7);
  toy.codes.resize(kRows * kCols);
  for (auto& c : toy.codes) c = static_cast<int8_t>(static_cast<int>(rng() % 63) - 31);
  (*w)->BeginTensor(ToyTensor("p", bits_field));
  std::vector<float> scales(kRows, 0.5f);
  EXPECT_TRUE((*w)->AddBlock(Codec::kRaw, kRows * 4,
                             {reinterpret_cast<const uint8_t*>(scales.data()), kRows * 4})
                  .ok());
  std::vector<uint8_t> packed(3 * PackedRowBytes(kCols, kBits));
  EXPECT_EQ(PackRows(toy.codes.data(), 3, kCols, kCols, kBits, packed.data()), 3u);
  if (short_packed) packed.resize(packed.size() - 32);
  if (zero_code_in_row1) {  // code 0 of row 1 becomes u = 0 (invalid), under a valid CRC
    packed[PackedRowBytes(kCols, kBits)] &= 0xF0;
    packed[PackedRowBytes(kCols, kBits) + 32] &= 0xFC;
  }
  EXPECT_TRUE((*w)->AddBlock(Codec::kPacked, 3 * kCols, packed).ok());
  std::vector<uint8_t> coded(toy.codes.begin() + 3 * kCols, toy.codes.end()), enc;
  if (coded_code_at_0 != 0) coded[0] = static_cast<uint8_t>(static_cast<int8_t>(coded_code_at_0));
  EXPECT_TRUE(EncodeBlock(Codec::kRans, coded, 3, &enc).ok());
  EXPECT_TRUE((*w)->AddBlock(Codec::kRans, coded.size(), enc).ok());
  pb::Manifest m;
  m.mutable_config()->set_arch("toy");
  EXPECT_TRUE((*w)->Finish(m).ok());
  toy.bytes = ReadAll(path);
  std::filesystem::remove(path);
  return toy;
}

TEST(ContainerTest, PackedBlocksDecodeToTheirCodesAndDamageIsNamed) {
  PackedToy toy = WritePackedToy(6);
  EXPECT_EQ(toy.bytes[8], kDcmVersionMajor);
  auto r = ContainerReader::FromBytes(toy.bytes, "p.dcm");
  ASSERT_TRUE(r.ok()) << r.status().message();
  BlockDecoder dec;
  std::vector<int8_t> all;
  for (size_t b = 1; b < 3; ++b) {
    std::vector<uint8_t> out((*r)->block(b).raw_size());
    ASSERT_TRUE((*r)->ReadBlock(b, out, &dec).ok());
    all.insert(all.end(), out.begin(), out.end());
  }
  EXPECT_EQ(all, toy.codes);
  // Every packed byte is a valid code: u = 0 is code -32 at 6 bits (the quantizer never writes it,
  // but a reader decodes it the same in every tier).
  PackedToy zero = WritePackedToy(6, 0, false, true);
  auto rz = ContainerReader::FromBytes(zero.bytes, "z.dcm");
  ASSERT_TRUE(rz.ok());
  std::vector<uint8_t> out((*rz)->block(1).raw_size());
  ASSERT_TRUE((*rz)->ReadBlock(1, out, &dec).ok());
  EXPECT_EQ(static_cast<int8_t>(out[100]), -32);
  Status s;
  // An entropy-coded block holding a code wider than 6 bits.
  PackedToy wide = WritePackedToy(6, 40);
  auto rw = ContainerReader::FromBytes(wide.bytes, "w.dcm");
  ASSERT_TRUE(rw.ok());
  out.resize((*rw)->block(2).raw_size());
  s = (*rw)->ReadBlock(2, out, &dec);
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("block 2 (p, codes rows 3..5): code 40 exceeds the block's 6-bit "
                             "width (-32..31)"),
            std::string::npos)
      << s.message();
  // A packed block of the wrong size, and a width the reader does not know: refused at open.
  s = ContainerReader::FromBytes(WritePackedToy(6, 0, true).bytes, "s.dcm").status();
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("packed block 1 holds 256 bytes, expected 288 (6-bit rows)"),
            std::string::npos)
      << s.message();
  s = ContainerReader::FromBytes(WritePackedToy(9).bytes, "u.dcm").status();
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("tensor 0 (p): bits 9 is unknown to this reader (4..8)"),
            std::string::npos)
      << s.message();
}

// Ends a toy tensor of 6 rows: its row scales (f32 0.5, or the bytes of `scale_block`), rows 0..2
// as the given packed block, rows 3..5 as a rANS block of `coded`; then writes the file and
// returns its bytes.
std::vector<uint8_t> FinishToyTensor(ContainerWriter* w, const std::string& path, size_t cols,
                                     const std::vector<uint8_t>& packed,
                                     const std::vector<uint8_t>& coded,
                                     std::span<const uint8_t> scale_block = {}) {
  std::vector<float> scales(6, 0.5f);
  if (scale_block.empty()) {
    scale_block = {reinterpret_cast<const uint8_t*>(scales.data()), 24};
  }
  EXPECT_TRUE(w->AddBlock(Codec::kRaw, scale_block.size(), scale_block).ok());
  EXPECT_TRUE(w->AddBlock(Codec::kPacked, 3 * cols, packed).ok());
  std::vector<uint8_t> enc;
  EXPECT_TRUE(EncodeBlock(Codec::kRans, coded, 3, &enc).ok());
  EXPECT_TRUE(w->AddBlock(Codec::kRans, coded.size(), enc).ok());
  pb::Manifest m;
  m.mutable_config()->set_arch("toy");
  EXPECT_TRUE(w->Finish(m).ok());
  std::vector<uint8_t> bytes = ReadAll(path);
  std::filesystem::remove(path);
  return bytes;
}

// Format 4: a width per block of codes (Tensor.block_bits). Rows 0..2 packed at 5 bits, rows 3..5
// entropy-coded with codes of 4 bits (or `code_at_3x0` at row 3's first code).
std::vector<uint8_t> WriteBlockBitsToy(int bits_field, std::vector<int> block_bits,
                                       int code_at_3x0 = 0, std::vector<uint32_t> row_order = {}) {
  const std::string path = TempPath("block_bits_" + std::to_string(::getpid()) + ".dcm");
  auto w = ContainerWriter::Create(path);
  EXPECT_TRUE(w.ok());
  constexpr int kRows = 6, kCols = 100;
  std::mt19937 rng(11);
  std::vector<int8_t> codes(kRows * kCols);
  for (size_t i = 0; i < codes.size(); ++i) {
    codes[i] = static_cast<int8_t>(i < 3 * kCols ? static_cast<int>(rng() % 31) - 15
                                                 : static_cast<int>(rng() % 15) - 7);
  }
  if (code_at_3x0 != 0) codes[3 * kCols] = static_cast<int8_t>(code_at_3x0);
  pb::Tensor t = ToyTensor("g", bits_field);
  for (int b : block_bits) t.add_block_bits(b);
  for (uint32_t r : row_order) t.add_row_order(r);
  (*w)->BeginTensor(t);
  std::vector<uint8_t> packed(3 * PackedRowBytes(kCols, 5));
  EXPECT_EQ(PackRows(codes.data(), 3, kCols, kCols, 5, packed.data()), 3u);
  return FinishToyTensor(w->get(), path, kCols, packed, {codes.begin() + 3 * kCols, codes.end()});
}

TEST(ContainerTest, BlocksOfOneTensorHoldTheirOwnWidths) {
  const std::vector<uint8_t> ok = WriteBlockBitsToy(5, {5, 4});
  auto r = ContainerReader::FromBytes(ok, "g.dcm");
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ((*r)->CodeBits(0), 8);  // the row scales
  EXPECT_EQ((*r)->CodeBits(1), 5);
  EXPECT_EQ((*r)->CodeBits(2), 4);
  BlockDecoder dec;
  for (size_t b = 1; b < 3; ++b) {
    std::vector<uint8_t> out((*r)->block(b).raw_size());
    ASSERT_TRUE((*r)->ReadBlock(b, out, &dec).ok());
    for (uint8_t c : out) {
      EXPECT_LE(std::abs(static_cast<int8_t>(c)), b == 1 ? 15 : 7);
    }
  }
  // A code wider than its block's width (but not the tensor's) is DATA_LOSS naming the block.
  const std::vector<uint8_t> wide = WriteBlockBitsToy(5, {5, 4}, 9);
  auto rw = ContainerReader::FromBytes(wide, "w.dcm");
  ASSERT_TRUE(rw.ok());
  std::vector<uint8_t> out((*rw)->block(2).raw_size());
  Status s = (*rw)->ReadBlock(2, out, &dec);
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("block 2 (g, codes rows 3..5): code 9 exceeds the block's 4-bit "
                             "width (-8..7)"),
            std::string::npos)
      << s.message();
  // Inconsistent widths are refused at open, naming the tensor and the field.
  const std::pair<std::pair<int, std::vector<int>>, std::string> bad[] = {
      {{5, {5}}, "tensor 0 (g): 1 block_bits for 2 blocks of codes"},
      {{5, {5, 6}}, "tensor 0 (g): block_bits[1] is 6, expected 4..5 (the tensor's bits)"},
      {{5, {5, 3}}, "tensor 0 (g): block_bits[1] is 3, expected 4..5"},
      {{6, {5, 4}}, "tensor 0 (g): bits 6 but its widest block is 5 bits"},
      {{8, {5, 4}}, "tensor 0 (g): block_bits on a tensor without a packed width (bits 8)"},
      {{4, {4, 4}}, "packed block 1 holds 240 bytes, expected 192 (4-bit rows)"},
  };
  for (const auto& [fields, want] : bad) {
    s = ContainerReader::FromBytes(WriteBlockBitsToy(fields.first, fields.second), "b.dcm")
            .status();
    EXPECT_EQ(s.code(), StatusCode::kDataLoss) << want;
    EXPECT_NE(s.message().find(want), std::string::npos) << s.message();
  }
}

// Format 4: rows stored out of order (Tensor.row_order) must be a permutation of the rows.
TEST(ContainerTest, ARowOrderMustBeAPermutation) {
  EXPECT_TRUE(
      ContainerReader::FromBytes(WriteBlockBitsToy(5, {5, 4}, 0, {5, 0, 4, 1, 3, 2}), "o.dcm")
          .ok());
  const std::pair<std::vector<uint32_t>, std::string> bad[] = {
      {{5, 0, 4, 1, 3}, "tensor 0 (g): 5 row_order entries for 6 rows"},
      {{5, 0, 4, 1, 3, 6}, "tensor 0 (g): row_order[5] is 6, past the last row"},
      {{5, 0, 4, 1, 3, 0}, "tensor 0 (g): row_order[5] is 0, a row already placed"},
  };
  for (const auto& [order, want] : bad) {
    Status s = ContainerReader::FromBytes(WriteBlockBitsToy(5, {5, 4}, 0, order), "o.dcm").status();
    EXPECT_EQ(s.code(), StatusCode::kDataLoss) << want;
    EXPECT_NE(s.message().find(want), std::string::npos) << s.message();
  }
}

// With DCOMP_WRITE_FUZZ_SEED set, writes `bytes` to the container fuzzer's corpus as `name`.
void WriteFuzzSeedOnRequest(const std::vector<uint8_t>& bytes, const std::string& name) {
  if (std::getenv("DCOMP_WRITE_FUZZ_SEED") == nullptr) return;
  std::ofstream(testing::SourceDir() + "/tests/fuzz/corpus/fuzz_container/" + name,
                std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()),
             static_cast<std::streamsize>(bytes.size()));
}

// `bytes` with its header saying format `major` (the header CRC recomputed).
std::vector<uint8_t> WithMajorVersion(std::vector<uint8_t> bytes, uint16_t major) {
  std::memcpy(bytes.data() + 8, &major, 2);
  const uint32_t crc = Crc32c(bytes.data(), 60);
  std::memcpy(bytes.data() + 60, &crc, 4);
  return bytes;
}

TEST(ContainerTest, HadamardInputsNeedFormat8) {
  const std::vector<uint8_t> bytes = ReadAll(WriteToy(TempPath("hadamard.dcm"), 0b1101));
  ASSERT_GE(bytes[8], 8);
  auto r = ContainerReader::FromBytes(bytes, "h.dcm");
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ((*r)->manifest().config().hadamard_inputs(), 0b1101u);
  // A 7.x reader would ignore the field and compute wrong products: a 7.x file with it is damaged.
  Status s = ContainerReader::FromBytes(WithMajorVersion(bytes, 7), "h.dcm").status();
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("h.dcm: config hadamard_inputs in a format 7.x file"),
            std::string::npos)
      << s.message();
  EXPECT_TRUE(ContainerReader::FromBytes(
                  WithMajorVersion(ReadAll(WriteToy(TempPath("plain.dcm"))), 7), "p.dcm")
                  .ok());
}

// Format 5: non-uniform levels (Tensor.levels). Rows 0..2 packed at `kBits` bits (values on
// LevelTable(kBits, 2, zero_level), codes in sign and magnitude as format 9 holds them), rows 3..5
// rANS-coded values; `value_at_3x0` replaces row 3's first value; `tables` are the tensor's level
// tables.
std::vector<uint8_t> WriteLevelsToy(std::vector<std::pair<int, std::vector<uint8_t>>> tables,
                                    int value_at_3x0 = 0, std::vector<int8_t>* values = nullptr,
                                    int kBits = 6, bool zero_level = false) {
  const std::string path = TempPath("levels_" + std::to_string(::getpid()) + ".dcm");
  auto w = ContainerWriter::Create(path);
  EXPECT_TRUE(w.ok());
  constexpr int kRows = 6, kCols = 100;
  const std::vector<uint8_t> mag = LevelTable(kBits, 2.0, zero_level);
  const CodeLevels l = MakeCodeLevels(kBits, mag);
  std::mt19937 rng(5);
  std::vector<int8_t> v(kRows * kCols);
  for (auto& x : v) {
    const int k = static_cast<int>(rng() % mag.size());
    x = static_cast<int8_t>(rng() % 2 ? mag[static_cast<size_t>(k)] : -mag[static_cast<size_t>(k)]);
  }
  if (value_at_3x0 != 0) v[3 * kCols] = static_cast<int8_t>(value_at_3x0);
  if (values != nullptr) *values = v;
  pb::Tensor t = ToyTensor("l", kBits);
  for (const auto& [bits, m] : tables) {
    pb::CodeLevels* L = t.add_levels();
    L->set_bits(bits);
    L->set_magnitudes(std::string(m.begin(), m.end()));
  }
  (*w)->BeginTensor(t);
  std::vector<uint8_t> packed(3 * PackedRowBytes(kCols, kBits));
  EXPECT_EQ(PackRows(v.data(), 3, kCols, kCols, kBits, packed.data(), &l), 3u);
  return FinishToyTensor(w->get(), path, kCols, packed, {v.begin() + 3 * kCols, v.end()});
}

TEST(ContainerTest, NonUniformLevelsDecodeToTheirValuesAndBadTablesAreNamed) {
  const std::vector<uint8_t> sinh6 = SinhLevels(6, 2.0);  // midrise (format 9)
  std::vector<int8_t> values;
  const std::vector<uint8_t> ok = WriteLevelsToy({{6, sinh6}}, 0, &values);
  WriteFuzzSeedOnRequest(ok, "levels_v10.dcm");  // the fuzz corpus' format-10 seed
  auto r = ContainerReader::FromBytes(ok, "l.dcm");
  ASSERT_TRUE(r.ok()) << r.status().message();
  // Its entropy-coded block holds a sparse alphabet: rANS stream layout 3 (format 10).
  EXPECT_EQ(ok[(*r)->block(2).offset()], 3);
  ASSERT_NE((*r)->BlockLevels(1), nullptr);
  EXPECT_EQ((*r)->BlockLevels(0), nullptr);  // the row scales
  EXPECT_EQ((*r)->Levels(0, 5), nullptr);    // a width without a table
  BlockDecoder dec;
  // The values of a levels toy's blocks 1 (packed) and 2 (entropy-coded), in order.
  auto values_of = [&dec](const ContainerReader& reader) {
    std::vector<int8_t> all;
    for (size_t b = 1; b < 3; ++b) {
      std::vector<uint8_t> out(reader.block(b).raw_size());
      EXPECT_TRUE(reader.ReadBlock(b, out, &dec).ok()) << "block " << b;
      all.insert(all.end(), out.begin(), out.end());
    }
    return all;
  };
  EXPECT_EQ(values_of(**r), values);  // packed and entropy-coded blocks decode to the values
  // An entropy-coded value between two levels (sinh6[1] + 1 is not a level: the steps near zero
  // are at least one, and sinh6[2] > sinh6[1] + 1 at 6 bits).
  ASSERT_GT(sinh6[2], sinh6[1] + 1);
  const std::vector<uint8_t> between = WriteLevelsToy({{6, sinh6}}, sinh6[1] + 1);
  auto rv = ContainerReader::FromBytes(between, "v.dcm");  // the bytes outlive the reader
  ASSERT_TRUE(rv.ok());
  std::vector<uint8_t> out((*rv)->block(2).raw_size());
  Status s = (*rv)->ReadBlock(2, out, &dec);
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("block 2 (l, codes rows 3..5): value " + std::to_string(sinh6[1] + 1) +
                             " at byte 0 is not one of the block's 6-bit levels"),
            std::string::npos)
      << s.message();
  // Bad tables are refused at open, naming the tensor and the entry.
  std::vector<uint8_t> flat = sinh6;
  flat[5] = flat[4];
  const std::pair<std::vector<std::pair<int, std::vector<uint8_t>>>, std::string> bad[] = {
      {{{6, flat}}, "tensor 0 (l): levels[0]: level 5 is"},
      {{{6, std::vector<uint8_t>(sinh6.begin(), sinh6.end() - 1)}},
       "levels[0]: 31 levels for 6 bits"},
      {{{7, SinhLevels(7, 2.0)}}, "levels[0].bits is 7, expected 4..6"},
      {{{6, sinh6}, {6, sinh6}}, "levels[1]: a second table for 6 bits"},
  };
  for (const auto& [tables, want] : bad) {
    s = ContainerReader::FromBytes(WriteLevelsToy(tables), "b.dcm").status();
    EXPECT_EQ(s.code(), StatusCode::kDataLoss) << want;
    EXPECT_NE(s.message().find(want), std::string::npos) << s.message();
  }
  // Before format 9 a table starts at 0: a midrise table in a file that says format 8 is refused.
  s = ContainerReader::FromBytes(WithMajorVersion(ok, 8), "8.dcm").status();
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("tensor 0 (l): levels[0]: level 0 is " + std::to_string(sinh6[0]) +
                             " (expected 0)"),
            std::string::npos)
      << s.message();
  // The committed format-5 seed (written by the format-5 writer from the values on the table with
  // a zero level, the same draws): its 6-bit offset codes decode to them.
  {
    std::vector<int8_t> values5;
    WriteLevelsToy({{6, SinhLevels(6, 2.0, true)}}, 0, &values5, 6, /*zero_level=*/true);
    const std::vector<uint8_t> v5 =
        ReadAll(testing::SourceDir() + "/tests/fuzz/corpus/fuzz_container/levels_v5.dcm");
    auto r5 = ContainerReader::FromBytes(v5, "levels_v5.dcm");
    ASSERT_TRUE(r5.ok()) << r5.status().message();
    EXPECT_EQ((*r5)->header().version_major, 5);
    EXPECT_FALSE((*r5)->BlockLevels(1)->sign_magnitude);
    EXPECT_EQ(values_of(**r5), values5);
  }
  // Format 7: 7-bit levels, sign and magnitude in the packed block, values in the coded one.
  const std::vector<uint8_t> three = LevelTable(7, 2.0);
  const std::vector<uint8_t> ok7 = WriteLevelsToy({{7, three}}, 0, &values, 7);
  WriteFuzzSeedOnRequest(ok7, "levels_v7.dcm");  // the fuzz corpus' format-7 seed
  auto r7 = ContainerReader::FromBytes(ok7, "l7.dcm");
  ASSERT_TRUE(r7.ok()) << r7.status().message();
  EXPECT_EQ(values_of(**r7), values);
  // The same table in a file that says format 6, whose writers gave 7-bit levels offset codes.
  s = ContainerReader::FromBytes(WithMajorVersion(ok7, 6), "6.dcm").status();
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("tensor 0 (l): 7-bit levels in a format 6.x file hold offset codes"),
            std::string::npos)
      << s.message();
  // Levels in a file that says format 4 (whose readers would take codes for values).
  const std::vector<uint8_t> v4 = WithMajorVersion(ok, 4);
  s = ContainerReader::FromBytes(v4, "4.dcm").status();
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("levels in a format 4.x file"), std::string::npos) << s.message();
}

// Format 6: row scales in one byte per row (Tensor.scale_grid_base). A toy of 6 rows whose scale
// block holds `scale_block` (raw) and whose tensor says `base` (none: f32 scales).
std::vector<uint8_t> WriteScaleToy(std::optional<int32_t> base, std::vector<uint8_t> scale_block) {
  const std::string path = TempPath("scales_" + std::to_string(::getpid()) + ".dcm");
  auto w = ContainerWriter::Create(path);
  EXPECT_TRUE(w.ok());
  constexpr int kCols = 100;
  std::vector<int8_t> codes(6 * kCols);
  for (size_t i = 0; i < codes.size(); ++i) codes[i] = static_cast<int8_t>(i % 31) - 15;
  pb::Tensor t = ToyTensor("s", 5);
  if (base) t.set_scale_grid_base(*base);
  (*w)->BeginTensor(t);
  std::vector<uint8_t> packed(3 * PackedRowBytes(kCols, 5));
  EXPECT_EQ(PackRows(codes.data(), 3, kCols, kCols, 5, packed.data()), 3u);
  return FinishToyTensor(w->get(), path, kCols, packed, {codes.begin() + 3 * kCols, codes.end()},
                         scale_block);
}

TEST(ContainerTest, RowScalesInOneByteReadBackAndBadBasesAreNamed) {
  BlockDecoder dec;
  // One byte per row: grid values above the base, 255 for a zero row.
  const std::vector<uint8_t> code = {0, 1, 31, 32, 254, kZeroScaleCode};
  const std::vector<uint8_t> ok = WriteScaleToy(-224, code);
  EXPECT_EQ(ok[8], kDcmVersionMajor);
  WriteFuzzSeedOnRequest(ok, "scales_v6.dcm");  // the fuzz corpus' format-6 seed
  auto r = ContainerReader::FromBytes(ok, "c.dcm");
  ASSERT_TRUE(r.ok()) << r.status().message();
  auto got = (*r)->ReadRowScales(0, &dec);
  ASSERT_TRUE(got.ok()) << got.status().message();
  const std::vector<float> want = {0x1p-7f, ScaleGridValue(-223), ScaleGridValue(-193),
                                   0x1p-6f, ScaleGridValue(30),   0.0f};
  EXPECT_EQ(*got, want);
  EXPECT_EQ(ScaleGridValue(-193), ScaleGridValue(-224 + 31));
  // F32 scales read as stored. (A reader reads the bytes it was given: they must outlive it.)
  const std::vector<uint8_t> f32_file = WriteScaleToy(std::nullopt, {});
  auto rf = ContainerReader::FromBytes(f32_file, "f.dcm");
  ASSERT_TRUE(rf.ok());
  got = (*rf)->ReadRowScales(0, &dec);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, std::vector<float>(6, 0.5f));
  // The ends of the base's range: every code a normal f32.
  for (int32_t base : {kMinScaleGridIndex, kMaxScaleGridBase}) {
    const std::vector<uint8_t> end_file = WriteScaleToy(base, code);
    auto re = ContainerReader::FromBytes(end_file, "e.dcm");
    ASSERT_TRUE(re.ok()) << base << ": " << re.status().message();
    got = (*re)->ReadRowScales(0, &dec);
    ASSERT_TRUE(got.ok());
    for (size_t i = 0; i + 1 < got->size(); ++i) {
      EXPECT_TRUE(std::isnormal((*got)[i])) << base << " + " << int{code[i]};
    }
  }
  // Refused at open, naming the tensor and the field: a base past either end, a scale block of
  // the f32 size, a base in a file that says format 5.
  std::vector<uint8_t> f32_sized(24, 0);
  const std::pair<std::vector<uint8_t>, std::string> bad[] = {
      {WriteScaleToy(kMaxScaleGridBase + 1, code),
       "tensor 0 (s): scale_grid_base 3842, expected -4032..3841"},
      {WriteScaleToy(kMinScaleGridIndex - 1, code),
       "tensor 0 (s): scale_grid_base -4033, expected -4032..3841"},
      {WriteScaleToy(0, f32_sized), "tensor 0 (s): block 0 raw_size 24, expected 6"},
      {WriteScaleToy(std::nullopt, code), "tensor 0 (s): block 0 raw_size 6, expected 24"},
  };
  for (const auto& [bytes, why] : bad) {
    Status s = ContainerReader::FromBytes(bytes, "b.dcm").status();
    EXPECT_EQ(s.code(), StatusCode::kDataLoss) << why;
    EXPECT_NE(s.message().find(why), std::string::npos) << s.message();
  }
  const std::vector<uint8_t> v5 = WithMajorVersion(ok, 5);
  Status s = ContainerReader::FromBytes(v5, "5.dcm").status();
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("tensor 0 (s): scale_grid_base in a format 5.x file"),
            std::string::npos)
      << s.message();
}

// The committed golden files and the error each must give.
TEST(ContainerTest, GoldenCorruptFiles) {
  const std::string dir = testing::SourceDir() + "/tests/storage/golden/";
  const std::pair<const char*, const char*> cases[] = {
      {"truncated.dcm", "(truncated)"},
      {"bitflip_block.dcm", "CRC32C mismatch"},
      {"bitflip_manifest.dcm", "manifest CRC mismatch"},
      {"bad_magic.dcm", "not a .dcm file"},
      {"newer_version.dcm", "is newer than this reader"},
  };
  // valid.dcm is a format 1.0 file (written before format 2): still read; packed_v2.dcm is a
  // format 2.0 file with a packed block. The rANS blocks of both are stream layout 1 (32 states),
  // which the encoder wrote before format 3.
  EXPECT_TRUE(OpenAndDecodeAll(ReadAll(dir + "valid.dcm")).ok());
  EXPECT_TRUE(OpenAndDecodeAll(ReadAll(dir + "packed_v2.dcm")).ok());
  // Their row scales, and those of the format-5 fuzz seed, read as the f32 they store.
  for (const std::string& path :
       {dir + "valid.dcm", dir + "packed_v2.dcm",
        testing::SourceDir() + "/tests/fuzz/corpus/fuzz_container/levels_v5.dcm"}) {
    const std::vector<uint8_t> bytes = ReadAll(path);
    auto r = ContainerReader::FromBytes(bytes, path);
    ASSERT_TRUE(r.ok()) << r.status().message();
    BlockDecoder dec;
    int q8 = 0;
    for (int t = 0; t < (*r)->manifest().tensors_size(); ++t) {
      const pb::Tensor& T = (*r)->manifest().tensors(t);
      if (T.type() != pb::TENSOR_Q8_ROW) continue;
      ++q8;
      EXPECT_FALSE(T.has_scale_grid_base()) << path;
      std::vector<float> want(static_cast<size_t>(T.rows()));
      ASSERT_TRUE((*r)->ReadBlock(T.first_block(),
                                  {reinterpret_cast<uint8_t*>(want.data()), want.size() * 4}, &dec)
                      .ok());
      auto got = (*r)->ReadRowScales(t, &dec);
      ASSERT_TRUE(got.ok()) << path << ": " << got.status().message();
      EXPECT_EQ(*got, want) << path;
    }
    EXPECT_GT(q8, 0) << path;
  }
  for (const auto& [file, want] : cases) {
    Status s = OpenAndDecodeAll(ReadAll(dir + file));
    EXPECT_FALSE(s.ok()) << file;
    EXPECT_NE(s.message().find(want), std::string::npos) << file << ": " << s.message();
  }
}

// Regenerates the golden files: DCOMP_WRITE_GOLDEN=1 ./storage_test --gtest_filter=*Write*
TEST(ContainerTest, WriteGoldenFilesOnRequest) {
  if (std::getenv("DCOMP_WRITE_GOLDEN") == nullptr) GTEST_SKIP() << "set DCOMP_WRITE_GOLDEN=1";
  const std::string dir = testing::SourceDir() + "/tests/storage/golden/";
  std::filesystem::create_directories(dir);
  auto bytes = ReadAll(WriteToy(dir + "valid.dcm"));
  auto r = ContainerReader::FromBytes(bytes);
  ASSERT_TRUE(r.ok());
  auto save = [&](const std::string& name, const std::vector<uint8_t>& b) {
    std::ofstream(dir + name, std::ios::binary)
        .write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  };
  save("truncated.dcm", std::vector<uint8_t>(bytes.begin(), bytes.end() - 4096));
  auto b = bytes;
  b[(*r)->block(2).offset() + 3] ^= 0x01;
  save("bitflip_block.dcm", b);
  b = bytes;
  b[kDcmHeaderSize + 10] ^= 0x40;
  save("bitflip_manifest.dcm", b);
  b = bytes;
  b[1] = 'X';
  save("bad_magic.dcm", b);
  b = bytes;
  const uint16_t newer = 0xFFFF;  // newer than any reader, so the file outlives major steps
  std::memcpy(b.data() + 8, &newer, 2);
  const uint32_t crc = Crc32c(b.data(), 60);
  std::memcpy(b.data() + 60, &crc, 4);
  save("newer_version.dcm", b);
  save("packed_v2.dcm", WritePackedToy(6).bytes);
}

}  // namespace
}  // namespace dcomp::storage
