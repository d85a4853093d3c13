// libFuzzer: the .dcm header and manifest parser and the block table validation, then every block
// decoded. Any input must end in OK or an error, never a crash, a leak or an out-of-bounds access.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "storage/container.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace dcomp::storage;
  auto r = ContainerReader::FromBytes({data, size}, "fuzz.dcm");
  if (!r.ok()) return 0;
  BlockDecoder dec;
  std::vector<uint8_t> out;
  for (size_t b = 0; b < (*r)->num_blocks() && b < 64; ++b) {
    if ((*r)->block(b).raw_size() > (16u << 20)) continue;  // keep iterations fast
    out.resize((*r)->block(b).raw_size());
    (void)(*r)->ReadBlock(b, out, &dec);
    (void)(*r)->DescribeBlock(b);
  }
  return 0;
}
