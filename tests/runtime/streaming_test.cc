// The streaming runtime end to end: the same greedy tokens as the resident engine at every budget,
// policy, thread count and prefetch depth (a synthetic model and stories3M); re-planning mid
// generation; peak RSS under the budget (separate dcomp processes); and faults (EINTR, short
// reads, EIO, bit flips) that fail one request with DATA_LOSS naming the block and leave the
// runtime working.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <set>

#include "engine/generate.h"
#include "engine/local_model.h"
#include "packer/pack.h"
#include "packer/synth.h"
#include "runtime/internal/test_hooks.h"
#include "runtime/served_model.h"
#include "runtime/streaming_weights.h"
#include "storage/container.h"
#include "storage/fault_injection.h"
#include "tests/util/mini_json.h"
#include "tests/util/sanitizers.h"
#include "tests/util/test_paths.h"
#include "tests/util/untied_model.h"

// Under ASan, freed memory stays resident in its quarantine (256 MiB by default), so the process
// baseline a runtime measures at open drifts by up to that much between the opens of one test:
// keep the quarantine small in this binary so that budgets made from an earlier open's figures
// still fit (use-after-free detection keeps a 16 MiB window).
#if defined(__SANITIZE_ADDRESS__)
extern "C" const char* __asan_default_options() { return "quarantine_size_mb=16"; }
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
extern "C" const char* __asan_default_options() { return "quarantine_size_mb=16"; }
#endif
#endif

namespace dcomp::runtime {
namespace {

// Per process: CTest runs each test in its own process, in parallel, and each packs its models.
std::string Temp(const std::string& name) {
  return (std::filesystem::temp_directory_path() /
          ("dcomp_runtime_test_" + std::to_string(getpid()) + "_" + name))
      .string();
}

// Removes this process's packed models when the test binary exits.
struct TempFiles {
  ~TempFiles() {
    for (const char* name : {"small.gguf", "small.dcm", "s3m.dcm", "untied.dcm", "untied"}) {
      std::error_code ec;
      std::filesystem::remove_all(Temp(name), ec);
    }
  }
} temp_files;

// The small synthetic model (42 MB INT8), packed once per test binary.
const std::string& SmallModel() {
  static const std::string path = [] {
    packer::SynthOptions s;
    s.shape = "small";
    s.output = Temp("small.gguf");
    s.entropy_bits = 6.13;
    EXPECT_TRUE(packer::Synthesize(s).ok());
    packer::PackOptions o;
    o.input = s.output;
    o.output = Temp("small.dcm");
    o.threads = 2;
    auto r = packer::Pack(o);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return o.output;
  }();
  return path;
}

// stories3M packed as plain INT8 (fast), or "" when ../shared is absent.
const std::string& Stories3M() {
  static const std::string path = [] {
    const std::string src = testing::SharedFile("models/llama2c/stories3M-q80.bin");
    if (src.empty()) return std::string();
    packer::PackOptions o;
    o.input = src;
    o.output = Temp("s3m.dcm");
    o.threads = 2;
    o.scaling = false;
    o.rate_alloc = false;
    auto r = packer::Pack(o);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return o.output;
  }();
  return path;
}

struct Streamed {
  LocalModel model;
  StreamingWeights* rt = nullptr;
};

Result<Streamed> Open(const std::string& path, RuntimeOptions ro, int threads = 2,
                      int32_t ctx = 128) {
  Streamed run;
  LocalModelOptions o;
  o.threads = threads;
  o.context_length = ctx;
  ro.context_length = ctx;
  auto hooks = std::make_shared<internal::TestHooks>(
      ro.test_hooks != nullptr ? *ro.test_hooks : internal::TestHooks{});
  hooks->watch_pressure = false;
  ro.test_hooks = hooks;
  Streamed* r = &run;
  o.weights = [r, ro](const ModelFile& f,
                      ThreadPool* pool) -> Result<std::unique_ptr<WeightSource>> {
    ASSIGN_OR_RETURN(auto w,
                     StreamingWeights::Open(dynamic_cast<const DcmModelFile&>(f), ro, pool));
    r->rt = w.get();
    return std::unique_ptr<WeightSource>(std::move(w));
  };
  ASSIGN_OR_RETURN(run.model, OpenLocalModel(path, o));
  return run;
}

Result<std::vector<int32_t>> Greedy(LocalModel& m, int n, const TokenCallback& cb = {}) {
  m.model->Reset();
  GenerateRequest req;
  req.prompt = "Once upon a time";
  req.max_tokens = n;
  req.stop_at_eos = false;
  ASSIGN_OR_RETURN(GenerateResult r, Generate(*m.model, *m.tokenizer, req, cb));
  return r.generated_ids;
}

std::vector<int32_t> Resident(const std::string& path, int n) {
  LocalModelOptions o;
  o.threads = 2;
  o.context_length = 128;
  auto m = OpenLocalModel(path, o);
  EXPECT_TRUE(m.ok()) << m.status().ToString();
  auto t = Greedy(*m, n);
  EXPECT_TRUE(t.ok()) << t.status().ToString();
  return *t;
}

// The process's baseline RSS moves between opens (heap of earlier runs); under ASan freed memory
// stays resident in its quarantine, so it moves much more.
#if defined(DCOMP_SANITIZED)
constexpr uint64_t kSlack = 128 << 20;
constexpr bool kSanitized = true;
#else
constexpr uint64_t kSlack = 8 << 20;
constexpr bool kSanitized = false;
#endif

// Same tokens as the resident engine for every policy and budget, slot count and thread split.
void ExpectDeterministic(const std::string& path) {
  const std::vector<int32_t> want = Resident(path, 24);
  ASSERT_EQ(want.size(), 24u);
  uint64_t int8 = 0, fixed = 0;
  {
    Result<Streamed> probe = Open(path, {});
    ASSERT_TRUE(probe.ok()) << probe.status().ToString();
    int8 = probe->rt->int8_bytes();
    fixed = probe->rt->stats().minimum_budget;
  }
  struct Case {
    Policy policy;
    double extra;  // budget = minimum + extra * INT8 size
    int slots, decode, compute;
    bool inline_decode = false;  // force decoding inside the matrix products
    int flash_head = 0;          // 1 + k: flash layers hold their first k matrices packed
  };
  // Under the sanitizers (several times slower) each mechanism runs once, the cases at these
  // indices: an adaptive plan, slots with decode and compute threads, the entropy-coded tier, the
  // packed tier on two threads, decoding inside the products, flash heads. The release build runs
  // every case.
  const std::set<int> core = {2, 5, 7, 11, 13, 17, 19};
  const Case cases[] = {
      {Policy::kAdaptive, 10.0, 0, 0, 0},
      {Policy::kAdaptive, 0.6, 0, 0, 0},
      {Policy::kAdaptive, 0.3, 0, 0, 0},
      {Policy::kAdaptive, 0.0, 0, 0, 0},
      {Policy::kStreamAll, 1.0, 1, 1, 1},
      {Policy::kStreamAll, 1.0, 3, 2, 2},
      {Policy::kStreamAll, 1.0, 2, 1, 2},
      {Policy::kAllCompressed, 1.5, 2, 2, 1},
      {Policy::kStaticSplit, 0.4, 4, 2, 2},
      {Policy::kAllDecoded, 2.0, 0, 0, 1},
      {Policy::kAllPacked, 2.0, 0, 0, 1},
      {Policy::kAllPacked, 2.0, 0, 0, 2},
      {Policy::kStreamAll, 0.0, 0, 0, 1, true},
      {Policy::kStreamAll, 0.0, 0, 0, 2, true},
      {Policy::kAllCompressed, 1.5, 0, 0, 2, true},
      {Policy::kStaticSplit, 0.4, 0, 0, 1, true},
      {Policy::kAdaptive, 0.3, 0, 0, 2, true},
      // Flash layers that hold a packed head: the q, k, v matrices (one group of products), a
      // head that splits the gate and up matrices (q .. gate), every matrix but the last.
      {Policy::kAdaptive, 0.3, 0, 0, 2, true, 1 + 3},
      {Policy::kStreamAll, 0.6, 0, 0, 1, true, 1 + 5},
      {Policy::kStreamAll, 0.8, 0, 0, 2, true, 1 + 6},
  };
  for (const Case& c : cases) {
    if (kSanitized && core.count(static_cast<int>(&c - cases)) == 0) continue;
    RuntimeOptions ro;
    ro.policy = c.policy;
    ro.budget = fixed + static_cast<uint64_t>(c.extra * static_cast<double>(int8)) + kSlack;
    ro.force_slots = c.slots;
    ro.force_decode_threads = c.decode;
    ro.force_compute_threads = c.compute;
    if (c.inline_decode) ro.force_decode = 1 + static_cast<int>(Decode::kInline);
    ro.force_flash_head = c.flash_head;
    Result<Streamed> r = Open(path, ro);
    ASSERT_TRUE(r.ok()) << PolicyName(c.policy) << ": " << r.status().ToString();
    auto got = Greedy(r->model, 24);
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    EXPECT_EQ(*got, want) << r->rt->plan().Summary();
    if (c.inline_decode) {
      EXPECT_EQ(r->rt->plan().decode, Decode::kInline);
    }
    if (c.flash_head > 1 && c.policy == Policy::kStreamAll) {
      // Every layer holds its head: the plan reads less than the flash units' whole ranges.
      const Plan p = r->rt->plan();
      uint64_t whole = 0;
      for (size_t u = 0; u < p.tiers.size(); ++u) {
        if (p.tiers[u] == Tier::kFlash) whole += r->rt->units()[u].compressed_bytes;
      }
      EXPECT_EQ(p.flash_head, c.flash_head - 1) << p.Summary();
      EXPECT_GT(p.flash_head_bytes, 0u) << p.Summary();
      EXPECT_LT(p.flash_bytes_per_token, whole) << p.Summary();
    }
    if (c.slots > 0) {
      EXPECT_EQ(r->rt->plan().decode, Decode::kAhead);
    }
    EXPECT_LE(r->rt->plan().total_bytes, ro.budget.bytes);
  }
}

TEST(StreamingTest, SameTokensAsResidentOnSyntheticModel) { ExpectDeterministic(SmallModel()); }

TEST(StreamingTest, SameTokensAsResidentOnStories3M) {
  if (Stories3M().empty()) GTEST_SKIP() << "shared data absent (stories3M)";
  ExpectDeterministic(Stories3M());
}

// stories260K (in the repository) packed with rate allocation: its embedding's rows are stored by
// use (Tensor.row_order) and its groups of rows get different widths (Tensor.block_bits), which
// every tier reads block by block, the logits and embedding lookups put back in token order.
TEST(StreamingTest, SameTokensAsResidentWithAWidthPerBlockOfRows) {
  packer::PackOptions o;
  o.input = testing::SourceDir() + "/models/stories260K.bin";
  o.tokenizer_path = testing::SourceDir() + "/models/tok512.bin";
  o.output = Temp("grouped.dcm");
  // Under the sanitizers the pack is most of the test's time: fewer calibration tokens still
  // split the token matrix into groups of several widths stored by use (checked below).
  o.calib_tokens = kSanitized ? 256 : 1024;
  auto packed = packer::Pack(o);
  ASSERT_TRUE(packed.ok()) << packed.status().ToString();
  {
    auto c = storage::ContainerReader::Open(o.output);
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    std::set<int> widths;
    bool reordered = false;
    for (const auto& T : (*c)->manifest().tensors()) {
      widths.insert(T.block_bits().begin(), T.block_bits().end());
      reordered = reordered || T.row_order_size() > 0;
    }
    ASSERT_GE(widths.size(), 2u) << "no tensor with blocks of different widths: nothing tested";
    ASSERT_TRUE(reordered) << "no tensor stored out of order: nothing tested";
  }
  ExpectDeterministic(o.output);
  std::filesystem::remove(o.output);
}

// The same for an untied model: the embedding and the output are two token matrices, each split
// and stored in its own order (the embedding's by input use, the output's by probability).
TEST(StreamingTest, SameTokensAsResidentWithTwoTokenMatricesInTheirOwnOrders) {
  packer::PackOptions o;
  o.input = testing::WriteUntiedStories260K(Temp("untied"));
  ASSERT_FALSE(o.input.empty()) << "could not write the untied copy";
  o.output = Temp("untied.dcm");
  o.calib_tokens = 1024;
  o.max_ppl_increase = 0.3;  // so that the embedding stays at 6 bits or more and is split too
  auto packed = packer::Pack(o);
  ASSERT_TRUE(packed.ok()) << packed.status().ToString();
  {
    auto c = storage::ContainerReader::Open(o.output);
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    std::vector<std::vector<uint32_t>> orders;
    for (const auto& T : (*c)->manifest().tensors()) {
      if (T.row_order_size() > 0) orders.emplace_back(T.row_order().begin(), T.row_order().end());
    }
    ASSERT_EQ(orders.size(), 2u) << "not both token matrices stored out of order: nothing tested";
    ASSERT_NE(orders[0], orders[1]);
  }
  ExpectDeterministic(o.output);
  std::filesystem::remove(o.output);
  std::filesystem::remove_all(Temp("untied"));
}

TEST(StreamingTest, BudgetChangesMidGenerationKeepTheTokens) {
  const std::vector<int32_t> want = Resident(SmallModel(), 32);
  Result<Streamed> r = Open(SmallModel(), {});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const uint64_t min = r->rt->stats().minimum_budget, int8 = r->rt->int8_bytes();
  EXPECT_EQ(r->rt->SetBudget(min - 1).code(), StatusCode::kResourceExhausted);
  int step = 0;
  std::vector<std::string> plans;
  auto got = Greedy(r->model, 32, [&](int32_t, const std::string&) {
    ++step;
    const uint64_t b = step % 3 == 0 ? min : step % 3 == 1 ? min + int8 / 2 : 0;
    EXPECT_TRUE(r->rt->SetBudget(b).ok());
    plans.push_back(r->rt->plan().Summary());
    return true;
  });
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, want);
  EXPECT_GE(r->rt->stats().replans, 20u);
}

TEST(StreamingTest, TooSmallBudgetIsAClearError) {
  RuntimeOptions ro;
  ro.budget = 1 << 20;
  Result<Streamed> r = Open(SmallModel(), ro);
  ASSERT_EQ(r.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(r.status().message().find("needs at least"), std::string::npos) << r.status().message();
}

// Everything streamed (or held as `policy` says) through a pread reader whose system calls
// misbehave; `at_open` is the schedule while the runtime opens, `rates` (if set) skips calibration.
struct Faulty {
  storage::FaultInjector inj;
  Result<Streamed> run = UnavailableError("not opened");
  explicit Faulty(const std::string& path, Decode decode = Decode::kInline,
                  Policy policy = Policy::kStreamAll, const storage::FaultSchedule& at_open = {},
                  const Rates* rates = nullptr) {
    RuntimeOptions ro;
    ro.policy = policy;
    ro.force_decode = 1 + static_cast<int>(decode);
    ro.reader.backend = storage::ReaderBackend::kPread;
    ro.reader.pread = inj.MakePread();
    auto hooks = std::make_shared<internal::TestHooks>();
    hooks->wrap_reader = [this](std::unique_ptr<storage::BlockReader> r) {
      return inj.Wrap(std::move(r));
    };
    hooks->rates = rates;
    ro.test_hooks = hooks;
    inj.set_schedule(at_open);
    run = Open(path, ro);
  }
};

TEST(StreamingTest, EintrAndShortReadsAreRetried) {
  const std::vector<int32_t> want = Resident(SmallModel(), 12);
  Faulty f(SmallModel());
  ASSERT_TRUE(f.run.ok()) << f.run.status().ToString();
  storage::FaultSchedule s;
  s.eintr_every = 3;
  s.max_bytes_per_call = 10000;  // not a multiple of anything
  f.inj.set_schedule(s);
  auto got = Greedy(f.run->model, 12);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, want);
  EXPECT_GT(f.inj.faults(), 100);
}

class FaultTest : public ::testing::TestWithParam<Decode> {};
INSTANTIATE_TEST_SUITE_P(Decode, FaultTest, ::testing::Values(Decode::kInline, Decode::kAhead),
                         [](const auto& p) { return std::string(DecodeName(p.param)); });

TEST_P(FaultTest, EioFailsTheRequestWithDataLossNamingTheBlockThenRecovers) {
  const std::vector<int32_t> want = Resident(SmallModel(), 12);
  Faulty f(SmallModel(), GetParam());
  ASSERT_TRUE(f.run.ok()) << f.run.status().ToString();
  EXPECT_EQ(f.run->rt->plan().decode, GetParam());
  storage::FaultSchedule s;
  s.eio_from_call = f.inj.calls() + 5;
  s.eio_calls = 1000;  // persists until cleared
  f.inj.set_schedule(s);
  auto bad = Greedy(f.run->model, 12);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kDataLoss) << bad.status().ToString();
  EXPECT_NE(bad.status().message().find("block"), std::string::npos) << bad.status().message();
  f.inj.set_schedule({});  // the fault was transient
  auto good = Greedy(f.run->model, 12);
  ASSERT_TRUE(good.ok()) << good.status().ToString();
  EXPECT_EQ(*good, want);
  EXPECT_GE(f.run->rt->stats().errors, 1u);
}

// The file offset of the middle of `tensor`'s first block of row codes (a block every pass uses).
uint64_t MiddleOfFirstRowBlock(const std::string& model, const std::string& tensor) {
  auto c = storage::ContainerReader::Open(model);
  EXPECT_TRUE(c.ok()) << c.status().ToString();
  const int t = (*c)->FindTensor(tensor);
  EXPECT_GE(t, 0) << tensor;
  const storage::pb::Block& b = (*c)->block((*c)->manifest().tensors(t).first_block() + 1);
  return b.offset() + b.stored_size() / 2;
}

TEST_P(FaultTest, BitFlipFailsTheCrcNamingTheBlockThenRecovers) {
  const std::vector<int32_t> want = Resident(SmallModel(), 12);
  Faulty f(SmallModel(), GetParam());
  ASSERT_TRUE(f.run.ok()) << f.run.status().ToString();
  EXPECT_EQ(f.run->rt->plan().decode, GetParam());
  // A layer the prefetcher cannot have read before the request starts, and the output head.
  for (const char* tensor : {"blk.5.ffn_down.weight", "output.weight"}) {
    storage::FaultSchedule s;
    s.flip_at_offset = static_cast<int64_t>(MiddleOfFirstRowBlock(SmallModel(), tensor));
    f.inj.set_schedule(s);
    const int64_t faults = f.inj.faults();
    auto bad = Greedy(f.run->model, 12);
    ASSERT_EQ(f.inj.faults(), faults + 1) << tensor << ": the flip did not happen";
    ASSERT_FALSE(bad.ok()) << tensor;
    EXPECT_EQ(bad.status().code(), StatusCode::kDataLoss) << bad.status().ToString();
    EXPECT_NE(bad.status().message().find(tensor), std::string::npos) << bad.status().message();
    f.inj.set_schedule({});
    auto good = Greedy(f.run->model, 12);
    ASSERT_TRUE(good.ok()) << good.status().ToString();
    EXPECT_EQ(*good, want);
  }
}

// A unit held compressed in RAM is checked (CRC) once, when it is read: the products then read
// its blocks every token without checking them again. A bit flip in that read fails the load with
// DATA_LOSS naming the block's tensor, never a wrong token; a clean read gives the resident tokens.
TEST(StreamingTest, CompressedUnitsAreCheckedWhenRead) {
  const std::vector<int32_t> want = Resident(SmallModel(), 12);
  const char* tensor = "blk.1.ffn_down.weight";
  for (bool flip : {true, false}) {
    storage::FaultSchedule s;
    if (flip) s.flip_at_offset = static_cast<int64_t>(MiddleOfFirstRowBlock(SmallModel(), tensor));
    static const Rates rates;  // no calibration: the flip is in the unit's load
    Faulty f(SmallModel(), Decode::kInline, Policy::kAllCompressed, s, &rates);
    storage::FaultInjector& inj = f.inj;
    Result<Streamed>& run = f.run;
    if (flip) {
      ASSERT_FALSE(run.ok());
      EXPECT_EQ(inj.faults(), 1);
      EXPECT_EQ(run.status().code(), StatusCode::kDataLoss) << run.status().ToString();
      EXPECT_NE(run.status().message().find(tensor), std::string::npos) << run.status().message();
      continue;
    }
    ASSERT_TRUE(run.ok()) << run.status().ToString();
    ASSERT_EQ(run->rt->plan().count(Tier::kCompressed),
              static_cast<int>(run->rt->plan().tiers.size()));
    auto got = Greedy(run->model, 12);
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    EXPECT_EQ(*got, want);
  }
}

// Runs `dcomp generate MODEL ARGS --json` (after the environment assignments in `env`) and
// returns its output; *exit gets the exit status.
std::string RunGenerate(const std::string& env, const std::string& model, const std::string& args,
                        int* exit) {
  const std::string cmd = env + " " + testing::BinaryDir() + "/packer/dcomp generate " + model +
                          " --prompt 'Once upon a time' --json " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  *exit = -1;
  if (p == nullptr) return "popen failed: " + cmd;
  std::string out;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  *exit = pclose(p);
  return out;
}

// Peak RSS of a whole dcomp process stays within budget + 4 MiB, at three budgets, one of them
// below the compressed size of the model; tokens are the same at each.
TEST(StreamingTest, PeakRssStaysUnderTheBudget) {
#if defined(DCOMP_SANITIZED)
  GTEST_SKIP() << "sanitizer shadow memory counts in RSS; the release build runs this test";
#endif
  const std::string model = SmallModel();
  const uint64_t file_size = std::filesystem::file_size(model);
  std::vector<int> first;
  for (const char* budget : {"100%", "75%", "58%"}) {
    int exit = 0;
    const std::string out = RunGenerate(
        "", model, std::string("-n 16 --ctx 128 --threads 2 --budget ") + budget, &exit);
    ASSERT_EQ(exit, 0) << out;
    testing::Json j = testing::ParseJson(out);
    const testing::Json& mem = j["runtime"]["memory"];
    const double b = mem["budget"].num, peak = mem["peak_rss"].num;
    EXPECT_LE(peak, b + 4 * 1048576.0) << budget << ": " << out;
    EXPECT_LE(j["runtime"]["plan"]["total_bytes"].num, b) << budget;
    if (std::string(budget) == "58%") {
      EXPECT_LT(b, static_cast<double>(file_size));
    }
    if (first.empty()) first = j["ids"].ints();
    EXPECT_EQ(j["ids"].ints(), first) << budget;
  }
}

// The start-up compute probe borrows memory out of cache (DCOMP_CACHE_BYTES makes this small
// model larger than the "cache") only when the budget leaves twice the probe beyond the fixed
// memory, and the peak stays within the budget either way.
TEST(StreamingTest, ComputeProbeStaysWithinTheBudget) {
#if defined(DCOMP_SANITIZED)
  GTEST_SKIP() << "sanitizer shadow memory counts in RSS; the release build runs this test";
#endif
  const std::string model = SmallModel();
  auto run = [&](const std::string& budget) {
    int exit = 0;
    std::string out = RunGenerate("DCOMP_CACHE_BYTES=65536", model,
                                  "-n 4 --ctx 128 --threads 2 --budget " + budget, &exit);
    EXPECT_EQ(exit, 0) << out;
    return out;
  };
  // Room for the 8 MiB probe twice over beyond everything else: it runs out of cache.
  std::string out = run("64MiB");
  testing::Json j = testing::ParseJson(out);
  EXPECT_TRUE(j["runtime"]["runtime"]["rates_out_of_cache"].b) << out;
  EXPECT_LE(j["runtime"]["memory"]["peak_rss"].num, 64 * 1048576.0 + 4 * 1048576.0) << out;
  // A few MiB above the smallest budget that works (another process's baseline RSS may differ a
  // little) leaves less than the 16 MiB the probe needs: in cache, and within the budget.
  const double minimum = j["runtime"]["memory"]["minimum_budget"].num;
  const uint64_t tight = static_cast<uint64_t>(minimum) + (4u << 20);
  out = run(std::to_string(tight));
  j = testing::ParseJson(out);
  EXPECT_FALSE(j["runtime"]["runtime"]["rates_out_of_cache"].b) << out;
  EXPECT_LE(j["runtime"]["memory"]["peak_rss"].num, static_cast<double>(tight) + 4 * 1048576.0)
      << out;
}

// O_DIRECT reads (as the benchmarks run, `--direct`), the start-up read probe's included (its
// reads of a unit's range at once, ReadProbeBytes): the tokens are the resident engine's with
// every unit streamed and with the adaptive plan.
TEST(StreamingTest, DirectReadsGiveTheResidentTokens) {
  const std::string model = SmallModel();
  storage::BlockReaderOptions direct;
  direct.direct = true;
  if (auto rd = storage::OpenBlockReader(model, direct); !rd.ok()) {
    GTEST_SKIP() << "O_DIRECT is refused where the test writes its model: "
                 << rd.status().ToString();
  }
  const std::vector<int32_t> want = Resident(model, 8);
  uint64_t budget = 0;  // for the adaptive plan: some units held, the others streamed
  for (const Policy policy : {Policy::kStreamAll, Policy::kAdaptive}) {
    RuntimeOptions ro;
    ro.policy = policy;
    ro.reader = direct;
    ro.budget = budget;
    Result<Streamed> r = Open(model, ro);
    ASSERT_TRUE(r.ok()) << PolicyName(policy) << ": " << r.status().ToString();
    EXPECT_NE(r->rt->stats().reader_backend.find("O_DIRECT"), std::string::npos)
        << r->rt->stats().reader_backend;
    auto got = Greedy(r->model, 8);
    ASSERT_TRUE(got.ok()) << PolicyName(policy) << ": " << got.status().ToString();
    EXPECT_EQ(*got, want) << r->rt->plan().Summary();
    // Under a sanitizer the slack for the moving baseline RSS (kSlack) holds the whole model.
    if (policy == Policy::kAdaptive && !kSanitized) {
      EXPECT_GT(r->rt->plan().count(Tier::kFlash), 0) << r->rt->plan().Summary();
    }
    budget = r->rt->stats().minimum_budget + r->rt->int8_bytes() * 3 / 10 + kSlack;
  }
}

}  // namespace
}  // namespace dcomp::runtime

namespace dcomp::runtime {
namespace {

// A model file cut at any block boundary (as by a copy that stopped, or a full disk) is refused at
// open with DATA_LOSS naming the file; nothing crashes and nothing is read past the end.
TEST(StreamingTest, FileTruncatedAtEveryBlockBoundaryIsAClearError) {
  packer::PackOptions o;
  o.input = testing::SourceDir() + "/models/stories260K.bin";
  o.output = Temp("whole.dcm");
  o.scaling = false;
  o.rate_alloc = false;
  ASSERT_TRUE(packer::Pack(o).ok());
  std::vector<uint64_t> cuts;
  {
    auto c = storage::ContainerReader::Open(o.output);
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    for (size_t b = 0; b < (*c)->num_blocks(); ++b) {
      cuts.push_back((*c)->block(b).offset());
      cuts.push_back((*c)->block(b).offset() + (*c)->block(b).stored_size());
    }
  }
  const uint64_t size = std::filesystem::file_size(o.output);
  const std::string cut = Temp("cut.dcm");
  int refused = 0;
  for (uint64_t at : cuts) {
    if (at >= size) continue;
    std::filesystem::copy_file(o.output, cut, std::filesystem::copy_options::overwrite_existing);
    std::filesystem::resize_file(cut, at);
    ServedModelOptions so;
    so.streaming = Streaming::kRequired;
    so.runtime.budget = 64u << 20;
    Result<ServedModel> m = OpenServedModel(cut, so);
    ASSERT_FALSE(m.ok()) << "cut at " << at;
    EXPECT_EQ(m.status().code(), StatusCode::kDataLoss) << m.status().ToString();
    EXPECT_NE(m.status().message().find(cut), std::string::npos) << m.status().message();
    ++refused;
  }
  EXPECT_GE(refused, 80);
  std::filesystem::remove(cut);
  std::filesystem::remove(o.output);
}

}  // namespace
}  // namespace dcomp::runtime
