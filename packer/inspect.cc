#include "packer/inspect.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <set>
#include <vector>

#include "base/json.h"
#include "base/packed_codes.h"
#include "base/row_scales.h"
#include "engine/dcm_model.h"
#include "engine/layer_schema.h"
#include "storage/container.h"
#include "storage/rans.h"

namespace dcomp::packer {

namespace pb = storage::pb;

namespace {

// A TENSOR_Q8_ROW tensor's rows by code width (4..8): per block with Tensor.block_bits (format 4).
std::map<int, uint64_t> RowsByBits(const pb::Tensor& T) {
  std::map<int, uint64_t> by;
  const uint64_t rows = static_cast<uint64_t>(T.rows());
  if (T.block_bits_size() == 0) {
    by[IsPackedBits(T.bits()) ? T.bits() : 8] = rows;
    return by;
  }
  const uint64_t rpb = static_cast<uint64_t>(T.rows_per_block());
  for (int k = 0; k < T.block_bits_size(); ++k) {
    const uint64_t r0 = static_cast<uint64_t>(k) * rpb;
    by[T.block_bits(k)] += std::min(rpb, rows - r0);
  }
  return by;
}

}  // namespace

uint64_t PackedTierBytes(const pb::Tensor& T, std::span<const float> scales) {
  const bool packed = IsPackedBits(T.bits());  // 8-bit tensors: f32 scales for the INT8 products
  uint64_t bytes =
      static_cast<uint64_t>(T.rows()) * (packed ? RowScaleBytesPerRow(scales) : sizeof(float));
  for (const auto& [bits, n] : RowsByBits(T)) {
    bytes += PackedCodeBytes(n, static_cast<size_t>(T.cols()), bits);
  }
  return bytes;
}

namespace {

struct Range {
  uint64_t raw = 0, ram = 0, stored = 0, params = 0, begin = ~0ull;
  std::set<std::string> codecs;
};

// Sizes per tensor, per layer range and in total; blocks per codec.
struct Tally {
  std::map<int, Range> layers;
  std::vector<Range> tensors;
  std::map<std::string, uint64_t> codec_blocks;
  uint64_t raw_total = 0, ram_total = 0, stored_total = 0, params = 0;
};

Result<Tally> Count(const storage::ContainerReader& r) {
  const pb::Manifest& m = r.manifest();
  storage::BlockDecoder dec;
  std::vector<float> scales;
  Tally tl;
  auto& [layers, tensors, codec_blocks, raw_total, ram_total, stored_total, params] = tl;
  tensors.resize(static_cast<size_t>(m.tensors_size()));
  for (int t = 0; t < m.tensors_size(); ++t) {
    const pb::Tensor& T = m.tensors(t);
    Range& R = tensors[static_cast<size_t>(t)];
    R.params = static_cast<uint64_t>(T.rows() * T.cols());
    for (uint32_t b = T.first_block(); b < T.first_block() + T.num_blocks(); ++b) {
      const pb::Block& B = r.block(b);
      const std::string codec = storage::CodecName(static_cast<storage::Codec>(B.codec()));
      R.raw += r.Int8RawSize(b);
      R.stored += B.stored_size();
      R.codecs.insert(codec);
      R.begin = std::min<uint64_t>(R.begin, B.offset());
      ++codec_blocks[codec];
    }
    // As the packed tier holds it: narrow codes packed (rows padded to 64 codes, each block at
    // its width) + row scales (read: one byte per row when on the scale grid); INT8 codes and
    // f32 vectors as they decode.
    R.ram = R.raw;
    if (T.type() == pb::TENSOR_Q8_ROW) {
      scales.clear();  // 8-bit tensors: f32 whatever their values
      if (IsPackedBits(T.bits())) {
        ASSIGN_OR_RETURN(scales, r.ReadRowScales(t, &dec));
      }
      R.ram = PackedTierBytes(T, scales);
    }
    Range& L = layers[T.layer()];
    L.params += R.params;
    L.raw += R.raw;
    L.ram += R.ram;
    L.stored += R.stored;
    L.codecs.insert(R.codecs.begin(), R.codecs.end());
    L.begin = std::min(L.begin, R.begin);
    params += R.params;
    raw_total += R.raw;
    ram_total += R.ram;
    stored_total += R.stored;
  }
  return tl;
}

// "bits/weight: INT8 .., packed in RAM .., stored ..; weights by code width: ..".
std::string BitsLine(const pb::Manifest& m, const Tally& tl) {
  char line[512];
  std::map<int, uint64_t> by_bits;
  for (int t = 0; t < m.tensors_size(); ++t) {
    const pb::Tensor& T = m.tensors(t);
    if (T.type() == pb::TENSOR_Q8_ROW) {
      for (const auto& [bits, n] : RowsByBits(T))
        by_bits[bits] += n * static_cast<uint64_t>(T.cols());
    }
  }
  std::string widths;
  for (const auto& [b, n] : by_bits) {
    widths += (widths.empty() ? "" : ", ") + std::to_string(b) + " bits " + std::to_string(n);
  }
  const double pw = static_cast<double>(std::max<uint64_t>(tl.params, 1));
  std::snprintf(line, sizeof(line),
                "bits/weight: INT8 %.3f, packed in RAM %.3f (%llu B), stored %.3f; weights by code "
                "width: %s\n",
                8.0 * static_cast<double>(tl.raw_total) / pw,
                8.0 * static_cast<double>(tl.ram_total) / pw,
                static_cast<unsigned long long>(tl.ram_total),
                8.0 * static_cast<double>(tl.stored_total) / pw, widths.c_str());
  return line;
}

}  // namespace

Result<std::string> Inspect(const std::string& path, bool verify, bool json) {
  ASSIGN_OR_RETURN(auto file, DcmModelFile::Open(path));
  const storage::ContainerReader& r = file->reader();
  const pb::Manifest& m = r.manifest();
  const ModelConfig& c = file->config();

  ASSIGN_OR_RETURN(Tally tl, Count(r));
  auto& [layers, tensors, codec_blocks, raw_total, ram_total, stored_total, params] = tl;
  double verify_seconds = 0;
  if (verify) {
    storage::BlockDecoder dec;
    std::vector<uint8_t> out;
    auto t0 = std::chrono::steady_clock::now();
    for (size_t b = 0; b < r.num_blocks(); ++b) {
      out.resize(r.block(b).raw_size());
      RETURN_IF_ERROR(r.ReadBlock(b, out, &dec));
    }
    verify_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  auto layer_name = [&](int l) {
    return l < 0             ? std::string("embedding")
           : l >= c.n_layers ? std::string("output")
                             : "layer " + std::to_string(l);
  };
  auto codecs_of = [](const Range& L) {
    std::string s;
    for (const std::string& k : L.codecs) s += (s.empty() ? "" : "+") + k;
    return s;
  };
  const auto& h = r.header();
  if (json) {
    JsonWriter w;
    w.BeginObject()
        .String("path", path)
        .String("format_version",
                std::to_string(h.version_major) + "." + std::to_string(h.version_minor))
        .Int("file_bytes", static_cast<int64_t>(h.file_size))
        .Int("manifest_bytes", static_cast<int64_t>(h.manifest_size))
        .String("model", c.Summary())
        .Bool("synthetic", c.synthetic);
    w.BeginArray("hadamard_inputs");
    for (const char* name : HadamardInputNames(c)) w.RawValue(JsonEscape(name));
    w.EndArray()
        .Int("params", static_cast<int64_t>(params))
        .Int("tensors", m.tensors_size())
        .Int("blocks", static_cast<int64_t>(r.num_blocks()))
        .Int("raw_bytes", static_cast<int64_t>(raw_total))
        .Int("ram_bytes", static_cast<int64_t>(ram_total))
        .Int("stored_bytes", static_cast<int64_t>(stored_total))
        .Double("ram_bits_per_weight",
                8.0 * static_cast<double>(ram_total) / std::max<uint64_t>(params, 1))
        .Double("stored_bits_per_weight",
                8.0 * static_cast<double>(stored_total) / std::max<uint64_t>(params, 1))
        .Double("ratio", stored_total ? static_cast<double>(raw_total) / stored_total : 0)
        .String("source", m.pack_info().source())
        .String("calibration", m.pack_info().calibration())
        .String("options", m.pack_info().options())
        .String("codec_choice", m.pack_info().codec_choice())
        .String("rans_decoder", storage::RansDecoderName());
    w.BeginArray("layers");
    for (const auto& [l, L] : layers) {
      w.BeginObject()
          .String("name", layer_name(l))
          .Int("params", static_cast<int64_t>(L.params))
          .Int("raw_bytes", static_cast<int64_t>(L.raw))
          .Int("ram_bytes", static_cast<int64_t>(L.ram))
          .Int("stored_bytes", static_cast<int64_t>(L.stored))
          .Int("offset", static_cast<int64_t>(L.begin))
          .String("codecs", codecs_of(L))
          .EndObject();
    }
    w.EndArray();
    w.BeginArray("tensors");
    for (int t = 0; t < m.tensors_size(); ++t) {
      const pb::Tensor& T = m.tensors(t);
      const Range& R = tensors[static_cast<size_t>(t)];
      const bool q8 = T.type() == pb::TENSOR_Q8_ROW;
      std::vector<int32_t> level_bits;  // the widths with non-uniform levels (format 5)
      for (const pb::CodeLevels& L : T.levels()) level_bits.push_back(L.bits());
      w.BeginObject()
          .String("name", T.name())
          .Int("layer", T.layer())
          .Int("rows", T.rows())
          .Int("cols", T.cols())
          .Int("params", static_cast<int64_t>(R.params))
          .Int("bits", q8 ? (IsPackedBits(T.bits()) ? T.bits() : 8) : 32)
          .IntArray("block_bits", {T.block_bits().begin(), T.block_bits().end()})
          .IntArray("level_bits", level_bits)
          .Int("raw_bytes", static_cast<int64_t>(R.raw))
          .Int("ram_bytes", static_cast<int64_t>(R.ram))
          .Int("stored_bytes", static_cast<int64_t>(R.stored))
          .String("codecs", codecs_of(R))
          .EndObject();
    }
    w.EndArray();
    if (verify) {
      w.Bool("verified", true).Double("verify_seconds", verify_seconds);
    }
    w.EndObject();
    return w.str() + "\n";
  }
  std::string s;
  char line[512];
  std::snprintf(
      line, sizeof(line), "%s: .dcm %u.%u, %llu bytes (manifest %llu), %d tensors, %zu blocks\n",
      path.c_str(), h.version_major, h.version_minor, static_cast<unsigned long long>(h.file_size),
      static_cast<unsigned long long>(h.manifest_size), m.tensors_size(), r.num_blocks());
  s += line;
  s += "model: " + c.Summary() + (c.synthetic ? " (benchmarks only)" : "") + "\n";
  s += "source: " + m.pack_info().source() + " [" + m.pack_info().source_format() + "]\n";
  s += "packed by dcomp " + m.pack_info().tool_version() + " with: " + m.pack_info().options() +
       "\n";
  s += "calibration: " + m.pack_info().calibration() + "\n";
  std::string codec_line;
  for (const auto& [k, v] : codec_blocks) {
    codec_line += (codec_line.empty() ? "" : ", ") + k + " " + std::to_string(v);
  }
  s += "blocks by codec: " + codec_line + " (rANS decoder here: " + storage::RansDecoderNote() +
       ")\n";
  s += "codec choice: " +
       (m.pack_info().codec_choice().empty()
            ? std::string("not recorded (packed before dcomp recorded it)")
            : m.pack_info().codec_choice()) +
       "\n";
  std::snprintf(line, sizeof(line), "%-10s %12s %12s %12s %7s %12s  %s\n", "range", "params",
                "raw B", "stored B", "ratio", "offset", "codecs");
  s += line;
  for (const auto& [l, L] : layers) {
    std::snprintf(line, sizeof(line), "%-10s %12llu %12llu %12llu %7.3f %12llu  %s\n",
                  layer_name(l).c_str(), static_cast<unsigned long long>(L.params),
                  static_cast<unsigned long long>(L.raw), static_cast<unsigned long long>(L.stored),
                  L.stored ? static_cast<double>(L.raw) / L.stored : 0.0,
                  static_cast<unsigned long long>(L.begin), codecs_of(L).c_str());
    s += line;
  }
  std::snprintf(line, sizeof(line), "%-10s %12llu %12llu %12llu %7.3f\n", "total",
                static_cast<unsigned long long>(params), static_cast<unsigned long long>(raw_total),
                static_cast<unsigned long long>(stored_total),
                stored_total ? static_cast<double>(raw_total) / stored_total : 0.0);
  s += line;
  s += BitsLine(r.manifest(), tl);
  if (verify) {
    std::snprintf(line, sizeof(line),
                  "verify: all %zu block CRCs match and every block decodes (%.1f MB in %.3f s)\n",
                  r.num_blocks(), raw_total / 1e6, verify_seconds);
    s += line;
  }
  return s;
}

}  // namespace dcomp::packer
