#include "engine/pretokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <initializer_list>

#include "engine/internal/unicode.h"

namespace dcomp {
namespace {

// The expressions as the models' tokenizer definitions give them (the Hugging Face tokenizer files
// llama.cpp converts, in its order and grouping), in PCRE2 syntax. Digits written [0-9] are ASCII
// digits in the originals (\d there is not Unicode-aware).
//
// GPT-2: contractions, letter / number / other runs with one optional leading space, white space
// (a run before a non-space leaves its last character to the next word).
constexpr const char* kGpt2 =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
// Llama 3 (tiktoken cl100k): case-insensitive contractions, a letter run with one optional
// non-letter non-digit prefix, numbers in groups of up to 3 digits, punctuation runs with their
// trailing newlines, newline runs.
constexpr const char* kLlama3 =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
// Qwen2: Llama 3's with every digit alone.
constexpr const char* kQwen2 =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
// GPT-4o (o200k): words split at lower-to-upper case changes (an ASCII-aware form: a letter that is
// not a-z counts as upper case, one that is not A-Z as lower case), contractions attached.
constexpr const char* kGpt4o =
    R"([^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr const char* kTekken =
    R"([^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
// DeepSeek LLM: newlines alone, then runs of cased letters (Latin, Greek, Cyrillic, Armenian,
// Georgian, Cherokee, Glagolitic, Coptic, Deseret, Osage, Old Hungarian, Warang Citi, Adlam and
// the letter-like symbols), ASCII / full-width punctuation, trailing white space, CJK and Hangul,
// numbers.
constexpr const char* kDeepseekLetters =
    R"(\s?[A-Za-z\x{00B5}\x{00C0}-\x{00D6}\x{00D8}-\x{00F6}\x{00F8}-\x{01BA}\x{01BC}-\x{01BF})"
    R"(\x{01C4}-\x{0293}\x{0295}-\x{02AF}\x{0370}-\x{0373}\x{0376}\x{0377}\x{037B}-\x{037D})"
    R"(\x{037F}\x{0386}\x{0388}-\x{038A}\x{038C}\x{038E}-\x{03A1}\x{03A3}-\x{03F5})"
    R"(\x{03F7}-\x{0481}\x{048A}-\x{052F}\x{0531}-\x{0556}\x{10A0}-\x{10C5}\x{13A0}-\x{13F5})"
    R"(\x{13F8}-\x{13FD}\x{1C90}-\x{1CBA}\x{1CBD}-\x{1CBF}\x{1D00}-\x{1D2B}\x{1D6B}-\x{1D77})"
    R"(\x{1D79}-\x{1D9A}\x{1E00}-\x{1F15}\x{1F18}-\x{1F1D}\x{1F20}-\x{1F45}\x{1F48}-\x{1F4D})"
    R"(\x{1F50}-\x{1F57}\x{1F59}\x{1F5B}\x{1F5D}\x{1F5F}-\x{1F7D}\x{1F80}-\x{1FB4})"
    R"(\x{1FB6}-\x{1FBC}\x{1FBE}\x{1FC2}-\x{1FC4}\x{1FC6}-\x{1FCC}\x{1FD0}-\x{1FD3})"
    R"(\x{1FD6}-\x{1FDB}\x{1FE0}-\x{1FEC}\x{1FF2}-\x{1FF4}\x{1FF6}-\x{1FFC}\x{2102}\x{2107})"
    R"(\x{210A}-\x{2113}\x{2115}\x{2119}-\x{211D}\x{2124}\x{2126}\x{2128}\x{212A}-\x{212D})"
    R"(\x{212F}-\x{2134}\x{2139}\x{213C}-\x{213F}\x{2145}-\x{2149}\x{214E}\x{2183}\x{2184})"
    R"(\x{2C00}-\x{2C7B}\x{2C7E}-\x{2CE4}\x{2CEB}-\x{2CEE}\x{2CF2}\x{2CF3}\x{A640}-\x{A66D})"
    R"(\x{A680}-\x{A69B}\x{A722}-\x{A76F}\x{A771}-\x{A787}\x{A78B}-\x{A78E}\x{AB70}-\x{ABBF})"
    R"(\x{FB00}-\x{FB06}\x{FB13}-\x{FB17}\x{FF21}-\x{FF3A}\x{FF41}-\x{FF5A}\x{10400}-\x{1044F})"
    R"(\x{104B0}-\x{104D3}\x{104D8}-\x{104FB}\x{10C80}-\x{10CB2}\x{10CC0}-\x{10CF2})"
    R"(\x{118A0}-\x{118DF}\x{1E900}-\x{1E943}]+)";
constexpr const char* kCjkHangul = R"([\x{4E00}-\x{9FA5}\x{0800}-\x{4E00}\x{AC00}-\x{D7FF}]+)";
constexpr const char* kPoro =
    R"( ?[^(\s|.,!?\x{2026}\x{3002}\x{FF0C}\x{3001}\x{0964}\x{06D4}\x{060C})]+)";
constexpr const char* kDeepseek3 =
    R"([!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

struct Definition {
  std::initializer_list<const char*> names;
  bool ignore_merges;  // a word that is a token is taken whole
  bool add_bos;        // BOS by default (tokenizer.ggml.add_bos_token overrides)
  std::initializer_list<const char*> patterns;
};

const Definition kDefinitions[] = {
    // A byte-level vocabulary that names no pre-tokenizer: llama.cpp's default, GPT-2's expression
    // with punctuation and digit runs split off first and numbers cut into groups of three.
    {{"default"}, false, false, {R"([\p{P}\$\+<=>\^~\|]+)", kGpt2, R"(\p{N}+)", "[0-9][0-9][0-9]"}},
    {{"gpt-2",      "gpt2",       "phi-2",           "mpt",         "olmo",
      "jais",       "trillion",   "granite-docling", "exaone4",     "a.x-4.0",
      "gigachat",   "mellum",     "jina-es",         "jina-de",     "jina-v2-es",
      "jina-v2-de", "jina-v1-en", "jina-v2-code",    "roberta-bpe", "modern-bert"},
     false,
     false,
     {kGpt2}},
    {{"llama-bpe", "llama3", "llama-v3", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2"},
     true,
     true,
     {kLlama3}},
    {{"dbrx", "smaug-bpe"}, false, false, {kLlama3}},
    {{"qwen2", "deepseek-r1-qwen", "kormo", "megrez", "stablelm2", "hunyuan", "solar-open",
      "grok-2"},
     false,
     false,
     {kQwen2}},
    {{"starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva-7b"},
     false,
     false,
     {R"(\p{N})", kGpt2}},
    {{"falcon"}, false, false, {R"([\p{P}\$\+<=>\^~\|`]+)", kGpt2, "[0-9][0-9][0-9]"}},
    {{"deepseek-llm"},
     false,
     false,
     {R"([\r\n])", kDeepseekLetters,
      R"(\s?[!-/:-~\x{FF01}-\x{FF0F}\x{FF1A}-\x{FF5E}\x{2018}-\x{201F}\x{3000}-\x{3002}]+)",
      R"(\s+$)", kCjkHangul, R"(\p{N}+)"}},
    {{"deepseek-coder"},
     false,
     false,
     {R"([\r\n])", R"(\s?\p{L}+)", R"(\s?\p{P}+)", kCjkHangul, R"(\p{N})"}},
    {{"deepseek-v3", "hunyuan-dense"},
     false,
     false,
     {R"(\p{N}{1,3})", R"([\x{4E00}-\x{9FA5}\x{3040}-\x{309F}\x{30A0}-\x{30FF}]+)", kDeepseek3}},
    {{"gpt-4o", "llama4", "minimax-m2"}, false, false, {kGpt4o}},
    {{"tekken"}, true, true, {kTekken}},
    {{"poro-chat", "bloom", "gpt3-finnish"}, false, false, {kPoro}},
    {{"viking"}, false, false, {kPoro, R"(\p{N})"}},
    {{"seed-coder"},
     false,
     false,
     {R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+|\s*[\r\n]+|\s+(?!\S)|\s+)"}},
    {{"bailingmoe", "bailingmoe2", "llada-moe"},
     false,
     false,
     {R"('(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+)"}},
    {{"superbpe"}, false, false, {R"(\p{N}+)", "(?=([0-9]{3})+(?![0-9]))"}},
};

}  // namespace

struct PreTokenizer::Pattern {
  pcre2_code* code = nullptr;
  ~Pattern() { pcre2_code_free(code); }
};

PreTokenizer::~PreTokenizer() = default;

std::vector<std::string> PreTokenizer::KnownNames() {
  std::vector<std::string> names;
  for (const Definition& d : kDefinitions)
    names.insert(names.end(), d.names.begin(), d.names.end());
  return names;
}

namespace {
const Definition* FindDefinition(const std::string& name) {
  for (const Definition& d : kDefinitions) {
    for (const char* n : d.names) {
      if (name == n) return &d;
    }
  }
  return nullptr;
}
}  // namespace

bool PreTokenizer::AddsBosByDefault(const std::string& name) {
  const Definition* def = FindDefinition(name);
  return def != nullptr && def->add_bos;
}

Result<std::unique_ptr<PreTokenizer>> PreTokenizer::Create(const std::string& name) {
  const Definition* def = FindDefinition(name);
  if (def == nullptr) {
    std::string known;
    for (const std::string& n : KnownNames()) known += (known.empty() ? "" : ", ") + n;
    return UnimplementedError("pre-tokenizer '" + name +
                              "' (tokenizer.ggml.pre) is not supported (supported: " + known + ")");
  }
  std::unique_ptr<PreTokenizer> p(new PreTokenizer());
  p->name_ = name;
  p->ignore_merges_ = def->ignore_merges;
  for (const char* expr : def->patterns) {
    int error = 0;
    PCRE2_SIZE offset = 0;
    auto pat = std::make_unique<Pattern>();
    pat->code =
        pcre2_compile(reinterpret_cast<PCRE2_SPTR>(expr), PCRE2_ZERO_TERMINATED,
                      PCRE2_UTF | PCRE2_UCP | PCRE2_DOLLAR_ENDONLY, &error, &offset, nullptr);
    if (pat->code == nullptr) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(error, msg, sizeof(msg));
      return InternalError("pre-tokenizer '" + name + "': expression " + expr + " at offset " +
                           std::to_string(offset) + ": " + reinterpret_cast<const char*>(msg));
    }
    p->patterns_.push_back(std::move(pat));
  }
  return p;
}

std::vector<std::string_view> PreTokenizer::Split(std::string_view text) const {
  // Matching runs on valid UTF-8: each invalid byte becomes U+FFFD, and `origin` maps every offset
  // of the matched text back to the input.
  std::string clean;
  std::vector<size_t> origin;
  std::string_view subject = text;
  if (!unicode::IsValidUtf8(text)) {
    for (size_t i = 0; i < text.size();) {
      size_t len;
      const uint32_t cp = unicode::DecodeUtf8(text, i, &len);
      const size_t before = clean.size();
      unicode::AppendUtf8(cp, &clean);
      for (size_t k = before; k < clean.size(); ++k) origin.push_back(i);
      i += len;
    }
    origin.push_back(text.size());
    subject = clean;
  }
  struct Piece {
    size_t begin, end;
  };
  std::vector<Piece> pieces = {{0, subject.size()}};
  if (subject.empty()) pieces.clear();
  pcre2_match_data* md = pcre2_match_data_create(1, nullptr);
  for (const auto& pat : patterns_) {
    std::vector<Piece> next;
    next.reserve(pieces.size() * 2);
    for (const Piece& piece : pieces) {
      const auto* base = reinterpret_cast<PCRE2_SPTR>(subject.data() + piece.begin);
      const size_t len = piece.end - piece.begin;
      size_t emitted = 0, search = 0;  // within the piece
      while (search < len) {
        const int rc = pcre2_match(pat->code, base, len, search, PCRE2_NO_UTF_CHECK, md, nullptr);
        if (rc < 0) break;  // no further match (or a resource limit: the rest stays whole)
        const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
        const size_t ms = ov[0], me = ov[1];
        if (me == ms) {  // an empty match (a lookahead) splits the piece where it matches
          if (ms > emitted) next.push_back({piece.begin + emitted, piece.begin + ms});
          emitted = ms;
          search = ms + unicode::Utf8SeqLen(static_cast<uint8_t>(subject[piece.begin + ms]));
          continue;
        }
        if (ms > emitted) next.push_back({piece.begin + emitted, piece.begin + ms});
        next.push_back({piece.begin + ms, piece.begin + me});
        emitted = search = me;
      }
      if (emitted < len) next.push_back({piece.begin + emitted, piece.end});
    }
    pieces = std::move(next);
  }
  pcre2_match_data_free(md);
  std::vector<std::string_view> words;
  words.reserve(pieces.size());
  for (const Piece& p : pieces) {
    const size_t b = origin.empty() ? p.begin : origin[p.begin];
    const size_t e = origin.empty() ? p.end : origin[p.end];
    words.push_back(text.substr(b, e - b));
  }
  return words;
}

}  // namespace dcomp
