// Block codec speed on real INT8 weight codes: every linear tensor of the model quantized per row
// (plain INT8, the packer's default quantizer without scaling or widening), cut into 128 KiB
// blocks. Reports decode and encode throughput in bytes of raw output per second, one thread, and
// the compressed size ("ratio" = raw / stored). Model: $DCOMP_BENCH_MODEL, else the shared
// stories3M, else the embedded stories260K.
#include <benchmark/benchmark.h>

#include "bench/bench_model.h"
#include "engine/model_file.h"
#include "packer/quantize.h"
#include "storage/codec.h"
#include "storage/rans.h"

namespace dcomp {
namespace {

constexpr size_t kBlock = 128 << 10;

// The model's INT8 codes (row-major, unpadded), cut into blocks.
const std::vector<std::vector<uint8_t>>& Blocks() {
  static std::vector<std::vector<uint8_t>> blocks = [] {
    auto f = OpenModelFile(BenchModelPath());
    if (!f.ok()) {
      std::fprintf(stderr, "%s\n", f.status().ToString().c_str());
      std::exit(1);
    }
    std::vector<uint8_t> all;
    for (const TensorDesc& t : (*f)->tensors()) {
      if (t.rows < 2) continue;
      auto w = (*f)->ReadF32(t.name);
      packer::QuantizedMatrix q =
          packer::QuantizeMatrix(*w, static_cast<size_t>(t.rows), static_cast<size_t>(t.cols), {});
      const auto* codes = reinterpret_cast<const uint8_t*>(q.codes.data());
      all.insert(all.end(), codes, codes + q.codes.size());
    }
    std::vector<std::vector<uint8_t>> b;
    for (size_t o = 0; o < all.size(); o += kBlock) {
      b.emplace_back(all.begin() + static_cast<ptrdiff_t>(o),
                     all.begin() + static_cast<ptrdiff_t>(std::min(all.size(), o + kBlock)));
    }
    return b;
  }();
  return blocks;
}

size_t RawBytes() {
  size_t n = 0;
  for (const auto& b : Blocks()) n += b.size();
  return n;
}

void Encode(benchmark::State& state, storage::Codec codec, int level) {
  std::vector<uint8_t> out;
  size_t stored = 0;
  for (auto _ : state) {
    stored = 0;
    for (const auto& b : Blocks()) {
      if (!storage::EncodeBlock(codec, b, level, &out).ok()) state.SkipWithError("encode");
      stored += out.size();
    }
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * RawBytes()));
  state.counters["ratio"] = static_cast<double>(RawBytes()) / static_cast<double>(stored);
}

void Decode(benchmark::State& state, storage::Codec codec, int level, bool portable) {
  std::vector<std::vector<uint8_t>> enc(Blocks().size());
  size_t stored = 0;
  for (size_t i = 0; i < enc.size(); ++i) {
    (void)storage::EncodeBlock(codec, Blocks()[i], level, &enc[i]);
    stored += enc[i].size();
  }
  storage::BlockDecoder dec;
  std::vector<uint8_t> out(kBlock);
  for (auto _ : state) {
    for (size_t i = 0; i < enc.size(); ++i) {
      std::span<uint8_t> o(out.data(), Blocks()[i].size());
      Status s = portable ? storage::RansDecodePortable(enc[i], o) : dec.Decode(codec, enc[i], o);
      if (!s.ok()) state.SkipWithError(s.ToString().c_str());
    }
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * RawBytes()));
  state.counters["ratio"] = static_cast<double>(RawBytes()) / static_cast<double>(stored);
}

BENCHMARK_CAPTURE(Decode, rans, storage::Codec::kRans, 0, false);
BENCHMARK_CAPTURE(Decode, rans_portable, storage::Codec::kRans, 0, true);
BENCHMARK_CAPTURE(Decode, zstd_3, storage::Codec::kZstd, 3, false);
BENCHMARK_CAPTURE(Decode, zstd_19, storage::Codec::kZstd, 19, false);
BENCHMARK_CAPTURE(Decode, raw, storage::Codec::kRaw, 0, false);
BENCHMARK_CAPTURE(Encode, rans, storage::Codec::kRans, 0);
BENCHMARK_CAPTURE(Encode, zstd_3, storage::Codec::kZstd, 3);
BENCHMARK_CAPTURE(Encode, zstd_19, storage::Codec::kZstd, 19)->Iterations(1);

}  // namespace
}  // namespace dcomp

BENCHMARK_MAIN();
