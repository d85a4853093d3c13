// dcomp_soak: a bounded soak of a running dcompd. N clients loop Generate with random prompts,
// lengths, sampling and deadlines, cancel a share of their requests at a random moment, while a
// controller changes the budget every few seconds and samples Status. Reports requests by status
// code, request and per-token latency, the largest RSS seen against the budget in force, budget
// overruns and whether the daemon still answers. Exit status 1 on an overrun, an unexpected status
// code or a daemon that stopped answering.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "base/bytes.h"
#include "base/flags.h"
#include "base/json.h"
#include "proto/dcomp.grpc.pb.h"

namespace dcomp {
namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

const char* kPrompts[] = {
    "Once upon a time",        "The little dog",      "Lily and Ben went to the park.",
    "One day, a big red ball", "The sun was hot and", "Tom had a toy car"};

struct Shared {
  std::mutex mu;
  std::map<std::string, uint64_t> by_code;
  std::vector<double> latency;  // OK requests, seconds
  uint64_t tokens = 0;
  uint64_t cancelled_by_us = 0;
};

struct Options {
  std::string address;
  double seconds = 600;
  int clients = 8;
  double budget_every = 3;
  double cancel_share = 0.25;
  int max_tokens = 96;
  uint64_t slack = 0;
  uint64_t seed = 1;
  std::vector<uint64_t> budgets;
};

// Parses the command line; false (after printing why) on bad input.
bool ParseOptions(int argc, char** argv, Options* o) {
  Flags f;
  f.Value("address", "dcompd address (unix:/path or host:port)")
      .Value("seconds", "duration (default 600)")
      .Value("clients", "concurrent clients (default 8)")
      .Value("budgets", "comma-separated budgets to switch between (e.g. 60MiB,80MiB,120MiB)")
      .Value("budget-every", "seconds between budget changes (default 3)")
      .Value("cancel-share", "share of requests cancelled at a random moment (default 0.25)")
      .Value("max-tokens", "largest max_tokens of a request (default 96)")
      .Value("slack", "bytes of RSS over the budget counted as an overrun (default 4MiB)")
      .Value("seed", "random seed (default 1)")
      .Switch("json", "print one JSON object");
  std::vector<std::string> args(argv + 1, argv + argc);
  if (Status s = f.Parse(args); !s.ok() || !f.Has("address") || !f.Has("budgets")) {
    std::fprintf(stderr, "%s\nusage: dcomp_soak --address ADDR --budgets B1,B2,... [options]\n%s",
                 s.ok() ? "" : s.message().c_str(), f.Help().c_str());
    return false;
  }
  o->address = *f.Get("address");
  o->seconds = *f.GetDouble("seconds", 600);
  o->clients = static_cast<int>(*f.GetInt("clients", 8));
  o->budget_every = *f.GetDouble("budget-every", 3);
  o->cancel_share = *f.GetDouble("cancel-share", 0.25);
  o->max_tokens = static_cast<int>(*f.GetInt("max-tokens", 96));
  o->slack = *ParseBudget(f.GetOr("slack", "4MiB"), 0);
  o->seed = static_cast<uint64_t>(*f.GetInt("seed", 1));
  std::string list = *f.Get("budgets");
  size_t pos = 0;
  while (pos <= list.size()) {
    const size_t comma = std::min(list.find(',', pos), list.size());
    Result<uint64_t> b = ParseBudget(list.substr(pos, comma - pos), 0);
    if (!b.ok()) {
      std::fprintf(stderr, "--budgets: %s\n", b.status().message().c_str());
      return false;
    }
    o->budgets.push_back(*b);
    pos = comma + 1;
  }
  return true;
}

// One client: random requests (prompts, lengths, sampling, cancellations) until `stop`.
void ClientLoop(const Options& o, int c, v1::Dcomp::Stub* stub, const std::atomic<bool>& stop,
                Shared* sh) {
  std::mt19937_64 rng(o.seed * 1000 + static_cast<uint64_t>(c));
  std::uniform_real_distribution<double> u(0, 1);
  while (!stop.load()) {
    v1::GenerateRequest req;
    req.set_prompt(kPrompts[rng() % (sizeof(kPrompts) / sizeof(kPrompts[0]))]);
    req.set_max_tokens(1 + static_cast<int>(rng() % static_cast<uint64_t>(o.max_tokens)));
    if (u(rng) < 0.5) {
      req.mutable_sampling()->set_temperature(static_cast<float>(0.5 + u(rng)));
      req.mutable_sampling()->set_top_p(0.9f);
      req.mutable_sampling()->set_seed(rng());
    }
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
    const bool cancel = u(rng) < o.cancel_share;
    const auto cancel_after = std::chrono::milliseconds(static_cast<int>(u(rng) * 2000));
    std::atomic<bool> done{false};
    std::thread canceller;
    if (cancel) {
      canceller = std::thread([&] {
        const auto until = Clock::now() + cancel_after;
        while (!done.load() && Clock::now() < until) {
          std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
        if (!done.load()) ctx.TryCancel();
      });
    }
    const auto r0 = Clock::now();
    auto reader = stub->Generate(&ctx, req);
    v1::GenerateResponse msg;
    uint64_t tokens = 0;
    while (reader->Read(&msg)) tokens += msg.has_token();
    const grpc::Status st = reader->Finish();
    done.store(true);
    if (canceller.joinable()) canceller.join();
    const double lat = Since(r0);
    std::lock_guard<std::mutex> l(sh->mu);
    ++sh->by_code[std::string(StatusCodeName(static_cast<StatusCode>(st.error_code())))];
    sh->tokens += tokens;
    sh->cancelled_by_us += cancel && st.error_code() == grpc::StatusCode::CANCELLED;
    if (st.ok()) sh->latency.push_back(lat);
    if (st.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
}

// What the watcher saw: budget changes and Status samples.
struct Watch {
  uint64_t max_rss = 0, max_rss_budget = 0, overruns = 0, samples = 0, changes = 0, refused = 0;
  std::string first_overrun;
  bool alive = true;
  v1::StatusResponse last;
};

// Changes the budget every o.budget_every seconds and samples Status every 100 ms until the end.
Watch WatchDaemon(const Options& o, v1::Dcomp::Stub* stub, Clock::time_point t0) {
  Watch w;
  uint64_t budget = 0;     // the bound in force (0: none until the first change)
  uint64_t latest_ok = 0;  // the last budget the daemon accepted
  auto last_change = Clock::now() - std::chrono::hours(1);
  size_t next = 0;
  while (Since(t0) < o.seconds) {
    if (std::chrono::duration<double>(Clock::now() - last_change).count() >= o.budget_every) {
      v1::SetBudgetRequest req;
      req.set_bytes(o.budgets[next++ % o.budgets.size()]);
      v1::SetBudgetResponse resp;
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
      if (stub->SetBudget(&ctx, req, &resp).ok()) {
        // The old budget stays the bound until the new plan is in force (next token or at once).
        budget = std::max(budget, req.bytes());
        latest_ok = req.bytes();
        last_change = Clock::now();
        ++w.changes;
      } else {
        ++w.refused;
      }
    }
    if (latest_ok != 0 && Since(last_change) > 1.0) budget = latest_ok;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    if (!stub->Status(&ctx, {}, &w.last).ok()) {
      w.alive = false;
      break;
    }
    ++w.samples;
    if (w.last.rss_bytes() > w.max_rss) {
      w.max_rss = w.last.rss_bytes();
      w.max_rss_budget = budget;
    }
    if (budget != 0 && w.last.rss_bytes() > budget + o.slack && w.overruns++ == 0) {
      w.first_overrun = "RSS " + FormatBytes(w.last.rss_bytes()) + " over budget " +
                        FormatBytes(budget) + " at " + std::to_string(Since(t0)) + " s";
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return w;
}

// Prints the JSON report; returns the exit code.
int Report(const Options& o, Shared& sh, const Watch& w, double elapsed) {
  const uint64_t max_budget = *std::max_element(o.budgets.begin(), o.budgets.end());
  const bool peak_ok = w.last.peak_rss_bytes() <= max_budget + o.slack;
  std::sort(sh.latency.begin(), sh.latency.end());
  const auto q = [&](double p) {
    if (sh.latency.empty()) return 0.0;
    return sh.latency[std::min(sh.latency.size() - 1,
                               static_cast<size_t>(p * static_cast<double>(sh.latency.size())))];
  };
  uint64_t total = 0, unexpected = 0;
  for (const auto& [code, n] : sh.by_code) {
    total += n;
    if (code != "OK" && code != "CANCELLED" && code != "RESOURCE_EXHAUSTED") unexpected += n;
  }
  JsonWriter j;
  j.BeginObject()
      .Double("seconds", elapsed)
      .Int("clients", o.clients)
      .Int("requests", static_cast<int64_t>(total))
      .BeginObjectIn("by_code");
  for (const auto& [code, n] : sh.by_code) j.Int(code, static_cast<int64_t>(n));
  j.EndObject()
      .Int("cancelled_by_client", static_cast<int64_t>(sh.cancelled_by_us))
      .Int("tokens", static_cast<int64_t>(sh.tokens))
      .Double("request_p50_seconds", q(0.50))
      .Double("request_p99_seconds", q(0.99))
      .Double("token_p99_seconds", w.last.token_latency().p99_seconds())
      .Double("ttft_p99_seconds", w.last.time_to_first_token().p99_seconds())
      .Int("budget_changes", static_cast<int64_t>(w.changes))
      .Int("budget_changes_refused", static_cast<int64_t>(w.refused))
      .Int("status_samples", static_cast<int64_t>(w.samples))
      .Int("max_rss", static_cast<int64_t>(w.max_rss))
      .Int("budget_at_max_rss", static_cast<int64_t>(w.max_rss_budget))
      .Int("peak_rss", static_cast<int64_t>(w.last.peak_rss_bytes()))
      .Int("max_budget", static_cast<int64_t>(max_budget))
      .Int("overruns", static_cast<int64_t>(w.overruns))
      .String("first_overrun", w.first_overrun)
      .Bool("peak_within_max_budget", peak_ok)
      .Int("unexpected_status", static_cast<int64_t>(unexpected))
      .Bool("daemon_alive", w.alive)
      .Int("replans", static_cast<int64_t>(w.last.plan().replans()))
      .EndObject();
  std::printf("%s\n", j.str().c_str());
  return w.overruns == 0 && peak_ok && unexpected == 0 && w.alive ? 0 : 1;
}

int Run(int argc, char** argv) {
  Options o;
  if (!ParseOptions(argc, argv, &o)) return 2;
  auto channel = grpc::CreateChannel(o.address, grpc::InsecureChannelCredentials());
  auto stub = v1::Dcomp::NewStub(channel);
  Shared sh;
  std::atomic<bool> stop{false};
  const auto t0 = Clock::now();
  std::vector<std::thread> threads;
  for (int c = 0; c < o.clients; ++c) {
    threads.emplace_back([&, c] { ClientLoop(o, c, stub.get(), stop, &sh); });
  }
  Watch w = WatchDaemon(o, stub.get(), t0);
  stop.store(true);
  for (auto& t : threads) t.join();
  const double elapsed = Since(t0);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  w.alive = w.alive && stub->Status(&ctx, {}, &w.last).ok();
  return Report(o, sh, w, elapsed);
}

}  // namespace
}  // namespace dcomp

int main(int argc, char** argv) { return dcomp::Run(argc, argv); }
