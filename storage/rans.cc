#include "storage/rans.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "base/cpu_features.h"
#include "storage/internal/rans_impl.h"

namespace dcomp::storage {
namespace internal {
namespace {

// MSB-first bit writer/reader for the Elias-gamma frequency table.
class BitWriter {
 public:
  explicit BitWriter(std::vector<uint8_t>* out) : out_(out) {}
  void Put(uint32_t v, int bits) {
    for (int i = bits - 1; i >= 0; --i) {
      acc_ = static_cast<uint8_t>((acc_ << 1) | ((v >> i) & 1));
      if (++n_ == 8) Flush();
    }
  }
  void Gamma(uint32_t v) {  // v >= 1
    int n = 31 - __builtin_clz(v);
    Put(0, n);
    Put(v, n + 1);
  }
  void Finish() {
    if (n_ > 0) {
      acc_ = static_cast<uint8_t>(acc_ << (8 - n_));
      Flush();
    }
  }

 private:
  void Flush() {
    out_->push_back(acc_);
    acc_ = 0;
    n_ = 0;
  }
  std::vector<uint8_t>* out_;
  uint8_t acc_ = 0;
  int n_ = 0;
};

class BitReader {
 public:
  explicit BitReader(std::span<const uint8_t> in) : in_(in) {}
  bool Get(int* bit) {
    if (pos_ >= in_.size() * 8) return false;
    *bit = (in_[pos_ / 8] >> (7 - pos_ % 8)) & 1;
    ++pos_;
    return true;
  }
  // Elias gamma, at most `max_bits` significant bits.
  bool Gamma(uint32_t* v, int max_bits) {
    int zeros = 0, bit = 0;
    for (;;) {
      if (!Get(&bit)) return false;
      if (bit) break;
      if (++zeros >= max_bits) return false;
    }
    uint32_t x = 1;
    for (int i = 0; i < zeros; ++i) {
      if (!Get(&bit)) return false;
      x = (x << 1) | static_cast<uint32_t>(bit);
    }
    *v = x;
    return true;
  }
  size_t bytes_used() const { return (pos_ + 7) / 8; }

 private:
  std::span<const uint8_t> in_;
  size_t pos_ = 0;
};

// Frequencies summing to kProbScale, every present symbol at least 1, chosen greedily to minimise
// the coded size sum(count * -log2(freq / 4096)).
std::array<uint32_t, 256> NormaliseFrequencies(const std::array<uint64_t, 256>& counts,
                                               uint64_t total) {
  std::array<uint32_t, 256> f{};
  int64_t sum = 0;
  for (int s = 0; s < 256; ++s) {
    if (counts[s] == 0) continue;
    double ideal = static_cast<double>(counts[s]) * kProbScale / static_cast<double>(total);
    f[s] = std::max<uint32_t>(1, static_cast<uint32_t>(std::lround(ideal)));
    sum += f[s];
  }
  while (sum != kProbScale) {
    int best = -1;
    double best_cost = 0;
    for (int s = 0; s < 256; ++s) {
      if (counts[s] == 0) continue;
      double c = static_cast<double>(counts[s]);
      if (sum < kProbScale) {  // the increment that saves the most
        double gain = c * std::log2((f[s] + 1.0) / f[s]);
        if (best < 0 || gain > best_cost) best = s, best_cost = gain;
      } else if (f[s] > 1) {  // the decrement that costs the least
        double cost = c * std::log2(f[s] / (f[s] - 1.0));
        if (best < 0 || cost < best_cost) best = s, best_cost = cost;
      }
    }
    if (sum < kProbScale) {
      ++f[best];
      ++sum;
    } else {
      --f[best];
      --sum;
    }
  }
  return f;
}

uint32_t LoadU32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

}  // namespace

Status ParseRansStream(std::span<const uint8_t> in, RansStream* s) {
  if (in.empty()) return DataLossError("rANS stream is empty");
  if (in[0] != kRansStreamTag) {
    return DataLossError("rANS stream layout " + std::to_string(in[0]) + " is unknown (expected " +
                         std::to_string(kRansStreamTag) + ")");
  }
  BitReader br(in.subspan(1));
  std::array<uint32_t, 256> f{};
  uint32_t sum = 0;
  int present = 0;
  int64_t prev = 0;
  for (int sym = 0; sym < 256; ++sym) {
    uint32_t v = 0;
    if (!br.Gamma(&v, 15)) return DataLossError("rANS frequency table truncated or malformed");
    const uint32_t z = v - 1;
    const int64_t value = prev + ((z & 1) ? -static_cast<int64_t>((z + 1) / 2) : z / 2);
    if (value < 0 || value > kProbScale) {
      return DataLossError("rANS frequency of symbol " + std::to_string(sym) + " out of range");
    }
    f[sym] = static_cast<uint32_t>(value);
    prev = value;
    sum += f[sym];
    if (sum > kProbScale) return DataLossError("rANS frequencies sum above 4096");
    if (f[sym] > 0) {
      ++present;
      s->symbol = static_cast<uint8_t>(sym);
    }
  }
  if (sum != kProbScale) {
    return DataLossError("rANS frequencies sum to " + std::to_string(sum) + ", expected 4096");
  }
  s->single_symbol = present == 1;
  if (!s->single_symbol) {
    uint32_t start = 0;
    for (int sym = 0; sym < 256; ++sym) {
      for (uint32_t k = 0; k < f[sym]; ++k) {
        s->table[start + k] = static_cast<uint32_t>(sym) | (k << 8) | (f[sym] << 20);
      }
      start += f[sym];
    }
  }
  size_t pos = 1 + br.bytes_used();
  if (in.size() - pos < kRansLanes * 4) return DataLossError("rANS stream truncated in its states");
  for (int l = 0; l < kRansLanes; ++l, pos += 4) {
    s->states[l] = LoadU32(in.data() + pos);
    if (s->states[l] < kRansL) return DataLossError("rANS state below 2^16");
  }
  if ((in.size() - pos) % 2 != 0) return DataLossError("rANS word stream has an odd byte count");
  s->words_bytes = in.data() + pos;
  s->num_words = (in.size() - pos) / 2;
  return Status::Ok();
}

Status CheckRansEnd(const RansStream& s, size_t words_read, const uint32_t* states) {
  if (words_read != s.num_words) {
    return DataLossError("rANS stream has " + std::to_string(s.num_words - words_read) +
                         " unread words after the last symbol");
  }
  for (int l = 0; l < kRansLanes; ++l) {
    if (states[l] != kRansL) return DataLossError("rANS final state mismatch (corrupt stream)");
  }
  return Status::Ok();
}

Status RansDecodeTail(const RansStream& s, size_t begin, std::span<uint8_t> out, uint32_t* states,
                      size_t* words_read) {
  size_t w = *words_read;
  const uint8_t* words = s.words_bytes;
  const uint32_t* table = s.table.data();
  size_t i = begin;
  // Whole groups while a group's worst case (one word per state) is in bounds: branchless refills
  // (whether a state refills is data, so a branch mispredicts about half the time).
  if (i % kRansLanes == 0) {
    for (; out.size() - i >= kRansLanes && s.num_words - w >= kRansLanes; i += kRansLanes) {
      for (int l = 0; l < kRansLanes; ++l) {
        uint32_t x = states[l];
        const uint32_t e = table[x & (kProbScale - 1)];
        out[i + static_cast<size_t>(l)] = static_cast<uint8_t>(e);
        x = (e >> 20) * (x >> kRansProbBits) + ((e >> 8) & 0xFFF);
        uint16_t v;
        std::memcpy(&v, words + 2 * w, 2);
        const uint32_t refill = x < kRansL;  // arithmetic, so that no branch is emitted
        states[l] = (x << (refill * 16)) | (v & (0u - refill));
        w += refill;
      }
    }
  }
  for (; i < out.size(); ++i) {
    uint32_t& x = states[i % kRansLanes];
    const uint32_t e = table[x & (kProbScale - 1)];
    out[i] = static_cast<uint8_t>(e);
    x = (e >> 20) * (x >> kRansProbBits) + ((e >> 8) & 0xFFF);
    if (x < kRansL) {
      if (w >= s.num_words) return DataLossError("rANS stream truncated");
      uint16_t v;
      std::memcpy(&v, words + 2 * w, 2);
      ++w;
      x = (x << 16) | v;
    }
  }
  *words_read = w;
  return Status::Ok();
}

}  // namespace internal

using internal::kProbScale;
using internal::kRansL;

void RansEncode(std::span<const uint8_t> in, std::vector<uint8_t>* out) {
  out->clear();
  out->push_back(internal::kRansStreamTag);
  std::array<uint64_t, 256> counts{};
  for (uint8_t b : in) ++counts[b];
  std::array<uint32_t, 256> f{};
  if (in.empty()) {
    f[0] = kProbScale;  // a valid table for an empty stream
  } else {
    f = internal::NormaliseFrequencies(counts, in.size());
  }
  {
    internal::BitWriter bw(out);
    // Neighbouring byte values have similar frequencies: code the zigzag delta to the previous one.
    int32_t prev = 0;
    for (int s = 0; s < 256; ++s) {
      const int32_t d = static_cast<int32_t>(f[s]) - prev;
      bw.Gamma(static_cast<uint32_t>(d >= 0 ? 2 * d : -2 * d - 1) + 1);
      prev = static_cast<int32_t>(f[s]);
    }
    bw.Finish();
  }
  std::array<uint32_t, 256> start{};
  for (int s = 1; s < 256; ++s) start[s] = start[s - 1] + f[s - 1];

  // Encode backwards; words are produced in reverse and flipped at the end.
  std::vector<uint16_t> rev;
  rev.reserve(in.size() / 2 + 16);
  std::array<uint32_t, kRansLanes> x;
  x.fill(kRansL);
  for (size_t i = in.size(); i-- > 0;) {
    uint32_t& st = x[i % kRansLanes];
    const uint32_t freq = f[in[i]];
    const uint64_t x_max = static_cast<uint64_t>((kRansL >> kRansProbBits) << 16) * freq;
    if (st >= x_max) {
      rev.push_back(static_cast<uint16_t>(st));
      st >>= 16;
    }
    const uint32_t q = st / freq;
    st = (q << kRansProbBits) + (st - q * freq) + start[in[i]];
  }
  const size_t header = out->size();
  out->resize(header + kRansLanes * 4 + rev.size() * 2);
  std::memcpy(out->data() + header, x.data(), kRansLanes * 4);
  uint8_t* w = out->data() + header + kRansLanes * 4;
  for (size_t k = 0; k < rev.size(); ++k) {
    std::memcpy(w + 2 * k, &rev[rev.size() - 1 - k], 2);
  }
}

namespace {

Status DecodeWith(std::span<const uint8_t> in, std::span<uint8_t> out, RansDecoder d) {
  auto s = std::make_unique<internal::RansStream>();
  RETURN_IF_ERROR(internal::ParseRansStream(in, s.get()));
  std::array<uint32_t, kRansLanes> states = s->states;
  size_t words_read = 0;
  if (s->single_symbol) {
    if (!out.empty()) std::memset(out.data(), s->symbol, out.size());
    return internal::CheckRansEnd(*s, 0, states.data());
  }
  size_t done = 0;
  switch (d) {
#if defined(__x86_64__)
    case RansDecoder::kAvx512Vbmi2:
      done = internal::RansDecodeGroupsAvx512(*s, out, states.data(), &words_read);
      break;
    case RansDecoder::kAvx2:
      done = internal::RansDecodeGroupsAvx2(*s, out, states.data(), &words_read);
      break;
#endif
#if defined(__aarch64__)
    case RansDecoder::kNeon:
      done = internal::RansDecodeGroupsNeon(*s, out, states.data(), &words_read);
      break;
#endif
    default: break;  // the portable loop below does everything
  }
  RETURN_IF_ERROR(internal::RansDecodeTail(*s, done, out, states.data(), &words_read));
  return internal::CheckRansEnd(*s, words_read, states.data());
}

bool Supported(RansDecoder d) {
  [[maybe_unused]] const CpuFeatures& f = Cpu();
  switch (d) {
    case RansDecoder::kPortable: return true;
#if defined(__x86_64__)
    case RansDecoder::kAvx2: return f.avx2;
    case RansDecoder::kAvx512Vbmi2: return f.avx512f && f.avx512bw && f.avx512vbmi2;
#endif
#if defined(__aarch64__)
    case RansDecoder::kNeon: return f.asimd;
#endif
    default: return false;
  }
}

struct Selection {
  RansDecoder decoder = RansDecoder::kPortable;
  std::string note;
};

// Decided once per process: the fastest decoder this CPU has (the last available in
// kAllDecoders); DCOMP_RANS=NAME forces one, DCOMP_KERNELS=ref forces the portable decoder.
Selection Select() {
  Selection sel;
  for (RansDecoder d : AvailableRansDecoders()) sel.decoder = d;
  std::string note;
  if (const char* k = std::getenv("DCOMP_KERNELS"); k != nullptr && std::string(k) == "ref") {
    sel.decoder = RansDecoder::kPortable;
    note = " (forced by DCOMP_KERNELS=ref)";
  }
  if (const char* forced = std::getenv("DCOMP_RANS"); forced != nullptr && *forced != '\0') {
    note = std::string(" (DCOMP_RANS=") + forced + " is unknown or unsupported here)";
    for (RansDecoder d : AvailableRansDecoders()) {
      if (std::string(RansDecoderName(d)) == forced) {
        sel.decoder = d;
        note = " (forced by DCOMP_RANS)";
      }
    }
  }
  sel.note = std::string(RansDecoderName(sel.decoder)) + note + " [cpu: " + Cpu().Describe() + "]";
  return sel;
}

const Selection& TheSelection() {
  static const Selection s = Select();
  return s;
}

// Every decoder, slowest first.
constexpr RansDecoder kAllDecoders[] = {RansDecoder::kPortable, RansDecoder::kNeon,
                                        RansDecoder::kAvx2, RansDecoder::kAvx512Vbmi2};

}  // namespace

const char* RansDecoderName(RansDecoder d) {
  switch (d) {
    case RansDecoder::kPortable: return "portable";
    case RansDecoder::kAvx2: return "avx2";
    case RansDecoder::kAvx512Vbmi2: return "avx512_vbmi2";
    case RansDecoder::kNeon: return "neon";
  }
  return "?";
}

std::vector<RansDecoder> AvailableRansDecoders() {
  std::vector<RansDecoder> v;
  for (RansDecoder d : kAllDecoders) {
    if (Supported(d)) v.push_back(d);
  }
  return v;
}

RansDecoder SelectedRansDecoder() { return TheSelection().decoder; }
std::string RansDecoderNote() { return TheSelection().note; }
const char* RansDecoderName() { return RansDecoderName(SelectedRansDecoder()); }

Status RansDecodeWith(RansDecoder d, std::span<const uint8_t> in, std::span<uint8_t> out) {
  if (!Supported(d)) {
    return FailedPreconditionError(std::string("the rANS decoder ") + RansDecoderName(d) +
                                   " is not available on this CPU");
  }
  return DecodeWith(in, out, d);
}

Status RansDecodePortable(std::span<const uint8_t> in, std::span<uint8_t> out) {
  return DecodeWith(in, out, RansDecoder::kPortable);
}

Status RansDecode(std::span<const uint8_t> in, std::span<uint8_t> out) {
  return DecodeWith(in, out, SelectedRansDecoder());
}

double Order0EntropyBits(std::span<const uint8_t> data) {
  if (data.empty()) return 0;
  std::array<uint64_t, 256> c{};
  for (uint8_t b : data) ++c[b];
  double h = 0, n = static_cast<double>(data.size());
  for (uint64_t k : c) {
    if (k) h -= static_cast<double>(k) / n * std::log2(static_cast<double>(k) / n);
  }
  return h;
}

}  // namespace dcomp::storage
