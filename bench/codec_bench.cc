// Block codecs side by side on the same blocks of INT8 weight codes: dcomp's rANS with each decoder
// this CPU has (portable, AVX2, AVX-512 VBMI2, NEON), as dcomp pack writes it (stream layout 2 or
// 3), in layout 2 alone ("/L2") and in layout 1 ("/L1"), htscodecs' rANS 4x16 and 32x16 order-0
// (each SIMD level it has here; Debian's libhtscodecs), and zstd at several levels. For each: bits
// per weight (8 x stored / raw), encode GB/s (one thread) and decode GB/s with 1 and 2 threads, in
// bytes of decoded codes per second; above them the blocks' order-0 entropy, the bound of a static
// coder whose tables cost nothing. Then, for each --dcm source, rANS layouts 2 and 3 decoded in
// alternating rounds (their ratio measured in one run); the check of decoded codes against
// non-uniform levels, per decoder's instruction set; and CRC32C, which the reader checks on every
// block it reads: dcomp's three chains of the CRC instruction against the single chain it replaced
// and the portable table.
//
// Sources: `plain`, every matrix of MODEL quantized per row (plain INT8, cut into 128 KiB blocks);
// and for each --dcm FILE, the row-code blocks of its matrices as packed (at most --max-mib MiB,
// taken evenly across the file).
//
//   codec_bench [--model M] [--dcm FILE]... [--max-mib 64] [--seconds 0.5]
#include <htscodecs/rANS_static4x16.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "base/clock.h"
#include "base/cpu_features.h"
#include "base/packed_codes.h"
#include "bench/bench_model.h"
#include "engine/model_file.h"
#include "packer/quantize.h"
#include "storage/codec.h"
#include "storage/container.h"
#include "storage/crc32c.h"
#include "storage/rans.h"

namespace dcomp {
namespace {

using Block = std::vector<uint8_t>;
constexpr size_t kBlock = 128 << 10;

struct Source {
  std::string name;
  std::vector<Block> blocks;
  size_t raw = 0;
};

Result<Source> PlainCodes(const std::string& model) {
  ASSIGN_OR_RETURN(auto f, OpenModelFile(model));
  Block all;
  for (const TensorDesc& t : f->tensors()) {
    if (t.rows < 2) continue;
    ASSIGN_OR_RETURN(auto w, f->ReadF32(t.name));
    packer::QuantizedMatrix q =
        packer::QuantizeMatrix(w, static_cast<size_t>(t.rows), static_cast<size_t>(t.cols), {});
    const auto* codes = reinterpret_cast<const uint8_t*>(q.codes.data());
    all.insert(all.end(), codes, codes + q.codes.size());
  }
  Source s{"plain INT8 (" + model.substr(model.find_last_of('/') + 1) + ")", {}, 0};
  for (size_t o = 0; o < all.size(); o += kBlock) {
    s.blocks.emplace_back(all.begin() + static_cast<ptrdiff_t>(o),
                          all.begin() + static_cast<ptrdiff_t>(std::min(all.size(), o + kBlock)));
    s.raw += s.blocks.back().size();
  }
  return s;
}

// The row-code blocks of a packed model, decoded: every k-th so that at most max_bytes are taken.
Result<Source> PackedCodes(const std::string& path, size_t max_bytes) {
  ASSIGN_OR_RETURN(auto r, storage::ContainerReader::Open(path));
  std::vector<uint32_t> code_blocks;
  uint64_t total = 0;
  for (const auto& t : r->manifest().tensors()) {
    if (t.type() != storage::pb::TENSOR_Q8_ROW) continue;
    for (uint32_t k = 1; k < t.num_blocks(); ++k) {
      code_blocks.push_back(t.first_block() + k);
      total += r->block(t.first_block() + k).raw_size();
    }
  }
  const size_t step = std::max<size_t>(1, static_cast<size_t>((total + max_bytes - 1) / max_bytes));
  Source s{"packed codes (" + path.substr(path.find_last_of('/') + 1) + ")", {}, 0};
  storage::BlockDecoder dec;
  for (size_t i = 0; i < code_blocks.size(); i += step) {
    Block b(r->block(code_blocks[i]).raw_size());
    RETURN_IF_ERROR(r->ReadBlock(code_blocks[i], b, &dec));
    s.raw += b.size();
    s.blocks.push_back(std::move(b));
  }
  return s;
}

// A codec as the table shows it: how to encode a block and how to decode it (thread-safe given
// per-thread state created by make_decoder).
struct Codec {
  std::string name;
  std::function<Status(const Block&, Block*)> encode;
  // Returns a decoder for one thread.
  std::function<std::function<Status(const Block&, Block&)>()> make_decoder;
  std::function<void()> before = [] {};  // e.g. select htscodecs' SIMD level
};

std::vector<Codec> Codecs() {
  std::vector<Codec> c;
  // What dcomp pack writes (64 states; layout 2 or 3, whichever table is shorter), layout 2 alone
  // (formats 3 to 9) and layout 1 (32 states, formats 1 and 2).
  for (int layout : {storage::kRansLayoutSmallestTable, 2, 1}) {
    for (storage::RansDecoder d : storage::AvailableRansDecoders()) {
      const char* tag = layout == 1 ? "/L1 " : layout == 2 ? "/L2 " : " ";
      c.push_back({std::string("dcomp rans") + tag + storage::RansDecoderName(d),
                   [layout](const Block& in, Block* out) {
                     storage::RansEncodeLayout(in, layout, out);
                     return Status::Ok();
                   },
                   [d] {
                     return [d](const Block& in, Block& out) {
                       return storage::RansDecodeWith(d, in, out);
                     };
                   }});
    }
  }
  struct Hts {
    const char* name;
    int order, cpu;
    bool have;
  };
  const CpuFeatures& f = Cpu();
  const int all = RANS_CPU_ENC_SSE4 | RANS_CPU_ENC_AVX2 | RANS_CPU_ENC_AVX512 | RANS_CPU_ENC_NEON |
                  RANS_CPU_DEC_SSE4 | RANS_CPU_DEC_AVX2 | RANS_CPU_DEC_AVX512 | RANS_CPU_DEC_NEON;
  const Hts hts[] = {
      {"htscodecs rans 4x16", 0, all, true},
      {"htscodecs rans 32x16 scalar", RANS_ORDER_X32, 0, true},
      {"htscodecs rans 32x16 sse4", RANS_ORDER_X32, RANS_CPU_ENC_SSE4 | RANS_CPU_DEC_SSE4, f.sse42},
      {"htscodecs rans 32x16 avx2", RANS_ORDER_X32, RANS_CPU_ENC_AVX2 | RANS_CPU_DEC_AVX2, f.avx2},
      {"htscodecs rans 32x16 avx512", RANS_ORDER_X32, RANS_CPU_ENC_AVX512 | RANS_CPU_DEC_AVX512,
       f.avx512f && f.avx512bw},
      {"htscodecs rans 32x16 neon", RANS_ORDER_X32, RANS_CPU_ENC_NEON | RANS_CPU_DEC_NEON, f.asimd},
  };
  for (const Hts& h : hts) {
    if (!h.have) continue;
    const int order = h.order, cpu = h.cpu;
    c.push_back(
        {h.name,
         [order](const Block& in, Block* out) {
           unsigned int n = rans_compress_bound_4x16(static_cast<unsigned>(in.size()), order);
           out->resize(n);
           if (!rans_compress_to_4x16(const_cast<uint8_t*>(in.data()),
                                      static_cast<unsigned>(in.size()), out->data(), &n, order)) {
             return InternalError("htscodecs: compression failed");
           }
           out->resize(n);
           return Status::Ok();
         },
         [] {
           return [](const Block& in, Block& out) {
             unsigned int n = static_cast<unsigned>(out.size());
             if (!rans_uncompress_to_4x16(const_cast<uint8_t*>(in.data()),
                                          static_cast<unsigned>(in.size()), out.data(), &n) ||
                 n != out.size()) {
               return DataLossError("htscodecs: decompression failed");
             }
             return Status::Ok();
           };
         },
         [cpu] { rans_set_cpu(cpu); }});
  }
  for (int level : {3, 9, 19}) {
    c.push_back({"zstd -" + std::to_string(level),
                 [level](const Block& in, Block* out) {
                   return storage::EncodeBlock(storage::Codec::kZstd, in, level, out);
                 },
                 [] {
                   auto dec = std::make_shared<storage::BlockDecoder>();
                   return [dec](const Block& in, Block& out) {
                     return dec->Decode(storage::Codec::kZstd, in, out);
                   };
                 }});
  }
  return c;
}

// Decode GB/s of `threads` threads, each decoding every block again and again for `seconds`
// (the threads start together; bytes of output over the wall time).
double DecodeRate(const Codec& c, const std::vector<Block>& enc, const Source& src, int threads,
                  double seconds) {
  std::atomic<uint64_t> bytes{0};
  std::atomic<bool> failed{false};
  const auto t0 = Clock::now();
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      auto decode = c.make_decoder();
      Block out(kBlock * 2);
      uint64_t n = 0;
      size_t i = static_cast<size_t>(t) * enc.size() / static_cast<size_t>(threads);
      while (Seconds(t0, Clock::now()) < seconds) {
        for (size_t k = 0; k < 16; ++k, i = (i + 1) % enc.size()) {
          out.resize(src.blocks[i].size());
          if (!decode(enc[i], out).ok() || out != src.blocks[i]) failed = true;
          n += out.size();
        }
      }
      bytes += n;
    });
  }
  for (auto& t : pool) t.join();
  if (failed) return -1;
  return static_cast<double>(bytes) / Seconds(t0, Clock::now()) / 1e9;
}

void Run(const Source& src, double seconds) {
  std::printf("\n%s: %zu blocks, %.1f MiB of codes\n", src.name.c_str(), src.blocks.size(),
              static_cast<double>(src.raw) / (1 << 20));
  std::printf("%-30s %9s %11s %11s %11s\n", "codec", "bits/w", "enc GB/s", "dec GB/s 1t",
              "dec GB/s 2t");
  // The bound of a static order-0 coder that sends each block's frequencies for free.
  double entropy_bits = 0;
  for (const Block& b : src.blocks) {
    entropy_bits += storage::Order0EntropyBits(b) * static_cast<double>(b.size());
  }
  std::printf("%-30s %9.3f\n", "order-0 entropy of each block",
              entropy_bits / static_cast<double>(src.raw));
  for (const Codec& c : Codecs()) {
    c.before();
    std::vector<Block> enc(src.blocks.size());
    size_t stored = 0;
    const auto t0 = Clock::now();
    for (size_t i = 0; i < enc.size(); ++i) {
      if (Status s = c.encode(src.blocks[i], &enc[i]); !s.ok()) {
        std::printf("%-30s %s\n", c.name.c_str(), s.ToString().c_str());
        enc.clear();
        break;
      }
      stored += enc[i].size();
    }
    if (enc.empty()) continue;
    const double enc_rate = static_cast<double>(src.raw) / Seconds(t0, Clock::now()) / 1e9;
    const double d1 = DecodeRate(c, enc, src, 1, seconds);
    const double d2 = DecodeRate(c, enc, src, 2, seconds);
    std::printf("%-30s %9.3f %11.3f %11.3f %11.3f%s\n", c.name.c_str(),
                8.0 * static_cast<double>(stored) / static_cast<double>(src.raw), enc_rate, d1, d2,
                d1 < 0 || d2 < 0 ? "  DECODE MISMATCH" : "");
  }
}

// rANS layouts 2 and 3 differ only in how the frequency table is coded: the same blocks in both,
// decoded by each decoder on one thread in alternating rounds (every block once per round), so
// that the ratio is measured in one run; GB/s of decoded codes.
void LayoutRounds(const Source& src, double seconds) {
  std::vector<Block> enc[2];
  for (int k = 0; k < 2; ++k) {
    enc[k].resize(src.blocks.size());
    for (size_t i = 0; i < src.blocks.size(); ++i) {
      storage::RansEncodeLayout(src.blocks[i], 2 + k, &enc[k][i]);
    }
  }
  std::printf("\n%s: rANS layout 2 / layout 3, alternating rounds, 1 thread (GB/s)\n",
              src.name.c_str());
  Block out(kBlock * 2);
  for (storage::RansDecoder d : storage::AvailableRansDecoders()) {
    double secs[2] = {0, 0};
    bool ok = true;
    int rounds = 0;
    for (const auto t0 = Clock::now(); rounds < 4 || Seconds(t0, Clock::now()) < seconds;
         ++rounds) {
      for (int k = 0; k < 2; ++k) {
        const auto r0 = Clock::now();
        for (size_t i = 0; i < enc[k].size(); ++i) {
          out.resize(src.blocks[i].size());
          ok = ok && storage::RansDecodeWith(d, enc[k][i], out).ok() && out == src.blocks[i];
        }
        secs[k] += Seconds(r0, Clock::now());
      }
    }
    const double bytes = static_cast<double>(src.raw) * rounds;
    std::printf("%-14s %7.3f %7.3f  layout 3 / layout 2: %.3fx%s\n", storage::RansDecoderName(d),
                bytes / secs[0] / 1e9, bytes / secs[1] / 1e9, secs[0] / secs[1],
                ok ? "" : "  DECODE MISMATCH");
  }
}

// The check of decoded codes against a tensor's non-uniform levels (format 5), which the reader
// runs on every such block: each decoder's instruction set against the portable table lookup, on a
// 128 KiB block of random level values, alternating the sides in rounds; GB/s of codes checked.
void LevelChecks(double seconds) {
  std::printf("\nlevel check (128 KiB blocks of the packer's levels, 1 thread, GB/s)\n%-6s",
              "bits");
  const std::vector<storage::RansDecoder> decoders = storage::AvailableRansDecoders();
  for (storage::RansDecoder d : decoders) std::printf(" %14s", storage::RansDecoderName(d));
  std::printf("\n");
  for (int bits = kMinPackedBits; bits <= kMaxLevelBits; ++bits) {
    const std::vector<uint8_t> mag = LevelTable(bits, 2.0);
    const CodeLevels levels = MakeCodeLevels(bits, mag);
    std::vector<int8_t> q(kBlock);
    uint32_t x = 12345;
    for (int8_t& v : q) {
      x = x * 1664525u + 1013904223u;
      const uint8_t m = mag[(x >> 8) % mag.size()];
      v = static_cast<int8_t>((x >> 31) != 0 ? -m : m);
    }
    std::vector<double> bytes(decoders.size()), secs(decoders.size());
    bool all_ok = true;
    for (int round = 0; round < 10; ++round) {
      for (size_t k = 0; k < decoders.size(); ++k) {
        const auto t0 = Clock::now();
        int reps = 0;
        while (Seconds(t0, Clock::now()) < seconds / 10 / static_cast<double>(decoders.size())) {
          for (int r = 0; r < 64; ++r, ++reps) {
            all_ok &= storage::ValuesAreLevelsWith(decoders[k], q.data(), q.size(), levels);
          }
        }
        secs[k] += Seconds(t0, Clock::now());
        bytes[k] += static_cast<double>(reps) * static_cast<double>(q.size());
      }
    }
    std::printf("%-6d", bits);
    for (size_t k = 0; k < decoders.size(); ++k) std::printf(" %14.2f", bytes[k] / secs[k] / 1e9);
    std::printf("%s\n", all_ok ? "" : "  CHECK FAILED");
  }
}

// The single chain of CRC instructions that storage/crc32c.cc ran before its three chains: the
// baseline of the CRC table below (the same value; checked).
#if defined(__x86_64__)
#define BENCH_CRC_TARGET __attribute__((target("sse4.2")))
BENCH_CRC_TARGET inline uint32_t CrcWord(uint32_t c, uint64_t v) {
  return static_cast<uint32_t>(__builtin_ia32_crc32di(c, v));
}
BENCH_CRC_TARGET inline uint32_t CrcByte(uint32_t c, uint8_t v) {
  return __builtin_ia32_crc32qi(c, v);
}
bool HaveCrcInstruction() { return Cpu().sse42; }
#elif defined(__aarch64__)
#define BENCH_CRC_TARGET __attribute__((target("+crc")))
BENCH_CRC_TARGET inline uint32_t CrcWord(uint32_t c, uint64_t v) {
  return __builtin_aarch64_crc32cx(c, v);
}
BENCH_CRC_TARGET inline uint32_t CrcByte(uint32_t c, uint8_t v) {
  return __builtin_aarch64_crc32cb(c, v);
}
bool HaveCrcInstruction() { return Cpu().crc32; }
#endif

#if defined(BENCH_CRC_TARGET)
BENCH_CRC_TARGET uint32_t CrcOneChain(const uint8_t* p, size_t n, uint32_t crc) {
  uint32_t c = ~crc;
  for (; n >= 8; n -= 8, p += 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    c = CrcWord(c, v);
  }
  for (; n > 0; --n, ++p) c = CrcByte(c, *p);
  return ~c;
}
#else
uint32_t CrcOneChain(const uint8_t* p, size_t n, uint32_t crc) {
  return storage::Crc32cPortable(p, n, crc);
}
bool HaveCrcInstruction() { return false; }
#endif

// CRC32C of blocks of 4 KiB, 128 KiB and 64 MiB (in L1, in L2, out of cache), one thread, the sides
// alternated in 10 rounds; GB/s.
void CrcSpeeds(double seconds) {
  struct Side {
    const char* name;
    uint32_t (*fn)(const uint8_t*, size_t, uint32_t);
  };
  const Side sides[] = {{"one chain", CrcOneChain},
                        {"three chains", [](const uint8_t* p, size_t n,
                                            uint32_t c) { return storage::Crc32c(p, n, c); }},
                        {"portable", [](const uint8_t* p, size_t n, uint32_t c) {
                           return storage::Crc32cPortable(p, n, c);
                         }}};
  std::printf("\ncrc32c (1 thread, GB/s; the CRC instruction %s)\n%-10s",
              HaveCrcInstruction() ? "available" : "absent", "block");
  for (const Side& side : sides) std::printf(" %14s", side.name);
  std::printf("\n");
  for (size_t size : {size_t{4} << 10, size_t{128} << 10, size_t{64} << 20}) {
    std::vector<uint8_t> b(size);
    uint32_t x = 777;
    for (uint8_t& v : b) v = static_cast<uint8_t>((x = x * 1664525u + 1013904223u) >> 24);
    const uint32_t want = storage::Crc32cPortable(b.data(), b.size());
    double bytes[3] = {}, secs[3] = {};
    bool all_ok = true;
    for (int round = 0; round < 10; ++round) {
      for (size_t k = 0; k < 3; ++k) {
        const auto t0 = Clock::now();
        size_t reps = 0;
        while (Seconds(t0, Clock::now()) < seconds / 30) {
          const size_t batch = std::max<size_t>(1, (size_t{1} << 20) / size);
          for (size_t r = 0; r < batch; ++r, ++reps)
            all_ok &= sides[k].fn(b.data(), size, 0) == want;
        }
        secs[k] += Seconds(t0, Clock::now());
        bytes[k] += static_cast<double>(reps) * static_cast<double>(size);
      }
    }
    std::printf("%-10s", (std::to_string(size >> 10) + " KiB").c_str());
    for (size_t k = 0; k < 3; ++k) std::printf(" %14.2f", bytes[k] / secs[k] / 1e9);
    std::printf("%s\n", all_ok ? "" : "  MISMATCH");
  }
}

int Main(int argc, char** argv) {
  std::string model = BenchModelPath();
  std::vector<std::string> dcms;
  size_t max_mib = 64;
  double seconds = 0.5;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) {
      std::fprintf(stderr,
                   "usage: codec_bench [--model M] [--dcm F]... [--max-mib N] [--seconds S]\n");
      return 2;
    }
    if (a == "--model")
      model = argv[++i];
    else if (a == "--dcm")
      dcms.push_back(argv[++i]);
    else if (a == "--max-mib")
      max_mib = std::stoul(argv[++i]);
    else if (a == "--seconds")
      seconds = std::stod(argv[++i]);
    else {
      std::fprintf(stderr, "unknown option %s\n", a.c_str());
      return 2;
    }
  }
  std::printf("cpu: %s; dcomp rANS selects %s\n", Cpu().Describe().c_str(),
              storage::RansDecoderNote().c_str());
  std::vector<Source> sources;
  Result<Source> plain = PlainCodes(model);
  if (!plain.ok()) {
    std::fprintf(stderr, "%s\n", plain.status().ToString().c_str());
    return 1;
  }
  sources.push_back(std::move(*plain));
  for (const std::string& d : dcms) {
    Result<Source> s = PackedCodes(d, max_mib << 20);
    if (!s.ok()) {
      std::fprintf(stderr, "%s\n", s.status().ToString().c_str());
      return 1;
    }
    sources.push_back(std::move(*s));
  }
  for (const Source& s : sources) Run(s, seconds);
  for (size_t k = 1; k < sources.size(); ++k) LayoutRounds(sources[k], seconds);
  LevelChecks(seconds);
  CrcSpeeds(seconds);
  return 0;
}

}  // namespace
}  // namespace dcomp

int main(int argc, char** argv) { return dcomp::Main(argc, argv); }
