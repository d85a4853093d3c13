// The dcompd service: the model (served through the streaming runtime for .dcm containers), the
// request queue, request limits and the figures of Status and the metrics endpoint, and the
// dcomp.v1.Dcomp gRPC implementation over them.
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

 private:
  class Service;
  friend class Service;
  v1::RequestLimits limits() const EXCLUDES(config_mu_);
  // Logs and counts a finished Generate call; `job` (null when it never got one) gives its figures.
  void Finish(uint64_t id, const std::string& peer, const Status& st, int prompt_tokens,
              double total_seconds, const Job* job) EXCLUDES(stats_mu_);
  // Writes the job's tokens as they come and waits for its end, cancelling it when the client
  // goes away or the deadline passes: OK when it ran to its end, else why it stopped.
  Status Stream(grpc::ServerContext* ctx, Job& job,
                grpc::ServerWriter<v1::GenerateResponse>* writer);
  grpc::Status DoGenerate(grpc::ServerContext* ctx, const v1::GenerateRequest* req,
                          grpc::ServerWriter<v1::GenerateResponse>* writer)
      EXCLUDES(config_mu_, engine_mu_, stats_mu_);
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
  std::map<std::string, uint64_t> requests_by_code_ GUARDED_BY(stats_mu_);
  uint64_t generated_tokens_ GUARDED_BY(stats_mu_) = 0;
  double last_tokens_per_second_ GUARDED_BY(stats_mu_) = 0;

  std::unique_ptr<Service> service_;
};

// Maps a dcomp Status to a gRPC status (the codes are numerically equal).
grpc::Status ToGrpc(const Status& s);

}  // namespace dcomp::server
