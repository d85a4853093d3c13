// dcompctl: the command-line client of dcompd. Commands: status, generate, chat, set-budget,
// health, tokenize; human output by default, one JSON object with --json.
#include <google/protobuf/util/json_util.h>
#include <unistd.h>

#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <functional>
#include <iostream>
#include <string>
#include <vector>

#include "base/bytes.h"
#include "base/flags.h"
#include "base/json.h"
#include "base/status.h"
#include "client/client.h"
#include "proto/dcomp.grpc.pb.h"
#include "proto/grpc/health/v1/health.grpc.pb.h"

namespace dcomp::client {
namespace {

constexpr const char* kUsage = R"(usage: dcompctl [--address ADDR] [--config FILE] COMMAND [options]

commands:
  status [--json]                          the daemon's model, memory, plan, latency, queue
  generate --prompt TEXT [-n N] [--temperature T] [--seed S] [--top-k K] [--top-p P]
           [--min-p P] [--repetition-penalty R] [--stop S]... [--ignore-eos]
           [--timeout SECONDS] [--json]    stream a completion (--json: one final object)
  chat [--message TEXT] [--system TEXT] [--chat-template FAMILY] [-n N] [sampling options]
                                           answer one message (--message) or hold a
                                           conversation, a message per line of input (--json:
                                           one object per answer)
  set-budget BUDGET [--json]               BYTES[K|M|G|KiB|MiB|GiB|KB|MB|GB], PCT% of the INT8
                                           size, or 0 (no limit)
  health [--service NAME] [--json]         SERVING / NOT_SERVING (exit status 0 only if SERVING)
  tokenize --text TEXT [--json]            token ids and pieces

TCP with TLS: --tls-ca FILE [--tls-cert FILE --tls-key FILE] [--tls-server-name NAME].

ADDR is unix:/path or HOST:PORT. Default: $DCOMPCTL_ADDRESS, else the first `listen` of the
daemon config (--config, default /etc/dcomp/dcompd.textproto), else unix:/run/dcompd/dcompd.sock.
)";

struct Ctx {
  std::string address;
  std::shared_ptr<grpc::Channel> channel;
  bool json = false;
};

std::chrono::system_clock::time_point Deadline(double seconds) {
  return std::chrono::system_clock::now() +
         std::chrono::microseconds(static_cast<int64_t>(seconds * 1e6));
}

std::string Bytes(uint64_t b) { return FormatBytes(b); }

std::string Ms(double s) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f ms", s * 1e3);
  return buf;
}

std::string Duration(double s) {
  const auto t = static_cast<int64_t>(s);
  char buf[64];
  if (t >= 86400) {
    std::snprintf(buf, sizeof(buf), "%" PRId64 "d %02" PRId64 "h", t / 86400, t % 86400 / 3600);
  } else if (t >= 3600) {
    std::snprintf(buf, sizeof(buf), "%" PRId64 "h %02" PRId64 "m", t / 3600, t % 3600 / 60);
  } else {
    std::snprintf(buf, sizeof(buf), "%" PRId64 "m %02" PRId64 "s", t / 60, t % 60);
  }
  return buf;
}

std::string ProtoJson(const google::protobuf::Message& m) {
  std::string out;
  google::protobuf::util::JsonPrintOptions o;
  o.always_print_primitive_fields = true;
  o.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(m, &out, o);
  return out;
}

int Fail(const Ctx& c, const std::string& what, const grpc::Status& s) {
  std::fprintf(stderr, "dcompctl: %s: %s\n", what.c_str(), DescribeError(s, c.address).c_str());
  return 1;
}

int CmdStatus(const Ctx& c) {
  auto stub = v1::Dcomp::NewStub(c.channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(Deadline(10));
  v1::StatusResponse s;
  if (grpc::Status st = stub->Status(&ctx, v1::StatusRequest(), &s); !st.ok()) {
    return Fail(c, "status", st);
  }
  if (c.json) {
    std::printf("%s\n", ProtoJson(s).c_str());
    return 0;
  }
  const auto row = [](const char* k, const std::string& v) {
    std::printf("%-11s %s\n", k, v.c_str());
  };
  std::printf("dcompd %s at %s: %s, up %s\n", s.version().c_str(), c.address.c_str(),
              s.serving() ? "serving" : "not serving (loading or draining)",
              Duration(s.uptime_seconds()).c_str());
  if (s.has_model()) {
    const v1::ModelInfo& m = s.model();
    row("model", m.path() + " [" + m.format() + "]");
    row("", m.summary());
    row("context", std::to_string(m.context_length()) + " tokens; INT8 weights " +
                       Bytes(m.int8_bytes()) + (m.streamed() ? "; streamed" : "; resident") +
                       "; chat template " +
                       (m.chat_template().empty() ? "none" : m.chat_template()));
  }
  if (!s.http_listen().empty()) row("http api", s.http_listen() + " (OpenAI-compatible)");
  std::string mem = "RSS " + Bytes(s.rss_bytes()) + " (peak " + Bytes(s.peak_rss_bytes()) + ")";
  if (s.budget_bytes() != 0) {
    mem += "; budget " + Bytes(s.budget_bytes());
    if (s.effective_budget_bytes() != 0 && s.effective_budget_bytes() != s.budget_bytes()) {
      // budget_factor 0: a daemon that does not report it, which scaled budgets only under
      // pressure.
      const bool pressure = s.budget_factor() < 1;
      mem +=
          " (" + Bytes(s.effective_budget_bytes()) +
          (pressure ? " under memory pressure)" : " in force until the new budget's plan applies)");
    }
  } else {
    mem += "; no budget";
  }
  if (s.minimum_budget_bytes() != 0) mem += "; minimum " + Bytes(s.minimum_budget_bytes());
  row("memory", mem);
  if (s.tiers_size() > 0) {
    std::string t;
    for (const v1::TierBytes& tb : s.tiers()) {
      if (!t.empty()) t += " | ";
      t += tb.tier() + " ";
      if (tb.tier() != "pipeline") t += std::to_string(tb.units()) + " units ";
      if (tb.tier() != "flash") t += Bytes(tb.bytes());
    }
    row("tiers", t);
  }
  if (!s.plan().summary().empty()) {
    row("plan", s.plan().summary());
    row("", std::to_string(s.plan().replans()) + " replans" +
                (s.plan().last_replan().empty() ? "" : " (last: " + s.plan().last_replan() + ")"));
  }
  const auto lat = [](const v1::Latency& l) {
    return "p50 " + Ms(l.p50_seconds()) + ", p95 " + Ms(l.p95_seconds()) + ", p99 " +
           Ms(l.p99_seconds()) + " (" + std::to_string(l.count()) + ")";
  };
  row("per token", lat(s.token_latency()));
  row("1st token", lat(s.time_to_first_token()));
  char buf[160];
  std::snprintf(buf, sizeof(buf), "%.2f tokens/s (last request); flash read %s; decode %.2f GB/s",
                s.tokens_per_second(), Bytes(s.flash_read_bytes()).c_str(),
                s.decode_gb_per_second());
  row("throughput", buf);
  row("queue", std::to_string(s.queue_length()) + " waiting, " + std::to_string(s.running()) +
                   " running (batch of up to " + std::to_string(s.max_batch()) + "), depth " +
                   std::to_string(s.queue_depth()) + "; wait " + lat(s.queue_wait()));
  std::string kv = Bytes(s.kv_cache_used_bytes()) + " of " + Bytes(s.kv_cache_bytes()) + " in use";
  if (s.running() > 0) {
    kv += " (" + Bytes(s.kv_cache_used_bytes() / static_cast<uint64_t>(s.running())) +
          " per request)";
  }
  std::snprintf(
      buf, sizeof(buf), "; %.2f requests per step (%llu steps)",
      s.steps() ? static_cast<double>(s.step_requests()) / static_cast<double>(s.steps()) : 0.0,
      static_cast<unsigned long long>(s.steps()));
  row("kv cache", kv + buf);
  std::string req;
  for (const v1::RequestCount& rc : s.request_counts()) {
    if (!req.empty()) req += ", ";
    req += rc.protocol() + " " + rc.code() + " " + std::to_string(rc.count());
  }
  row("requests", (req.empty() ? std::string("none") : req) + "; " +
                      std::to_string(s.generated_tokens()) + " tokens generated");
  if (s.memory_pressure() >= 0) {
    std::snprintf(buf, sizeof(buf), "memory pressure %.1f%% (some, avg10)", s.memory_pressure());
    row("system", buf);
  }
  return 0;
}

// The options Generate and Chat share: -n, sampling, --ignore-eos, --stop. False (after an error
// on stderr) when a number does not parse; range checks are the daemon's (it names the field).
template <typename Req>
bool ParseRequestOptions(const Flags& f, const char* cmd, int64_t default_tokens, Req* req) {
  Result<int64_t> n = f.GetInt("n", default_tokens);
  Result<double> temp = f.GetDouble("temperature", 0);
  Result<int64_t> seed = f.GetInt("seed", 0);
  Result<int64_t> top_k = f.GetInt("top-k", 0);
  Result<double> timeout = f.GetDouble("timeout", 0);
  for (const Status& s :
       {n.status(), temp.status(), seed.status(), top_k.status(), timeout.status()}) {
    if (!s.ok()) {
      std::fprintf(stderr, "dcompctl: %s: %s\n", cmd, s.message().c_str());
      return false;
    }
  }
  req->set_max_tokens(static_cast<int32_t>(std::clamp<int64_t>(*n, INT32_MIN, INT32_MAX)));
  req->mutable_sampling()->set_temperature(static_cast<float>(*temp));
  req->mutable_sampling()->set_seed(static_cast<uint64_t>(*seed));
  req->mutable_sampling()->set_top_k(
      static_cast<int32_t>(std::clamp<int64_t>(*top_k, INT32_MIN, INT32_MAX)));
  for (const char* name : {"top-p", "min-p", "repetition-penalty"}) {
    if (!f.Has(name)) continue;
    Result<double> v = f.GetDouble(name, 0);
    if (!v.ok()) {
      std::fprintf(stderr, "dcompctl: %s: %s\n", cmd, v.status().message().c_str());
      return false;
    }
    const std::string k = name;
    if (k == "top-p") req->mutable_sampling()->set_top_p(static_cast<float>(*v));
    if (k == "min-p") req->mutable_sampling()->set_min_p(static_cast<float>(*v));
    if (k == "repetition-penalty") {
      req->mutable_sampling()->set_repetition_penalty(static_cast<float>(*v));
    }
  }
  req->set_ignore_eos(f.IsSet("ignore-eos"));
  for (const std::string& stop : f.GetAll("stop")) req->add_stop(stop);
  return true;
}

// Reads a Generate or Chat stream: prints each token's text (and the tail) unless `json`, keeps
// the final result.
grpc::Status ReadStream(grpc::ClientReader<v1::GenerateResponse>& reader, bool json,
                        v1::GenerateResult* result) {
  v1::GenerateResponse msg;
  bool have_result = false;
  while (reader.Read(&msg)) {
    if (msg.has_token() && !json) {
      std::fputs(msg.token().text().c_str(), stdout);
      std::fflush(stdout);
    } else if (msg.has_result()) {
      *result = msg.result();
      have_result = true;
      if (!json) std::fputs(result->tail_text().c_str(), stdout);
    }
  }
  grpc::Status st = reader.Finish();
  if (st.ok() && !have_result) return grpc::Status(grpc::StatusCode::INTERNAL, "no final result");
  return st;
}

std::string StopReasonName(v1::StopReason r) {
  std::string name = v1::StopReason_Name(r).substr(std::string("STOP_REASON_").size());
  for (char& ch : name) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return name;
}

// The figures of a result: one JSON object (`extra` adds fields) or a line on stderr.
void PrintResult(const Ctx& c, const v1::GenerateResult& result,
                 const std::function<void(JsonWriter&)>& extra = {}) {
  const std::string stop_reason = StopReasonName(result.stop_reason());
  std::fflush(stdout);  // the streamed text comes first, also when both go to one file
  if (c.json) {
    std::vector<int32_t> ids(result.prompt_ids().begin(), result.prompt_ids().end());
    ids.insert(ids.end(), result.generated_ids().begin(), result.generated_ids().end());
    JsonWriter w;
    w.BeginObject();
    if (extra) extra(w);
    w.IntArray("ids", ids)
        .String("text", result.text())
        .String("completion", result.completion())
        .Int("prompt_tokens", result.prompt_tokens())
        .Int("generated_tokens", result.generated_tokens())
        .String("stop_reason", stop_reason)
        .Double("time_to_first_token_seconds", result.time_to_first_token_seconds())
        .Double("tokens_per_second", result.tokens_per_second())
        .Double("queue_seconds", result.queue_seconds())
        .Int("request_id", static_cast<int64_t>(result.request_id()))
        .EndObject();
    std::printf("%s\n", w.str().c_str());
  } else {
    std::fprintf(stderr,
                 "[request %" PRIu64
                 ": %d prompt tokens, first token in %s, %d generated at %.1f "
                 "tokens/s, stop: %s]\n",
                 result.request_id(), result.prompt_tokens(),
                 Ms(result.time_to_first_token_seconds()).c_str(), result.generated_tokens(),
                 result.tokens_per_second(), stop_reason.c_str());
  }
}

void SetTimeout(const Flags& f, grpc::ClientContext* ctx) {
  // Parsed (and checked) by ParseRequestOptions first.
  if (Result<double> t = f.GetDouble("timeout", 0); t.ok() && *t > 0) {
    ctx->set_deadline(Deadline(*t));
  }
}

int CmdGenerate(const Ctx& c, const Flags& f) {
  if (!f.Has("prompt")) {
    std::fprintf(stderr, "dcompctl: generate: --prompt TEXT is required\n");
    return 2;
  }
  v1::GenerateRequest req;
  req.set_prompt(*f.Get("prompt"));
  if (!ParseRequestOptions(f, "generate", 64, &req)) return 2;
  auto stub = v1::Dcomp::NewStub(c.channel);
  grpc::ClientContext ctx;
  SetTimeout(f, &ctx);
  if (!c.json) {
    std::fputs(req.prompt().c_str(), stdout);
    std::fflush(stdout);
  }
  v1::GenerateResult result;
  const grpc::Status st = ReadStream(*stub->Generate(&ctx, req), c.json, &result);
  if (!c.json) std::printf("\n");
  if (!st.ok()) return Fail(c, "generate", st);
  PrintResult(c, result);
  return 0;
}

// One answer of a conversation: sends `req` (the messages so far), streams the answer, adds it to
// the messages. Returns the exit status.
int ChatTurn(const Ctx& c, const Flags& f, v1::ChatRequest* req) {
  auto stub = v1::Dcomp::NewStub(c.channel);
  grpc::ClientContext ctx;
  SetTimeout(f, &ctx);
  v1::GenerateResult result;
  const grpc::Status st = ReadStream(*stub->Chat(&ctx, *req), c.json, &result);
  if (!c.json) std::printf("\n");
  if (!st.ok()) return Fail(c, "chat", st);
  v1::ChatMessage* answer = req->add_messages();
  answer->set_role("assistant");
  answer->set_content(result.completion());
  PrintResult(c, result, [&](JsonWriter& w) { w.String("answer", result.completion()); });
  return 0;
}

int CmdChat(const Ctx& c, const Flags& f) {
  v1::ChatRequest req;
  if (!ParseRequestOptions(f, "chat", 512, &req)) return 2;
  req.set_chat_template(f.GetOr("chat-template", ""));
  if (f.Has("system")) {
    v1::ChatMessage* m = req.add_messages();
    m->set_role("system");
    m->set_content(*f.Get("system"));
  }
  if (f.Has("message")) {
    v1::ChatMessage* m = req.add_messages();
    m->set_role("user");
    m->set_content(*f.Get("message"));
    return ChatTurn(c, f, &req);
  }
  // A conversation: one user message per line until end of input or "/exit"; on a terminal, with
  // a prompt. Each answer is generated over the whole conversation so far.
  const bool tty = isatty(STDIN_FILENO) != 0;
  if (tty)
    std::fprintf(stderr, "[chat with dcompd at %s; /exit or Ctrl-D ends]\n", c.address.c_str());
  for (std::string line;;) {
    if (tty) {
      std::fprintf(stderr, "> ");
      std::fflush(stderr);
    }
    if (!std::getline(std::cin, line) || line == "/exit") break;
    if (line.empty()) continue;
    v1::ChatMessage* m = req.add_messages();
    m->set_role("user");
    m->set_content(line);
    if (const int rc = ChatTurn(c, f, &req); rc != 0) return rc;
  }
  return 0;
}

int CmdSetBudget(const Ctx& c, const Flags& f) {
  if (f.positional().size() != 2) {
    std::fprintf(stderr, "dcompctl: set-budget: expected one BUDGET (e.g. 600MiB or 50%%)\n");
    return 2;
  }
  const std::string arg = f.positional()[1];
  v1::SetBudgetRequest req;
  Result<BudgetSpec> b = ParseBudgetSpec(arg);
  if (!b.ok()) {
    std::fprintf(stderr, "dcompctl: set-budget: %s\n", b.status().message().c_str());
    return 2;
  }
  if (b->percent > 0) {
    req.set_percent(b->percent);
  } else {
    req.set_bytes(b->bytes);  // 0: no limit
  }
  auto stub = v1::Dcomp::NewStub(c.channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(Deadline(30));
  v1::SetBudgetResponse resp;
  if (grpc::Status st = stub->SetBudget(&ctx, req, &resp); !st.ok()) {
    return Fail(c, "set-budget", st);
  }
  if (c.json) {
    std::printf("%s\n", ProtoJson(resp).c_str());
  } else {
    std::printf("budget %s; plan %s\n",
                resp.budget_bytes() ? Bytes(resp.budget_bytes()).c_str() : "unlimited",
                resp.plan().summary().c_str());
  }
  return 0;
}

int CmdHealth(const Ctx& c, const Flags& f) {
  auto stub = grpc::health::v1::Health::NewStub(c.channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(Deadline(5));
  grpc::health::v1::HealthCheckRequest req;
  req.set_service(f.GetOr("service", ""));
  grpc::health::v1::HealthCheckResponse resp;
  if (grpc::Status st = stub->Check(&ctx, req, &resp); !st.ok()) return Fail(c, "health", st);
  const std::string name = grpc::health::v1::HealthCheckResponse::ServingStatus_Name(resp.status());
  if (c.json) {
    JsonWriter w;
    w.BeginObject().String("address", c.address).String("status", name).EndObject();
    std::printf("%s\n", w.str().c_str());
  } else {
    std::printf("%s\n", name.c_str());
  }
  return resp.status() == grpc::health::v1::HealthCheckResponse::SERVING ? 0 : 1;
}

int CmdTokenize(const Ctx& c, const Flags& f) {
  if (!f.Has("text")) {
    std::fprintf(stderr, "dcompctl: tokenize: --text TEXT is required\n");
    return 2;
  }
  auto stub = v1::Dcomp::NewStub(c.channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(Deadline(10));
  v1::TokenizeRequest req;
  req.set_text(*f.Get("text"));
  req.set_add_bos(true);
  v1::TokenizeResponse resp;
  if (grpc::Status st = stub->Tokenize(&ctx, req, &resp); !st.ok()) {
    return Fail(c, "tokenize", st);
  }
  if (c.json) {
    std::printf("%s\n", ProtoJson(resp).c_str());
  } else {
    for (int i = 0; i < resp.ids_size(); ++i) {
      std::printf("%6d  %s\n", resp.ids(i), resp.pieces(i).c_str());
    }
  }
  return 0;
}

int Run(int argc, char** argv) {
  Flags f;
  f.Value("address", "unix:/path or HOST:PORT of dcompd")
      .Value("config", "daemon config to take the address from")
      .Value("tls-ca", "TCP: PEM CA that signed dcompd's certificate (turns TLS on)")
      .Value("tls-cert", "TCP: PEM client certificate (mutual TLS)")
      .Value("tls-key", "TCP: the client certificate's private key")
      .Value("tls-server-name", "TCP: name to verify in dcompd's certificate")
      .Switch("json", "print one JSON object")
      .Value("prompt", "generate: prompt text")
      .Value("n", "generate: tokens to generate (default 64)")
      .Value("temperature", "generate: 0 = greedy (default)")
      .Value("seed", "generate: sampling seed (default 0)")
      .Value("top-k", "generate: top-k (0 = off)")
      .Value("top-p", "generate: top-p (1 = off)")
      .Value("min-p", "generate: min-p (0 = off)")
      .Value("repetition-penalty", "generate: 1 = off")
      .Value("stop", "generate, chat: stop string (repeatable)")
      .Switch("ignore-eos", "generate: do not stop at end of sequence")
      .Value("timeout", "generate, chat: deadline in seconds (default none)")
      .Value("message", "chat: one user message (default: a conversation from standard input)")
      .Value("system", "chat: system message")
      .Value("chat-template",
             "chat: chatml | llama3 | llama2 | zephyr | gemma | phi3 (default: the daemon's)")
      .Value("service", "health: service name ('' = the server)")
      .Value("text", "tokenize: text")
      .Switch("version", "print the version and exit")
      .Switch("help", "this text");
  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    args.push_back(a == "-n" ? "--n" : a == "-h" ? "--help" : a);
  }
  const Status s = f.Parse(args);
  if (s.ok() && f.IsSet("version")) {
    std::printf("dcompctl %s\n", DCOMP_VERSION);
    return 0;
  }
  if (!s.ok() || f.IsSet("help") || f.positional().empty()) {
    if (!s.ok()) std::fprintf(stderr, "dcompctl: %s\n", s.message().c_str());
    std::fprintf(f.IsSet("help") ? stdout : stderr, "%s\noptions:\n%s", kUsage, f.Help().c_str());
    return f.IsSet("help") && s.ok() ? 0 : 2;
  }
  Ctx c;
  std::string source;
  c.address = ResolveAddress(f.Get("address"), f.Get("config"), &source);
  TlsOptions tls{f.GetOr("tls-ca", ""), f.GetOr("tls-cert", ""), f.GetOr("tls-key", ""),
                 f.GetOr("tls-server-name", "")};
  Result<std::shared_ptr<grpc::Channel>> channel = Connect(c.address, tls);
  if (!channel.ok()) {
    std::fprintf(stderr, "dcompctl: %s\n", channel.status().message().c_str());
    return 2;
  }
  c.channel = *channel;
  c.json = f.IsSet("json");
  const std::string& cmd = f.positional()[0];
  if (cmd != "set-budget" && f.positional().size() > 1) {
    std::fprintf(stderr, "dcompctl: %s: unexpected argument '%s'\n", cmd.c_str(),
                 f.positional()[1].c_str());
    return 2;
  }
  if (cmd == "status") return CmdStatus(c);
  if (cmd == "generate") return CmdGenerate(c, f);
  if (cmd == "chat") return CmdChat(c, f);
  if (cmd == "set-budget") return CmdSetBudget(c, f);
  if (cmd == "health") return CmdHealth(c, f);
  if (cmd == "tokenize") return CmdTokenize(c, f);
  std::fprintf(stderr, "dcompctl: unknown command '%s'\n%s", cmd.c_str(), kUsage);
  return 2;
}

}  // namespace
}  // namespace dcomp::client

int main(int argc, char** argv) { return dcomp::client::Run(argc, argv); }
