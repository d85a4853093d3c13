#include "engine/tokenizer.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <queue>

#include "base/file.h"
#include "engine/internal/unicode.h"

namespace dcomp {
namespace {

constexpr std::string_view kSpaceMarker = "\xE2\x96\x81";  // U+2581 LOWER ONE EIGHTH BLOCK

std::string ReplaceAll(std::string_view s, std::string_view from, std::string_view to) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    if (s.compare(i, from.size(), from) == 0) {
      out.append(to);
      i += from.size();
    } else {
      out.push_back(s[i++]);
    }
  }
  return out;
}

// "<0xNN>" -> NN, else -1.
int ParseBytePiece(std::string_view p) {
  if (p.size() != 6 || p.substr(0, 3) != "<0x" || p[5] != '>') return -1;
  int v = 0;
  for (int i = 3; i < 5; ++i) {
    char c = p[static_cast<size_t>(i)];
    int d = (c >= '0' && c <= '9')   ? c - '0'
            : (c >= 'A' && c <= 'F') ? c - 'A' + 10
            : (c >= 'a' && c <= 'f') ? c - 'a' + 10
                                     : -1;
    if (d < 0) return -1;
    v = v * 16 + d;
  }
  return v;
}

}  // namespace

Result<std::unique_ptr<Tokenizer>> Tokenizer::Create(TokenizerSpec spec) {
  std::unique_ptr<Tokenizer> t(new Tokenizer(std::move(spec)));
  RETURN_IF_ERROR(t->Init());
  return t;
}

Status Tokenizer::Init() {
  TokenizerSpec& s = spec_;
  const int32_t n = static_cast<int32_t>(s.tokens.size());
  if (s.model != "llama" && s.model != "gpt2") {
    return UnimplementedError("tokenizer model '" + s.model +
                              "' is not supported (expected 'llama' or 'gpt2')");
  }
  if (n == 0) return InvalidArgumentError("tokenizer has no tokens");
  if (s.model == "llama" && s.scores.size() != s.tokens.size()) {
    return InvalidArgumentError("tokenizer scores: expected " + std::to_string(n) +
                                " values (one per token), got " + std::to_string(s.scores.size()));
  }
  if (!s.token_types.empty() && s.token_types.size() != s.tokens.size()) {
    return InvalidArgumentError("tokenizer token_type: expected " + std::to_string(n) +
                                " values, got " + std::to_string(s.token_types.size()));
  }
  for (auto [name, id] : {std::pair<const char*, int32_t>{"bos", s.bos_id},
                          {"eos", s.eos_id},
                          {"end-of-turn", s.eot_id},
                          {"unknown", s.unk_id}}) {
    if (id < -1 || id >= n) {
      return InvalidArgumentError(std::string("tokenizer ") + name + " token id " +
                                  std::to_string(id) + " is out of range [0, " + std::to_string(n) +
                                  ")");
    }
  }
  if (s.token_types.empty()) {
    s.token_types.assign(s.tokens.size(), TokenType::kNormal);
    for (int32_t i = 0; i < n; ++i) {
      if (i == s.bos_id || i == s.eos_id) s.token_types[i] = TokenType::kControl;
      if (i == s.unk_id) s.token_types[i] = TokenType::kUnknown;
      if (s.model == "llama" && ParseBytePiece(s.tokens[i]) >= 0) {
        s.token_types[i] = TokenType::kByte;
      }
    }
  }
  // End of generation: EOS, the file's end-of-turn token, and the chat families' end-of-turn and
  // end-of-text tokens by their text (as llama.cpp finds them), which become control tokens.
  static const char* const kEndTexts[] = {"<|eot_id|>",    "<|im_end|>",    "<|end|>",
                                          "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>",
                                          "<|eom_id|>",    "<EOT>",         "_<EOT>",
                                          "[EOT]",         "[EOS]",         "<end_of_utterance>"};
  for (int32_t i = 0; i < n; ++i) {
    const std::string& text = s.tokens[static_cast<size_t>(i)];
    bool end = i == s.eos_id || i == s.eot_id;
    for (const char* e : kEndTexts) end = end || text == e;
    if (!end) continue;
    end_ids_.push_back(i);
    if (i != s.eos_id) s.token_types[static_cast<size_t>(i)] = TokenType::kControl;
  }
  for (int32_t i = 0; i < n; ++i) {
    const TokenType t = s.token_types[static_cast<size_t>(i)];
    if ((t == TokenType::kControl || t == TokenType::kUserDefined || t == TokenType::kUnknown) &&
        !s.tokens[static_cast<size_t>(i)].empty()) {
      special_ids_.push_back(i);
    }
  }
  std::stable_sort(special_ids_.begin(), special_ids_.end(), [&](int32_t a, int32_t b) {
    return s.tokens[static_cast<size_t>(a)].size() > s.tokens[static_cast<size_t>(b)].size();
  });
  token_to_id_.reserve(s.tokens.size());
  for (int32_t i = 0; i < n; ++i) token_to_id_.emplace(s.tokens[i], i);  // first wins on dups

  for (int b = 0; b < 256; ++b) byte_to_id_[b] = -1;
  if (s.model == "llama") {
    for (int32_t i = 0; i < n; ++i) {
      if (s.token_types[i] != TokenType::kByte) continue;
      int b = ParseBytePiece(s.tokens[i]);
      if (b >= 0 && byte_to_id_[b] < 0) byte_to_id_[b] = i;
    }
  } else {
    // GPT-2 byte-level alphabet: printable Latin-1 bytes map to themselves, the rest to 256+k.
    int k = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      uint32_t cp = printable ? static_cast<uint32_t>(b) : static_cast<uint32_t>(256 + k++);
      unicode::AppendUtf8(cp, &byte_to_unicode_[b]);
      unicode_to_byte_[cp] = static_cast<uint8_t>(b);
      auto it = token_to_id_.find(byte_to_unicode_[b]);
      byte_to_id_[b] = it == token_to_id_.end() ? -1 : it->second;
    }
    ASSIGN_OR_RETURN(pre_, PreTokenizer::Create(s.pre));
    merge_rank_.reserve(s.merges.size());
    for (size_t r = 0; r < s.merges.size(); ++r) {
      const std::string& m = s.merges[r];
      if (m.find(' ') == std::string::npos || m.front() == ' ') {
        return InvalidArgumentError("tokenizer merge " + std::to_string(r) + " ('" + m +
                                    "') is not of the form 'left right'");
      }
      merge_rank_.emplace(m, static_cast<int32_t>(r));
    }
  }
  return Status::Ok();
}

bool Tokenizer::is_end_of_generation(int32_t id) const {
  return std::find(end_ids_.begin(), end_ids_.end(), id) != end_ids_.end();
}

bool Tokenizer::is_control(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return false;
  TokenType t = spec_.token_types[static_cast<size_t>(id)];
  return t == TokenType::kControl || t == TokenType::kUnused;
}

std::vector<int32_t> Tokenizer::Encode(std::string_view text, bool add_bos,
                                       bool parse_special) const {
  std::vector<int32_t> out;
  if (add_bos && spec_.bos_id >= 0) out.push_back(spec_.bos_id);
  if (text.empty()) return out;
  // Special tokens split the text first (longest first); the pieces between them are encoded on
  // their own, each llama piece with its dummy-prefix space, as after BOS.
  struct Fragment {
    size_t begin, len;
    int32_t id;  // -1: text
  };
  std::vector<Fragment> frags = {{0, text.size(), -1}};
  for (int32_t id : special_ids_) {
    if (!parse_special && spec_.token_types[static_cast<size_t>(id)] != TokenType::kUserDefined) {
      continue;
    }
    const std::string& t = spec_.tokens[static_cast<size_t>(id)];
    std::vector<Fragment> next;
    for (const Fragment& f : frags) {
      if (f.id >= 0) {
        next.push_back(f);
        continue;
      }
      size_t pos = f.begin;
      const size_t end = f.begin + f.len;
      for (size_t at; (at = text.substr(0, end).find(t, pos)) != std::string_view::npos;) {
        if (at > pos) next.push_back({pos, at - pos, -1});
        next.push_back({at, t.size(), id});
        pos = at + t.size();
      }
      if (pos < end) next.push_back({pos, end - pos, -1});
    }
    frags = std::move(next);
  }
  for (const Fragment& f : frags) {
    if (f.id >= 0) {
      out.push_back(f.id);
    } else if (spec_.model == "llama") {
      EncodeSpm(text.substr(f.begin, f.len), &out);
    } else {
      EncodeGpt2(text.substr(f.begin, f.len), &out);
    }
  }
  return out;
}

// SentencePiece-style BPE: start from UTF-8 characters, repeatedly merge the adjacent pair whose
// concatenation is a token with the highest score (leftmost on ties), then map each symbol to its
// token or, failing that, to byte pieces.
void Tokenizer::EncodeSpm(std::string_view raw, std::vector<int32_t>* out) const {
  std::string text;
  if (spec_.add_space_prefix) text.push_back(' ');
  text.append(raw);
  text = ReplaceAll(text, " ", kSpaceMarker);

  struct Symbol {
    int prev, next;
    size_t begin, len;
  };
  std::vector<Symbol> sym;
  for (size_t i = 0; i < text.size();) {
    size_t len;  // an invalid byte is a symbol of its own (it never swallows the next character)
    unicode::DecodeUtf8(text, i, &len);
    sym.push_back({static_cast<int>(sym.size()) - 1, static_cast<int>(sym.size()) + 1, i, len});
    i += len;
  }
  if (!sym.empty()) sym.back().next = -1;

  struct Bigram {
    int left, right;
    float score;
    size_t len;
    bool operator<(const Bigram& o) const {  // max-heap: highest score, then leftmost
      return score < o.score || (score == o.score && left > o.left);
    }
  };
  std::priority_queue<Bigram> queue;
  auto try_add = [&](int left, int right) {
    if (left < 0 || right < 0) return;
    const size_t len = sym[left].len + sym[right].len;
    auto it = token_to_id_.find(std::string(text.substr(sym[left].begin, len)));
    if (it == token_to_id_.end()) return;
    queue.push({left, right, spec_.scores[static_cast<size_t>(it->second)], len});
  };
  for (size_t i = 1; i < sym.size(); ++i) try_add(static_cast<int>(i) - 1, static_cast<int>(i));
  while (!queue.empty()) {
    Bigram b = queue.top();
    queue.pop();
    Symbol& l = sym[b.left];
    Symbol& r = sym[b.right];
    if (l.len == 0 || r.len == 0 || l.len + r.len != b.len || l.next != b.right) continue;
    l.len += r.len;
    r.len = 0;
    l.next = r.next;
    if (r.next >= 0) sym[r.next].prev = b.left;
    try_add(l.prev, b.left);
    try_add(b.left, l.next);
  }
  for (int i = sym.empty() ? -1 : 0; i >= 0; i = sym[i].next) {
    std::string piece(text.substr(sym[i].begin, sym[i].len));
    auto it = token_to_id_.find(piece);
    if (it != token_to_id_.end() && spec_.token_types[it->second] != TokenType::kByte) {
      out->push_back(it->second);
      continue;
    }
    for (unsigned char c : piece) {
      int32_t id = byte_to_id_[c];
      out->push_back(id >= 0 ? id : spec_.unk_id >= 0 ? spec_.unk_id : 0);
    }
  }
}

void Tokenizer::EncodeGpt2(std::string_view text, std::vector<int32_t>* out) const {
  for (std::string_view word : pre_->Split(text)) {
    std::string mapped;
    for (unsigned char b : word) mapped += byte_to_unicode_[b];
    BpeWord(mapped, out);
  }
}

// Byte-level BPE of one pre-tokenized word: merge the adjacent pair with the lowest rank (the
// leftmost of equal ranks). With ignore_merges, a word that is a token is taken whole.
void Tokenizer::BpeWord(const std::string& word, std::vector<int32_t>* out) const {
  if (pre_->ignore_merges()) {
    auto direct = token_to_id_.find(word);
    if (direct != token_to_id_.end()) {
      out->push_back(direct->second);
      return;
    }
  }
  std::vector<std::string> parts;
  for (size_t i = 0; i < word.size();) {
    size_t len = std::min(unicode::Utf8SeqLen(static_cast<uint8_t>(word[i])), word.size() - i);
    parts.push_back(word.substr(i, len));
    i += len;
  }
  while (parts.size() > 1) {
    int32_t best_rank = INT32_MAX;
    size_t best = 0;
    for (size_t i = 0; i + 1 < parts.size(); ++i) {
      auto it = merge_rank_.find(parts[i] + " " + parts[i + 1]);
      if (it != merge_rank_.end() && it->second < best_rank) {
        best_rank = it->second;
        best = i;
      }
    }
    if (best_rank == INT32_MAX) break;
    parts[best] += parts[best + 1];
    parts.erase(parts.begin() + static_cast<std::ptrdiff_t>(best) + 1);
  }
  for (const std::string& p : parts) {
    auto it = token_to_id_.find(p);
    if (it != token_to_id_.end()) {
      out->push_back(it->second);
      continue;
    }
    // Not in the vocabulary: fall back to its single byte-level characters.
    for (size_t i = 0; i < p.size();) {
      size_t len = std::min(unicode::Utf8SeqLen(static_cast<uint8_t>(p[i])), p.size() - i);
      auto bt = token_to_id_.find(p.substr(i, len));
      if (bt != token_to_id_.end()) {
        out->push_back(bt->second);
      } else if (spec_.unk_id >= 0) {
        out->push_back(spec_.unk_id);
      }
      i += len;
    }
  }
}

std::string Tokenizer::TokenBytes(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return {};
  const std::string& p = spec_.tokens[static_cast<size_t>(id)];
  const TokenType type = spec_.token_types[static_cast<size_t>(id)];
  if (type == TokenType::kControl || type == TokenType::kUnused) return {};
  if (spec_.model == "llama") {
    if (type == TokenType::kByte) {
      int b = ParseBytePiece(p);
      return b >= 0 ? std::string(1, static_cast<char>(b)) : std::string();
    }
    if (type == TokenType::kUnknown) return " \xE2\x81\x87 ";  // as SentencePiece: " ⁇ "
    return ReplaceAll(p, kSpaceMarker, " ");
  }
  std::string bytes;
  for (size_t i = 0; i < p.size();) {
    size_t len;
    uint32_t cp = unicode::DecodeUtf8(p, i, &len);
    auto it = unicode_to_byte_.find(cp);
    if (it != unicode_to_byte_.end()) {
      bytes.push_back(static_cast<char>(it->second));
    } else {
      bytes.append(p, i, len);  // user-defined tokens hold plain text
    }
    i += len;
  }
  return bytes;
}

std::string Tokenizer::Decode(const std::vector<int32_t>& ids) const {
  TextStreamer s(this, /*at_text_start=*/true);
  std::string out;
  for (int32_t id : ids) out += s.Push(id);
  out += s.Flush();
  return out;
}

std::string TextStreamer::Push(int32_t id) {
  std::string bytes = tok_->TokenBytes(id);
  if (bytes.empty()) return {};
  if (at_start_) {
    at_start_ = false;
    if (tok_->strips_leading_space() && bytes[0] == ' ') bytes.erase(0, 1);
  }
  pending_ += bytes;
  size_t done = unicode::CompleteUtf8Prefix(pending_);
  std::string out = unicode::SanitizeUtf8(std::string_view(pending_).substr(0, done));
  pending_.erase(0, done);
  return out;
}

std::string TextStreamer::Flush() {
  std::string out = unicode::SanitizeUtf8(pending_);
  pending_.clear();
  return out;
}

Result<TokenizerSpec> LoadLlama2cTokenizer(const std::string& path, int32_t vocab_size) {
  ASSIGN_OR_RETURN(std::string data, ReadFileToString(path));
  auto fail = [&](const std::string& what) {
    return InvalidArgumentError("llama2.c tokenizer " + path + ": " + what);
  };
  if (vocab_size <= 0) return fail("the model's vocab_size must be positive");
  size_t off = 0;
  auto read = [&](void* dst, size_t n) {
    if (off + n > data.size()) return false;
    std::memcpy(dst, data.data() + off, n);
    off += n;
    return true;
  };
  int32_t max_len = 0;
  if (!read(&max_len, 4)) return fail("file too short for the header (4 bytes)");
  if (max_len <= 0 || max_len > 4096) {
    return fail("max_token_length " + std::to_string(max_len) + " is out of range [1, 4096]");
  }
  TokenizerSpec spec;
  spec.model = "llama";
  spec.bos_id = 1;
  spec.eos_id = 2;
  spec.unk_id = 0;
  spec.tokens.reserve(static_cast<size_t>(vocab_size));
  spec.scores.reserve(static_cast<size_t>(vocab_size));
  for (int32_t i = 0; i < vocab_size; ++i) {
    float score;
    int32_t len;
    if (!read(&score, 4) || !read(&len, 4)) {
      return fail("truncated at token " + std::to_string(i) + " of " + std::to_string(vocab_size) +
                  " (is this the tokenizer of this model? its vocabulary may be smaller)");
    }
    if (len < 0 || len > max_len) {
      return fail("token " + std::to_string(i) + " has length " + std::to_string(len) +
                  ", outside [0, max_token_length=" + std::to_string(max_len) + "]");
    }
    std::string piece(static_cast<size_t>(len), '\0');
    if (!read(piece.data(), piece.size())) {
      return fail("truncated inside token " + std::to_string(i));
    }
    // llama2.c stores SentencePiece's U+2581 as a plain space; restore the marker.
    spec.tokens.push_back(ReplaceAll(piece, " ", kSpaceMarker));
    spec.scores.push_back(score);
  }
  if (off != data.size()) {
    return fail(std::to_string(data.size() - off) + " bytes left after " +
                std::to_string(vocab_size) +
                " tokens (is this the tokenizer of this model? its vocabulary may be larger)");
  }
  spec.token_types.assign(spec.tokens.size(), TokenType::kNormal);
  spec.token_types[0] = TokenType::kUnknown;
  spec.token_types[1] = TokenType::kControl;
  if (vocab_size > 2) spec.token_types[2] = TokenType::kControl;
  for (size_t i = 0; i < spec.tokens.size(); ++i) {
    if (ParseBytePiece(spec.tokens[i]) >= 0) spec.token_types[i] = TokenType::kByte;
  }
  return spec;
}

}  // namespace dcomp
