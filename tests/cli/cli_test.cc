// The `dcomp` command-line contract, run as a separate process: JSON output of generate / eval /
// tokenize, and clear errors with a non-zero exit status for bad input.
#include <gtest/gtest.h>
#include <pty.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>

#include "base/packed_codes.h"
#include "engine/model_file.h"
#include "tests/util/mini_json.h"
#include "tests/util/test_paths.h"
#include "tests/util/tiny_model.h"

namespace dcomp {
namespace {

struct ProcResult {
  int exit_code;
  std::string out;  // stdout and stderr together
};

// Runs dcomp with `args` (shell words), with `env` ("NAME=value ...") before it.
ProcResult Dcomp(const std::string& args, const std::string& env = "") {
  const std::string cmd = env + " " + testing::BinaryDir() + "/packer/dcomp " + args + " 2>&1";
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

// Every command answers --help (and -h) with its usage on stdout and exit 0; every binary answers
// --version.
TEST(CliTest, HelpOnEveryCommandAndVersionOnEveryBinary) {
  for (const char* cmd : {"pack", "inspect", "synth", "generate", "eval", "chat", "tokenize"}) {
    for (const char* flag : {"--help", "-h"}) {
      ProcResult r = Dcomp(std::string(cmd) + " " + flag);
      EXPECT_EQ(r.exit_code, 0) << cmd << " " << flag << ": " << r.out;
      EXPECT_EQ(r.out.rfind(std::string("usage: dcomp ") + cmd, 0), 0u) << r.out;
      EXPECT_NE(r.out.find("--help"), std::string::npos) << r.out;
    }
  }
  ProcResult r = Dcomp("pack --help --bogus");  // help first: the rest is not checked
  EXPECT_EQ(r.exit_code, 0) << r.out;
  r = Dcomp("pack --bogus");
  EXPECT_EQ(r.exit_code, 2) << r.out;
  EXPECT_NE(r.out.find("unknown option --bogus"), std::string::npos) << r.out;
  const std::string bin = testing::BinaryDir();
  for (const std::string& b :
       {bin + "/packer/dcomp", bin + "/daemon/dcompd", bin + "/client/dcompctl"}) {
    const std::string name = b.substr(b.rfind('/') + 1);
    FILE* p = popen((b + " --version 2>&1").c_str(), "r");
    ASSERT_NE(p, nullptr);
    std::array<char, 256> buf{};
    const size_t n = fread(buf.data(), 1, buf.size() - 1, p);
    const int st = pclose(p);
    EXPECT_EQ(WEXITSTATUS(st), 0) << name;
    EXPECT_EQ(std::string(buf.data(), n), name + " " + DCOMP_VERSION + "\n");
  }
}

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
  const std::string text = ::testing::TempDir() + "/eval_" + std::to_string(getpid()) + ".txt";
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

namespace dcomp {
namespace {

std::string TempFile(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("dcomp_cli_test_" + name)).string();
}

TEST(CliTest, PackInspectAndRunADcm) {
  const std::string out = TempFile("s260.dcm");
  ProcResult r = Dcomp("pack " + kModel + " " + out + " --calib-tokens 256 --no-rate-alloc");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("total: f32"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("[    "), std::string::npos) << "plain progress lines when not a tty";
  r = Dcomp("inspect " + out + " --verify");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("verify: all"), std::string::npos) << r.out;
  r = Dcomp("inspect " + out + " --json");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  testing::Json j = testing::ParseJson(r.out);
  EXPECT_EQ(j["format_version"].str, "10.0");
  EXPECT_GT(j["ratio"].num, 1.0);
  // Without rate allocation every code is 8 bits: the packed tier holds INT8 codes.
  EXPECT_EQ(j["ram_bytes"].num, j["raw_bytes"].num);
  // generate / eval / tokenize accept the .dcm with the same contract.
  r = Dcomp("generate " + out + " --prompt 'Once upon a time' -n 8 --json");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(testing::ParseJson(r.out)["ids"].ints().size(), 13u);
  r = Dcomp("tokenize " + out + " --text 'Once upon a time' --json");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(testing::ParseJson(r.out)["ids"].ints(), (std::vector<int>{1, 403, 407, 261, 378}));
}

// The packed tier's contract: inspect reports params, raw/ram/stored bytes and each tensor's
// width; generate names each unit's tier; every policy gives the same tokens.
TEST(CliTest, PackedTierContract) {
  const std::string out = TempFile("s260_packed.dcm");
  ProcResult r = Dcomp("pack " + kModel + " " + out + " --calib-tokens 1024");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  r = Dcomp("inspect " + out + " --json");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  testing::Json j = testing::ParseJson(r.out);
  double params = 0, ram = 0;
  bool narrow = false;
  for (const testing::Json& t : j["tensors"].arr) {
    params += t["params"].num;
    ram += t["ram_bytes"].num;
    const int bits = static_cast<int>(t["bits"].num);
    EXPECT_TRUE((bits >= 4 && bits <= 8) || bits == 32) << t["name"].str;
    narrow |= bits < 8;
    // The default pack rounds codes of 4..7 bits to non-uniform levels (formats 5 and 7): a table
    // for the tensor's width when it is one of those (and for each such width of its blocks),
    // none at 8 bits.
    const std::vector<int> level_bits = t["level_bits"].ints();
    const bool has = std::find(level_bits.begin(), level_bits.end(), bits) != level_bits.end();
    EXPECT_EQ(has, bits <= kMaxLevelBits) << t["name"].str << " " << bits << " bits";
    const auto rows = static_cast<size_t>(t["rows"].num);
    // raw_bytes is the INT8 size (f32 row scales) however the scales are stored.
    if (bits <= 8) {
      EXPECT_EQ(t["raw_bytes"].num,
                static_cast<double>(rows * (static_cast<size_t>(t["cols"].num) + 4)))
          << t["name"].str;
    }
    // The packer's row scales are on the scale grid, stored in one byte per row (format 6): a
    // narrow tensor stores no more than the packed tier holds (its code blocks are packed, or
    // entropy-coded when that is smaller).
    if (bits < 8) {
      EXPECT_LE(t["stored_bytes"].num, t["ram_bytes"].num) << t["name"].str;
    }
    // In RAM, one byte per row beside the packed rows.
    if (bits < 8 && t["block_bits"].arr.empty()) {
      EXPECT_EQ(t["ram_bytes"].num,
                static_cast<double>(
                    rows * PackedRowBytes(static_cast<size_t>(t["cols"].num), bits) + rows))
          << t["name"].str;
    }
  }
  EXPECT_EQ(params, j["params"].num);
  EXPECT_EQ(ram, j["ram_bytes"].num);
  EXPECT_TRUE(narrow) << "rate allocation chose no width below 8 bits:\n" << r.out;
  EXPECT_LT(j["ram_bytes"].num, j["raw_bytes"].num);
  std::string ids;
  for (const char* policy : {"all-decoded", "all-packed", "all-compressed", "stream-all"}) {
    r = Dcomp("generate " + out + " --prompt 'Once upon a time' -n 24 --json --policy " + policy);
    ASSERT_EQ(r.exit_code, 0) << r.out;
    testing::Json g = testing::ParseJson(r.out);
    std::string got;
    for (int id : g["ids"].ints()) got += std::to_string(id) + " ";
    if (ids.empty()) ids = got;
    EXPECT_EQ(got, ids) << policy;
    const std::string want = std::string(policy) == "all-decoded"      ? "decoded"
                             : std::string(policy) == "all-packed"     ? "packed"
                             : std::string(policy) == "all-compressed" ? "compressed"
                                                                       : "flash";
    for (const testing::Json& t : g["runtime"]["plan"]["tiers"].arr) EXPECT_EQ(t.str, want);
  }
}

// Blocks stored packed are multiplied where they lie when units are decoded inline (compressed
// in RAM, or read from flash): the same tokens as decoding them, and as every resident tier.
TEST(CliTest, PackedBlocksReadInPlaceGiveTheSameTokens) {
  const std::string out = TempFile("s260_allpacked.dcm");
  ProcResult r =
      Dcomp("pack " + kModel + " " + out + " --calib-tokens 1024 --min-coding-gain 0.99");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  r = Dcomp("inspect " + out);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("blocks by codec: packed"), std::string::npos) << r.out;
  std::string ids;
  for (const char* args :
       {"--policy all-decoded", "--policy all-packed", "--policy all-compressed --decode inline",
        "--policy all-compressed --decode ahead", "--policy stream-all --decode inline"}) {
    r = Dcomp("generate " + out + " --prompt 'Once upon a time' -n 24 --json " + args);
    ASSERT_EQ(r.exit_code, 0) << r.out;
    std::string got;
    for (int id : testing::ParseJson(r.out)["ids"].ints()) got += std::to_string(id) + " ";
    if (ids.empty()) ids = got;
    EXPECT_EQ(got, ids) << args;
  }
}

TEST(CliTest, PackInspectAndSynthBadInput) {
  const std::string good = TempFile("good.dcm");
  ASSERT_EQ(Dcomp("pack " + kModel + " " + good + " --no-scaling --no-rate-alloc").exit_code, 0);
  struct Case {
    std::string args, want;
    int code;
  };
  // A truncated copy of a valid file.
  const std::string trunc = TempFile("trunc.dcm");
  std::filesystem::copy_file(good, trunc, std::filesystem::copy_options::overwrite_existing);
  std::filesystem::resize_file(trunc, std::filesystem::file_size(good) - 100);
  const std::vector<Case> cases = {
      {"pack " + kModel, "expected IN and OUT.dcm", 2},
      {"pack " + kModel + " " + good + " --codec lz4", "unknown codec 'lz4'", 2},
      {"pack " + kModel + " " + good + " --alpha 1.5", "--alpha '1.5'", 2},
      {"pack " + kModel + " " + good + " --prune abc", "--prune", 2},
      {"pack " + kModel + " " + good + " --block-size 5", "--block-size 5", 2},
      {"pack " + kModel + " " + good + " --rounding stochastic",
       "--rounding stochastic: expected gptq or nearest", 2},
      {"pack " + kModel + " " + good + " --calib-seed -3", "--calib-seed must be", 2},
      {"pack " + kModel + " " + good + " --level-shape 4", "--level-shape 4: at 6 bits level", 2},
      {"pack " + kModel + " " + good + " --level-shape -1", "expected a number in [0, 8]", 2},
      {"pack " + kModel + " " + good + " --calib " + kModel + " --calib-seed 7",
       "--calib-seed: the calibration text is given", 2},
      {"pack /nonexistent.bin " + good, "/nonexistent.bin", 1},
      {"inspect " + kModel, "not a .dcm file", 2},
      {"inspect " + trunc, "(truncated)", 1},
      {"generate " + trunc + " --prompt hi", "(truncated)", 1},
      {"synth " + TempFile("x.gguf"), "--shape is required", 2},
      {"synth --shape gpt-5 " + TempFile("x.gguf"), "tinyllama-1.1b", 2},
      {"synth --shape tiny --entropy 9 " + TempFile("x.gguf"), "--entropy", 2},
  };
  for (const Case& c : cases) {
    ProcResult r = Dcomp(c.args);
    EXPECT_EQ(r.exit_code, c.code) << c.args << "\n" << r.out;
    EXPECT_NE(r.out.find(c.want), std::string::npos) << c.args << "\n" << r.out;
  }
  EXPECT_TRUE(std::filesystem::exists(good)) << "a failed pack must not remove a good file";
}

TEST(CliTest, SynthIsMarkedSyntheticEverywhere) {
  const std::string g = TempFile("tiny.gguf"), d = TempFile("tiny.dcm");
  ProcResult r = Dcomp("synth --shape tiny " + g + " --entropy 6");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("SYNTHETIC"), std::string::npos);
  r = Dcomp("pack " + g + " " + d);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("SYNTHETIC"), std::string::npos) << r.out;
  r = Dcomp("inspect " + d);
  EXPECT_NE(r.out.find("SYNTHETIC"), std::string::npos) << r.out;
  EXPECT_TRUE(testing::ParseJson(Dcomp("inspect " + d + " --json").out)["synthetic"].b);
}

}  // namespace
}  // namespace dcomp

namespace dcomp {
namespace {

// io_uring unavailable (a seccomp filter makes io_uring_setup fail with ENOSYS): the automatic
// reader falls back to pread with the same tokens; asking for io_uring is a clear error.
TEST(CliTest, WithoutIoUringTheReaderFallsBackToPread) {
  const std::string dcm =
      std::filesystem::temp_directory_path() / ("cli-nouring-" + std::to_string(getpid()) + ".dcm");
  ASSERT_EQ(Dcomp("pack " + kModel + " " + dcm + " --no-scaling --no-rate-alloc").exit_code, 0);
  // Every layer read per token (no budget: the same under sanitizers, whose baseline is larger).
  const std::string gen =
      " generate " + dcm + " --prompt 'Once upon a time' -n 16" + " --policy stream-all --json";
  const std::string wrap =
      testing::BinaryDir() + "/tests/util/no_io_uring " + testing::BinaryDir() + "/packer/dcomp";
  ProcResult normal = Dcomp(gen);
  ASSERT_EQ(normal.exit_code, 0) << normal.out;
  const auto run = [](const std::string& cmd) {
    ProcResult r{-1, ""};
    FILE* p = popen((cmd + " 2>&1").c_str(), "r");
    std::array<char, 4096> buf;
    size_t n;
    while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
    const int st = pclose(p);
    r.exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return r;
  };
  ProcResult fallback = run(wrap + gen);
  ASSERT_EQ(fallback.exit_code, 0) << fallback.out;
  const testing::Json a = testing::ParseJson(normal.out), b = testing::ParseJson(fallback.out);
  EXPECT_EQ(a["ids"].ints(), b["ids"].ints());
  EXPECT_EQ(a["runtime"]["runtime"]["reader"].str.rfind("io_uring", 0), 0u) << normal.out;
  EXPECT_NE(b["runtime"]["runtime"]["reader"].str.find("pread (io_uring unavailable"),
            std::string::npos)
      << fallback.out;
  ProcResult forced = run(wrap + gen + " --reader io_uring");
  EXPECT_NE(forced.exit_code, 0);
  EXPECT_NE(forced.out.find("UNAVAILABLE"), std::string::npos) << forced.out;
  EXPECT_NE(forced.out.find("io_uring"), std::string::npos) << forced.out;
  std::filesystem::remove(dcm);
}

// The codec of every block comes from the decode-speed model, not from timing on the packing
// machine: packing with the portable rANS decoder (as a machine without SIMD would) gives the same
// file, and inspect says how the codecs were chosen.
TEST(CliTest, CodecChoiceDoesNotDependOnThePackingMachine) {
  // The same command line (it is recorded in the file) in two folders.
  const std::string da_dir = TempFile("choice_a"), db_dir = TempFile("choice_b");
  std::filesystem::create_directories(da_dir);
  std::filesystem::create_directories(db_dir);
  const std::string a = da_dir + "/m.dcm", b = db_dir + "/m.dcm";
  const std::string args = "pack " + kModel + " m.dcm --calib-tokens 256 --no-rate-alloc";
  ASSERT_EQ(Dcomp(args, "cd " + da_dir + " &&").exit_code, 0);
  ASSERT_EQ(Dcomp(args, "cd " + db_dir + " && DCOMP_RANS=portable").exit_code, 0);
  std::ifstream fa(a, std::ios::binary), fb(b, std::ios::binary);
  const std::string da((std::istreambuf_iterator<char>(fa)), std::istreambuf_iterator<char>());
  const std::string db((std::istreambuf_iterator<char>(fb)), std::istreambuf_iterator<char>());
  ASSERT_FALSE(da.empty());
  EXPECT_TRUE(da == db) << "the packed files differ with another rANS decoder";
  ProcResult r = Dcomp("inspect " + a);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("codec choice: auto: the smallest coding"), std::string::npos) << r.out;
  r = Dcomp("inspect " + a + " --json");
  EXPECT_NE(testing::ParseJson(r.out)["codec_choice"].str.find("decode-speed model"),
            std::string::npos)
      << r.out;
  std::filesystem::remove_all(da_dir);
  std::filesystem::remove_all(db_dir);
}

}  // namespace
}  // namespace dcomp

namespace dcomp {
namespace {

std::string ChatModel() {
  testing::TinyModelOptions o;
  o.chat_template = "{% for m in messages %}{{'<|im_start|>' + m['role'] + '\n'}}{% endfor %}";
  o.ctx = 64;
  const std::string p = ::testing::TempDir() + "/" + std::to_string(getpid()) + "_chat.gguf";
  EXPECT_TRUE(testing::WriteTinyModel(p, o).ok());
  return p;
}

TEST(CliTest, ChatOneShotRecognisesTheTemplate) {
  const std::string model = ChatModel();
  ProcResult r = Dcomp("chat " + model + " --message t7 -n 3 --system 'be brief' --json");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  testing::Json j = testing::ParseJson(r.out);
  EXPECT_EQ(j["template"].str, "chatml");
  EXPECT_LE(j["generated_tokens"].num, 3);
  // Forcing a family, and a bad one.
  r = Dcomp("chat " + model + " --message t7 -n 2 --chat-template gemma --json");
  EXPECT_EQ(r.exit_code, 0) << r.out;
  r = Dcomp("chat " + model + " --message t7 --chat-template vicuna");
  EXPECT_EQ(r.exit_code, 2) << r.out;
  EXPECT_NE(r.out.find("'vicuna'"), std::string::npos) << r.out;
  // A model without a template says how to choose one.
  r = Dcomp("chat " + kModel + " --message hi");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("--chat-template"), std::string::npos) << r.out;
}

// An interactive conversation on a pseudo-terminal: a prompt per turn, two answers, /exit.
TEST(CliTest, ChatConversationOnATerminal) {
  const std::string model = ChatModel();
  const std::string bin = testing::BinaryDir() + "/packer/dcomp";
  int master = -1;
  const pid_t pid = forkpty(&master, nullptr, nullptr, nullptr);
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    execl(bin.c_str(), bin.c_str(), "chat", model.c_str(), "-n", "3", static_cast<char*>(nullptr));
    _exit(127);
  }
  const std::string input = "t7\nt9 t11\n/exit\n";
  ASSERT_EQ(write(master, input.data(), input.size()), static_cast<ssize_t>(input.size()));
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = read(master, buf, sizeof(buf))) > 0;)
    out.append(buf, static_cast<size_t>(n));
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  close(master);
  ASSERT_TRUE(WIFEXITED(status)) << out;
  EXPECT_EQ(WEXITSTATUS(status), 0) << out;
  EXPECT_NE(out.find("[chat with tiny-llama (chatml template)"), std::string::npos) << out;
  size_t prompts = 0;
  for (size_t at = 0; (at = out.find("> ", at)) != std::string::npos; ++at) ++prompts;
  EXPECT_GE(prompts, 3u) << out;  // before each of the three lines
}

}  // namespace
}  // namespace dcomp

namespace dcomp {
namespace {

// Packs a tiny model and checks the .dcm gives the same tokens resident, packed and streamed.
void PackAndCompareAcrossPolicies(const testing::TinyModelOptions& o, const std::string& tag) {
  const std::string base = ::testing::TempDir() + "/" + std::to_string(getpid()) + "_" + tag;
  struct Cleanup {
    std::string base;
    ~Cleanup() {
      std::remove((base + ".gguf").c_str());
      std::remove((base + ".dcm").c_str());
    }
  } cleanup{base};
  ASSERT_TRUE(testing::WriteTinyModel(base + ".gguf", o).ok());
  ProcResult r = Dcomp("pack " + base + ".gguf " + base + ".dcm --calib-tokens 256");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  auto packed = OpenModelFile(base + ".dcm");
  ASSERT_TRUE(packed.ok()) << packed.status().ToString();
  EXPECT_EQ((*packed)->config().rope_freq_factors, o.rope_freqs);
  EXPECT_EQ((*packed)->config().qk_norm, o.arch == "qwen3" || o.arch == "gemma3");
  EXPECT_EQ((*packed)->config().post_norms, o.arch == "gemma3");
  EXPECT_EQ((*packed)->config().sliding_window, o.arch == "gemma3" ? o.sliding_window : 0);
  // Sampled (seeded): equal logits give equal tokens, and the tokens vary.
  const std::string gen = " --prompt 't5 t9 t12' -n 16 --temperature 1 --seed 3 --json";
  ProcResult a = Dcomp("generate " + base + ".dcm" + gen);
  ASSERT_EQ(a.exit_code, 0) << a.out;
  const std::vector<int> ids = testing::ParseJson(a.out)["ids"].ints();
  EXPECT_GT(std::set<int>(ids.begin(), ids.end()).size(), 4u) << a.out;
  // The policies force the tiers; the budget only has to hold the process (sanitizers included).
  for (const char* run : {" --policy all-packed", " --budget 1GiB --policy stream-all",
                          " --budget 1GiB --policy all-compressed"}) {
    ProcResult c = Dcomp("generate " + base + ".dcm" + run + gen);
    ASSERT_EQ(c.exit_code, 0) << run << ": " << c.out;
    EXPECT_EQ(testing::ParseJson(a.out)["ids"].ints(), testing::ParseJson(c.out)["ids"].ints())
        << run;
  }
}

testing::TinyModelOptions Wider() {
  testing::TinyModelOptions o;
  o.dim = 64;
  o.heads = 4;
  o.kv_heads = 2;
  o.hidden = 96;
  o.vocab = 64;
  o.ctx = 64;
  o.tied = false;  // a separate output matrix: logits of a few units, varied samples
  return o;
}

// Llama 3.x RoPE factors survive packing.
TEST(CliTest, PackedModelKeepsRopeFrequencyFactors) {
  testing::TinyModelOptions o = Wider();
  o.rope_freqs = {1, 1, 2, 4, 8, 8, 8, 8};
  PackAndCompareAcrossPolicies(o, "rf");
}

// Gemma 3: scaled embeddings, GeGLU, post-norms, q/k norms, sliding-window layers with their own
// RoPE base, packed and streamed.
TEST(CliTest, PackedGemma3GivesTheSameTokensAtEveryBudget) {
  testing::TinyModelOptions o = Wider();
  o.arch = "gemma3";
  o.head_dim = 32;
  o.layers = 3;
  o.sliding_window = 3;
  PackAndCompareAcrossPolicies(o, "g3");
}

// Qwen3: q/k norms and heads wider than dim / n_heads, packed and streamed.
TEST(CliTest, PackedQwen3GivesTheSameTokensAtEveryBudget) {
  testing::TinyModelOptions o = Wider();
  o.arch = "qwen3";
  o.head_dim = 32;  // attention 128 wide on a 64-wide model
  PackAndCompareAcrossPolicies(o, "q3");
}
}  // namespace
}  // namespace dcomp
