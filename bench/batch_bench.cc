// dcomp_batch_bench: what continuous batching buys, measured by gRPC clients of a running dcompd.
// For each client count N, N clients send their requests at once (each `--rounds` requests back to
// back, a prompt of 4-8 tokens, `--max-tokens` generated, EOS ignored, greedy); then the same
// requests are sent by one client one after another ("sequential"). Reports, per N: aggregate
// tokens/s (all generated tokens over the wall time), per-client tokens/s (each client's tokens
// over its own time, averaged), time to first token as the client sees it (from the call to the
// first token: queue wait included), p50 and p99; and the speed-up of N clients over the same
// N x rounds requests run sequentially, measured right after them.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "base/flags.h"
#include "base/json.h"
#include "proto/dcomp.grpc.pb.h"

namespace dcomp {
namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// Short prompts (4-8 tokens with BOS in the llama and stories vocabularies).
const char* kPrompts[] = {"Once upon a time",    "The little dog ran", "Lily had a red ball",
                          "One day, Tom saw",    "The sun was hot",    "A big cat sat on",
                          "Ben and Mia went to", "There was a bird"};

// Prompt `index`: one of kPrompts, or for the vocabulary of `dcomp synth` (whose pieces never
// merge: text is spelled by bytes, BOS + 3 bytes of the dummy prefix + 1 per letter) 1 to 4
// letters: 5-8 tokens.
std::string Prompt(int index, bool synthetic) {
  if (!synthetic) return kPrompts[index % 8];
  std::string p;
  for (int i = 0; i < 1 + index % 4; ++i) p += static_cast<char>('a' + (index * 3 + i) % 26);
  return p;
}

struct Call {
  double ttft = 0, seconds = 0;
  int64_t tokens = 0, prompt_tokens = 0;
  bool ok = false;
  std::string error;
};

Call Generate(v1::Dcomp::Stub* stub, int index, int max_tokens, bool synthetic) {
  v1::GenerateRequest req;
  req.set_prompt(Prompt(index, synthetic));
  req.set_max_tokens(max_tokens);
  req.set_ignore_eos(true);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(30));
  Call c;
  const auto t0 = Clock::now();
  auto reader = stub->Generate(&ctx, req);
  v1::GenerateResponse msg;
  while (reader->Read(&msg)) {
    if (msg.has_result()) c.prompt_tokens = msg.result().prompt_tokens();
    if (!msg.has_token()) continue;
    if (c.tokens++ == 0) c.ttft = Since(t0);
  }
  const grpc::Status st = reader->Finish();
  c.seconds = Since(t0);
  c.ok = st.ok();
  if (!c.ok) c.error = st.error_message();
  return c;
}

struct Run {
  double wall = 0, aggregate = 0, per_client = 0;
  std::vector<double> ttft;
  int64_t tokens = 0;
  int64_t min_prompt = 0, max_prompt = 0;
  int failed = 0;
  std::string error;
};

// `clients` clients, each `rounds` requests back to back.
Run Concurrent(v1::Dcomp::Stub* stub, int clients, int rounds, int max_tokens, bool synthetic) {
  std::vector<std::vector<Call>> calls(static_cast<size_t>(clients));
  std::vector<double> client_seconds(static_cast<size_t>(clients));
  const auto t0 = Clock::now();
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      const auto c0 = Clock::now();
      for (int r = 0; r < rounds; ++r) {
        calls[static_cast<size_t>(c)].push_back(
            Generate(stub, c * rounds + r, max_tokens, synthetic));
      }
      client_seconds[static_cast<size_t>(c)] = Since(c0);
    });
  }
  for (auto& t : threads) t.join();
  Run run;
  run.wall = Since(t0);
  for (int c = 0; c < clients; ++c) {
    int64_t n = 0;
    for (const Call& k : calls[static_cast<size_t>(c)]) {
      n += k.tokens;
      run.ttft.push_back(k.ttft);
      run.min_prompt = run.min_prompt ? std::min(run.min_prompt, k.prompt_tokens) : k.prompt_tokens;
      run.max_prompt = std::max(run.max_prompt, k.prompt_tokens);
      if (!k.ok) {
        ++run.failed;
        run.error = k.error;
      }
    }
    run.tokens += n;
    run.per_client += static_cast<double>(n) / client_seconds[static_cast<size_t>(c)] / clients;
  }
  run.aggregate = static_cast<double>(run.tokens) / run.wall;
  std::sort(run.ttft.begin(), run.ttft.end());
  return run;
}

double Quantile(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return 0;
  const size_t i = static_cast<size_t>(q * static_cast<double>(sorted.size() - 1) + 0.5);
  return sorted[std::min(i, sorted.size() - 1)];
}

int Main(int argc, char** argv) {
  Flags f;
  f.Value("address", "dcompd address (unix:/path or host:port)")
      .Value("clients", "comma-separated client counts (default 1,2,4,8)")
      .Value("rounds", "requests per client, back to back (default 1)")
      .Value("max-tokens", "tokens generated per request (default 64)")
      .Value("label", "a name for this run in the output")
      .Switch("synthetic",
              "1-4 letter prompts: 5-8 tokens in `dcomp synth`'s byte-spelled vocabulary")
      .Switch("no-sequential", "skip the sequential reference runs")
      .Switch("json", "one JSON object per line instead of the table");
  std::vector<std::string> args(argv + 1, argv + argc);
  if (Status s = f.Parse(args); !s.ok() || !f.Has("address")) {
    std::fprintf(stderr, "%s\nusage: dcomp_batch_bench --address ADDR [options]\n%s",
                 s.ok() ? "" : s.message().c_str(), f.Help().c_str());
    return 2;
  }
  std::vector<int> counts;
  const std::string list = f.GetOr("clients", "1,2,4,8");
  for (size_t pos = 0; pos < list.size();) {
    const size_t comma = std::min(list.find(',', pos), list.size());
    counts.push_back(std::stoi(list.substr(pos, comma - pos)));
    pos = comma + 1;
  }
  const int rounds = static_cast<int>(*f.GetInt("rounds", 1));
  const int max_tokens = static_cast<int>(*f.GetInt("max-tokens", 64));
  const std::string label = f.GetOr("label", "");
  auto channel = grpc::CreateChannel(*f.Get("address"), grpc::InsecureChannelCredentials());
  auto stub = v1::Dcomp::NewStub(channel);
  const bool synthetic = f.IsSet("synthetic");
  Generate(stub.get(), 0, 2, synthetic);  // connect and touch the model
  if (!f.IsSet("json")) {
    std::printf("%-14s %7s %7s %11s %11s %10s %10s %11s %8s\n", "run", "clients", "prompt",
                "aggr tok/s", "client t/s", "ttft p50", "ttft p99", "seq tok/s", "speedup");
  }
  int failed = 0;
  for (int n : counts) {
    const Run r = Concurrent(stub.get(), n, rounds, max_tokens, synthetic);
    Run seq;
    if (!f.IsSet("no-sequential"))
      seq = Concurrent(stub.get(), 1, n * rounds, max_tokens, synthetic);
    failed += r.failed + seq.failed;
    const double speedup = seq.aggregate > 0 ? r.aggregate / seq.aggregate : 0;
    if (f.IsSet("json")) {
      JsonWriter j;
      j.BeginObject()
          .String("label", label)
          .Int("clients", n)
          .Int("requests", static_cast<int64_t>(n) * rounds)
          .Int("tokens", r.tokens)
          .Int("prompt_tokens_min", r.min_prompt)
          .Int("prompt_tokens_max", r.max_prompt)
          .Double("wall_seconds", r.wall)
          .Double("aggregate_tokens_per_second", r.aggregate)
          .Double("per_client_tokens_per_second", r.per_client)
          .Double("ttft_p50_seconds", Quantile(r.ttft, 0.5))
          .Double("ttft_p99_seconds", Quantile(r.ttft, 0.99))
          .Double("sequential_tokens_per_second", seq.aggregate)
          .Double("speedup", speedup)
          .Int("failed", r.failed + seq.failed)
          .EndObject();
      std::printf("%s\n", j.str().c_str());
    } else {
      const std::string prompt = std::to_string(r.min_prompt) + "-" + std::to_string(r.max_prompt);
      std::printf("%-14s %7d %7s %11.2f %11.2f %9.0fms %9.0fms %11.2f %7.2fx\n", label.c_str(), n,
                  prompt.c_str(), r.aggregate, r.per_client, Quantile(r.ttft, 0.5) * 1e3,
                  Quantile(r.ttft, 0.99) * 1e3, seq.aggregate, speedup);
    }
    if (r.failed + seq.failed > 0) {
      std::fprintf(stderr, "%d request(s) failed: %s\n", r.failed + seq.failed,
                   (r.error.empty() ? seq.error : r.error).c_str());
    }
    std::fflush(stdout);
  }
  return failed == 0 ? 0 : 1;
}

}  // namespace
}  // namespace dcomp

int main(int argc, char** argv) { return dcomp::Main(argc, argv); }
