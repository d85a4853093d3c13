// The dcompd service: the model (served through the streaming runtime for .dcm containers), the
// request queue, request limits and the figures of Status and the metrics endpoint, and the
// dcomp.v1.Dcomp gRPC implementation over them. Other front ends (the HTTP API) run their
// generation requests through Daemon::Run with a GenerationCall of their own.
//
// Requests run through the Scheduler (daemon/scheduler.h): up to max_batch generate together, one
// pass over the weights per step for all of them, each with its own KV cache; more wait in FIFO
// order. A Generate call is validated, takes a place in the queue (RESOURCE_EXHAUSTED when full or
// when its KV cache could never fit), then its handler thread writes each token as the scheduler
// samples it, polling its client's cancellation and deadline; a cancelled client, a passed
// deadline or a shutdown past its grace takes it out of the batch before the next step.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "base/mutex.h"
#include "base/status.h"
#include "daemon/latency_window.h"
#include "daemon/scheduler.h"
#include "engine/generate.h"
#include "proto/config.pb.h"
#include "proto/dcomp.grpc.pb.h"
#include "runtime/served_model.h"

namespace dcomp::server {

// One generation request as a front end (gRPC Generate and Chat, the HTTP API) carries it: where
// its tokens and result go and how to tell that its client went away. Called from the thread that
// runs Daemon::Run.
class GenerationCall {
 public:
  virtual ~GenerationCall() = default;
  // The daemon's id of the request (in its log line), set by Daemon::Run before any write.
  uint64_t request_id = 0;
  // Sends one token's text; false when the client is gone.
  virtual bool WriteToken(const Job::Token& token) = 0;
  // Sends the result of a request that ran to its end; false when the client is gone.
  virtual bool WriteResult(const Job& job, uint64_t request_id) = 0;
  // Why the request must stop now (its deadline passed, its client went away), else OK.
  virtual Status Interrupted() = 0;
  // Why a write failed: the deadline, the client cancelling, else `otherwise`.
  virtual Status WriteFailed(const std::string& otherwise) = 0;
};

class Daemon {
 public:
  // `config` is validated and has its defaults applied.
  explicit Daemon(v1::DaemonConfig config);
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // Opens the model and warms it up (one short generation); serving() turns true on success.
  Status Load() EXCLUDES(config_mu_, engine_mu_);
  bool serving() const { return serving_.load(std::memory_order_acquire); }
  // New Generate calls get UNAVAILABLE from now on; queued and running ones continue.
  void StartDraining() { draining_.store(true); }
  bool draining() const { return draining_.load(); }
  // Generate requests admitted and not finished (waiting or running).
  int InFlight() const;
  // Applies the budget, queue depth and request limits of a re-read config (SIGHUP).
  Status Reload(const v1::DaemonConfig& config) EXCLUDES(config_mu_, engine_mu_);
  // False when requests are running and no step ended within `limit` (the watchdog stops
  // pinging; systemd restarts a hung daemon).
  bool Progressing(std::chrono::nanoseconds limit) const;

  void FillStatus(v1::StatusResponse* out) const EXCLUDES(config_mu_, stats_mu_);
  std::string StatusLine() const EXCLUDES(config_mu_, stats_mu_);  // one line for sd_notify STATUS=

  grpc::Service* service();  // dcomp.v1.Dcomp

  // Runs one generation request of any protocol: refused while loading or draining, then
  // validated (ValidateGenerateRequest, ValidateChatRequest with the daemon's chat family), the
  // queue, the tokens and the result written to `call`; logged and counted under `protocol`
  // ("grpc", "http") and `rpc` ("generate", "chat", ...). Returns how it ended; the call has its
  // result when that is OK.
  Status Run(GenerationCall& call, const char* protocol, const char* rpc, const std::string& peer,
             const v1::GenerateRequest& req) EXCLUDES(config_mu_, engine_mu_, stats_mu_);
  Status Run(GenerationCall& call, const char* protocol, const char* rpc, const std::string& peer,
             const v1::ChatRequest& req) EXCLUDES(config_mu_, engine_mu_, stats_mu_);

  v1::RequestLimits limits() const EXCLUDES(config_mu_);
  // Counts a request a front end refused before Run (HTTP: bad JSON, unknown route, auth).
  void CountRefused(const char* protocol, const Status& s) EXCLUDES(stats_mu_);

 private:
  class Service;
  friend class Service;
  // Run's common part: `validate` gives the engine request and its prompt's token count.
  using Validator = std::function<Result<GenerateRequest>(int32_t* prompt_tokens)>;
  Status Run(GenerationCall& call, const char* protocol, const char* rpc, const std::string& peer,
             const Validator& validate) EXCLUDES(config_mu_, engine_mu_, stats_mu_);
  struct CallInfo {
    uint64_t id;
    const char* protocol;
    const char* rpc;
    const std::string& peer;
  };
  // Logs and counts a finished generation call; `job` (null when it never got one) gives its
  // figures.
  void Finish(const CallInfo& call, const Status& st, int prompt_tokens, double total_seconds,
              const Job* job) EXCLUDES(stats_mu_);
  // Writes the job's tokens as they come and waits for its end, cancelling it when the client
  // goes away or the deadline passes: OK when it ran to its end, else why it stopped.
  Status Stream(GenerationCall& call, Job& job);
  grpc::Status DoSetBudget(const v1::SetBudgetRequest* req, v1::SetBudgetResponse* resp)
      EXCLUDES(engine_mu_);
  // The one way a budget changes (SetBudget RPC, SIGHUP): re-plans the streamed model, applies the
  // plan at once when idle, returns the budget in bytes. The model must be streamed and loaded.
  Result<uint64_t> SetBudget(const BudgetSpec& spec, runtime::Plan* chosen = nullptr)
      EXCLUDES(engine_mu_);
  void FillPlan(const runtime::Plan& plan, v1::PlanInfo* out) const;

  // What engine_mu_ guards in model_ (whose other parts are immutable once serving_ is set): the
  // forward steps (the scheduler's thread) and applying the streamed model's pending plan.
  Status ApplyPendingPlan() REQUIRES(engine_mu_) { return model_.runtime->ApplyPendingPlan(); }

  const std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  mutable Mutex config_mu_;
  v1::DaemonConfig config_ GUARDED_BY(config_mu_);

  std::atomic<bool> serving_{false};
  std::atomic<bool> draining_{false};
  // Immutable once serving_ is set, except the transformer and the plan: see ApplyPendingPlan().
  runtime::ServedModel model_;
  Mutex engine_mu_;  // held while the model steps or applies a plan
  // Created by Load() before serving_ is set; destroyed first (its thread steps the model).
  std::unique_ptr<Scheduler> scheduler_;

  std::atomic<uint64_t> next_request_id_{1};
  LatencyWindow token_latency_;
  LatencyWindow ttft_;
  LatencyWindow queue_wait_;
  mutable Mutex stats_mu_;
  // Finished requests by protocol and status code name.
  std::map<std::pair<std::string, std::string>, uint64_t> requests_by_code_ GUARDED_BY(stats_mu_);
  uint64_t generated_tokens_ GUARDED_BY(stats_mu_) = 0;
  double last_tokens_per_second_ GUARDED_BY(stats_mu_) = 0;

  std::string chat_family_;  // set by Load()
  std::unique_ptr<Service> service_;
};

// The final figures of a job that ran to its end, as the Generate and Chat streams end with.
v1::GenerateResult ResultProto(const Job& job, uint64_t request_id);

// Maps a dcomp Status to a gRPC status (the codes are numerically equal).
grpc::Status ToGrpc(const Status& s);

}  // namespace dcomp::server
