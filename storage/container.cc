#include "storage/container.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <vector>

#include "base/packed_codes.h"
#include "base/row_scales.h"
#include "storage/crc32c.h"
#include "storage/rans.h"

namespace dcomp::storage {
namespace {

template <typename T>
void Put(uint8_t* p, T v) {
  std::memcpy(p, &v, sizeof(T));
}
template <typename T>
T Get(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

uint64_t AlignUp(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

constexpr size_t kCrcOffset = 60;

}  // namespace

void DcmHeader::Serialize(uint8_t out[kDcmHeaderSize]) const {
  std::memset(out, 0, kDcmHeaderSize);
  std::memcpy(out, kDcmMagic, 8);
  Put<uint16_t>(out + 8, version_major);
  Put<uint16_t>(out + 10, version_minor);
  Put<uint32_t>(out + 12, static_cast<uint32_t>(kDcmHeaderSize));
  Put<uint64_t>(out + 16, manifest_offset);
  Put<uint64_t>(out + 24, manifest_size);
  Put<uint32_t>(out + 32, manifest_crc);
  Put<uint32_t>(out + 36, data_alignment);
  Put<uint64_t>(out + 40, data_offset);
  Put<uint64_t>(out + 48, file_size);
  Put<uint32_t>(out + 56, 0);  // flags: none defined in 1.x
  Put<uint32_t>(out + kCrcOffset, Crc32c(out, kCrcOffset));
}

bool HasDcmMagic(std::span<const uint8_t> bytes) {
  return bytes.size() >= 8 && std::memcmp(bytes.data(), kDcmMagic, 8) == 0;
}

Result<DcmHeader> DcmHeader::Parse(std::span<const uint8_t> b) {
  if (b.size() < kDcmHeaderSize) {
    return DataLossError("file is " + std::to_string(b.size()) +
                         " bytes, shorter than the 64-byte .dcm header");
  }
  if (!HasDcmMagic(b)) return InvalidArgumentError("not a .dcm file (bad magic)");
  DcmHeader h;
  h.version_major = Get<uint16_t>(b.data() + 8);
  h.version_minor = Get<uint16_t>(b.data() + 10);
  // The version is checked before the CRC so that a newer file gets the right message even if a
  // later major version changes the header layout.
  if (h.version_major > kDcmVersionMajor) {
    return FailedPreconditionError("format version " + std::to_string(h.version_major) + "." +
                                   std::to_string(h.version_minor) +
                                   " is newer than this reader (it reads " +
                                   std::to_string(kDcmVersionMajor) + ".x); upgrade dcomp");
  }
  if (h.version_major < 1) {
    return InvalidArgumentError("format version " + std::to_string(h.version_major) +
                                " is not a released .dcm version");
  }
  const uint32_t stored_crc = Get<uint32_t>(b.data() + kCrcOffset);
  const uint32_t crc = Crc32c(b.data(), kCrcOffset);
  if (stored_crc != crc) return DataLossError("header CRC mismatch (the header is corrupt)");
  const uint32_t header_size = Get<uint32_t>(b.data() + 12);
  if (header_size != kDcmHeaderSize) {
    return DataLossError("header_size is " + std::to_string(header_size) + ", expected 64");
  }
  h.manifest_offset = Get<uint64_t>(b.data() + 16);
  h.manifest_size = Get<uint64_t>(b.data() + 24);
  h.manifest_crc = Get<uint32_t>(b.data() + 32);
  h.data_alignment = Get<uint32_t>(b.data() + 36);
  h.data_offset = Get<uint64_t>(b.data() + 40);
  h.file_size = Get<uint64_t>(b.data() + 48);
  const uint32_t flags = Get<uint32_t>(b.data() + 56);
  if (flags != 0) {
    return FailedPreconditionError("header flags 0x" + std::to_string(flags) +
                                   " are not understood by this reader");
  }
  if (h.data_alignment < 512 || h.data_alignment > (1u << 24) ||
      (h.data_alignment & (h.data_alignment - 1)) != 0) {
    return DataLossError("data_alignment " + std::to_string(h.data_alignment) +
                         " is not a power of two in [512, 16 MiB]");
  }
  if (h.manifest_offset != kDcmHeaderSize) {
    return DataLossError("manifest_offset is " + std::to_string(h.manifest_offset) +
                         ", expected 64");
  }
  if (h.manifest_size == 0 || h.manifest_size > kMaxManifestBytes) {
    return DataLossError("manifest_size " + std::to_string(h.manifest_size) + " out of range");
  }
  if (h.data_offset % h.data_alignment != 0 ||
      h.data_offset < h.manifest_offset + h.manifest_size) {
    return DataLossError("data_offset " + std::to_string(h.data_offset) +
                         " is unaligned or overlaps the manifest");
  }
  if (h.file_size < h.data_offset) {
    return DataLossError("file_size " + std::to_string(h.file_size) + " is below data_offset");
  }
  return h;
}

Result<std::unique_ptr<ContainerReader>> ContainerReader::Open(const std::string& path) {
  ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> file, MappedFile::Open(path));
  auto r = std::unique_ptr<ContainerReader>(new ContainerReader());
  r->name_ = path;
  r->bytes_ = file->bytes();
  r->file_ = std::move(file);
  RETURN_IF_ERROR(r->Validate(r->bytes_));
  return r;
}

Result<std::unique_ptr<ContainerReader>> ContainerReader::FromBytes(std::span<const uint8_t> bytes,
                                                                    std::string name) {
  auto r = std::unique_ptr<ContainerReader>(new ContainerReader());
  r->name_ = std::move(name);
  r->bytes_ = bytes;
  RETURN_IF_ERROR(r->Validate(bytes));
  return r;
}

namespace {

// The declared width of block k of T's codes (k = 0: the block after the row scales).
int CodeBlockBits(const pb::Tensor& T, size_t k) {
  return T.block_bits_size() > 0 ? T.block_bits(static_cast<int>(k)) : T.bits();
}

// What is wrong with T's block_bits (format 4), or "" when nothing is.
std::string BlockBitsProblem(const pb::Tensor& T, uint16_t version_major) {
  if (T.block_bits_size() == 0) return "";
  if (version_major < 4) {
    return "block_bits in a format " + std::to_string(version_major) +
           ".x file (a width per block is format 4)";
  }
  if (T.type() != pb::TENSOR_Q8_ROW || !IsPackedBits(T.bits())) {
    return "block_bits on a tensor without a packed width (bits " + std::to_string(T.bits()) + ")";
  }
  if (static_cast<int64_t>(T.block_bits_size()) + 1 != static_cast<int64_t>(T.num_blocks())) {
    return std::to_string(T.block_bits_size()) + " block_bits for " +
           std::to_string(T.num_blocks() == 0 ? 0 : T.num_blocks() - 1) + " blocks of codes";
  }
  int widest = 0;
  for (int k = 0; k < T.block_bits_size(); ++k) {
    const int b = T.block_bits(k);
    if (b < kMinPackedBits || b > T.bits()) {
      return "block_bits[" + std::to_string(k) + "] is " + std::to_string(b) + ", expected " +
             std::to_string(kMinPackedBits) + ".." + std::to_string(T.bits()) +
             " (the tensor's bits)";
    }
    widest = std::max(widest, b);
  }
  if (widest != T.bits()) {
    return "bits " + std::to_string(T.bits()) + " but its widest block is " +
           std::to_string(widest) + " bits";
  }
  return "";
}

// What is wrong with T's level tables (format 5), or "" when nothing is.
std::string LevelsProblem(const pb::Tensor& T, uint16_t version_major) {
  if (T.levels_size() == 0) return "";
  if (version_major < 5) {
    return "levels in a format " + std::to_string(version_major) +
           ".x file (non-uniform levels are format 5)";
  }
  if (T.type() != pb::TENSOR_Q8_ROW || !IsPackedBits(T.bits())) {
    return "levels on a tensor without a packed width (bits " + std::to_string(T.bits()) + ")";
  }
  bool seen[kMaxPackedBits + 1] = {};
  for (int k = 0; k < T.levels_size(); ++k) {
    const pb::CodeLevels& L = T.levels(k);
    const std::string at = "levels[" + std::to_string(k) + "]";
    if (L.bits() < kMinPackedBits || L.bits() > T.bits()) {
      return at + ".bits is " + std::to_string(L.bits()) + ", expected " +
             std::to_string(kMinPackedBits) + ".." + std::to_string(T.bits()) +
             " (the tensor's bits)";
    }
    if (seen[L.bits()]) return at + ": a second table for " + std::to_string(L.bits()) + " bits";
    seen[L.bits()] = true;
    const std::string& m = L.magnitudes();
    // Before format 9, level 0 is 0 (offset codes stand for 0 with -2^(bits-1); the 7-bit codes
    // of formats 7 and 8 were read with T[0] = 0).
    const std::string why = CodeLevelsProblem(
        L.bits(), std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(m.data()), m.size()),
        version_major < 9);
    if (!why.empty()) return at + ": " + why;
  }
  return "";
}

// A level table whose codes a format 5 or 6 writer gave offset codes at a width that format 7
// holds in sign and magnitude (7 bits), or "": valid when written, but read with the wrong sign
// convention, so refused (no dcomp packer wrote one).
std::string OffsetCodedLevels(const pb::Tensor& T, uint16_t version_major) {
  if (version_major >= 7) return "";
  for (const pb::CodeLevels& L : T.levels()) {
    if (L.bits() != 7) continue;
    return std::to_string(L.bits()) + "-bit levels in a format " + std::to_string(version_major) +
           ".x file hold offset codes; this reader holds them in sign and magnitude (format 7): "
           "repack the model with this dcomp";
  }
  return "";
}

// What is wrong with T's row_order (format 4), or "" when nothing is.
std::string RowOrderProblem(const pb::Tensor& T, uint16_t version_major) {
  if (T.row_order_size() == 0) return "";
  if (version_major < 4) {
    return "row_order in a format " + std::to_string(version_major) +
           ".x file (a row order is format 4)";
  }
  if (T.type() != pb::TENSOR_Q8_ROW) return "row_order on a tensor that is not Q8_ROW";
  if (T.row_order_size() != T.rows()) {
    return std::to_string(T.row_order_size()) + " row_order entries for " +
           std::to_string(T.rows()) + " rows";
  }
  std::vector<bool> seen(static_cast<size_t>(T.rows()), false);
  for (int i = 0; i < T.row_order_size(); ++i) {
    const uint32_t r = T.row_order(i);
    if (r >= seen.size() || seen[r]) {
      return "row_order[" + std::to_string(i) + "] is " + std::to_string(r) +
             (r >= seen.size() ? ", past the last row" : ", a row already placed") +
             " (expected a permutation of the rows)";
    }
    seen[r] = true;
  }
  return "";
}

// What is wrong with T's scale_grid_base (format 6), or "" when nothing is.
std::string ScaleGridProblem(const pb::Tensor& T, uint16_t version_major) {
  if (!T.has_scale_grid_base()) return "";
  if (version_major < 6) {
    return "scale_grid_base in a format " + std::to_string(version_major) +
           ".x file (row scales in one byte are format 6)";
  }
  if (T.type() != pb::TENSOR_Q8_ROW) return "scale_grid_base on a tensor that is not Q8_ROW";
  const int32_t n0 = T.scale_grid_base();
  if (n0 < kMinScaleGridIndex || n0 > kMaxScaleGridBase) {
    return "scale_grid_base " + std::to_string(n0) + ", expected " +
           std::to_string(kMinScaleGridIndex) + ".." + std::to_string(kMaxScaleGridBase) +
           " (every code's scale a normal f32)";
  }
  return "";
}

// What is wrong with T's fields of formats 4 to 6 (block_bits, row_order, levels,
// scale_grid_base), or "".
std::string LaterFieldsProblem(const pb::Tensor& T, uint16_t version_major) {
  std::string why = BlockBitsProblem(T, version_major);
  if (why.empty()) why = RowOrderProblem(T, version_major);
  if (why.empty()) why = LevelsProblem(T, version_major);
  if (why.empty()) why = ScaleGridProblem(T, version_major);
  return why;
}

// What is wrong with the manifest's fields outside the blocks and tensors for the header `h`, or
// "".
std::string ManifestProblem(const pb::Manifest& m, const DcmHeader& h) {
  if (m.data_alignment() != h.data_alignment) {
    return "manifest data_alignment " + std::to_string(m.data_alignment()) +
           " differs from the header's " + std::to_string(h.data_alignment);
  }
  if (m.config().hadamard_inputs() != 0 && h.version_major < 8) {
    return "config hadamard_inputs in a format " + std::to_string(h.version_major) +
           ".x file (Hadamard-transformed inputs are format 8)";
  }
  return "";
}

}  // namespace

Status ContainerReader::Validate(std::span<const uint8_t> bytes) {
  auto fail = [this](const Status& s) { return Status(s.code(), name_ + ": " + s.message()); };
  auto loss = [&](const std::string& m) { return fail(DataLossError(m)); };
  Result<DcmHeader> h = DcmHeader::Parse(bytes);
  if (!h.ok()) return fail(h.status());
  header_ = *h;
  if (header_.file_size != bytes.size()) {
    return loss("file is " + std::to_string(bytes.size()) + " bytes but its header says " +
                std::to_string(header_.file_size) +
                (bytes.size() < header_.file_size ? " (truncated)" : " (trailing bytes)"));
  }
  std::span<const uint8_t> m = bytes.subspan(header_.manifest_offset, header_.manifest_size);
  if (Crc32c(m) != header_.manifest_crc) return loss("manifest CRC mismatch (corrupt manifest)");
  if (!manifest_.ParseFromArray(m.data(), static_cast<int>(m.size()))) {
    return loss("manifest does not parse as a dcomp.container.v1.Manifest");
  }
  if (std::string why = ManifestProblem(manifest_, header_); !why.empty()) return loss(why);
  // Blocks: aligned, in bounds, ascending without overlap, known codec, sane sizes.
  uint64_t next = header_.data_offset;
  for (int i = 0; i < manifest_.blocks_size(); ++i) {
    const pb::Block& b = manifest_.blocks(i);
    const std::string id = "block " + std::to_string(i);
    if (!IsKnownCodec(b.codec())) {
      return loss(id + ": codec " + std::to_string(b.codec()) + " is unknown to this reader");
    }
    if (b.offset() % kDcmBlockAlignment != 0) {
      return loss(id + ": offset " + std::to_string(b.offset()) + " is not 64-byte aligned");
    }
    if (b.offset() < next) return loss(id + ": offset overlaps the previous block or manifest");
    if (b.stored_size() > bytes.size() || b.offset() > bytes.size() - b.stored_size()) {
      return loss(id + ": bytes [" + std::to_string(b.offset()) + ", +" +
                  std::to_string(b.stored_size()) + ") run past the end of the file");
    }
    if (b.raw_size() > kMaxBlockRawBytes) {
      return loss(id + ": raw_size " + std::to_string(b.raw_size()) + " above 1 GiB");
    }
    if (b.codec() == pb::CODEC_PACKED && header_.version_major < 2) {
      return loss(id + ": packed block in a format " + std::to_string(header_.version_major) +
                  ".x file (packed blocks are format 2)");
    }
    if (b.codec() == pb::CODEC_RAW && b.stored_size() != b.raw_size()) {
      return loss(id + ": raw block with stored_size != raw_size");
    }
    next = b.offset() + b.stored_size();
  }
  // Tensors: blocks contiguous and in order, covering every block once; sizes match the shape.
  block_tensor_.assign(num_blocks(), -1);
  levels_.clear();
  tensor_levels_.assign(static_cast<size_t>(manifest_.tensors_size()), {});
  uint32_t expect_block = 0;
  for (int t = 0; t < manifest_.tensors_size(); ++t) {
    const pb::Tensor& T = manifest_.tensors(t);
    const std::string id = "tensor " + std::to_string(t) + " (" + T.name() + ")";
    if (T.name().empty()) return loss("tensor " + std::to_string(t) + " has no name");
    if (!tensor_index_.emplace(T.name(), t).second) return loss(id + ": duplicate tensor name");
    if (T.type() != pb::TENSOR_F32 && T.type() != pb::TENSOR_Q8_ROW) {
      return loss(id + ": type " + std::to_string(T.type()) + " is unknown to this reader");
    }
    if (T.rows() <= 0 || T.cols() <= 0 || T.rows() > (1 << 24) || T.cols() > (1 << 24)) {
      return loss(id + ": shape " + std::to_string(T.rows()) + "x" + std::to_string(T.cols()) +
                  " out of range");
    }
    if (T.rows_per_block() <= 0 || T.rows_per_block() > T.rows()) {
      return loss(id + ": rows_per_block " + std::to_string(T.rows_per_block()) + " out of range");
    }
    if (T.first_block() != expect_block) {
      return loss(id + ": first_block " + std::to_string(T.first_block()) + ", expected " +
                  std::to_string(expect_block) + " (tensors must be contiguous and in order)");
    }
    const uint64_t rows = static_cast<uint64_t>(T.rows()), cols = static_cast<uint64_t>(T.cols());
    const uint64_t rpb = static_cast<uint64_t>(T.rows_per_block());
    const uint64_t data_blocks = (rows + rpb - 1) / rpb;
    const bool q8 = T.type() == pb::TENSOR_Q8_ROW;
    const uint64_t want_blocks = data_blocks + (q8 ? 1 : 0);
    if (T.num_blocks() != want_blocks) {
      return loss(id + ": " + std::to_string(T.num_blocks()) + " blocks, expected " +
                  std::to_string(want_blocks) + " for " + std::to_string(rows) + " rows of " +
                  std::to_string(rpb));
    }
    if (static_cast<uint64_t>(T.first_block()) + T.num_blocks() > num_blocks()) {
      return loss(id + ": blocks run past the block table");
    }
    const bool new_range = t == 0 || manifest_.tensors(t - 1).layer() != T.layer();
    if (new_range && T.num_blocks() > 0 &&
        manifest_.blocks(static_cast<int>(T.first_block())).offset() % header_.data_alignment) {
      return loss(id + ": starts layer " + std::to_string(T.layer()) +
                  " but its first block is not aligned to " +
                  std::to_string(header_.data_alignment));
    }
    if (!new_range && T.layer() < manifest_.tensors(t - 1).layer()) {
      return loss(id + ": layer " + std::to_string(T.layer()) + " after layer " +
                  std::to_string(manifest_.tensors(t - 1).layer()) + " (not in execution order)");
    }
    if (T.bits() != 0 && (!q8 || (T.bits() != 8 && !IsPackedBits(T.bits())))) {
      return loss(id + ": bits " + std::to_string(T.bits()) + " is unknown to this reader (" +
                  (q8 ? "4..8" : "0 for f32 tensors") + ")");
    }
    if (std::string why = LaterFieldsProblem(T, header_.version_major); !why.empty()) {
      return loss(id + ": " + why);
    }
    if (std::string why = OffsetCodedLevels(T, header_.version_major); !why.empty()) {
      return fail(FailedPreconditionError(id + ": " + why));
    }
    AddLevels(t);
    const uint64_t elem = q8 ? 1 : 4;
    for (uint32_t k = 0; k < T.num_blocks(); ++k) {
      const uint32_t bi = T.first_block() + k;
      const pb::Block& B = manifest_.blocks(static_cast<int>(bi));
      if ((!q8 || k == 0) && B.codec() == pb::CODEC_PACKED) {
        return loss(id + ": block " + std::to_string(bi) + " holds " +
                    (q8 ? "row scales" : "f32 rows") + " but is marked packed");
      }
      uint64_t want;
      if (q8 && k == 0) {
        want = rows * (T.has_scale_grid_base() ? 1 : 4);
      } else {
        const uint64_t r0 = (k - (q8 ? 1 : 0)) * rpb;
        want = std::min(rpb, rows - r0) * cols * elem;
        if (B.codec() == pb::CODEC_PACKED) {
          if (!IsPackedBits(T.bits())) {
            return loss(id + ": block " + std::to_string(bi) +
                        " is packed but the tensor has no packed width (bits " +
                        std::to_string(T.bits()) + ")");
          }
          const int bits = CodeBlockBits(T, k - 1);
          const uint64_t packed = std::min(rpb, rows - r0) * PackedRowBytes(cols, bits);
          if (B.stored_size() != packed) {
            return loss(id + ": packed block " + std::to_string(bi) + " holds " +
                        std::to_string(B.stored_size()) + " bytes, expected " +
                        std::to_string(packed) + " (" + std::to_string(bits) + "-bit rows)");
          }
        }
      }
      if (B.raw_size() != want) {
        return loss(id + ": block " + std::to_string(bi) + " raw_size " +
                    std::to_string(B.raw_size()) + ", expected " + std::to_string(want));
      }
      block_tensor_[bi] = t;
    }
    expect_block += T.num_blocks();
  }
  if (expect_block != num_blocks()) {
    return loss(std::to_string(num_blocks() - expect_block) + " blocks belong to no tensor");
  }
  return Status::Ok();
}

int ContainerReader::FindTensor(const std::string& name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? -1 : it->second;
}

void ContainerReader::AddLevels(int t) {
  for (const pb::CodeLevels& L : manifest_.tensors(t).levels()) {
    const std::string& mag = L.magnitudes();
    levels_.push_back(std::make_unique<CodeLevels>(MakeCodeLevels(
        L.bits(),
        std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(mag.data()), mag.size()),
        SignMagnitudeLevels(L.bits(), header_.version_major))));
    tensor_levels_[static_cast<size_t>(t)][static_cast<size_t>(L.bits())] = levels_.back().get();
  }
}

const CodeLevels* ContainerReader::Levels(int tensor, int bits) const {
  if (tensor < 0 || static_cast<size_t>(tensor) >= tensor_levels_.size() || !IsPackedBits(bits)) {
    return nullptr;
  }
  return tensor_levels_[static_cast<size_t>(tensor)][static_cast<size_t>(bits)];
}

const CodeLevels* ContainerReader::BlockLevels(size_t i) const {
  return i < num_blocks() ? Levels(block_tensor_[i], CodeBits(i)) : nullptr;
}

int ContainerReader::CodeBits(size_t i) const {
  const pb::Tensor& T = tensor_of_block(i);
  if (T.type() != pb::TENSOR_Q8_ROW || i == T.first_block() || !IsPackedBits(T.bits())) return 8;
  return CodeBlockBits(T, i - T.first_block() - 1);
}

uint64_t ContainerReader::Int8RawSize(size_t i) const {
  const pb::Tensor& T = tensor_of_block(i);
  const uint64_t raw = block(i).raw_size();
  return i == T.first_block() && T.has_scale_grid_base() ? raw * sizeof(float) : raw;
}

Result<std::vector<float>> ContainerReader::ReadRowScales(int tensor, BlockDecoder* decoder) const {
  if (tensor < 0 || tensor >= manifest_.tensors_size()) {
    return OutOfRangeError(name_ + ": tensor " + std::to_string(tensor));
  }
  const pb::Tensor& T = manifest_.tensors(tensor);
  if (T.type() != pb::TENSOR_Q8_ROW) {
    return InvalidArgumentError(name_ + ": tensor '" + T.name() + "' has no row scales");
  }
  std::vector<float> s(static_cast<size_t>(T.rows()));
  if (!T.has_scale_grid_base()) {
    RETURN_IF_ERROR(ReadBlock(T.first_block(),
                              {reinterpret_cast<uint8_t*>(s.data()), s.size() * sizeof(float)},
                              decoder));
    for (size_t r = 0; r < s.size(); ++r) {
      if (!std::isfinite(s[r]) || s[r] < 0) {
        return DataLossError(name_ + ": " + DescribeBlock(T.first_block()) + ": row " +
                             std::to_string(r) + " has an invalid scale");
      }
    }
    return s;
  }
  std::vector<uint8_t> code(s.size());
  RETURN_IF_ERROR(ReadBlock(T.first_block(), code, decoder));
  const RowScaleView v(code.data(), T.scale_grid_base());  // the base is checked at open
  v.Expand(0, s.size(), s.data());
  return s;
}

std::string ContainerReader::DescribeBlock(size_t i) const {
  if (i >= num_blocks()) return "block " + std::to_string(i) + " (out of range)";
  const pb::Tensor& T = tensor_of_block(i);
  const uint64_t k = i - T.first_block();
  std::string what;
  if (T.type() == pb::TENSOR_Q8_ROW && k == 0) {
    what = "row scales";
  } else {
    const uint64_t d = k - (T.type() == pb::TENSOR_Q8_ROW ? 1 : 0);
    const uint64_t r0 = d * static_cast<uint64_t>(T.rows_per_block());
    const uint64_t r1 = std::min<uint64_t>(r0 + T.rows_per_block(), T.rows()) - 1;
    what = (T.type() == pb::TENSOR_Q8_ROW ? "codes rows " : "rows ") + std::to_string(r0) + ".." +
           std::to_string(r1);
  }
  return "block " + std::to_string(i) + " (" + T.name() + ", " + what + ")";
}

void ContainerReader::DropMappedPages() const {
  if (file_ != nullptr && file_->size() > 0) {
    madvise(const_cast<uint8_t*>(file_->data()), file_->size(), MADV_DONTNEED);
  }
}

Status ContainerReader::ReadBlock(size_t i, std::span<uint8_t> out, BlockDecoder* decoder) const {
  if (i >= num_blocks()) return OutOfRangeError(name_ + ": block " + std::to_string(i));
  if (file_ == nullptr) return DecodeBlock(i, StoredBytes(i), out, decoder);
  const pb::Block& b = block(i);
  std::vector<uint8_t> stored(b.stored_size());
  size_t done = 0;
  while (done < stored.size()) {
    const ssize_t n = ::pread(file_->fd(), stored.data() + done, stored.size() - done,
                              static_cast<off_t>(b.offset() + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int e = errno;
      return ErrnoToStatus(e, name_ + ": reading " + DescribeBlock(i));
    }
    if (n == 0) {
      return DataLossError(name_ + ": " + DescribeBlock(i) + " ends past the end of the file");
    }
    done += static_cast<size_t>(n);
  }
  return DecodeBlock(i, stored, out, decoder);
}

std::span<const uint8_t> ContainerReader::StoredBytes(size_t i) const {
  const pb::Block& b = block(i);
  return bytes_.subspan(b.offset(), b.stored_size());
}

Status ContainerReader::CheckCrc(size_t i, std::span<const uint8_t> stored) const {
  const pb::Block& b = block(i);
  if (stored.size() != b.stored_size()) {
    return InternalError(name_ + ": " + DescribeBlock(i) + ": buffer size does not match");
  }
  const uint32_t crc = Crc32c(stored);
  if (crc != b.crc32c()) {
    return DataLossError(name_ + ": " + DescribeBlock(i) + ": CRC32C mismatch (stored " +
                         std::to_string(b.crc32c()) + ", computed " + std::to_string(crc) + ")");
  }
  return Status::Ok();
}

Status ContainerReader::DecodeBlock(size_t i, std::span<const uint8_t> stored,
                                    std::span<uint8_t> out, BlockDecoder* decoder,
                                    bool crc_checked) const {
  if (i >= num_blocks()) return OutOfRangeError(name_ + ": block " + std::to_string(i));
  const pb::Block& b = block(i);
  if (out.size() != b.raw_size() || stored.size() != b.stored_size()) {
    return InternalError(name_ + ": " + DescribeBlock(i) + ": buffer sizes do not match");
  }
  if (!crc_checked) RETURN_IF_ERROR(CheckCrc(i, stored));
  const pb::Tensor& T = tensor_of_block(i);
  const int bits = CodeBits(i);
  const bool codes = T.type() == pb::TENSOR_Q8_ROW && i != T.first_block();
  const size_t cols = static_cast<size_t>(T.cols());
  const CodeLevels* levels = codes ? BlockLevels(i) : nullptr;
  if (b.codec() == pb::CODEC_PACKED) {  // every packed byte pattern is a valid code
    UnpackRows(stored.data(), out.size() / cols, cols, bits, reinterpret_cast<int8_t*>(out.data()),
               cols, levels);
    return Status::Ok();
  }
  Status s = decoder->Decode(static_cast<Codec>(b.codec()), stored, out);
  if (!s.ok()) {
    return DataLossError(name_ + ": " + DescribeBlock(i) + ": " + CodecName(Codec(b.codec())) +
                         ": " + s.message());
  }
  if (codes && IsPackedBits(bits)) {
    // Codes wider than the declared width would differ from what the packed tier holds.
    const int8_t* q = reinterpret_cast<const int8_t*>(out.data());
    if (levels != nullptr ? !ValuesAreLevels(q, out.size(), *levels)
                          : !CodesFit(q, out.size(), bits)) {
      const size_t at = FirstMisfit(q, out.size(), bits, levels);
      if (levels != nullptr) {
        return DataLossError(name_ + ": " + DescribeBlock(i) + ": value " + std::to_string(q[at]) +
                             " at byte " + std::to_string(at) + " is not one of the block's " +
                             std::to_string(bits) + "-bit levels");
      }
      return DataLossError(name_ + ": " + DescribeBlock(i) + ": code " + std::to_string(q[at]) +
                           " exceeds the block's " + std::to_string(bits) + "-bit width (" +
                           std::to_string(MinCode(bits)) + ".." + std::to_string(MaxCode(bits)) +
                           ")");
    }
  }
  return Status::Ok();
}

std::pair<uint64_t, uint64_t> ContainerReader::TensorRange(int t) const {
  const pb::Tensor& T = manifest_.tensors(t);
  if (T.num_blocks() == 0) return {0, 0};
  const pb::Block& a = block(T.first_block());
  const pb::Block& z = block(T.first_block() + T.num_blocks() - 1);
  return {a.offset(), z.offset() + z.stored_size()};
}

// ---------------------------------------------------------------------------------------------

Result<std::unique_ptr<ContainerWriter>> ContainerWriter::Create(const std::string& path) {
  auto w = std::unique_ptr<ContainerWriter>(new ContainerWriter());
  w->path_ = path;
  w->data_path_ = path + ".blocks.tmp";
  int fd = ::open(w->data_path_.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoToStatus(errno, "create " + w->data_path_);
  w->data_fd_.reset(fd);
  return w;
}

ContainerWriter::~ContainerWriter() {
  if (data_fd_.valid()) ::unlink(data_path_.c_str());
}

void ContainerWriter::BeginTensor(const pb::Tensor& tensor) {
  new_range_ = tensors_.empty() || tensors_.back().layer() != tensor.layer();
  tensors_.push_back(tensor);
  tensors_.back().set_first_block(static_cast<uint32_t>(blocks_.size()));
  tensors_.back().set_num_blocks(0);
}

Status ContainerWriter::AddBlock(Codec codec, uint64_t raw_size, std::span<const uint8_t> stored) {
  if (tensors_.empty()) return InternalError("ContainerWriter::AddBlock before BeginTensor");
  static const uint8_t kZeros[kDcmAlignment] = {};
  const uint64_t start = AlignUp(data_size_, new_range_ ? kDcmAlignment : kDcmBlockAlignment);
  RETURN_IF_ERROR(WriteAll(data_fd_.get(), {kZeros, start - data_size_}, data_path_));
  data_size_ = start;
  new_range_ = false;
  pb::Block b;
  b.set_offset(data_size_);
  b.set_stored_size(stored.size());
  b.set_raw_size(raw_size);
  b.set_codec(static_cast<pb::Codec>(codec));
  b.set_crc32c(Crc32c(stored));
  RETURN_IF_ERROR(WriteAll(data_fd_.get(), stored, data_path_));
  data_size_ += stored.size();
  blocks_.push_back(b);
  tensors_.back().set_num_blocks(tensors_.back().num_blocks() + 1);
  return Status::Ok();
}

Status ContainerWriter::Finish(pb::Manifest manifest) {
  {  // The file ends on a page boundary, so that O_DIRECT reads of the last range stay inside it.
    static const uint8_t kZeros[kDcmAlignment] = {};
    const uint64_t end = AlignUp(data_size_, kDcmAlignment);
    RETURN_IF_ERROR(WriteAll(data_fd_.get(), {kZeros, end - data_size_}, data_path_));
    data_size_ = end;
  }
  manifest.clear_tensors();
  manifest.clear_blocks();
  for (const pb::Tensor& t : tensors_) *manifest.add_tensors() = t;
  for (const pb::Block& b : blocks_) *manifest.add_blocks() = b;
  manifest.set_data_alignment(kDcmAlignment);
  // Offsets are fixed64, so the manifest size does not depend on their values, as long as none is
  // zero (proto3 omits zero fields): size it with every offset already shifted by one page.
  for (pb::Block& b : *manifest.mutable_blocks()) b.set_offset(b.offset() + kDcmAlignment);
  const uint64_t manifest_size = manifest.ByteSizeLong();
  const uint64_t data_offset = AlignUp(kDcmHeaderSize + manifest_size, kDcmAlignment);
  for (pb::Block& b : *manifest.mutable_blocks()) {
    b.set_offset(b.offset() - kDcmAlignment + data_offset);
  }
  std::string mbytes;
  if (!manifest.SerializeToString(&mbytes) || mbytes.size() != manifest_size) {
    return InternalError("manifest serialisation failed");
  }
  DcmHeader h;
  h.manifest_offset = kDcmHeaderSize;
  h.manifest_size = manifest_size;
  h.manifest_crc = Crc32c(mbytes.data(), mbytes.size());
  h.data_offset = data_offset;
  h.file_size = data_offset + data_size_;
  std::vector<uint8_t> head(data_offset, 0);
  h.Serialize(head.data());
  std::memcpy(head.data() + kDcmHeaderSize, mbytes.data(), mbytes.size());

  const std::string tmp = path_ + ".tmp";
  UniqueFd out(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!out.valid()) return ErrnoToStatus(errno, "create " + tmp);
  Status s = WriteAll(out.get(), head, tmp);
  // Append the block file.
  off_t off = 0;
  uint64_t left = data_size_;
  while (s.ok() && left > 0) {
    ssize_t n = ::copy_file_range(data_fd_.get(), &off, out.get(), nullptr, left, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      s = ErrnoToStatus(n < 0 ? errno : EIO, "copy blocks into " + tmp);
      break;
    }
    left -= static_cast<uint64_t>(n);
  }
  if (s.ok() && ::fsync(out.get()) != 0) s = ErrnoToStatus(errno, "fsync " + tmp);
  if (s.ok() && ::rename(tmp.c_str(), path_.c_str()) != 0) {
    s = ErrnoToStatus(errno, "rename " + tmp + " to " + path_);
  }
  if (s.ok()) {
    file_size_ = h.file_size;
  } else {
    ::unlink(tmp.c_str());
  }
  ::unlink(data_path_.c_str());
  data_fd_.reset();
  return s;
}

}  // namespace dcomp::storage
