// CRC32C (Castagnoli, reflected polynomial 0x82F63B78), as used by iSCSI, ext4 and LevelDB: the
// checksum of every stored block and of the container header and manifest. Uses the SSE4.2 or
// ARMv8 CRC instructions when the CPU has them (three independent chains, joined), a slicing-by-8
// table otherwise; all give the same value. Crc32c("123456789") == 0xE3069283.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace dcomp::storage {

// Extends `crc` (the value returned for the preceding bytes; 0 to start) over `data`.
uint32_t Crc32c(const void* data, size_t n, uint32_t crc = 0);
inline uint32_t Crc32c(std::span<const uint8_t> data, uint32_t crc = 0) {
  return Crc32c(data.data(), data.size(), crc);
}
// The portable table implementation (tests compare the two).
uint32_t Crc32cPortable(const void* data, size_t n, uint32_t crc = 0);

}  // namespace dcomp::storage
