// The .dcm container (docs/format.md): a 64-byte header, the protobuf manifest, then data blocks in
// execution order (embedding, layer 0 .. layer L-1, output). Each layer's blocks form one
// contiguous range that starts on a 4 KiB boundary (the unit of streaming and O_DIRECT reads);
// blocks inside it are 64-byte aligned, so small tensors (norms, row scales) cost no page padding.
// Each block records its codec, raw size, stored size and the CRC32C of its stored bytes.
//
// ContainerReader::Open validates the whole structure before returning: header CRC, version, file
// size, manifest CRC and parse, and every block and tensor (offsets, alignment, overlap, sizes
// consistent with the tensor shapes, codecs). Block payloads are checked when decoded (CRC first,
// then the codec's own checks). Every error names the file and, where there is one, the block and
// tensor; nothing in a hostile file can make the reader read out of bounds.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "base/file.h"
#include "base/packed_codes.h"
#include "base/status.h"
#include "proto/manifest.pb.h"
#include "storage/codec.h"

namespace dcomp::storage {

namespace pb = ::dcomp::container::v1;

inline constexpr char kDcmMagic[8] = {'D', 'C', 'O', 'M', 'P', 'D', 'C', 'M'};
// 2.0: code widths below 8 bits (Tensor.bits) and packed blocks (CODEC_PACKED). 3.0: rANS blocks in
// stream layout 2 (64 states; storage/rans.h), which 2.x readers cannot decode. 4.0: a width per
// block of codes (Tensor.block_bits), whose packed blocks 3.x readers would size wrongly, and rows
// stored out of order (Tensor.row_order), which they would ignore. 5.0: non-uniform levels
// (Tensor.levels), whose codes 4.x readers would take for values. 6.0: row scales in one byte per
// row (Tensor.scale_grid_base), which 5.x readers would size as f32. 7.0: 7-bit level codes in sign
// and magnitude (base/packed_codes.h), which 6.x readers would take as offset codes. 8.0: matrix
// inputs computed Hadamard-transformed (ModelConfig.hadamard_inputs), which 7.x readers would
// ignore. 9.0: 4-6-bit level codes in sign and magnitude too, and level tables without a zero
// level (T[0] > 0), which 8.x readers would take as offset codes. 10.0: rANS blocks in stream
// layout 3 (a frequency table for sparse alphabets; storage/rans.h), which 9.x readers cannot
// decode. 1.x to 9.x files are read (their 4-6-bit level codes, before 9.0, as offset codes), but
// for 7-bit levels in 5.x and 6.x files (refused: FAILED_PRECONDITION).
inline constexpr uint16_t kDcmVersionMajor = 10;
inline constexpr uint16_t kDcmVersionMinor = 0;
inline constexpr size_t kDcmHeaderSize = 64;
inline constexpr uint32_t kDcmAlignment = 4096;     // start of each layer's range
inline constexpr uint32_t kDcmBlockAlignment = 64;  // every block
// Upper bounds a reader enforces (a hostile file cannot make it allocate more).
inline constexpr uint64_t kMaxManifestBytes = 1ull << 30;
inline constexpr uint64_t kMaxBlockRawBytes = 1ull << 30;

struct DcmHeader {
  uint16_t version_major = kDcmVersionMajor;
  uint16_t version_minor = kDcmVersionMinor;
  uint64_t manifest_offset = 0;
  uint64_t manifest_size = 0;
  uint32_t manifest_crc = 0;
  uint32_t data_alignment = kDcmAlignment;
  uint64_t data_offset = 0;
  uint64_t file_size = 0;

  void Serialize(uint8_t out[kDcmHeaderSize]) const;
  // Parses and checks magic, CRC, version and the internal consistency of the offsets.
  static Result<DcmHeader> Parse(std::span<const uint8_t> bytes);
};

// True when `bytes` starts with the .dcm magic.
bool HasDcmMagic(std::span<const uint8_t> bytes);

class ContainerReader {
 public:
  // Maps `path` read-only and validates it.
  static Result<std::unique_ptr<ContainerReader>> Open(const std::string& path);
  // Validates an in-memory image (fuzzing, tests). `bytes` must outlive the reader.
  static Result<std::unique_ptr<ContainerReader>> FromBytes(std::span<const uint8_t> bytes,
                                                            std::string name = "<memory>");

  const std::string& path() const { return name_; }
  const DcmHeader& header() const { return header_; }
  const pb::Manifest& manifest() const { return manifest_; }
  size_t num_blocks() const { return static_cast<size_t>(manifest_.blocks_size()); }
  const pb::Block& block(size_t i) const { return manifest_.blocks(static_cast<int>(i)); }
  // The tensor a block belongs to.
  const pb::Tensor& tensor_of_block(size_t i) const { return manifest_.tensors(block_tensor_[i]); }
  // Index into manifest().tensors(), or -1.
  int FindTensor(const std::string& name) const;
  // The width of block i's codes: its Tensor.block_bits entry, else the tensor's bits (8 for INT8
  // codes, and for blocks that hold no codes).
  int CodeBits(size_t i) const;
  // Block i's size as the INT8 tier holds it: its raw_size, but row scales stored in one byte per
  // row (format 6) count as the f32 they decode to.
  uint64_t Int8RawSize(size_t i) const;
  // The level table of a tensor's width (Tensor.levels, format 5), null for linear levels; and
  // that of block i's codes (its width's). Pointers stay valid for the reader's life.
  const CodeLevels* Levels(int tensor, int bits) const;
  const CodeLevels* BlockLevels(size_t i) const;
  // "block 17 (blk.2.attn_q.weight, codes rows 0..191)".
  std::string DescribeBlock(size_t i) const;

  // The stored bytes of block i in the mapping.
  std::span<const uint8_t> StoredBytes(size_t i) const;
  // Checks the CRC of `stored` (the bytes of block i, from anywhere: mapping, io_uring buffer) and
  // decodes them into `out` (exactly raw_size bytes). DATA_LOSS names the block and the tensor.
  // `crc_checked`: the caller checked these bytes' CRC already (a copy in RAM checked when it was
  // read), so only the decoding is checked.
  Status DecodeBlock(size_t i, std::span<const uint8_t> stored, std::span<uint8_t> out,
                     BlockDecoder* decoder, bool crc_checked = false) const;
  // Checks the CRC of `stored` (the bytes of block i): DATA_LOSS naming the block on a mismatch.
  Status CheckCrc(size_t i, std::span<const uint8_t> stored) const;
  // DecodeBlock of block i as stored in the file: read with pread into a temporary buffer (for an
  // in-memory image, from the image), never through the mapping. A read fault on a mapped page
  // maps what the page cache holds around it, whole large folios on recent kernels: megabytes of
  // file pages in the resident set for a block of a few KiB, which counted against the runtime's
  // budget in its peak (VmHWM).
  Status ReadBlock(size_t i, std::span<uint8_t> out, BlockDecoder* decoder) const;
  // The row scales of Q8_ROW tensor `tensor` (its first block, read as ReadBlock reads it) as f32,
  // whether stored as f32 or one byte per row (format 6, Tensor.scale_grid_base). A stored f32
  // scale that is negative or not finite is DATA_LOSS naming the block and row; coded ones are
  // grid values or 0 by construction.
  Result<std::vector<float>> ReadRowScales(int tensor, BlockDecoder* decoder) const;
  // The file range [begin, end) of a tensor's blocks (for streaming and page-cache advice).
  std::pair<uint64_t, uint64_t> TensorRange(int tensor) const;
  // Unmaps the pages of the mapping this process has touched (they stay in the page cache), so
  // that parsed or decoded data no longer counts in the resident set. Bytes stay readable.
  void DropMappedPages() const;

 private:
  ContainerReader() = default;
  Status Validate(std::span<const uint8_t> bytes);
  // Builds tensor t's level tables (checked by Validate).
  void AddLevels(int t);

  std::string name_;
  std::unique_ptr<MappedFile> file_;
  std::span<const uint8_t> bytes_;
  DcmHeader header_;
  pb::Manifest manifest_;
  std::vector<int> block_tensor_;
  std::vector<std::unique_ptr<CodeLevels>> levels_;
  std::vector<std::array<const CodeLevels*, kMaxPackedBits + 1>> tensor_levels_;
  std::unordered_map<std::string, int> tensor_index_;
};

// Writes a container: tensors are added in execution order, each followed by its blocks (already
// encoded by the caller). Blocks are streamed to a side file while packing; Finish() writes the
// header and manifest, appends the blocks and renames the result into place atomically.
class ContainerWriter {
 public:
  static Result<std::unique_ptr<ContainerWriter>> Create(const std::string& path);
  ~ContainerWriter();

  // Starts a tensor; its first_block/num_blocks are filled in by the writer. A tensor whose layer
  // differs from the previous tensor's starts a new 4 KiB-aligned layer range.
  void BeginTensor(const pb::Tensor& tensor);
  // Appends one block of the current tensor.
  Status AddBlock(Codec codec, uint64_t raw_size, std::span<const uint8_t> stored);
  // Writes the file; `manifest` provides config, tokenizer and pack info (tensors and blocks are
  // the writer's).
  Status Finish(pb::Manifest manifest);
  // The size of the finished file (0 before Finish succeeds).
  uint64_t file_bytes() const { return file_size_; }

 private:
  ContainerWriter() = default;
  std::string path_, data_path_;
  UniqueFd data_fd_;
  uint64_t data_size_ = 0;  // bytes written to the side file
  bool new_range_ = false;  // the next block starts a layer range
  uint64_t file_size_ = 0;
  std::vector<pb::Tensor> tensors_;
  std::vector<pb::Block> blocks_;  // offsets relative to the data start
};

}  // namespace dcomp::storage
