// libFuzzer: the .dcm header and manifest parser and the block table validation, then every block
// decoded and every matrix's row scales read. Any input must end in OK or an error, never a
// crash, a leak or an out-of-bounds access.
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
  // Row scales as readers take them (f32, or one byte per row: format 6).
  const auto& m = (*r)->manifest();
  for (int t = 0; t < m.tensors_size() && t < 64; ++t) {
    if (m.tensors(t).type() == pb::TENSOR_Q8_ROW && m.tensors(t).rows() <= (1 << 20)) {
      (void)(*r)->ReadRowScales(t, &dec);
    }
  }
  return 0;
}
