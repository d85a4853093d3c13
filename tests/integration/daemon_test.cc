// Integration tests of dcompd over loopback: the real binary, started per test on a unix socket in
// a temp directory, driven through the gRPC API, dcompctl, signals and a fake NOTIFY_SOCKET.
#include <arpa/inet.h>
#include <google/protobuf/descriptor.pb.h>
#include <grpcpp/generic/generic_stub.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <atomic>
#include <cmath>
#include <map>
#include <regex>
#include <set>
#include <thread>

#include "engine/chat_template.h"
#include "engine/generate.h"
#include "packer/pack.h"
#include "packer/synth.h"
#include "proto/grpc/reflection/v1/reflection.grpc.pb.h"
#include "proto/grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "runtime/served_model.h"
#include "tests/integration/daemon_process.h"
#include "tests/util/mini_json.h"

namespace dcomp::testing {
namespace {

using Clock = std::chrono::steady_clock;
using grpc::health::v1::HealthCheckResponse;

// Budgets are the daemon's baseline (binary, libraries, gRPC threads, KV cache) plus some room;
// ASan's allocator and shadow raise the baseline.
#if defined(__SANITIZE_ADDRESS__)
constexpr uint64_t kBaseMiB = 200;
#else
constexpr uint64_t kBaseMiB = 40;
#endif
std::string MiB(uint64_t extra) { return std::to_string(kBaseMiB + extra) + "MiB"; }
uint64_t MiBBytes(uint64_t extra) { return (kBaseMiB + extra) << 20; }

double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// The models: packed by the CTest fixture `daemon_models` into the build tree, or (when the binary
// runs on its own) once per process into a temp directory.
struct Models {
  std::string dir = MakeTempDir("models");
  ~Models() {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
  static std::string Prepared(const std::string& name) {
    const std::string p = BinaryDir() + "/tests/integration/models/" + name;
    return std::filesystem::exists(p) ? p : std::string();
  }
  // The embedded stories260K, packed with the defaults.
  const std::string& Embedded() {
    static const std::string path = [this] {
      if (std::string p = Prepared("s260.dcm"); !p.empty()) return p;
      packer::PackOptions o;
      o.input = SourceDir() + "/models/stories260K.bin";
      o.output = dir + "/s260.dcm";
      auto r = packer::Pack(o);
      EXPECT_TRUE(r.ok()) << r.status().ToString();
      return o.output;
    }();
    return path;
  }
  // The small synthetic shape (42 MB INT8): slow enough that requests overlap.
  const std::string& Small() {
    static const std::string path = [this] {
      if (std::string p = Prepared("small.dcm"); !p.empty()) return p;
      packer::SynthOptions s;
      s.shape = "small";
      s.output = dir + "/small.gguf";
      s.entropy_bits = 6.13;
      EXPECT_TRUE(packer::Synthesize(s).ok());
      packer::PackOptions o;
      o.input = s.output;
      o.output = dir + "/small.dcm";
      o.scaling = false;
      o.rate_alloc = false;
      auto r = packer::Pack(o);
      EXPECT_TRUE(r.ok()) << r.status().ToString();
      std::filesystem::remove(s.output);
      return o.output;
    }();
    return path;
  }
};
Models& models() {
  static Models m;
  return m;
}

struct Outcome {
  grpc::Status status;
  std::vector<int32_t> streamed_ids;
  v1::GenerateResult result;
  int token_messages = 0;
  bool result_last = false;
};

Outcome Generate(const std::shared_ptr<grpc::Channel>& ch, const v1::GenerateRequest& req,
                 grpc::ClientContext* ctx = nullptr) {
  grpc::ClientContext local;
  if (ctx == nullptr) {
    ctx = &local;
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
  }
  auto stub = v1::Dcomp::NewStub(ch);
  auto reader = stub->Generate(ctx, req);
  Outcome o;
  v1::GenerateResponse msg;
  while (reader->Read(&msg)) {
    o.result_last = false;
    if (msg.has_token()) {
      ++o.token_messages;
      o.streamed_ids.push_back(msg.token().id());
    } else if (msg.has_result()) {
      o.result = msg.result();
      o.result_last = true;
    }
  }
  o.status = reader->Finish();
  return o;
}

v1::GenerateRequest Request(const std::string& prompt, int n) {
  v1::GenerateRequest r;
  r.set_prompt(prompt);
  r.set_max_tokens(n);
  return r;
}

// The tokens the in-process engine generates for the same request (its prompt given by `prompt`
// when set: a chat rendered with the model's tokenizer; `tokenizer`: a llama2.c model's).
std::vector<int32_t> EngineTokens(
    const std::string& model, GenerateRequest req,
    const std::function<std::string(const Tokenizer&)>& prompt = nullptr,
    const std::string& tokenizer = "") {
  runtime::ServedModelOptions o;
  o.tokenizer_path = tokenizer;
  o.threads = 2;
  o.streaming = runtime::Streaming::kIfDcm;
  auto m = runtime::OpenServedModel(model, o);
  EXPECT_TRUE(m.ok()) << m.status().ToString();
  if (prompt) req.prompt = prompt(*m->model.tokenizer);
  auto r = dcomp::Generate(*m->model.model, *m->model.tokenizer, req);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r->generated_ids;
}

v1::StatusResponse GetStatus(const std::shared_ptr<grpc::Channel>& ch) {
  auto stub = v1::Dcomp::NewStub(ch);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  v1::StatusResponse s;
  EXPECT_TRUE(stub->Status(&ctx, {}, &s).ok());
  return s;
}

std::string RunCommand(const std::string& cmd, int* exit_code) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  const int st = pclose(p);
  *exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return out;
}

int FreeTcpPort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

// One HTTP exchange with 127.0.0.1:`port` over a fresh connection that the server closes after
// its answer: the whole response, status line and headers included ("" when nothing answers).
std::string HttpExchange(int port, const std::string& request) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string resp;
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0) {
    (void)!write(fd, request.data(), request.size());
    char buf[8192];
    ssize_t n;
    while ((n = read(fd, buf, sizeof(buf))) > 0) resp.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return resp;
}

TEST(DaemonTest, GenerateStreamsTheEnginesTokens) {
  const std::string& model = models().Embedded();
  DaemonProcess d({"--model", model, "--budget", MiB(24)});
  ASSERT_TRUE(d.WaitServing()) << d.Log();

  for (const auto& [temp, seed] : std::vector<std::pair<float, uint64_t>>{{0.f, 0}, {0.9f, 7}}) {
    GenerateRequest ref;
    ref.prompt = "Once upon a time";
    ref.max_tokens = 40;
    ref.sampling.temperature = temp;
    ref.sampling.seed = seed;
    v1::GenerateRequest req = Request(ref.prompt, ref.max_tokens);
    req.mutable_sampling()->set_temperature(temp);
    req.mutable_sampling()->set_seed(seed);
    Outcome o = Generate(d.channel(), req);
    ASSERT_TRUE(o.status.ok()) << o.status.error_message();
    const std::vector<int32_t> expected = EngineTokens(model, ref);
    EXPECT_EQ(o.streamed_ids, expected) << "temperature " << temp;
    // One message per token, then the result.
    EXPECT_EQ(o.token_messages, static_cast<int>(expected.size()));
    EXPECT_TRUE(o.result_last);
    EXPECT_EQ(
        std::vector<int32_t>(o.result.generated_ids().begin(), o.result.generated_ids().end()),
        expected);
    EXPECT_EQ(o.result.generated_tokens(), static_cast<int>(expected.size()));
    EXPECT_GT(o.result.prompt_tokens(), 1);
    EXPECT_NE(o.result.stop_reason(), v1::STOP_REASON_UNSPECIFIED);
    EXPECT_GT(o.result.time_to_first_token_seconds(), 0);
  }
}

// Concurrent requests of different lengths, greedy and sampled, generate together (continuous
// batching) and each gets the tokens the engine gives it alone, at several budgets, thread counts
// and batch sizes; a request whose KV cache could never fit is refused naming the bytes.
TEST(DaemonTest, BatchedRequestsGetTheirTokensAlone) {
  const std::string& model = models().Embedded();
  const char* prompts[] = {"Once upon a time",
                           "Lily",
                           "The dog ran to the park and saw a big ball",
                           "One day",
                           "Tom and Sue",
                           "A cat",
                           "She was happy because",
                           "The sun"};
  std::vector<GenerateRequest> refs;
  std::vector<std::vector<int32_t>> alone;
  for (int i = 0; i < 8; ++i) {
    GenerateRequest r;
    r.prompt = prompts[i];
    r.max_tokens = 8 + 11 * (i % 4);
    r.stop_at_eos = i % 3 != 0;
    if (i % 2 == 1) {
      r.sampling.temperature = 0.9f;
      r.sampling.top_k = 40;
      r.sampling.seed = 1000 + static_cast<uint64_t>(i);
    }
    refs.push_back(r);
    alone.push_back(EngineTokens(model, r));
  }
  const std::vector<std::vector<std::string>> setups = {
      {"--threads", "2", "--max-batch", "8"},
      {"--threads", "1", "--max-batch", "3", "--budget", MiB(24)},
      {"--threads", "2", "--max-batch", "8", "--policy", "stream-all"},
  };
  for (const std::vector<std::string>& setup : setups) {
    std::vector<std::string> args = {"--model", model};
    args.insert(args.end(), setup.begin(), setup.end());
    DaemonProcess d(args);
    ASSERT_TRUE(d.WaitServing()) << d.Log();
    std::vector<Outcome> out(refs.size());
    std::vector<std::thread> clients;
    for (size_t i = 0; i < refs.size(); ++i) {
      clients.emplace_back([&, i] {
        v1::GenerateRequest req = Request(refs[i].prompt, refs[i].max_tokens);
        req.set_ignore_eos(!refs[i].stop_at_eos);
        req.mutable_sampling()->set_temperature(refs[i].sampling.temperature);
        req.mutable_sampling()->set_top_k(refs[i].sampling.top_k);
        req.mutable_sampling()->set_seed(refs[i].sampling.seed);
        out[i] = Generate(d.channel(), req);
      });
    }
    for (auto& t : clients) t.join();
    std::string where;
    for (const std::string& a : setup) where += a + " ";
    for (size_t i = 0; i < refs.size(); ++i) {
      ASSERT_TRUE(out[i].status.ok()) << where << out[i].status.error_message();
      EXPECT_EQ(out[i].streamed_ids, alone[i]) << where << "request " << i;
    }
    const v1::StatusResponse st = GetStatus(d.channel());
    EXPECT_EQ(st.queue_length() + st.running(), 0);
    EXPECT_EQ(st.kv_cache_used_bytes(), 0u);
    EXPECT_GT(st.kv_cache_bytes(), 0u);
    EXPECT_GT(st.steps(), 0u);
    std::printf("[%s: %llu steps, %.2f requests per step]\n", where.c_str(),
                static_cast<unsigned long long>(st.steps()),
                static_cast<double>(st.step_requests()) / static_cast<double>(st.steps()));
  }
  // KV room for 64 positions: a request of 100 tokens can never run.
  DaemonProcess d({"--model", model, "--kv-cache-tokens", "64"});
  ASSERT_TRUE(d.WaitServing()) << d.Log();
  Outcome o = Generate(d.channel(), Request("Once upon a time", 100));
  EXPECT_EQ(o.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(o.status.error_message().find("of KV cache for"), std::string::npos)
      << o.status.error_message();
  EXPECT_NE(o.status.error_message().find("kv_cache_tokens 64"), std::string::npos)
      << o.status.error_message();
  EXPECT_TRUE(Generate(d.channel(), Request("Once upon a time", 20)).status.ok());
}

TEST(DaemonTest, TokensArriveAsTheyAreGenerated) {
  // On the small model each token takes milliseconds: the first must reach the client long before
  // the last is generated.
  DaemonProcess d({"--model", models().Small(), "--threads", "1"});
  ASSERT_TRUE(d.WaitServing()) << d.Log();
  v1::GenerateRequest req = Request("Once upon a time", 200);
  req.set_ignore_eos(true);
  auto stub = v1::Dcomp::NewStub(d.channel());
  grpc::ClientContext ctx;
  auto reader = stub->Generate(&ctx, req);
  v1::GenerateResponse msg;
  const auto t0 = Clock::now();
  double first = -1, last = -1;
  int tokens = 0;
  while (reader->Read(&msg)) {
    if (msg.has_token()) {
      if (first < 0) first = Since(t0);
      ++tokens;
    } else {
      last = Since(t0);
    }
  }
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_EQ(tokens, 200);
  std::printf("[first token after %.1f ms, result after %.1f ms]\n", first * 1e3, last * 1e3);
  EXPECT_LT(first, last / 4);
}

TEST(DaemonTest, MalformedRequestsGetTheRightCodeAndNameTheField) {
  const std::string& model = models().Embedded();
  DaemonProcess d({"--model", model});
  ASSERT_TRUE(d.WaitServing()) << d.Log();
  struct Case {
    std::string what;
    v1::GenerateRequest req;
    grpc::StatusCode code;
    std::string field;  // must appear in the message
  };
  std::vector<Case> cases;
  const auto add = [&](const std::string& what, auto mutate, grpc::StatusCode code,
                       const std::string& field) {
    Case c{what, Request("Once upon a time", 8), code, field};
    mutate(c.req);
    cases.push_back(std::move(c));
  };
  const auto kInvalid = grpc::StatusCode::INVALID_ARGUMENT;
  std::string long_prompt;
  for (int i = 0; i < 700; ++i) long_prompt += "dragon ";  // > 512 tokens, < 16 KiB
  const std::vector<std::string> bad_utf8 = {
      "\xFF", "abc\xC3", "\xC0\xAF", "\xED\xA0\x80", "\xF4\x90\x80\x80", "ok\x80ok", "\xE2\x82"};
  for (int rep = 0; cases.size() < 200; ++rep) {
    add(
        "empty prompt", [](auto& r) { r.set_prompt(""); }, kInvalid, "prompt");
    add(
        "prompt longer than the context", [&](auto& r) { r.set_prompt(long_prompt); }, kInvalid,
        "prompt");
    add(
        "prompt over max_prompt_bytes", [](auto& r) { r.set_prompt(std::string(20000, 'a')); },
        kInvalid, "prompt");
    add(
        "max_tokens 0", [](auto& r) { r.set_max_tokens(0); }, kInvalid, "max_tokens");
    add(
        "max_tokens negative", [&](auto& r) { r.set_max_tokens(-1 - rep); }, kInvalid,
        "max_tokens");
    add(
        "max_tokens huge", [&](auto& r) { r.set_max_tokens(1000000 + rep); }, kInvalid,
        "max_tokens");
    add(
        "temperature < 0", [&](auto& r) { r.mutable_sampling()->set_temperature(-0.5f - rep); },
        kInvalid, "sampling.temperature");
    add(
        "temperature NaN", [](auto& r) { r.mutable_sampling()->set_temperature(std::nanf("")); },
        kInvalid, "sampling.temperature");
    add(
        "top_p > 1", [&](auto& r) { r.mutable_sampling()->set_top_p(1.01f + rep); }, kInvalid,
        "sampling.top_p");
    add(
        "top_p 0", [](auto& r) { r.mutable_sampling()->set_top_p(0); }, kInvalid, "sampling.top_p");
    add(
        "top_k < 0", [](auto& r) { r.mutable_sampling()->set_top_k(-3); }, kInvalid,
        "sampling.top_k");
    add(
        "min_p > 1", [](auto& r) { r.mutable_sampling()->set_min_p(2); }, kInvalid,
        "sampling.min_p");
    add(
        "repetition_penalty 0", [](auto& r) { r.mutable_sampling()->set_repetition_penalty(0); },
        kInvalid, "sampling.repetition_penalty");
    add(
        "invalid UTF-8",
        [&](auto& r) {
          r.set_prompt("Once " + bad_utf8[static_cast<size_t>(rep) % bad_utf8.size()]);
        },
        kInvalid, "prompt: invalid UTF-8");
    add(
        "message over max_message_bytes", [](auto& r) { r.set_prompt(std::string(70000, 'a')); },
        grpc::StatusCode::RESOURCE_EXHAUSTED, "");
  }
  cases.resize(200);
  std::map<std::string, int> seen;
  for (const Case& c : cases) {
    Outcome o = Generate(d.channel(), c.req);
    EXPECT_EQ(o.status.error_code(), c.code) << c.what << ": " << o.status.error_message();
    EXPECT_NE(o.status.error_message().find(c.field), std::string::npos)
        << c.what << ": '" << o.status.error_message() << "' does not name " << c.field;
    EXPECT_EQ(o.token_messages, 0) << c.what;
    ++seen[c.what];
  }
  EXPECT_EQ(seen.size(), 15u);
  Outcome ok = Generate(d.channel(), Request("Once upon a time", 8));
  EXPECT_TRUE(ok.status.ok()) << ok.status.error_message();
  EXPECT_EQ(ok.result.generated_tokens(), 8);
  const v1::StatusResponse st = GetStatus(d.channel());
  EXPECT_GE(st.requests().at("INVALID_ARGUMENT"), 150u);
}

// Unknown fields are accepted, as proto3 intends (an older daemon serves a newer client), and the
// request is served as if they were absent.
TEST(DaemonTest, UnknownFieldsAreAccepted) {
  DaemonProcess d({"--model", models().Embedded(), "--log-level", "debug"});
  ASSERT_TRUE(d.WaitServing()) << d.Log();
  v1::GenerateRequest plain = Request("Once upon a time", 8);
  v1::GenerateRequest req = plain;
  req.GetReflection()->MutableUnknownFields(&req)->AddVarint(99, 1);
  auto* s = req.mutable_sampling();
  s->GetReflection()->MutableUnknownFields(s)->AddLengthDelimited(42, "x");
  Outcome o = Generate(d.channel(), req);
  ASSERT_TRUE(o.status.ok()) << o.status.error_message();
  EXPECT_EQ(o.streamed_ids, Generate(d.channel(), plain).streamed_ids);
  auto stub = v1::Dcomp::NewStub(d.channel());
  v1::StatusRequest sr;
  sr.GetReflection()->MutableUnknownFields(&sr)->AddVarint(7, 1);
  v1::StatusResponse st;
  grpc::ClientContext ctx;
  EXPECT_TRUE(stub->Status(&ctx, sr, &st).ok());
  // Logged at debug level (flushed with the request's own log line, written before it returned).
  EXPECT_NE(d.Log().find("Generate: ignored request: unknown field number 99"), std::string::npos)
      << d.Log();
}

// SetBudget answers with the plan chosen for the new budget, also while a request is generating
// (when it is applied at the next step), and 0 means no limit in every budget field.
TEST(DaemonTest, SetBudgetAnswersThePlanItChose) {
  DaemonProcess d({"--model", models().Small(), "--threads", "1"});
  ASSERT_TRUE(d.WaitServing()) << d.Log();
  const v1::StatusResponse before = GetStatus(d.channel());
  EXPECT_EQ(before.budget_bytes(), 0u);
  EXPECT_EQ(before.effective_budget_bytes(), 0u);  // no limit: 0, not a huge number
  // A generation runs while the budget changes; it is cancelled once the answer is in (under the
  // new budget it would stream weights for the rest of its 120 tokens).
  grpc::ClientContext gen_ctx;
  gen_ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
  std::thread gen([&] {
    v1::GenerateRequest req = Request("Once upon a time", 120);
    req.set_ignore_eos(true);
    Generate(d.channel(), req, &gen_ctx);
  });
  for (auto t = Clock::now(); GetStatus(d.channel()).running() == 0 && Since(t) < 30;) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  // A few MiB above the smallest budget that works: the plan must stream some of the weights it
  // holds decoded without a limit. (A fixed figure would depend on the process's baseline RSS.)
  const uint64_t budget = ((before.minimum_budget_bytes() >> 20) + 4) << 20;
  auto stub = v1::Dcomp::NewStub(d.channel());
  v1::SetBudgetRequest req;
  req.set_bytes(budget);
  v1::SetBudgetResponse resp;
  grpc::ClientContext ctx;
  const grpc::Status set = stub->SetBudget(&ctx, req, &resp);
  gen_ctx.TryCancel();
  gen.join();  // before any assertion can return
  ASSERT_TRUE(set.ok()) << set.error_message();
  EXPECT_EQ(resp.budget_bytes(), budget);
  EXPECT_NE(resp.plan().summary(), before.plan().summary()) << resp.plan().summary();
  // (The plan in force later may differ again: the controller re-plans from measured rates.)
  // The generation ended before another token: the new plan is applied once the model is idle.
  const auto effective = [&] { return GetStatus(d.channel()).effective_budget_bytes(); };
  for (auto t = Clock::now(); effective() != budget && Since(t) < 30;) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(effective(), budget);
  // The pressure scaling is reported, so that a client can tell pressure from a pending plan.
  const double factor = GetStatus(d.channel()).budget_factor();
  EXPECT_GE(factor, 0.6);
  EXPECT_LE(factor, 1.0);
}

// A model that is not a .dcm is held resident (no plan, no budget): it is served request after
// request and through idle time (the scheduler's idle ticks), with the engine's tokens, and a
// budget is refused naming why.
TEST(DaemonTest, ResidentModelsAreServedThroughIdleTime) {
  const std::string dir = MakeTempDir("r");
  const std::string bin = SourceDir() + "/models/stories260K.bin";
  const std::string tok = SourceDir() + "/models/tok512.bin";
  std::ofstream(dir + "/dcompd.textproto")
      << "model: \"" << bin << "\"\ntokenizer: \"" << tok << "\"\n";
  DaemonProcess d({"--config", dir + "/dcompd.textproto"});
  ASSERT_TRUE(d.WaitServing()) << d.Log();
  GenerateRequest ref;
  ref.prompt = "Once upon a time";
  ref.max_tokens = 20;
  const std::vector<int32_t> expected = EngineTokens(bin, ref, nullptr, tok);
  for (int i = 0; i < 3; ++i) {
    if (i == 2) std::this_thread::sleep_for(std::chrono::milliseconds(2500));  // idle ticks
    Outcome o = Generate(d.channel(), Request(ref.prompt, ref.max_tokens));
    ASSERT_TRUE(o.status.ok()) << o.status.error_message() << d.Log();
    EXPECT_EQ(o.streamed_ids, expected) << "request " << i;
  }
  auto stub = v1::Dcomp::NewStub(d.channel());
  v1::SetBudgetRequest req;
  req.set_percent(50);
  v1::SetBudgetResponse resp;
  grpc::ClientContext ctx;
  const grpc::Status set = stub->SetBudget(&ctx, req, &resp);
  EXPECT_EQ(set.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(set.error_message().find("held in RAM"), std::string::npos) << set.error_message();
  const v1::StatusResponse st = GetStatus(d.channel());  // no plan to show, and no crash showing it
  EXPECT_EQ(st.budget_bytes(), 0u);
  EXPECT_EQ(st.effective_budget_bytes(), 0u);
  EXPECT_FALSE(d.Exited(nullptr)) << d.Log();
}

TEST(DaemonTest, TokenizeValidatesItsText) {
  DaemonProcess d({"--model", models().Embedded()});
  ASSERT_TRUE(d.WaitServing()) << d.Log();
  auto stub = v1::Dcomp::NewStub(d.channel());
  v1::TokenizeRequest req;
  req.set_text("Once upon a time");
  req.set_add_bos(true);
  v1::TokenizeResponse resp;
  grpc::ClientContext c1;
  ASSERT_TRUE(stub->Tokenize(&c1, req, &resp).ok());
  EXPECT_EQ(resp.ids_size(), resp.pieces_size());
  EXPECT_GT(resp.ids_size(), 2);
  req.set_text("bad \xFF");
  grpc::ClientContext c2;
  grpc::Status s = stub->Tokenize(&c2, req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("text: invalid UTF-8 at byte 4"), std::string::npos);
}

TEST(DaemonTest, ThirtyTwoConcurrentClientsCompleteOrAreRefused) {
  DaemonProcess d({"--model", models().Small(), "--threads", "1", "--queue-depth", "8"});
  ASSERT_TRUE(d.WaitServing()) << d.Log();
  std::vector<Outcome> out(32);
  std::vector<double> seconds(32);
  std::atomic<int> ready{0};
  std::vector<std::thread> clients;
  const auto t0 = Clock::now();
  for (int i = 0; i < 32; ++i) {
    clients.emplace_back([&, i] {
      auto ch = grpc::CreateChannel(d.address(), grpc::InsecureChannelCredentials());
      ch->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10));
      ++ready;
      while (ready.load() < 32) std::this_thread::yield();
      const auto s = Clock::now();
      v1::GenerateRequest req = Request("Once upon a time", 32);
      req.set_ignore_eos(true);
      out[static_cast<size_t>(i)] = Generate(ch, req);
      seconds[static_cast<size_t>(i)] = Since(s);
    });
  }
  for (auto& t : clients) t.join();  // every call has a 120 s deadline: none may hang
  int ok = 0, refused = 0;
  for (const Outcome& o : out) {
    if (o.status.ok()) {
      ++ok;
      EXPECT_EQ(o.result.generated_tokens(), 32);
    } else {
      EXPECT_EQ(o.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
          << o.status.error_message();
      EXPECT_NE(o.status.error_message().find("queue is full"), std::string::npos);
      ++refused;
    }
  }
  std::printf("[32 clients: %d completed, %d refused with RESOURCE_EXHAUSTED, %.2f s in all]\n", ok,
              refused, Since(t0));
  EXPECT_EQ(ok + refused, 32);
  EXPECT_GE(ok, 1);
  EXPECT_GE(refused, 1);
  const v1::StatusResponse st = GetStatus(d.channel());
  EXPECT_EQ(st.queue_length() + st.running(), 0);
}

TEST(DaemonTest, CancellingHalfTheClientsFreesTheirPlacesPromptly) {
  DaemonProcess d({"--model", models().Small(), "--threads", "1", "--queue-depth", "16"});
  ASSERT_TRUE(d.WaitServing()) << d.Log();
  constexpr int kClients = 16;
  std::vector<std::unique_ptr<grpc::ClientContext>> ctx;
  std::vector<Outcome> out(kClients);
  std::vector<std::thread> clients;
  for (int i = 0; i < kClients; ++i) ctx.push_back(std::make_unique<grpc::ClientContext>());
  for (int i = 0; i < kClients; ++i) {
    clients.emplace_back([&, i] {
      v1::GenerateRequest req = Request("Once upon a time", 400);
      req.set_ignore_eos(true);
      out[static_cast<size_t>(i)] = Generate(d.channel(), req, ctx[static_cast<size_t>(i)].get());
    });
  }
  // All 16 admitted: eight running (the batch), eight waiting.
  const auto queued = [&] {
    const v1::StatusResponse s = GetStatus(d.channel());
    return s.queue_length() + s.running();
  };
  for (auto t = Clock::now(); queued() < kClients && Since(t) < 30;) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_EQ(queued(), kClients);
  // Cancel every other client (the running one among them if it is even).
  const auto t0 = Clock::now();
  for (int i = 0; i < kClients; i += 2) ctx[static_cast<size_t>(i)]->TryCancel();
  double freed = -1;
  while (Since(t0) < 10) {
    if (queued() <= kClients / 2) {
      freed = Since(t0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  std::printf("[8 of 16 queued clients cancelled: their places free after %.1f ms]\n", freed * 1e3);
  ASSERT_GE(freed, 0) << "cancelled requests still hold their places after 10 s";
  EXPECT_LT(freed, 2.0);
  // The freed places take new requests.
  auto stub = v1::Dcomp::NewStub(d.channel());
  grpc::ClientContext extra;
  v1::GenerateRequest req = Request("Once upon a time", 4);
  auto reader = stub->Generate(&extra, req);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(queued(), kClients / 2 + 1);
  extra.TryCancel();
  for (int i = 1; i < kClients; i += 2) ctx[static_cast<size_t>(i)]->TryCancel();
  for (auto& t : clients) t.join();
  v1::GenerateResponse msg;
  while (reader->Read(&msg)) {
  }
  (void)reader->Finish();
  for (int i = 0; i < kClients; ++i) {
    const auto code = out[static_cast<size_t>(i)].status.error_code();
    EXPECT_TRUE(code == grpc::StatusCode::CANCELLED || code == grpc::StatusCode::OK) << i;
  }
}

TEST(DaemonTest, DeadlineStopsGenerationWithinATokenOrTwo) {
  DaemonProcess d({"--model", models().Small(), "--threads", "1"});
  ASSERT_TRUE(d.WaitServing()) << d.Log();
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(300));
  v1::GenerateRequest req = Request("Once upon a time", 480);
  req.set_ignore_eos(true);
  Outcome o = Generate(d.channel(), req, &ctx);
  EXPECT_EQ(o.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_LT(o.token_messages, 480);
  // The daemon noticed: the request finished as DEADLINE_EXCEEDED and the queue is empty.
  for (auto t = Clock::now(); Since(t) < 5;) {
    const v1::StatusResponse s = GetStatus(d.channel());
    if (s.requests().count("DEADLINE_EXCEEDED") && s.running() == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  const v1::StatusResponse s = GetStatus(d.channel());
  EXPECT_EQ(s.requests().count("DEADLINE_EXCEEDED"), 1u);
  EXPECT_EQ(s.running(), 0);
}

// A fake systemd: a datagram socket whose thread collects sd_notify messages as they come (the
// kernel queues only a few unread datagrams before the sender blocks).
class NotifySocket {
 public:
  explicit NotifySocket(const std::string& path) {
    fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path.c_str(), sizeof(a.sun_path) - 1);
    bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a));
    timeval tv{0, 50000};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    reader_ = std::thread([this] {
      while (!stop_.load()) {
        char buf[4096];
        const ssize_t n = recv(fd_, buf, sizeof(buf), 0);
        if (n <= 0) continue;
        std::lock_guard<std::mutex> l(mu_);
        messages_.emplace_back(buf, static_cast<size_t>(n));
      }
    });
  }
  ~NotifySocket() {
    stop_.store(true);
    reader_.join();
    close(fd_);
  }
  // True once a message containing `what` has come, waiting up to `seconds`.
  bool WaitFor(const std::string& what, double seconds) {
    const auto t0 = Clock::now();
    do {
      {
        std::lock_guard<std::mutex> l(mu_);
        for (const std::string& m : messages_) {
          if (m.find(what) != std::string::npos) return true;
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    } while (Since(t0) < seconds);
    return false;
  }
  std::string All() {
    std::lock_guard<std::mutex> l(mu_);
    std::string s;
    for (const auto& m : messages_) s += "[" + m + "] ";
    return s;
  }

 private:
  int fd_ = -1;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::vector<std::string> messages_;
  std::thread reader_;
};

TEST(DaemonTest, NotifiesSystemdAndDrainsOnSigterm) {
  const std::string dir = MakeTempDir("notify");
  NotifySocket notify(dir + "/notify.sock");
  // One request at a time (--max-batch 1), so that one streams while the other waits.
  DaemonProcess d(
      {"--model", models().Small(), "--threads", "1", "--shutdown-grace", "1", "--max-batch", "1"},
      {"NOTIFY_SOCKET=" + dir + "/notify.sock", "WATCHDOG_USEC=400000"});
  EXPECT_TRUE(notify.WaitFor("READY=1", 120)) << notify.All() << d.Log();
  EXPECT_TRUE(notify.WaitFor("STATUS=serving", 5)) << notify.All();
  EXPECT_TRUE(notify.WaitFor("WATCHDOG=1", 5)) << notify.All();
  EXPECT_EQ(d.Health(), HealthCheckResponse::SERVING);

  // SIGTERM while a long generation streams and a second one waits: together they need more than
  // the 1 s grace, so the daemon finishes what it can, cancels the rest and exits 0 in time.
  std::atomic<int> tokens{0};
  std::vector<Outcome> out(2);
  std::vector<std::thread> clients;
  for (int i = 0; i < 2; ++i) {
    clients.emplace_back([&, i] {
      auto stub = v1::Dcomp::NewStub(d.channel());
      grpc::ClientContext ctx;
      v1::GenerateRequest req = Request("Once upon a time", 480);
      req.set_ignore_eos(true);
      auto reader = stub->Generate(&ctx, req);
      v1::GenerateResponse msg;
      while (reader->Read(&msg)) {
        if (msg.has_token()) ++tokens;
      }
      out[static_cast<size_t>(i)].status = reader->Finish();
    });
  }
  const auto t0 = Clock::now();
  while (tokens.load() == 0 && Since(t0) < 60) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  while (GetStatus(d.channel()).queue_length() < 1 && Since(t0) < 60) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_EQ(GetStatus(d.channel()).queue_length(), 1);
  double seconds = 0;
  const int code = d.Stop(SIGTERM, std::chrono::seconds(10), &seconds);
  for (auto& t : clients) t.join();
  int cancelled = 0;
  for (const Outcome& o : out) {
    // Cancelled by the shutdown: the client sees the call cancelled or the connection closed.
    EXPECT_TRUE(o.status.ok() || o.status.error_code() == grpc::StatusCode::CANCELLED ||
                o.status.error_code() == grpc::StatusCode::UNAVAILABLE)
        << o.status.error_code() << " " << o.status.error_message();
    cancelled += !o.status.ok();
  }
  std::printf(
      "[SIGTERM during generation with one request queued: exit %d after %.2f s (grace "
      "1 s); %d tokens streamed; %d of 2 requests cancelled]\n",
      code, seconds, tokens.load(), cancelled);
  EXPECT_EQ(code, 0) << d.Log();
  EXPECT_LT(seconds, 1.0 + 1.0);
  EXPECT_GE(cancelled, 1);
  EXPECT_NE(d.Log().find("after the 1 s grace period: cancelled"), std::string::npos) << d.Log();
  EXPECT_TRUE(notify.WaitFor("STOPPING=1", 1)) << notify.All();
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

TEST(DaemonTest, HealthIsServingOnlyOnceTheModelIsLoaded) {
  // A streamed model under a budget calibrates at start: the socket answers before it is ready.
  DaemonProcess d({"--model", models().Small(), "--budget", MiB(20)});
  bool saw_not_serving = false;
  const auto t0 = Clock::now();
  for (;;) {
    ASSERT_LT(Since(t0), 120) << d.Log();
    ASSERT_FALSE(d.Exited(nullptr)) << d.Log();
    const auto h = d.Health();
    if (h == HealthCheckResponse::NOT_SERVING) {
      if (!saw_not_serving) {
        // Not serving: Generate says so.
        Outcome o = Generate(d.channel(), Request("Hi", 2));
        if (d.Health() == HealthCheckResponse::NOT_SERVING) {
          EXPECT_EQ(o.status.error_code(), grpc::StatusCode::UNAVAILABLE);
        }
      }
      saw_not_serving = true;
    } else if (h == HealthCheckResponse::SERVING) {
      // Serving: a request succeeds at once.
      Outcome o = Generate(d.channel(), Request("Once upon a time", 4));
      EXPECT_TRUE(o.status.ok()) << o.status.error_message();
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  std::printf("[health NOT_SERVING observed while loading: %s]\n", saw_not_serving ? "yes" : "no");
  auto stub = grpc::health::v1::Health::NewStub(d.channel());
  grpc::ClientContext ctx;
  grpc::health::v1::HealthCheckRequest req;
  req.set_service("dcomp.v1.Dcomp");
  grpc::health::v1::HealthCheckResponse resp;
  ASSERT_TRUE(stub->Check(&ctx, req, &resp).ok());
  EXPECT_EQ(resp.status(), HealthCheckResponse::SERVING);
  grpc::ClientContext ctx2;
  req.set_service("no.such.Service");
  EXPECT_EQ(stub->Check(&ctx2, req, &resp).error_code(), grpc::StatusCode::NOT_FOUND);
}

// Lists the services and describes dcomp.v1.Dcomp as grpcurl does, through reflection version
// `Stub` (grpc::reflection::v1 or v1alpha).
template <typename Stub, typename Request, typename Response>
void CheckReflection(const std::shared_ptr<grpc::Channel>& channel) {
  auto stub = Stub::NewStub(channel);
  grpc::ClientContext ctx;
  auto stream = stub->ServerReflectionInfo(&ctx);
  Request req;
  Response resp;
  req.set_list_services("");
  ASSERT_TRUE(stream->Write(req));
  ASSERT_TRUE(stream->Read(&resp));
  std::set<std::string> services;
  for (const auto& s : resp.list_services_response().service()) services.insert(s.name());
  EXPECT_TRUE(services.count("dcomp.v1.Dcomp"));
  EXPECT_TRUE(services.count("grpc.health.v1.Health"));
  EXPECT_TRUE(services.count("grpc.reflection.v1alpha.ServerReflection"));
  EXPECT_TRUE(services.count("grpc.reflection.v1.ServerReflection"));
  // Describe dcomp.v1.Dcomp as grpcurl does: its file's descriptor.
  req.set_file_containing_symbol("dcomp.v1.Dcomp");
  ASSERT_TRUE(stream->Write(req));
  ASSERT_TRUE(stream->Read(&resp));
  ASSERT_GT(resp.file_descriptor_response().file_descriptor_proto_size(), 0);
  bool found = false;
  for (const std::string& bytes : resp.file_descriptor_response().file_descriptor_proto()) {
    google::protobuf::FileDescriptorProto file;
    ASSERT_TRUE(file.ParseFromString(bytes));
    if (file.package() != "dcomp.v1" || file.service_size() == 0) continue;
    found = true;
    ASSERT_EQ(file.service_size(), 1);
    std::map<std::string, bool> methods;
    for (const auto& m : file.service(0).method()) methods[m.name()] = m.server_streaming();
    EXPECT_EQ(methods, (std::map<std::string, bool>{{"Generate", true},
                                                    {"Chat", true},
                                                    {"Tokenize", false},
                                                    {"Status", false},
                                                    {"SetBudget", false}}));
  }
  EXPECT_TRUE(found);
  // An unknown symbol is an error response, not a broken stream.
  req.set_file_containing_symbol("no.such.Symbol");
  ASSERT_TRUE(stream->Write(req));
  ASSERT_TRUE(stream->Read(&resp));
  EXPECT_EQ(resp.error_response().error_code(), static_cast<int>(grpc::StatusCode::NOT_FOUND));
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
}

TEST(DaemonTest, ReflectionV1AndV1AlphaListAndDescribeTheServices) {
  DaemonProcess d({"--model", models().Embedded()});
  ASSERT_TRUE(d.WaitServing()) << d.Log();
  namespace alpha = grpc::reflection::v1alpha;
  namespace v1r = grpc::reflection::v1;
  CheckReflection<alpha::ServerReflection, alpha::ServerReflectionRequest,
                  alpha::ServerReflectionResponse>(d.channel());
  CheckReflection<v1r::ServerReflection, v1r::ServerReflectionRequest,
                  v1r::ServerReflectionResponse>(d.channel());
}

// Checks the Prometheus text exposition format (0.0.4) strictly: HELP/TYPE before samples, one
// TYPE per family, metric and label names, escaped label values, float values, summary suffixes,
// no duplicate series.
std::string ExpositionErrors(const std::string& text) {
  static const std::regex help(R"(# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) .*)");
  static const std::regex type(
      R"(# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|summary|histogram|untyped))");
  static const std::regex sample(
      R"(([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\
]|\[\"n])*"(,[a-zA-Z_][a-zA-Z0-9_]*="([^"\
]|\[\"n])*")*)?\})? ([^ ]+)( -?[0-9]+)?)");
  std::map<std::string, std::string> types;
  std::set<std::string> series;
  std::string family;
  std::istringstream in(text);
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    std::smatch m;
    const std::string at = "line " + std::to_string(n) + " '" + line + "': ";
    if (line.empty()) continue;
    if (line.rfind("# HELP ", 0) == 0) {
      if (!std::regex_match(line, m, help)) return at + "bad HELP";
      continue;
    }
    if (line.rfind("# TYPE ", 0) == 0) {
      if (!std::regex_match(line, m, type)) return at + "bad TYPE";
      if (types.count(m[1])) return at + "second TYPE for " + m[1].str();
      types[m[1]] = m[2];
      family = m[1];
      continue;
    }
    if (line[0] == '#') continue;
    if (!std::regex_match(line, m, sample)) return at + "not a sample";
    const std::string name = m[1], value = m[7];
    std::string base = name;
    for (const char* suffix : {"_sum", "_count", "_bucket"}) {
      const std::string s = suffix;
      if (!types.count(base) && name.size() > s.size() &&
          name.compare(name.size() - s.size(), s.size(), s) == 0) {
        base = name.substr(0, name.size() - s.size());
      }
    }
    if (!types.count(base)) return at + "sample before its TYPE";
    if (base != family) return at + "sample outside its family block";
    if (base != name && types[base] != "summary" && types[base] != "histogram") {
      return at + "suffix on a " + types[base];
    }
    if (value != "NaN" && value != "+Inf" && value != "-Inf") {
      char* end = nullptr;
      std::strtod(value.c_str(), &end);
      if (end == value.c_str() || *end != '\0') return at + "bad value";
    }
    if (!series.insert(name + m[2].str()).second) return at + "duplicate series";
  }
  if (types.empty()) return "no metrics";
  return "";
}

TEST(DaemonTest, MetricsEndpointServesValidExposition) {
  const int port = FreeTcpPort();
  DaemonProcess d({"--model", models().Embedded(), "--budget", MiB(24), "--metrics-port",
                   std::to_string(port)});
  ASSERT_TRUE(d.WaitServing()) << d.Log();
  ASSERT_TRUE(Generate(d.channel(), Request("Once upon a time", 16)).status.ok());
  const auto get = [&](const std::string& path) {
    return HttpExchange(port, "GET " + path + " HTTP/1.0\r\nHost: localhost\r\n\r\n");
  };
  const std::string resp = get("/metrics");
  ASSERT_EQ(resp.rfind("HTTP/1.0 200", 0), 0u) << resp.substr(0, 200);
  EXPECT_NE(resp.find("Content-Type: text/plain; version=0.0.4"), std::string::npos);
  const std::string body = resp.substr(resp.find("\r\n\r\n") + 4);
  EXPECT_EQ(ExpositionErrors(body), "");
  for (const char* name :
       {"dcomp_up 1", "dcomp_resident_memory_bytes ", "dcomp_tier_bytes{tier=\"decoded\"}",
        "dcomp_token_latency_seconds{quantile=\"0.99\"}",
        "dcomp_time_to_first_token_seconds_count ", "dcomp_tokens_per_second ",
        "dcomp_flash_read_bytes_total ", "dcomp_decode_bytes_per_second ", "dcomp_queue_waiting 0",
        "dcomp_requests_total{protocol=\"grpc\",code=\"OK\"} 1", "dcomp_uptime_seconds ",
        "dcomp_budget_factor "}) {
    EXPECT_NE(body.find(name), std::string::npos) << name;
  }
  EXPECT_NE(body.find("dcomp_budget_bytes " + std::to_string(MiBBytes(24)) + "\n"),
            std::string::npos);
  // The checker itself rejects broken text.
  EXPECT_NE(ExpositionErrors("x 1\n"), "");
  EXPECT_NE(ExpositionErrors("# TYPE x gauge\nx{a=\"b} 1\n"), "");
  EXPECT_NE(ExpositionErrors("# TYPE x gauge\nx one\n"), "");
  EXPECT_NE(ExpositionErrors("# TYPE x gauge\nx 1\nx 2\n"), "");
  EXPECT_EQ(get("/other").rfind("HTTP/1.0 404", 0), 0u);
}

TEST(DaemonTest, SighupReloadsLimitsAndBudget) {
  const std::string dir = MakeTempDir("hup");
  const std::string config = dir + "/dcompd.textproto";
  const auto write = [&](int max_tokens, const std::string& budget) {
    std::ofstream(config) << "model: \"" << models().Embedded() << "\"\nbudget: \"" << budget
                          << "\"\nlimits { max_tokens: " << max_tokens << " }\n";
  };
  write(100, MiB(24));
  DaemonProcess d({"--config", config});
  ASSERT_TRUE(d.WaitServing()) << d.Log();
  EXPECT_TRUE(Generate(d.channel(), Request("Once upon a time", 50)).status.ok());
  EXPECT_EQ(GetStatus(d.channel()).budget_bytes(), MiBBytes(24));
  write(10, MiB(8));
  kill(d.pid(), SIGHUP);
  bool reloaded = false;
  for (auto t = Clock::now(); !reloaded && Since(t) < 10;) {
    reloaded = GetStatus(d.channel()).budget_bytes() == MiBBytes(8);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_TRUE(reloaded) << d.Log();
  Outcome o = Generate(d.channel(), Request("Once upon a time", 50));
  EXPECT_EQ(o.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(o.status.error_message().find("limits.max_tokens"), std::string::npos);
  // A broken config on SIGHUP keeps the old one and the daemon up.
  std::ofstream(config) << "model: \"" << models().Embedded() << "\"\nqueue_depth: 0x\n";
  kill(d.pid(), SIGHUP);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_TRUE(Generate(d.channel(), Request("Once upon a time", 5)).status.ok());
  EXPECT_NE(d.Log().find("config not reloaded"), std::string::npos) << d.Log();
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

TEST(DaemonTest, BadConfigsAreRefusedWithPreciseErrors) {
  const std::string dir = MakeTempDir("cfg");
  struct Case {
    std::string text;
    std::vector<std::string> args;
    std::string expected;
  };
  const std::string model = models().Embedded();
  const std::vector<Case> cases = {
      {"model: \"m\"\nqueue_depht: 3\n", {}, "dcompd.textproto:2:1"},
      {"model: \"m\"\nqueue_depth: 5000\n", {}, "field `queue_depth`: expected 1..1024, got 5000"},
      {"listen: \"unix:/x\"\n", {}, "field `model`: required"},
      {"model: \"m\"\nlisten: \"0.0.0.0:5000\"\n", {"--model", model}, "not a loopback address"},
      {"model: \"m\"\nbudget: \"lots\"\n", {}, "field `budget`"},
      {"model: \"m\"\nlimits { max_tokens: 0 max_prompt_bytes: 99999999 }\n",
       {},
       "limits.max_prompt_bytes"},
      {"model: \"/no/such/model.dcm\"\n", {}, "/no/such/model.dcm"},
  };
  for (const Case& c : cases) {
    std::ofstream(dir + "/dcompd.textproto") << c.text;
    std::string cmd = DcompdBinary() + " --config " + dir + "/dcompd.textproto";
    if (c.text.find("listen") == std::string::npos) cmd += " --listen unix:" + dir + "/s.sock";
    for (const auto& a : c.args) cmd += " " + a;
    int code = 0;
    const std::string out = RunCommand(cmd + " 2>&1", &code);
    EXPECT_NE(code, 0) << c.text;
    EXPECT_NE(out.find(c.expected), std::string::npos)
        << "expected '" << c.expected << "' in: " << out;
  }
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

TEST(DaemonTest, DcompctlDrivesTheDaemon) {
  const std::string& model = models().Embedded();
  DaemonProcess d({"--model", model, "--budget", MiB(24)});
  ASSERT_TRUE(d.WaitServing()) << d.Log();
  const std::string ctl = DcompctlBinary() + " --address " + d.address();
  int code = 0;
  // generate --json: the same object shape and ids as `dcomp generate --json`.
  const std::string out = RunCommand(
      ctl + " generate --prompt 'Once upon a time' -n 24 --seed 3 --temperature 0.8 --json", &code);
  ASSERT_EQ(code, 0) << out;
  const std::string ref =
      RunCommand(DcompBinary() + " generate " + model +
                     " --prompt 'Once upon a time' -n 24 --seed 3 --temperature 0.8 --json",
                 &code);
  ASSERT_EQ(code, 0) << ref;
  const Json a = JsonParser(out).Parse(), b = JsonParser(ref).Parse();
  EXPECT_EQ(a["ids"].ints(), b["ids"].ints());
  EXPECT_EQ(a["text"].str, b["text"].str);
  // status: a table, and --json with the Status fields.
  const std::string table = RunCommand(ctl + " status", &code);
  EXPECT_EQ(code, 0);
  for (const char* row : {"serving", "memory", "tiers", "plan", "per token", "queue", "requests"}) {
    EXPECT_NE(table.find(row), std::string::npos) << row << " in\n" << table;
  }
  const Json st = JsonParser(RunCommand(ctl + " status --json", &code)).Parse();
  EXPECT_EQ(code, 0);
  EXPECT_TRUE(st["serving"].b);
  EXPECT_EQ(st["budget_bytes"].str, std::to_string(MiBBytes(24)));  // uint64 as a JSON string
  // set-budget, health.
  EXPECT_NE(RunCommand(ctl + " set-budget " + MiB(8), &code)
                .find("budget " + std::to_string(kBaseMiB + 8) + ".0 MiB"),
            std::string::npos);
  EXPECT_EQ(code, 0);
  EXPECT_NE(RunCommand(ctl + " set-budget 1KiB 2>&1", &code).find("RESOURCE_EXHAUSTED"),
            std::string::npos);
  EXPECT_EQ(code, 1);
  EXPECT_EQ(RunCommand(ctl + " health", &code), "SERVING\n");
  EXPECT_EQ(code, 0);
  // Errors: a bad request names the field; a daemon that is not there is named.
  EXPECT_NE(RunCommand(ctl + " generate --prompt '' 2>&1", &code).find("prompt: empty"),
            std::string::npos);
  EXPECT_EQ(code, 1);
  const std::string down = RunCommand(
      DcompctlBinary() + " --address unix:" + d.dir() + "/nothing.sock status 2>&1", &code);
  EXPECT_EQ(code, 1);
  EXPECT_NE(down.find("cannot reach dcompd at unix:" + d.dir() + "/nothing.sock"),
            std::string::npos)
      << down;
}

}  // namespace
}  // namespace dcomp::testing

namespace dcomp::testing {
namespace {

// A CA, a server certificate for 127.0.0.1/localhost and a client certificate, made with openssl.
bool MakeCertificates(const std::string& dir) {
  const std::string cmd =
      "cd " + dir +
      " && openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=dcomp-test-ca -keyout "
      "ca.key -out ca.pem"
      " && openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout server.key -out "
      "server.csr"
      " && printf 'subjectAltName=IP:127.0.0.1,DNS:localhost' > san.ext"
      " && openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
      "-extfile san.ext -out server.pem"
      " && openssl req -newkey rsa:2048 -nodes -subj /CN=client -keyout client.key -out client.csr"
      " && openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -out "
      "client.pem";
  int code = 0;
  RunCommand("(" + cmd + ") >/dev/null 2>&1", &code);
  return code == 0;
}

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(DaemonTest, MutualTlsOnTcpListeners) {
  const std::string dir = MakeTempDir("tls");
  if (!MakeCertificates(dir)) GTEST_SKIP() << "openssl could not make test certificates";
  const int port = FreeTcpPort();
  const std::string addr = "127.0.0.1:" + std::to_string(port);
  std::ofstream(dir + "/dcompd.textproto")
      << "model: \"" << models().Embedded() << "\"\ntls { cert_file: \"" << dir
      << "/server.pem\" key_file: \"" << dir << "/server.key\" client_ca_file: \"" << dir
      << "/ca.pem\" }\n";
  DaemonProcess d({"--config", dir + "/dcompd.textproto", "--listen", addr});
  ASSERT_TRUE(d.WaitServing()) << d.Log();  // over the (plaintext) unix socket
  EXPECT_NE(d.Log().find("(port " + std::to_string(port) + "; mutual TLS)"), std::string::npos);
  const auto channel = [&](bool with_client_cert) {
    grpc::SslCredentialsOptions o;
    o.pem_root_certs = Slurp(dir + "/ca.pem");
    if (with_client_cert) {
      o.pem_cert_chain = Slurp(dir + "/client.pem");
      o.pem_private_key = Slurp(dir + "/client.key");
    }
    return grpc::CreateChannel(addr, grpc::SslCredentials(o));
  };
  Outcome ok = Generate(channel(true), Request("Once upon a time", 8));
  EXPECT_TRUE(ok.status.ok()) << ok.status.error_message();
  EXPECT_EQ(ok.result.generated_tokens(), 8);
  grpc::ClientContext c1;
  c1.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  Outcome no_cert = Generate(channel(false), Request("Once upon a time", 8), &c1);
  EXPECT_EQ(no_cert.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  grpc::ClientContext c2;
  c2.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  Outcome plain = Generate(grpc::CreateChannel(addr, grpc::InsecureChannelCredentials()),
                           Request("Once upon a time", 8), &c2);
  EXPECT_EQ(plain.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  // dcompctl with the client certificate.
  int code = 0;
  const std::string health =
      RunCommand(DcompctlBinary() + " --address " + addr + " --tls-ca " + dir + "/ca.pem" +
                     " --tls-cert " + dir + "/client.pem --tls-key " + dir + "/client.key health",
                 &code);
  EXPECT_EQ(code, 0);
  EXPECT_EQ(health, "SERVING\n");
  RunCommand(DcompctlBinary() + " --address " + addr + " --tls-ca " + dir + "/ca.pem health 2>&1",
             &code);
  EXPECT_EQ(code, 1);  // no client certificate: refused
  // A config naming a missing key is refused with the field.
  std::ofstream(dir + "/bad.textproto") << "model: \"m\"\ntls { cert_file: \"" << dir
                                        << "/server.pem\" key_file: \"" << dir << "/nope.key\" }\n";
  const std::string out =
      RunCommand(DcompdBinary() + " --config " + dir + "/bad.textproto 2>&1", &code);
  EXPECT_EQ(code, 2);
  EXPECT_NE(out.find("field `tls.key_file`"), std::string::npos) << out;
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

}  // namespace
}  // namespace dcomp::testing

namespace dcomp::testing {
namespace {

// The model file cut short while dcompd streams from it: the request fails with DATA_LOSS naming
// the blocks and the file; the daemon stays up and serving.
TEST(DaemonTest, ModelTruncatedWhileServingFailsTheRequestNotTheDaemon) {
  const std::string dir = MakeTempDir("trunc");
  const std::string model = dir + "/m.dcm";
  std::filesystem::copy_file(models().Small(), model);
  DaemonProcess d({"--model", model, "--policy", "stream-all"});  // every layer read per token
  ASSERT_TRUE(d.WaitServing()) << d.Log();
  ASSERT_TRUE(Generate(d.channel(), Request("Once upon a time", 4)).status.ok());
  std::filesystem::resize_file(model, std::filesystem::file_size(model) / 2);
  Outcome o = Generate(d.channel(), Request("Once upon a time", 4));
  EXPECT_EQ(o.status.error_code(), grpc::StatusCode::DATA_LOSS) << o.status.error_message();
  EXPECT_NE(o.status.error_message().find("block"), std::string::npos);
  EXPECT_NE(o.status.error_message().find(model), std::string::npos) << o.status.error_message();
  EXPECT_EQ(d.Health(), HealthCheckResponse::SERVING);
  EXPECT_EQ(GetStatus(d.channel()).requests().at("DATA_LOSS"), 1u);
  EXPECT_EQ(d.Stop(SIGTERM, std::chrono::seconds(10)), 0);
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

// Streams a Chat call; like Generate's Outcome, with the token texts joined.
Outcome Chat(const std::shared_ptr<grpc::Channel>& ch, const v1::ChatRequest& req,
             std::string* texts = nullptr) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
  auto reader = v1::Dcomp::NewStub(ch)->Chat(&ctx, req);
  Outcome o;
  v1::GenerateResponse msg;
  while (reader->Read(&msg)) {
    if (msg.has_token()) {
      ++o.token_messages;
      o.streamed_ids.push_back(msg.token().id());
      if (texts) *texts += msg.token().text();
    } else if (msg.has_result()) {
      o.result = msg.result();
    }
  }
  o.status = reader->Finish();
  return o;
}

v1::ChatRequest ChatRequest(const std::string& message, int n) {
  v1::ChatRequest r;
  v1::ChatMessage* m = r.add_messages();
  m->set_role("user");
  m->set_content(message);
  r.set_max_tokens(n);
  return r;
}

// A POST to the HTTP API over a fresh connection: the status code and the body.
std::pair<int, std::string> HttpPost(int port, const std::string& path, const std::string& body) {
  const std::string resp =
      HttpExchange(port, "POST " + path +
                             " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                             "Content-Type: application/json\r\nContent-Length: " +
                             std::to_string(body.size()) + "\r\n\r\n" + body);
  const size_t sp = resp.find(' ');
  const size_t end = resp.find("\r\n\r\n");
  if (sp == std::string::npos || end == std::string::npos) return {0, resp};
  return {std::atoi(resp.c_str() + sp + 1), resp.substr(end + 4)};
}

// Chat renders the messages with the family the request, the config or the model names, and then
// generates exactly as the engine does for that prompt; over gRPC and HTTP alike, greedy and
// seeded; dcompctl chat prints the same answer.
TEST(DaemonTest, ChatOverGrpcAndHttpMatchesTheEngine) {
  const int port = FreeTcpPort();
  DaemonProcess d(
      {"--model", models().Embedded(), "--http-listen", "127.0.0.1:" + std::to_string(port)});
  ASSERT_TRUE(d.WaitServing()) << d.Log();
  // The embedded model has no template: a request must name one.
  Outcome none = Chat(d.channel(), ChatRequest("Hello there", 8));
  EXPECT_EQ(none.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(none.status.error_message().find("chat_template"), std::string::npos);
  v1::ChatRequest bad = ChatRequest("Hello there", 8);
  bad.set_chat_template("nosuch");
  EXPECT_EQ(Chat(d.channel(), bad).status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  for (const float temperature : {0.0f, 0.8f}) {
    v1::ChatRequest req = ChatRequest("Hello there", 24);
    req.set_chat_template("zephyr");
    req.mutable_sampling()->set_temperature(temperature);
    req.mutable_sampling()->set_seed(7);
    std::string texts;
    Outcome o = Chat(d.channel(), req, &texts);
    ASSERT_TRUE(o.status.ok()) << o.status.error_message();
    EXPECT_EQ(texts + o.result.tail_text(), o.result.completion());
    GenerateRequest g;
    g.parse_special = true;
    g.max_tokens = 24;
    g.sampling.temperature = temperature;
    g.sampling.seed = 7;
    EXPECT_EQ(o.streamed_ids, EngineTokens(models().Embedded(), g,
                                           [](const Tokenizer& tok) {
                                             return *RenderChat(ChatFamily::kZephyr,
                                                                {{"user", "Hello there"}}, true,
                                                                tok.piece(tok.bos_id()),
                                                                tok.piece(tok.eos_id()));
                                           }))
        << temperature;
    // The same messages and seed over HTTP.
    const auto [code, body] = HttpPost(
        port, "/v1/chat/completions",
        "{\"messages\":[{\"role\":\"user\",\"content\":\"Hello there\"}],\"max_tokens\":24,"
        "\"chat_template\":\"zephyr\",\"seed\":7,\"temperature\":" +
            std::to_string(temperature) + "}");
    ASSERT_EQ(code, 200) << body;
    const Json j = ParseJson(body);
    EXPECT_EQ(j["choices"][0]["message"]["content"].str, o.result.completion());
    EXPECT_EQ(static_cast<int>(j["usage"]["completion_tokens"].num), o.result.generated_tokens());
  }
  int exit_code = 0;
  const std::string out =
      RunCommand(BinaryDir() + "/client/dcompctl --address " + d.address() +
                     " chat --message 'Hello there' --chat-template zephyr -n 24 --json",
                 &exit_code);
  ASSERT_EQ(exit_code, 0) << out;
  v1::ChatRequest greedy = ChatRequest("Hello there", 24);
  greedy.set_chat_template("zephyr");
  EXPECT_EQ(ParseJson(out)["answer"].str, Chat(d.channel(), greedy).result.completion());
  // Counted by protocol.
  std::map<std::string, uint64_t> by_protocol;
  const v1::StatusResponse status = GetStatus(d.channel());
  for (const v1::RequestCount& c : status.request_counts()) {
    if (c.code() == "OK") by_protocol[c.protocol()] += c.count();
  }
  EXPECT_EQ(by_protocol["http"], 2u);
  EXPECT_GE(by_protocol["grpc"], 3u);
}

// Stop strings over gRPC: generation ends at the first one, the completion ends before it, and
// the Token texts followed by tail_text are the completion.
TEST(DaemonTest, StopStringsEndTheCompletionBeforeThem) {
  DaemonProcess d({"--model", models().Embedded()});
  ASSERT_TRUE(d.WaitServing()) << d.Log();
  const Outcome full = Generate(d.channel(), Request("Once upon a time", 40));
  ASSERT_TRUE(full.status.ok());
  const std::string& text = full.result.completion();
  const std::string stop = text.substr(text.size() / 2, 3);
  const size_t at = text.find(stop);
  v1::GenerateRequest req = Request("Once upon a time", 40);
  req.add_stop("never appears \x01");
  req.add_stop(stop);
  grpc::ClientContext ctx;
  auto reader = v1::Dcomp::NewStub(d.channel())->Generate(&ctx, req);
  std::string texts;
  v1::GenerateResult result;
  for (v1::GenerateResponse msg; reader->Read(&msg);) {
    if (msg.has_token()) texts += msg.token().text();
    if (msg.has_result()) result = msg.result();
  }
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_EQ(result.stop_reason(), v1::STOP_REASON_STOP);
  EXPECT_EQ(result.completion(), text.substr(0, at));
  EXPECT_EQ(texts + result.tail_text(), result.completion());
  EXPECT_LT(result.generated_tokens(), full.result.generated_tokens());
  // Refused by name: an empty stop string, too many of them.
  v1::GenerateRequest empty = Request("Once upon a time", 4);
  empty.add_stop("");
  Outcome e = Generate(d.channel(), empty);
  EXPECT_EQ(e.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(e.status.error_message().find("stop[0]: empty"), std::string::npos);
  v1::GenerateRequest many = Request("Once upon a time", 4);
  for (int i = 0; i < 17; ++i) many.add_stop("s" + std::to_string(i));
  EXPECT_EQ(Generate(d.channel(), many).status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

// Bytes that are not the method's request message get INVALID_ARGUMENT naming the type, and a
// log line; the daemon keeps serving.
TEST(DaemonTest, MalformedProtobufIsInvalidArgument) {
  DaemonProcess d({"--model", models().Embedded()});
  ASSERT_TRUE(d.WaitServing()) << d.Log();
  grpc::GenericStub stub(d.channel());
  const auto call = [&](const std::string& method, const std::string& bytes) {
    grpc::CompletionQueue cq;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    grpc::Slice slice(bytes);
    grpc::ByteBuffer req(&slice, 1), resp;
    auto rpc = stub.PrepareUnaryCall(&ctx, method, req, &cq);
    rpc->StartCall();
    grpc::Status st;
    rpc->Finish(&resp, &st, reinterpret_cast<void*>(1));
    void* tag = nullptr;
    bool ok = false;
    cq.Next(&tag, &ok);
    return st;
  };
  const std::vector<std::pair<std::string, std::string>> garbage = {
      {"truncated", std::string("\x0a\x10"
                                "abc",
                                5)},
      {"field 0", std::string("\x00\x01", 2)},
      {"garbage", std::string("\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", 11)},
  };
  for (const char* method :
       {"/dcomp.v1.Dcomp/Generate", "/dcomp.v1.Dcomp/Chat", "/dcomp.v1.Dcomp/Tokenize",
        "/dcomp.v1.Dcomp/Status", "/dcomp.v1.Dcomp/SetBudget"}) {
    for (const auto& [what, bytes] : garbage) {
      const grpc::Status st = call(method, bytes);
      EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << method << " " << what;
      EXPECT_NE(st.error_message().find("is not a valid dcomp.v1."), std::string::npos)
          << method << " " << what << ": " << st.error_message();
    }
  }
  EXPECT_NE(d.Log().find("is not a valid dcomp.v1.GenerateRequest"), std::string::npos);
  EXPECT_TRUE(Generate(d.channel(), Request("Once upon a time", 4)).status.ok());
  EXPECT_EQ(GetStatus(d.channel()).requests().at("INVALID_ARGUMENT"), 6u);  // Generate, Chat
}

}  // namespace
}  // namespace dcomp::testing
