#include "storage/rans.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "base/cpu_features.h"
#include "base/packed_codes.h"
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
  explicit BitReader(std::span<const uint8_t> in) : in_(in) { Refill(); }
  // Elias gamma, at most `max_bits` (<= 16) significant bits; false if the code is longer or runs
  // past the end. Codes come from a 64-bit buffer refilled a byte at a time (a code is at most 31
  // bits), so that consecutive codes depend on each other only through a count and a shift.
  bool Gamma(uint32_t* v, int max_bits) {
    if (avail_ < 32) Refill();
    const int zeros = buf_ == 0 ? 64 : __builtin_clzll(buf_);
    if (zeros >= max_bits) return false;
    const int len = 2 * zeros + 1;
    if (len > avail_) return false;  // runs past the end
    *v = static_cast<uint32_t>(buf_ >> (64 - len));
    buf_ <<= len;
    avail_ -= len;
    used_ += static_cast<size_t>(len);
    return true;
  }
  size_t bytes_used() const { return (used_ + 7) / 8; }

 private:
  // At least 57 bits in the buffer while bytes remain; zeros behind the last one.
  void Refill() {
    while (avail_ <= 56 && next_ < in_.size()) {
      buf_ |= static_cast<uint64_t>(in_[next_++]) << (56 - avail_);
      avail_ += 8;
    }
  }
  std::span<const uint8_t> in_;
  uint64_t buf_ = 0;  // MSB first
  int avail_ = 0;     // bits of buf_ that came from the input
  size_t next_ = 0;   // next byte to load
  size_t used_ = 0;   // bits consumed
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

Status ParseRansStream(std::span<const uint8_t> in, size_t n, RansStream* s) {
  if (in.empty()) return DataLossError("rANS stream is empty");
  const int layout = in[0];
  if (layout < 1 || layout > 3) {
    return DataLossError("rANS stream layout " + std::to_string(layout) +
                         " is unknown (expected 1, 2 or 3)");
  }
  s->lanes = RansLanesOf(layout);
  s->coded = RansCodedSymbols(layout, n);
  BitReader br(in.subspan(1));
  std::array<uint32_t, 256> f{};
  uint32_t sum = 0;
  int present = 0;
  // Layout 3 (WriteTable): gamma(1) is an absent symbol, a present one is offset by 2 and at
  // least 1.
  const bool sparse = layout == 3;
  const uint32_t offset = sparse ? 2 : 1;
  int64_t prev = 0;  // the previous symbol's frequency (layout 3: the previous present symbol's)
  for (int sym = 0; sym < 256; ++sym) {
    uint32_t v = 0;
    if (!br.Gamma(&v, 15)) return DataLossError("rANS frequency table truncated or malformed");
    if (sparse && v == 1) continue;
    const uint32_t z = v - offset;
    const int64_t value = prev + ((z & 1) ? -static_cast<int64_t>((z + 1) / 2) : z / 2);
    if (value < (sparse ? 1 : 0) || value > kProbScale) {
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
    uint32_t* slot = s->table.data();
    for (int sym = 0; sym < 256; ++sym) {
      const uint32_t entry = static_cast<uint32_t>(sym) | (f[sym] << 20);
      for (uint32_t k = 0; k < f[sym]; ++k) *slot++ = entry | (k << 8);
    }
  }
  size_t pos = 1 + br.bytes_used();
  const size_t lanes = static_cast<size_t>(s->lanes);
  if (in.size() - pos < lanes * 4) return DataLossError("rANS stream truncated in its states");
  for (size_t l = 0; l < lanes; ++l, pos += 4) {
    s->states[l] = LoadU32(in.data() + pos);
    if (s->states[l] < kRansL) return DataLossError("rANS state below 2^16");
  }
  if ((in.size() - pos) % 2 != 0) return DataLossError("rANS word stream has an odd byte count");
  s->words_bytes = in.data() + pos;
  s->num_words = (in.size() - pos) / 2;
  return Status::Ok();
}

namespace {

// The encoder's initial states: 2^16 plus, in layout 2, the symbols [coded, in.size()) of each
// lane (the j-th of lane l at byte j).
void InitialStates(std::span<const uint8_t> in, size_t coded, int lanes, uint32_t* x) {
  for (int l = 0; l < lanes; ++l) x[l] = kRansL;
  const size_t n = static_cast<size_t>(lanes);
  for (size_t i = coded; i < in.size(); ++i) {
    x[i % n] |= static_cast<uint32_t>(in[i]) << (8 * ((i - coded) / n));
  }
}

}  // namespace

Status FinishRansDecode(const RansStream& s, size_t words_read, const uint32_t* states,
                        std::span<uint8_t> out) {
  if (words_read != s.num_words) {
    return DataLossError("rANS stream has " + std::to_string(s.num_words - words_read) +
                         " unread words after the last symbol");
  }
  const size_t lanes = static_cast<size_t>(s.lanes);
  for (size_t i = s.coded; i < out.size(); ++i) {
    out[i] = static_cast<uint8_t>(states[i % lanes] >> (8 * ((i - s.coded) / lanes)));
  }
  std::array<uint32_t, kRansMaxLanes> expected;
  InitialStates(out, s.coded, s.lanes, expected.data());
  for (int l = 0; l < s.lanes; ++l) {
    if (states[l] != expected[static_cast<size_t>(l)]) {
      return DataLossError("rANS final state mismatch (corrupt stream)");
    }
  }
  return Status::Ok();
}

Status RansDecodeTail(const RansStream& s, size_t begin, std::span<uint8_t> out, uint32_t* states,
                      size_t* words_read) {
  size_t w = *words_read;
  const uint8_t* words = s.words_bytes;
  const uint32_t* table = s.table.data();
  const size_t lanes = static_cast<size_t>(s.lanes);
  const size_t end = s.coded;
  size_t i = begin;
  // Whole groups while a group's worst case (one word per state) is in bounds: branchless refills
  // (whether a state refills is data, so a branch mispredicts about half the time).
  if (i % lanes == 0) {
    for (; end - i >= lanes && s.num_words - w >= lanes; i += lanes) {
      for (size_t l = 0; l < lanes; ++l) {
        uint32_t x = states[l];
        const uint32_t e = table[x & (kProbScale - 1)];
        out[i + l] = static_cast<uint8_t>(e);
        x = (e >> 20) * (x >> kRansProbBits) + ((e >> 8) & 0xFFF);
        uint16_t v;
        std::memcpy(&v, words + 2 * w, 2);
        const uint32_t refill = x < kRansL;  // arithmetic, so that no branch is emitted
        states[l] = (x << (refill * 16)) | (v & (0u - refill));
        w += refill;
      }
    }
  }
  for (; i < end; ++i) {
    uint32_t& x = states[i % lanes];
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

namespace {

// Appends the layout byte and the frequency table. Neighbouring byte values have similar
// frequencies: layouts 1 and 2 code each one's zigzag difference to the previous one. The codes of
// non-uniform levels use a few dozen byte values spread over all 256, where each present symbol
// between absent ones would cost two long differences: layout 3 codes an absent symbol in one bit
// and a present one's difference to the previous present one.
void WriteTable(const std::array<uint32_t, 256>& f, int layout, std::vector<uint8_t>* out) {
  out->push_back(static_cast<uint8_t>(layout));
  internal::BitWriter bw(out);
  const uint32_t offset = layout == 3 ? 2 : 1;
  int32_t prev = 0;
  for (int s = 0; s < 256; ++s) {
    if (layout == 3 && f[s] == 0) {
      bw.Gamma(1);
      continue;
    }
    const int32_t d = static_cast<int32_t>(f[s]) - prev;
    bw.Gamma(static_cast<uint32_t>(d >= 0 ? 2 * d : -2 * d - 1) + offset);
    prev = static_cast<int32_t>(f[s]);
  }
  bw.Finish();
}

}  // namespace

void RansEncodeLayout(std::span<const uint8_t> in, int layout, std::vector<uint8_t>* out) {
  // kRansLayoutSmallestTable chooses between layouts 2 and 3, whose states are the same.
  const int states_layout = layout == kRansLayoutSmallestTable ? 2 : layout;
  const int lanes = internal::RansLanesOf(states_layout);
  const size_t coded = internal::RansCodedSymbols(states_layout, in.size());
  std::array<uint64_t, 256> counts{};
  for (size_t i = 0; i < coded; ++i) ++counts[in[i]];
  std::array<uint32_t, 256> f{};
  if (coded == 0) {
    f[0] = kProbScale;  // a valid table for an empty stream
  } else {
    f = internal::NormaliseFrequencies(counts, coded);
  }
  out->clear();
  if (layout == kRansLayoutSmallestTable) {
    std::vector<uint8_t> sparse;
    WriteTable(f, 2, out);
    WriteTable(f, 3, &sparse);
    if (sparse.size() < out->size()) out->swap(sparse);
  } else {
    WriteTable(f, layout, out);
  }
  std::array<uint32_t, 256> start{};
  for (int s = 1; s < 256; ++s) start[s] = start[s - 1] + f[s - 1];

  // Encode backwards; words are produced in reverse and flipped at the end.
  std::vector<uint16_t> rev;
  rev.reserve(coded / 2 + 16);
  std::array<uint32_t, kRansMaxLanes> x;
  internal::InitialStates(in, coded, lanes, x.data());
  for (size_t i = coded; i-- > 0;) {
    uint32_t& st = x[i % static_cast<size_t>(lanes)];
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
  const size_t state_bytes = static_cast<size_t>(lanes) * 4;
  out->resize(header + state_bytes + rev.size() * 2);
  std::memcpy(out->data() + header, x.data(), state_bytes);
  uint8_t* w = out->data() + header + state_bytes;
  for (size_t k = 0; k < rev.size(); ++k) {
    std::memcpy(w + 2 * k, &rev[rev.size() - 1 - k], 2);
  }
}

void RansEncode(std::span<const uint8_t> in, std::vector<uint8_t>* out) {
  RansEncodeLayout(in, kRansLayoutSmallestTable, out);
}

namespace {

Status DecodeWith(std::span<const uint8_t> in, std::span<uint8_t> out, RansDecoder d) {
  auto s = std::make_unique_for_overwrite<internal::RansStream>();  // the table is 16 KiB
  RETURN_IF_ERROR(internal::ParseRansStream(in, out.size(), s.get()));
  std::array<uint32_t, kRansMaxLanes> states = s->states;
  size_t words_read = 0;
  const std::span<uint8_t> coded = out.first(s->coded);
  if (s->single_symbol) {
    if (!coded.empty()) std::memset(coded.data(), s->symbol, coded.size());
    return internal::FinishRansDecode(*s, 0, states.data(), out);
  }
  size_t done = 0;
  switch (d) {
#if defined(__x86_64__)
    case RansDecoder::kAvx512Vbmi2:
      done = internal::RansDecodeGroupsAvx512(*s, coded, states.data(), &words_read);
      break;
    case RansDecoder::kAvx2:
      done = internal::RansDecodeGroupsAvx2(*s, coded, states.data(), &words_read);
      break;
#endif
#if defined(__aarch64__)
    case RansDecoder::kNeon:
      done = internal::RansDecodeGroupsNeon(*s, coded, states.data(), &words_read);
      break;
#endif
    default: break;  // the portable loop below does everything
  }
  RETURN_IF_ERROR(internal::RansDecodeTail(*s, done, out, states.data(), &words_read));
  return internal::FinishRansDecode(*s, words_read, states.data(), out);
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

namespace internal {

bool ValuesAreLevelsPortable(const int8_t* q, size_t n, const uint8_t map[16]) {
  uint8_t ok = 1;
  for (size_t i = 0; i < n; ++i) {
    const int v = q[i];
    const int a = v < 0 ? -v : v;  // 128 for -128: outside the map
    ok &= static_cast<uint8_t>(a < 128 && ((map[a >> 3] >> (a & 7)) & 1));
  }
  return ok != 0;
}

}  // namespace internal

bool ValuesAreLevelsWith(RansDecoder d, const int8_t* q, size_t n, const CodeLevels& levels) {
  d = Supported(d) ? d : RansDecoder::kPortable;
  // Without byte shuffles, the 256-entry table (2.5-3.5 GB/s) beats the bitmap (0.8 GB/s), which
  // serves the SIMD checks' tails only.
  if (d == RansDecoder::kPortable) return CodesFit(q, n, levels.bits, &levels);
  uint8_t map[16] = {};
  for (size_t k = 0; k < (size_t{1} << (levels.bits - 1)); ++k) {
    map[levels.mag[k] >> 3] |= static_cast<uint8_t>(1u << (levels.mag[k] & 7));
  }
  switch (d) {
#if defined(__x86_64__)
    case RansDecoder::kAvx512Vbmi2: return internal::ValuesAreLevelsAvx512(q, n, map);
    case RansDecoder::kAvx2: return internal::ValuesAreLevelsAvx2(q, n, map);
#endif
#if defined(__aarch64__)
    case RansDecoder::kNeon: return internal::ValuesAreLevelsNeon(q, n, map);
#endif
    default: return internal::ValuesAreLevelsPortable(q, n, map);
  }
}

bool ValuesAreLevels(const int8_t* q, size_t n, const CodeLevels& levels) {
  return ValuesAreLevelsWith(SelectedRansDecoder(), q, n, levels);
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
