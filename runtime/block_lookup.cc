#include "runtime/block_lookup.h"

#include <algorithm>

namespace dcomp::runtime {

namespace pb = storage::pb;

Result<std::unique_ptr<BlockLookup>> BlockLookup::Create(
    const storage::ContainerReader* container, std::unique_ptr<storage::BlockReader> reader,
    const ModelLayout& layout) {
  auto b = std::unique_ptr<BlockLookup>(new BlockLookup());
  b->container_ = container;
  b->reader_ = std::move(reader);
  ASSIGN_OR_RETURN(b->stored_,
                   PageBuffer::Allocate(layout.max_stored_block + 2 * kPageSize, "lookup buffer"));
  ASSIGN_OR_RETURN(b->raw_, PageBuffer::Allocate(layout.max_raw_block, "lookup buffer"));
  return b;
}

Result<const uint8_t*> BlockLookup::ReadBlockPages(uint32_t i) {
  const pb::Block& b = container_->block(i);
  const uint64_t begin = b.offset() / kPageSize * kPageSize;
  const uint64_t end =
      std::min<uint64_t>(RoundUpToPage(b.offset() + b.stored_size()), reader_->file_size());
  RETURN_IF_ERROR(reader_->Read(begin, end - begin, stored_.data()));
  return stored_.data() + (b.offset() - begin);
}

Status BlockLookup::DecodeToRaw(uint32_t i, const uint8_t* stored) {
  const pb::Block& b = container_->block(i);
  return container_->DecodeBlock(i, std::span<const uint8_t>(stored, b.stored_size()),
                                 std::span<uint8_t>(raw_.data(), b.raw_size()), &decoder_);
}

Status BlockLookup::ReadRange(uint64_t begin, uint64_t end, uint8_t* dst) {
  RETURN_IF_ERROR(reader_->Read(begin, end - begin, dst));
  reader_->DropCache(begin, end - begin);
  return Status::Ok();
}

}  // namespace dcomp::runtime
