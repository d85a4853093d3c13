// BlockLookup: the compute thread's own reads of single blocks and whole units, outside the
// prefetcher's pipeline: embedding-row lookups, loading units into a RAM tier when a plan changes,
// and the controller's start-up probe. Its own block reader (so it never waits behind the
// prefetcher's reads), one page-aligned buffer for a block's stored pages (O_DIRECT needs the
// alignment), one for its decoded bytes, and one codec context.
//
// Not thread-safe: the compute thread only (the runtime's front, between or within passes).
#pragma once

#include <cstdint>
#include <memory>

#include "base/page_buffer.h"
#include "base/status.h"
#include "runtime/unit_layout.h"
#include "storage/block_reader.h"
#include "storage/container.h"

namespace dcomp::runtime {

class BlockLookup {
 public:
  static Result<std::unique_ptr<BlockLookup>> Create(const storage::ContainerReader* container,
                                                     std::unique_ptr<storage::BlockReader> reader,
                                                     const ModelLayout& layout);

  // Reads the pages holding block i and returns where its stored bytes start in them.
  Result<const uint8_t*> ReadBlockPages(uint32_t i);
  // Decodes block i from `stored` into raw() (raw_size bytes).
  Status DecodeToRaw(uint32_t i, const uint8_t* stored);
  // Reads a unit's whole (page-aligned) range into dst, then drops it from the page cache.
  Status ReadRange(uint64_t begin, uint64_t end, uint8_t* dst);

  storage::BlockReader* reader() { return reader_.get(); }
  storage::BlockDecoder* decoder() { return &decoder_; }
  uint8_t* raw() { return raw_.data(); }
  uint64_t bytes() const { return stored_.size() + raw_.size(); }  // both buffers

  // The block whose decoded bytes raw() holds (-1: none); the embedding lookup keeps it.
  int64_t cached_block = -1;

 private:
  BlockLookup() = default;
  const storage::ContainerReader* container_ = nullptr;
  std::unique_ptr<storage::BlockReader> reader_;
  storage::BlockDecoder decoder_;
  PageBuffer stored_, raw_;
};

}  // namespace dcomp::runtime
