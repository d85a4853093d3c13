#include "engine/tokenizer.h"

#include <gtest/gtest.h>

#include <sstream>

#include "base/file.h"
#include "engine/model_file.h"
#include "tests/util/test_paths.h"

namespace dcomp {
namespace {

struct Case {
  std::string text;
  std::vector<int32_t> ids;
};

// llama.cpp's test-tokenizer-0 files: inputs separated by "\n__ggml_vocab_test__\n", one line of
// expected ids (no BOS) per input.
std::vector<Case> LoadCases(const std::string& inp, const std::string& out) {
  std::string in = *ReadFileToString(inp), ex = *ReadFileToString(out);
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::vector<std::string> texts;
  size_t start = 0;
  for (size_t at; (at = in.find(sep, start)) != std::string::npos; start = at + sep.size()) {
    texts.push_back(in.substr(start, at - start));
  }
  std::vector<Case> cases;
  std::istringstream lines(ex);
  std::string line;
  for (const std::string& t : texts) {
    std::getline(lines, line);
    Case c{t, {}};
    std::istringstream ids(line);
    for (int32_t id; ids >> id;) c.ids.push_back(id);
    cases.push_back(std::move(c));
  }
  return cases;
}

void RunVocabCases(const std::string& gguf) {
  auto spec = LoadTokenizerSpec(gguf);
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  auto tok = Tokenizer::Create(*spec);
  ASSERT_TRUE(tok.ok()) << tok.status().ToString();
  std::vector<Case> cases = LoadCases(gguf + ".inp", gguf + ".out");
  ASSERT_EQ(cases.size(), 46u);
  int failures = 0;
  for (const Case& c : cases) {
    std::vector<int32_t> got = (*tok)->Encode(c.text, /*add_bos=*/false);
    EXPECT_EQ(got, c.ids) << "input: '" << c.text << "'";
    failures += got != c.ids;
    // Decoding gives the text back (llama: minus the dummy-prefix space it added).
    std::string back;
    for (int32_t id : got) back += (*tok)->TokenBytes(id);
    if ((*tok)->strips_leading_space() && !back.empty() && back[0] == ' ') back.erase(0, 1);
    EXPECT_EQ(back, c.text);
  }
  EXPECT_EQ(failures, 0);
}

TEST(TokenizerTest, LlamaSpmVocabCases) {
  DCOMP_REQUIRE_SHARED(gguf, "models/gguf/ggml-vocab-llama-spm.gguf");
  RunVocabCases(gguf);
}

TEST(TokenizerTest, Gpt2VocabCases) {
  DCOMP_REQUIRE_SHARED(gguf, "models/gguf/ggml-vocab-gpt-2.gguf");
  RunVocabCases(gguf);
}

// Byte-level vocabularies whose files name another pre-tokenizer than GPT-2's.
TEST(TokenizerTest, DeepseekLlmVocabCases) {
  DCOMP_REQUIRE_SHARED(gguf, "models/gguf/ggml-vocab-deepseek-llm.gguf");
  RunVocabCases(gguf);
}

TEST(TokenizerTest, FalconVocabCases) {
  DCOMP_REQUIRE_SHARED(gguf, "models/gguf/ggml-vocab-falcon.gguf");
  RunVocabCases(gguf);
}

std::unique_ptr<Tokenizer> EmbeddedTokenizer() {
  auto spec = LoadLlama2cTokenizer(testing::SourceDir() + "/models/tok512.bin", 512);
  EXPECT_TRUE(spec.ok()) << spec.status().ToString();
  auto tok = Tokenizer::Create(*spec);
  EXPECT_TRUE(tok.ok());
  return std::move(*tok);
}

TEST(TokenizerTest, Llama2cTokenizerEncodesReferencePrompt) {
  auto tok = EmbeddedTokenizer();
  EXPECT_EQ(tok->Encode("Once upon a time", true), (std::vector<int32_t>{1, 403, 407, 261, 378}));
  EXPECT_EQ(tok->Encode("", true), (std::vector<int32_t>{1}));
  EXPECT_EQ(tok->Decode({1, 403, 407, 261, 378}), "Once upon a time");
}

TEST(TokenizerTest, ByteFallbackRoundTripsAnyBytes) {
  auto tok = EmbeddedTokenizer();
  // Non-ASCII (not in the 512-token vocabulary) and invalid UTF-8 go through <0xNN> pieces.
  for (std::string s : {std::string("caf\xC3\xA9 \xE2\x82\xAC"), std::string("bad \xFF\xC3 bytes"),
                        std::string("\x00\x01", 2)}) {
    std::vector<int32_t> ids = tok->Encode(s, false);
    std::string back;
    for (int32_t id : ids) back += tok->TokenBytes(id);
    EXPECT_EQ(back, " " + s);
  }
}

TEST(TokenizerTest, StreamerNeverSplitsUtf8) {
  auto tok = EmbeddedTokenizer();
  // "é€" is 5 bytes, encoded as 5 byte-fallback tokens: nothing may be emitted mid-character.
  std::vector<int32_t> ids = tok->Encode("\xC3\xA9\xE2\x82\xAC", false);
  TextStreamer st(tok.get(), true);
  std::vector<std::string> outs;
  for (int32_t id : ids) outs.push_back(st.Push(id));
  outs.push_back(st.Flush());
  std::string all;
  for (const std::string& o : outs) {
    all += o;
    // Every emitted piece is valid UTF-8 on its own.
    size_t i = 0;
    while (i < o.size()) {
      unsigned char c = static_cast<unsigned char>(o[i]);
      size_t n = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
      ASSERT_LE(i + n, o.size()) << "a piece ends inside a character";
      i += n;
    }
  }
  EXPECT_EQ(all, "\xC3\xA9\xE2\x82\xAC");
  // A dangling lead byte at the end becomes U+FFFD, never raw bytes.
  TextStreamer st2(tok.get(), true);
  std::string out = st2.Push(tok->Encode("\xE2", false).back());
  out += st2.Flush();
  EXPECT_EQ(out, "\xEF\xBF\xBD");
  // Only the start of a text drops the dummy-prefix space; a continuation keeps it.
  std::vector<int32_t> ids2 = tok->Encode("Once upon", false);
  TextStreamer head(tok.get(), true), cont(tok.get(), false);
  EXPECT_EQ(head.Push(ids2[0]), "Once");
  EXPECT_EQ(cont.Push(ids2[1]), " upon");
}

TEST(TokenizerTest, SpecValidationNamesTheProblem) {
  TokenizerSpec s;
  s.model = "wordpiece";
  s.tokens = {"a"};
  auto r = Tokenizer::Create(s);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("wordpiece"), std::string::npos);
  s.model = "llama";
  s.scores = {};
  r = Tokenizer::Create(s);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("scores"), std::string::npos);
  s.scores = {0.0f};
  s.bos_id = 7;
  r = Tokenizer::Create(s);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("bos"), std::string::npos);
}

TEST(TokenizerTest, WrongLlama2cTokenizerFileIsAClearError) {
  DCOMP_REQUIRE_SHARED(tok4096, "models/llama2c/tok4096.bin");
  // The 4096-token tokenizer given to a 512-token model: bytes left over.
  auto r = LoadLlama2cTokenizer(tok4096, 512);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("tok4096.bin"), std::string::npos);
  EXPECT_NE(r.status().message().find("bytes left"), std::string::npos);
  // The 512-token tokenizer for a 4096-token model: truncated.
  auto r2 = LoadLlama2cTokenizer(testing::SourceDir() + "/models/tok512.bin", 4096);
  ASSERT_FALSE(r2.ok());
  EXPECT_NE(r2.status().message().find("truncated at token 512"), std::string::npos);
  // A model file is not a tokenizer.
  auto r3 = LoadLlama2cTokenizer(testing::SourceDir() + "/models/stories260K.bin", 512);
  ASSERT_FALSE(r3.ok());
  EXPECT_EQ(r3.status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace dcomp

namespace dcomp {
namespace {

std::vector<std::string> Words(const std::string& pre, const std::string& text) {
  auto p = PreTokenizer::Create(pre);
  EXPECT_TRUE(p.ok()) << p.status().ToString();
  if (!p.ok()) return {};
  std::vector<std::string> out;
  std::string joined;
  for (std::string_view w : (*p)->Split(text)) {
    out.emplace_back(w);
    joined += w;
  }
  EXPECT_EQ(joined, text) << pre;  // nothing dropped, nothing reordered
  return out;
}

using W = std::vector<std::string>;

// Each pre-tokenizer on text chosen to show its definition, independently of any vocabulary.
TEST(PreTokenizerTest, SplitsFollowTheirDefinitions) {
  EXPECT_EQ(Words("gpt-2", "Hello world's  12345!!\n\n"),
            (W{"Hello", " world", "'s", " ", " 12345", "!!", "\n\n"}));
  // Llama 3: numbers in threes, a letter run takes one leading non-letter (not after a space: " $"
  // is a punctuation word), case-insensitive contractions, punctuation keeps its newlines.
  EXPECT_EQ(Words("llama-bpe", "Hello WORLD'S 12345 $x!!\n\n  y"),
            (W{"Hello", " WORLD", "'S", " ", "123", "45", " $", "x", "!!\n\n", " ", " y"}));
  EXPECT_EQ(Words("qwen2", "ab 123"), (W{"ab", " ", "1", "2", "3"}));
  // StarCoder / SmolLM: every digit alone, then GPT-2's expression.
  EXPECT_EQ(Words("smollm", "x 42"), (W{"x", " ", "4", "2"}));
  // Falcon: punctuation runs alone first; then GPT-2's words, each cut at digit triples.
  EXPECT_EQ(Words("falcon", "a, b 12345"), (W{"a", ",", " b", " ", "123", "45"}));
  // DeepSeek LLM: newlines alone, cased-letter runs, CJK runs, numbers.
  EXPECT_EQ(Words("deepseek-llm", "Hi\n\xE4\xBD\xA0\xE5\xA5\xBD 42"),
            (W{"Hi", "\n", "\xE4\xBD\xA0\xE5\xA5\xBD", " ", "42"}));
  // GPT-4o: a capitalised word splits from a following capitalised word.
  EXPECT_EQ(Words("gpt-4o", "HelloWorld"), (W{"Hello", "World"}));
  // Invalid UTF-8 takes part as U+FFFD and comes back unchanged.
  Words("llama-bpe",
        "a\xFF"
        "b \xC3");
}

TEST(PreTokenizerTest, UnknownNamesAreErrors) {
  auto p = PreTokenizer::Create("not-a-pre");
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), StatusCode::kUnimplemented);
  EXPECT_NE(p.status().message().find("'not-a-pre'"), std::string::npos);
  EXPECT_NE(p.status().message().find("qwen2"), std::string::npos);  // lists the known ones
  TokenizerSpec s;
  s.model = "gpt2";
  s.tokens = {"a", "b"};
  s.pre = "not-a-pre";
  auto t = Tokenizer::Create(s);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("'not-a-pre'"), std::string::npos);
  s.model = "bert";
  t = Tokenizer::Create(s);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("'bert'"), std::string::npos);
  for (const std::string& name : PreTokenizer::KnownNames()) {
    EXPECT_TRUE(PreTokenizer::Create(name).ok()) << name;  // every expression compiles
  }
}

TEST(TokenizerTest, ControlTokensAreParsedOnlyWhenAsked) {
  DCOMP_REQUIRE_SHARED(gguf, "models/gguf/ggml-vocab-gpt-2.gguf");
  auto tok = Tokenizer::Create(*LoadTokenizerSpec(gguf));
  ASSERT_TRUE(tok.ok());
  const std::string text = "a<|endoftext|>b";
  std::vector<int32_t> special = (*tok)->Encode(text, false, /*parse_special=*/true);
  EXPECT_EQ(special, (std::vector<int32_t>{64, 50256, 65}));
  std::vector<int32_t> plain = (*tok)->Encode(text, false, /*parse_special=*/false);
  EXPECT_GT(plain.size(), 3u);
  std::string back;
  for (int32_t id : plain) back += (*tok)->TokenBytes(id);
  EXPECT_EQ(back, text);
}

}  // namespace
}  // namespace dcomp
