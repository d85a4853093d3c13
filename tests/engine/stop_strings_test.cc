// Stop strings in GenerationStream, driven with forced logits so that the generated text is known:
// where generation stops, what the completion keeps, and what the token callbacks release (text
// that could begin a stop string is held back; the callbacks' texts plus `tail` are always the
// completion).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "engine/generate.h"
#include "engine/model_file.h"
#include "tests/util/tiny_model.h"

namespace dcomp {
namespace {

// The tiny model's tokenizer: id i >= 3 is "▁t<i>" (text " t<i>"), 2 is EOS.
std::unique_ptr<Tokenizer> TinyTokenizer() {
  const std::string path = ::testing::TempDir() + "/stop_" + std::to_string(getpid()) + ".gguf";
  testing::TinyModelOptions o;
  o.vocab = 40;
  o.ctx = 32;
  EXPECT_TRUE(testing::WriteTinyModel(path, o).ok());
  auto f = OpenModelFile(path);
  EXPECT_TRUE(f.ok()) << f.status().ToString();
  auto t = Tokenizer::Create((*f)->tokenizer());
  EXPECT_TRUE(t.ok()) << t.status().ToString();
  return std::move(*t);
}

struct Forced {
  GenerateResult result;
  std::vector<std::string> released;  // each callback's text
};

// Generates `forced` tokens greedily (one-hot logits) under `stop`, with a context of `ctx`.
Forced Force(const Tokenizer& tok, const std::vector<int32_t>& forced,
             const std::vector<std::string>& stop, int32_t max_tokens = 16, int32_t ctx = 32) {
  GenerateRequest req;
  req.prompt = "x";
  req.prompt_ids = std::vector<int32_t>{1, 7};
  req.max_tokens = max_tokens;
  req.stop = stop;
  Result<GenerationStream> s = GenerationStream::Start(tok, req, ctx);
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  Forced run;
  std::vector<float> logits(static_cast<size_t>(tok.vocab_size()));
  size_t i = 0;
  while (!s->done()) {
    const size_t n = s->NextInput(SIZE_MAX).size();
    std::fill(logits.begin(), logits.end(), -std::numeric_limits<float>::infinity());
    EXPECT_LT(i, forced.size()) << "generation went past the forced tokens";
    if (i >= forced.size()) break;
    logits[static_cast<size_t>(forced[i++])] = 0.0f;
    s->Advance(n, logits, [&](int32_t, const std::string& text) {
      run.released.push_back(text);
      return true;
    });
  }
  run.result = s->TakeResult();
  std::string all;
  for (const std::string& t : run.released) all += t;
  EXPECT_EQ(all + run.result.tail, run.result.completion);
  return run;
}

TEST(StopStringsTest, StopsAtTheFirstMatchAndDropsIt) {
  auto tok = TinyTokenizer();
  Forced r = Force(*tok, {5, 12, 13, 4}, {"t1"});
  EXPECT_EQ(r.result.stop_reason, "stop");
  EXPECT_EQ(r.result.completion, " t5 ");
  EXPECT_EQ(r.result.generated_ids, (std::vector<int32_t>{5, 12}));
  EXPECT_EQ(r.released, (std::vector<std::string>{" t5", " "}));
  EXPECT_EQ(r.result.tail, "");
  // The earliest match of several stop strings wins.
  r = Force(*tok, {5, 12, 13, 4}, {"t13", " t12"});
  EXPECT_EQ(r.result.completion, " t5");
  EXPECT_EQ(r.result.generated_ids, (std::vector<int32_t>{5, 12}));
}

TEST(StopStringsTest, HoldsBackWhatCouldStartAStopStringAndReleasesItWhenItCannot) {
  auto tok = TinyTokenizer();
  Forced r = Force(*tok, {5, 12, 2}, {"5 t9"});
  EXPECT_EQ(r.result.stop_reason, "eos");
  EXPECT_EQ(r.released, (std::vector<std::string>{" t", "5 t12"}));
  EXPECT_EQ(r.result.completion, " t5 t12");
  // A match across tokens.
  r = Force(*tok, {5, 9, 4}, {"5 t9"});
  EXPECT_EQ(r.result.stop_reason, "stop");
  EXPECT_EQ(r.result.completion, " t");
  EXPECT_EQ(r.released, (std::vector<std::string>{" t", ""}));
}

TEST(StopStringsTest, HeldTextAtTheEndOfSequenceIsTheTail) {
  auto tok = TinyTokenizer();
  Forced r = Force(*tok, {5, 2}, {"5 t9"});
  EXPECT_EQ(r.result.stop_reason, "eos");
  EXPECT_EQ(r.released, (std::vector<std::string>{" t"}));
  EXPECT_EQ(r.result.tail, "5");
  EXPECT_EQ(r.result.completion, " t5");
}

TEST(StopStringsTest, TheLastTokenReleasesEverything) {
  auto tok = TinyTokenizer();
  Forced r = Force(*tok, {6, 5}, {"5 t9"}, /*max_tokens=*/2);
  EXPECT_EQ(r.result.stop_reason, "length");
  EXPECT_EQ(r.released, (std::vector<std::string>{" t6", " t5"}));
  EXPECT_EQ(r.result.tail, "");
  // The context's end too: a context of 3 holds the prompt's 2 tokens and the first generated
  // one; the second is sampled from its logits and ends the stream.
  r = Force(*tok, {6, 5}, {"5 t9"}, /*max_tokens=*/16, /*ctx=*/3);
  EXPECT_EQ(r.result.stop_reason, "context");
  EXPECT_EQ(r.result.completion, " t6 t5");
  EXPECT_EQ(r.released.back(), " t5");
}

TEST(StopStringsTest, WithoutStopStringsEveryTokenReleasesItsText) {
  auto tok = TinyTokenizer();
  Forced r = Force(*tok, {5, 12, 2}, {});
  EXPECT_EQ(r.released, (std::vector<std::string>{" t5", " t12"}));
  EXPECT_EQ(r.result.stop_reason, "eos");
}

TEST(StopStringsTest, EmptyStopStringIsRefused) {
  auto tok = TinyTokenizer();
  GenerateRequest req;
  req.prompt = "x";
  req.stop = {"a", ""};
  Result<GenerationStream> s = GenerationStream::Start(*tok, req, 32);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("stop[1] is empty"), std::string::npos);
}

}  // namespace
}  // namespace dcomp
