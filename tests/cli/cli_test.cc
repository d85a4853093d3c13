// The `dcomp` command-line contract, run as a separate process: JSON output of generate / eval /
// tokenize, and clear errors with a non-zero exit status for bad input.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cmath>
#include <cstdio>

#include "tests/util/mini_json.h"
#include "tests/util/test_paths.h"

namespace dcomp {
namespace {

struct ProcResult {
  int exit_code;
  std::string out;  // stdout and stderr together
};

ProcResult Dcomp(const std::string& args) {
  const std::string cmd = testing::BinaryDir() + "/packer/dcomp " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  ProcResult r{-1, ""};
  if (p == nullptr) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  int st = pclose(p);
  r.exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

const std::string kModel = testing::SourceDir() + "/models/stories260K.bin";

TEST(CliTest, GenerateJsonOnEmbeddedModel) {
  ProcResult r = Dcomp(kModel + " --help");  // not a command: usage error
  EXPECT_NE(r.exit_code, 0);
  r = Dcomp("generate " + kModel + " --prompt 'Once upon a time' -n 12 --json");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  testing::Json j = testing::ParseJson(r.out);
  std::vector<int> ids = j["ids"].ints();
  ASSERT_EQ(ids.size(), 17u);
  EXPECT_EQ(std::vector<int>(ids.begin(), ids.begin() + 5),
            (std::vector<int>{1, 403, 407, 261, 378}));
  EXPECT_EQ(j["text"].str.rfind("Once upon a time", 0), 0u);
  // f32 greedy equals the reference continuation.
  r = Dcomp("generate " + kModel + " --prompt 'Once upon a time' -n 5 --weights f32 --json");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(testing::ParseJson(r.out)["ids"].ints(),
            (std::vector<int>{1, 403, 407, 261, 378, 432, 383, 286, 261, 376}));
  // Sampling is deterministic per seed.
  const std::string s =
      "generate " + kModel + " --prompt 'A cat' -n 20 --temperature 0.9 --seed 7 --json";
  testing::Json a = testing::ParseJson(Dcomp(s).out), b = testing::ParseJson(Dcomp(s).out);
  EXPECT_EQ(a["ids"].ints(), b["ids"].ints());
  EXPECT_EQ(a["text"].str, "A cat" + a["completion"].str);
}

TEST(CliTest, TokenizeAndEvalJson) {
  ProcResult r = Dcomp("tokenize " + kModel + " --text 'Once upon a time' --json");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(testing::ParseJson(r.out)["ids"].ints(), (std::vector<int>{1, 403, 407, 261, 378}));
  const std::string text = ::testing::TempDir() + "/eval.txt";
  FILE* f = fopen(text.c_str(), "w");
  fputs("partial<|endoftext|>Once upon a time, there was a cat.<|endoftext|>\n", f);
  fclose(f);
  r = Dcomp("eval " + kModel + " --text " + text + " --json");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  testing::Json j = testing::ParseJson(r.out);
  EXPECT_GT(j["tokens"].num, 5);
  EXPECT_GT(j["ppl"].num, 1.0);
  EXPECT_NEAR(std::exp(j["mean_nll"].num), j["ppl"].num, 1e-4);
}

TEST(CliTest, BadInputGivesClearErrors) {
  struct Case {
    std::string args, needle;
  };
  const Case cases[] = {
      {"generate " + kModel + " --prompt '' -n 4", "prompt is empty"},
      {"generate " + kModel + " -n 4", "--prompt"},
      {"generate /nonexistent.gguf --prompt x", "/nonexistent.gguf"},
      {"generate " + kModel + " --prompt x --weights int3", "--weights 'int3'"},
      {"generate " + kModel + " --prompt x --temperature -1", "temperature"},
      {"generate " + kModel + " --prompt x -n zero", "-n"},
      {"generate " + kModel + " --prompt x --bogus 1", "unknown option --bogus"},
      {"eval " + kModel + " --text /nonexistent.txt", "/nonexistent.txt"},
      {"frobnicate", "unknown command"},
      {"generate " + testing::SourceDir() + "/models/tok512.bin --prompt x", "tok512.bin"},
  };
  for (const Case& c : cases) {
    ProcResult r = Dcomp(c.args);
    EXPECT_NE(r.exit_code, 0) << c.args;
    EXPECT_NE(r.out.find(c.needle), std::string::npos) << c.args << "\n" << r.out;
    EXPECT_EQ(r.out.find("terminate called"), std::string::npos) << r.out;
  }
}

}  // namespace
}  // namespace dcomp
