#include "daemon/service.h"

#include <spdlog/spdlog.h>

#include <cmath>
#include <thread>

#include "base/page_buffer.h"
#include "base/utf8.h"
#include "daemon/validate.h"
#include "engine/chat_template.h"
#include "engine/generate.h"
#include "kernels/kernels.h"
#include "runtime/memory_stats.h"
#include "storage/rans.h"

namespace dcomp::server {
namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

v1::StopReason StopReasonOf(const std::string& s) {
  if (s == "eos") return v1::STOP_REASON_EOS;
  if (s == "length") return v1::STOP_REASON_LENGTH;
  if (s == "context") return v1::STOP_REASON_CONTEXT;
  if (s == "stop") return v1::STOP_REASON_STOP;
  if (s == "callback") return v1::STOP_REASON_CANCELLED;
  return v1::STOP_REASON_UNSPECIFIED;
}

// A client's deadline fires on the client's clock, before the server's copy of it (which counts
// from the call's arrival) passes: a cancellation this close to the server's deadline is the
// deadline, not the client giving up.
constexpr auto kDeadlineSkew = std::chrono::milliseconds(100);

// A call that ended early (cancelled, or a write failed): at its deadline, or cancelled.
Status EndedEarly(grpc::ServerContext* ctx, const std::string& cancelled) {
  if (ctx->deadline() <= std::chrono::system_clock::now() + kDeadlineSkew) {
    return DeadlineExceededError("the request's deadline passed");
  }
  return CancelledError(cancelled);
}

// Why a running or waiting request must stop: its deadline passed (checked first: gRPC may not
// have flagged the call yet, or a failed write may have noticed first) or its client cancelled.
Status Interrupted(grpc::ServerContext* ctx) {
  if (ctx->deadline() <= std::chrono::system_clock::now()) {
    return DeadlineExceededError("the request's deadline passed");
  }
  if (ctx->IsCancelled()) return EndedEarly(ctx, "the client cancelled the request");
  return Status::Ok();
}

// Why a request that could not go on stopped: its deadline or its client (Interrupted), else
// `otherwise` (a write that failed before gRPC flagged the call).
Status StopCause(grpc::ServerContext* ctx, const std::string& otherwise) {
  Status s = Interrupted(ctx);
  return s.ok() ? EndedEarly(ctx, otherwise) : s;
}

std::string Peer(grpc::ServerContext* ctx) {
  std::string p = ctx->peer();
  return p.empty() ? "-" : p;
}

// A Generate or Chat call: tokens and the result as GenerateResponse messages.
class GrpcCall final : public GenerationCall {
 public:
  GrpcCall(grpc::ServerContext* ctx, grpc::internal::WriterInterface<v1::GenerateResponse>* writer)
      : ctx_(ctx), writer_(writer) {}

  bool WriteToken(const Job::Token& t) override {
    v1::GenerateResponse msg;
    msg.mutable_token()->set_id(t.id);
    msg.mutable_token()->set_text(SanitizeUtf8(t.text));
    return writer_->Write(msg);
  }

  bool WriteResult(const Job& job, uint64_t id) override {
    v1::GenerateResponse msg;
    *msg.mutable_result() = ResultProto(job, id);
    return writer_->Write(msg);
  }

  Status Interrupted() override { return server::Interrupted(ctx_); }
  Status WriteFailed(const std::string& otherwise) override { return StopCause(ctx_, otherwise); }

 private:
  grpc::ServerContext* ctx_;
  grpc::internal::WriterInterface<v1::GenerateResponse>* writer_;
};

}  // namespace

v1::GenerateResult ResultProto(const Job& job, uint64_t request_id) {
  const GenerateResult& r = job.result();
  v1::GenerateResult res;
  for (int32_t t : r.prompt_ids) res.add_prompt_ids(t);
  for (int32_t t : r.generated_ids) res.add_generated_ids(t);
  res.set_prompt_tokens(static_cast<int32_t>(r.prompt_ids.size()));
  res.set_generated_tokens(static_cast<int32_t>(r.generated_ids.size()));
  res.set_time_to_first_token_seconds(r.prefill_seconds);
  res.set_tokens_per_second(r.decode_tokens_per_second());
  res.set_stop_reason(StopReasonOf(r.stop_reason));
  res.set_text(SanitizeUtf8(r.text));
  res.set_completion(SanitizeUtf8(r.completion));
  res.set_tail_text(SanitizeUtf8(r.tail));
  res.set_queue_seconds(job.queue_seconds());
  res.set_request_id(request_id);
  return res;
}

grpc::Status ToGrpc(const Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), s.message());
}

// Every method reads its request itself (the streamed forms of the generated service), so that a
// request that does not parse gets INVALID_ARGUMENT with a message and a log line, where gRPC's
// own parsing answers INTERNAL with none.
using StreamedService =
    v1::Dcomp::WithSplitStreamingMethod_Generate<v1::Dcomp::WithSplitStreamingMethod_Chat<
        v1::Dcomp::WithStreamedUnaryMethod_Tokenize<v1::Dcomp::WithStreamedUnaryMethod_Status<
            v1::Dcomp::WithStreamedUnaryMethod_SetBudget<v1::Dcomp::Service>>>>>;

class Daemon::Service final : public StreamedService {
 public:
  explicit Service(Daemon* d) : d_(d) {}

  grpc::Status StreamedGenerate(
      grpc::ServerContext* ctx,
      grpc::ServerSplitStreamer<v1::GenerateRequest, v1::GenerateResponse>* stream) override {
    return RunStreamed<v1::GenerateRequest>(ctx, stream, "generate");
  }

  grpc::Status StreamedChat(
      grpc::ServerContext* ctx,
      grpc::ServerSplitStreamer<v1::ChatRequest, v1::GenerateResponse>* stream) override {
    return RunStreamed<v1::ChatRequest>(ctx, stream, "chat");
  }

  grpc::Status StreamedTokenize(
      grpc::ServerContext* ctx,
      grpc::ServerUnaryStreamer<v1::TokenizeRequest, v1::TokenizeResponse>* stream) override {
    v1::TokenizeRequest req;
    if (!stream->Read(&req)) return Malformed(ctx, "tokenize", req);
    if (!d_->serving()) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the model is loading");
    if (dcomp::Status s = ValidateTokenizeRequest(req, d_->limits()); !s.ok()) return ToGrpc(s);
    const Tokenizer& tok = *d_->model_.model.tokenizer;
    v1::TokenizeResponse resp;
    for (int32_t id : tok.Encode(req.text(), req.add_bos() && tok.add_bos())) {
      resp.add_ids(id);
      resp.add_pieces(SanitizeUtf8(tok.piece(id)));
    }
    return Reply(ctx, stream, resp);
  }

  grpc::Status StreamedStatus(
      grpc::ServerContext* ctx,
      grpc::ServerUnaryStreamer<v1::StatusRequest, v1::StatusResponse>* stream) override {
    v1::StatusRequest req;
    if (!stream->Read(&req)) return Malformed(ctx, "status", req);
    LogUnknownFields(req, "Status");
    v1::StatusResponse resp;
    d_->FillStatus(&resp);
    return Reply(ctx, stream, resp);
  }

  grpc::Status StreamedSetBudget(
      grpc::ServerContext* ctx,
      grpc::ServerUnaryStreamer<v1::SetBudgetRequest, v1::SetBudgetResponse>* stream) override {
    v1::SetBudgetRequest req;
    if (!stream->Read(&req)) return Malformed(ctx, "set-budget", req);
    v1::SetBudgetResponse resp;
    if (grpc::Status st = d_->DoSetBudget(&req, &resp); !st.ok()) return st;
    return Reply(ctx, stream, resp);
  }

 private:
  // Reads a Generate or Chat request and runs it, its tokens written to `stream`.
  template <typename Req>
  grpc::Status RunStreamed(grpc::ServerContext* ctx,
                           grpc::ServerSplitStreamer<Req, v1::GenerateResponse>* stream,
                           const char* rpc) {
    Req req;
    if (!stream->Read(&req)) return Malformed(ctx, rpc, req);
    GrpcCall call(ctx, stream);
    return ToGrpc(d_->Run(call, "grpc", rpc, Peer(ctx), req));
  }

  // A request message that did not parse (or never came): logged, counted for the generation
  // methods, INVALID_ARGUMENT naming the message type.
  grpc::Status Malformed(grpc::ServerContext* ctx, const char* rpc,
                         const google::protobuf::Message& m) {
    const dcomp::Status s =
        InvalidArgumentError("the request is not a valid " + m.GetDescriptor()->full_name() +
                             " message (truncated, not protobuf, or a field numbered 0)");
    if (std::string_view(rpc) == "generate" || std::string_view(rpc) == "chat") {
      d_->CountRefused("grpc", s);
    }
    spdlog::warn("grpc {} peer={}: {}", rpc, Peer(ctx), s.message());
    return ToGrpc(s);
  }

  template <typename Req, typename Resp>
  grpc::Status Reply(grpc::ServerContext* ctx, grpc::ServerUnaryStreamer<Req, Resp>* stream,
                     const Resp& resp) {
    if (!stream->Write(resp)) return ToGrpc(StopCause(ctx, "the client went away"));
    return grpc::Status::OK;
  }

  Daemon* d_;
};

Daemon::Daemon(v1::DaemonConfig config)
    : config_(std::move(config)), service_(std::make_unique<Service>(this)) {}

Daemon::~Daemon() { scheduler_.reset(); }

int Daemon::InFlight() const {
  if (!serving()) return 0;
  const Scheduler::Stats s = scheduler_->stats();
  return s.waiting + s.running;
}

grpc::Service* Daemon::service() { return service_.get(); }

v1::RequestLimits Daemon::limits() const {
  MutexLock l(&config_mu_);
  return config_.limits();
}

Status Daemon::Load() {
  v1::DaemonConfig c;
  {
    MutexLock l(&config_mu_);
    c = config_;
  }
  runtime::ServedModelOptions o;
  o.tokenizer_path = c.tokenizer();
  o.threads = c.threads() != 0
                  ? static_cast<int>(c.threads())
                  : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  o.context_length = static_cast<int32_t>(c.context_length());
  o.streaming = runtime::Streaming::kIfDcm;
  // The KV caches of every running request, and one logits row and sampler each.
  o.runtime.kv_cache_tokens = static_cast<int32_t>(c.kv_cache_tokens());
  o.runtime.kv_cache_contexts = 2;
  o.runtime.max_batch = static_cast<int32_t>(c.max_batch());
  ASSIGN_OR_RETURN(o.runtime.kv_cache_type, ParseKvType(c.kv_cache_type()));
  ASSIGN_OR_RETURN(o.runtime.budget, ParseBudgetSpec(c.budget()));
  ASSIGN_OR_RETURN(o.runtime.policy, runtime::ParsePolicy(c.policy()));
  ASSIGN_OR_RETURN(o.runtime.reader.backend, storage::ParseReaderBackend(c.reader()));
  o.runtime.reader.direct = c.direct();
  const auto t0 = Clock::now();
  ASSIGN_OR_RETURN(model_, runtime::OpenServedModel(c.model(), o));
  if (model_.runtime == nullptr && !o.runtime.budget.unlimited()) {
    spdlog::warn("{}: budget '{}' ignored: only .dcm models stream under a budget (this is {})",
                 c.model(), c.budget(), model_.model.file->format());
  }
  // The chat family of Chat requests that name none: the config's, else the model's template's.
  if (!c.chat_template().empty()) {
    chat_family_ = c.chat_template();
  } else if (const std::string& t = model_.model.tokenizer->chat_template(); !t.empty()) {
    if (Result<ChatFamily> f = DetectChatFamily(t); f.ok()) {
      chat_family_ = ChatFamilyName(*f);
    } else {
      spdlog::warn("{}: {}; Chat requests must name a template", c.model(), f.status().message());
    }
  }
  // The KV pool: the positions the runtime's plan reserves (the same rule for a resident model).
  const Transformer& tf = *model_.model.model;
  const int32_t kv_tokens = runtime::KvCachePositions(o.runtime, tf.context_length());
  Scheduler::Options so;
  so.max_batch = static_cast<int>(c.max_batch());
  so.queue_depth = static_cast<int>(c.queue_depth());
  so.kv_type = o.runtime.kv_cache_type;
  so.kv_cache_bytes = KvCache::Bytes(tf.config(), kv_tokens, so.kv_type);
  so.kv_note = c.kv_cache_tokens() != 0 ? "kv_cache_tokens " + std::to_string(kv_tokens)
                                        : std::to_string(kv_tokens) +
                                              " positions, twice the context; set kv_cache_tokens";
  // A budget set while requests ran is applied at their next token; when they end first (the
  // last one cancelled, say), the plan is applied as soon as the model is idle. A re-plan asked
  // for while idle (memory pressure) is applied within the scheduler's idle tick.
  if (model_.runtime != nullptr) {  // a resident model has no plan
    so.on_idle = [this] {
      engine_mu_.AssertHeld();
      if (Status s = ApplyPendingPlan(); !s.ok()) {
        spdlog::warn("applying the plan for the new budget: {}", s.ToString());
      }
    };
  }
  scheduler_ = std::make_unique<Scheduler>(model_.model.model.get(), model_.model.tokenizer.get(),
                                           &engine_mu_, so);
  // Warm-up: one short greedy generation touches every code path a request takes (prefill, the
  // pipeline's first pass, sampling) before READY.
  GenerateRequest warm;
  warm.prompt = "Hello";
  warm.max_tokens = 2;
  {
    Result<std::shared_ptr<Job>> job = scheduler_->Submit(warm);
    Status s = job.status();
    if (job.ok()) {
      std::vector<Job::Token> ignored;
      while (!(*job)->Wait(std::chrono::milliseconds(100), &ignored)) ignored.clear();
      s = (*job)->status();
    }
    if (!s.ok()) return s.WithContext(c.model() + ": warm-up generation failed");
  }
  spdlog::info("kernels: {}; rANS decoder: {}; huge pages: {}", kernels::KernelSelectionNote(),
               storage::RansDecoderNote(), HugePageNote());
  spdlog::info(
      "model {} [{}]: {}; context {}; batches of up to {} requests, {} KV cache {} for all ({} "
      "positions); chat template {}; {}; loaded and warmed up in {:.2f} s",
      c.model(), model_.model.file->format(), model_.model.file->config().Summary(),
      model_.model.model->context_length(), so.max_batch, KvTypeName(so.kv_type),
      FormatBytes(so.kv_cache_bytes), kv_tokens, chat_family_.empty() ? "none" : chat_family_,
      model_.runtime ? "streamed: " + model_.runtime->plan().Summary()
                     : "resident " + FormatBytes(model_.model.resident_weight_bytes),
      Since(t0));
  if (model_.runtime != nullptr) {
    const runtime::Rates r = model_.runtime->stats().rates;
    spdlog::info(
        "rates after warm-up, per thread: INT8 products {:.1f} GMAC/s, packed {} "
        "(probed {}), decoding {:.0f} MB/s; reads {:.0f} MB/s",
        r.compute_macs_per_s / 1e9,
        r.packed_macs_per_s > 0 ? fmt::format("{:.1f} GMAC/s", r.packed_macs_per_s / 1e9)
                                : std::string("n/a (not probed: no narrow codes)"),
        r.compute_out_of_cache
            ? "out of cache: the model exceeds the last-level cache"
            : "in cache: the model fits the last-level cache or the budget leaves no room",
        r.decode_bytes_per_s / 1e6, r.io_bytes_per_s / 1e6);
    // The kernel enforces the cgroup's limit (systemd MemoryMax), which also counts page cache:
    // a budget at or above it would be met by the OOM killer first.
    const uint64_t bytes = model_.runtime->stats().budget;
    const uint64_t limit = runtime::CgroupMemoryLimit();
    if (limit != 0 && (bytes == 0 || bytes + (32u << 20) > limit)) {
      spdlog::warn(
          "budget {} is not below this cgroup's memory limit {} by 32 MiB or more: set "
          "the budget lower or MemoryMax higher (docs/service.md)",
          bytes ? FormatBytes(bytes) : "unlimited", FormatBytes(limit));
    }
  }
  serving_.store(true, std::memory_order_release);
  return Status::Ok();
}

Status Daemon::Reload(const v1::DaemonConfig& c) {
  std::string changes;
  {
    MutexLock l(&config_mu_);
    if (c.model() != config_.model()) {
      spdlog::warn("config reload: `model` changed to {}; restart dcompd to serve it", c.model());
    }
    config_.mutable_limits()->CopyFrom(c.limits());
    config_.set_queue_depth(c.queue_depth());
    if (serving()) scheduler_->set_queue_depth(static_cast<int>(c.queue_depth()));
    if (c.max_batch() != config_.max_batch() || c.kv_cache_tokens() != config_.kv_cache_tokens()) {
      spdlog::warn("config reload: max_batch and kv_cache_tokens apply at the next start");
    }
    changes = "queue_depth " + std::to_string(c.queue_depth()) + ", max_tokens " +
              std::to_string(c.limits().max_tokens()) + ", max_prompt_bytes " +
              std::to_string(c.limits().max_prompt_bytes());
  }
  if (serving() && model_.runtime != nullptr) {
    ASSIGN_OR_RETURN(const BudgetSpec b, ParseBudgetSpec(c.budget()));
    if (Result<uint64_t> bytes = SetBudget(b); !bytes.ok()) {
      return bytes.status().WithContext("budget");
    }
    changes += ", budget " + c.budget();
    MutexLock l(&config_mu_);
    config_.set_budget(c.budget());
  }
  spdlog::info("config reloaded: {}", changes);
  return Status::Ok();
}

bool Daemon::Progressing(std::chrono::nanoseconds limit) const {
  return !serving() || scheduler_->Progressing(limit);
}

Status Daemon::Run(GenerationCall& call, const char* protocol, const char* rpc,
                   const std::string& peer, const v1::GenerateRequest& req) {
  return Run(call, protocol, rpc, peer, [&](int32_t* prompt_tokens) {
    return ValidateGenerateRequest(req, limits(), *model_.model.tokenizer,
                                   model_.model.model->context_length(), prompt_tokens);
  });
}

Status Daemon::Run(GenerationCall& call, const char* protocol, const char* rpc,
                   const std::string& peer, const v1::ChatRequest& req) {
  return Run(call, protocol, rpc, peer, [&](int32_t* prompt_tokens) {
    return ValidateChatRequest(req, limits(), *model_.model.tokenizer,
                               model_.model.model->context_length(), chat_family_, prompt_tokens);
  });
}

Status Daemon::Run(GenerationCall& call, const char* protocol, const char* rpc,
                   const std::string& peer, const Validator& validate) {
  const auto t0 = Clock::now();
  const CallInfo info{next_request_id_.fetch_add(1), protocol, rpc, peer};
  call.request_id = info.id;
  int32_t prompt_tokens = 0;
  // Logs and counts the request's end (with its job's figures once it has one).
  auto finish = [&](const Status& s, const Job* job = nullptr) {
    Finish(info, s, prompt_tokens, Since(t0), job);
    return s;
  };
  if (draining()) return finish(UnavailableError("dcompd is shutting down"));
  if (!serving()) {
    return finish(UnavailableError("the model is loading; retry when health is SERVING"));
  }
  Result<GenerateRequest> greq = validate(&prompt_tokens);
  if (!greq.ok()) return finish(greq.status());
  // *greq carries the prompt's token ids from validation: the prompt is not encoded again.
  Result<std::shared_ptr<Job>> submitted = scheduler_->Submit(*greq);
  if (!submitted.ok()) return finish(submitted.status());
  Job& job = **submitted;
  if (Status s = Stream(call, job); !s.ok()) return finish(s, &job);
  if (!job.status().ok()) return finish(job.status(), &job);
  Status st = Status::Ok();
  if (!call.WriteResult(job, info.id)) {
    st = call.WriteFailed("the client stopped reading before the result");
  }
  return finish(st, &job);
}

Status Daemon::Stream(GenerationCall& call, Job& job) {
  Status stop = Status::Ok();
  auto last = Clock::now();
  bool first = true;
  std::vector<Job::Token> tokens;
  for (bool ended = false; !ended;) {
    tokens.clear();
    ended = job.Wait(std::chrono::milliseconds(10), &tokens);
    for (const Job::Token& t : tokens) {
      const auto now = Clock::now();
      if (!first) token_latency_.Add(std::chrono::duration<double>(now - last).count());
      first = false;
      last = now;
      if (!stop.ok()) continue;
      if (!call.WriteToken(t)) {
        stop = call.WriteFailed("the client stopped reading");
        job.Cancel();
      }
    }
    if (!ended && stop.ok()) {
      if (Status s = call.Interrupted(); !s.ok()) {
        stop = s;
        job.Cancel();
      }
    }
  }
  // The job's own end, when the client went away in the meantime: its status is CANCELLED.
  if (stop.ok() && job.cancelled()) stop = call.WriteFailed("cancelled");
  if (!job.result().generated_ids.empty()) ttft_.Add(job.result().prefill_seconds);
  if (job.status().code() != StatusCode::kUnavailable) queue_wait_.Add(job.queue_seconds());
  return stop;
}

void Daemon::CountRefused(const char* protocol, const Status& s) {
  MutexLock l(&stats_mu_);
  ++requests_by_code_[{protocol, std::string(StatusCodeName(s.code()))}];
}

void Daemon::Finish(const CallInfo& call, const Status& st, int prompt_tokens, double total_seconds,
                    const Job* job) {
  const GenerateResult* r = job ? &job->result() : nullptr;
  const double queue_seconds = job ? job->queue_seconds() : 0.0;
  const size_t generated = r ? r->generated_ids.size() : 0;
  const double tps = r ? r->decode_tokens_per_second() : 0.0;
  {
    MutexLock l(&stats_mu_);
    ++requests_by_code_[{call.protocol, std::string(StatusCodeName(st.code()))}];
    generated_tokens_ += generated;
    if (generated > 1) last_tokens_per_second_ = tps;
  }
  const std::string line = fmt::format(
      "request {} {} {} peer={} status={} prompt_tokens={} generated_tokens={} stop={} "
      "queue_ms={:.1f} ttft_ms={:.1f} tokens_per_s={:.2f} latency_ms={:.1f} kv_bytes={}{}{}",
      call.id, call.protocol, call.rpc, call.peer, StatusCodeName(st.code()), prompt_tokens,
      generated,
      r ? (r->stop_reason == "callback" ? std::string("cancelled") : r->stop_reason)
        : std::string("-"),
      queue_seconds * 1e3, r ? r->prefill_seconds * 1e3 : 0.0, tps, total_seconds * 1e3,
      job ? job->kv_bytes() : 0, st.ok() ? "" : " error=", st.ok() ? "" : st.message());
  if (st.ok() || st.code() == StatusCode::kCancelled ||
      st.code() == StatusCode::kDeadlineExceeded) {
    spdlog::info("{}", line);
  } else {
    spdlog::warn("{}", line);
  }
}

grpc::Status Daemon::DoSetBudget(const v1::SetBudgetRequest* req, v1::SetBudgetResponse* resp) {
  LogUnknownFields(*req, "SetBudget");
  if (!serving()) return ToGrpc(UnavailableError("the model is loading"));
  if (model_.runtime == nullptr) {
    return ToGrpc(FailedPreconditionError(
        "the model (" + model_.model.file->format() +
        ") is held in RAM, not streamed: budgets apply to .dcm models (pack it with dcomp pack)"));
  }
  BudgetSpec spec;
  switch (req->budget_case()) {
    case v1::SetBudgetRequest::kBytes: spec.bytes = req->bytes(); break;
    case v1::SetBudgetRequest::kPercent: {
      const double p = req->percent();
      if (!std::isfinite(p) || p <= 0 || p > 1000) {
        return ToGrpc(
            InvalidArgumentError("percent: expected (0, 1000], got " + std::to_string(p)));
      }
      spec.percent = p;
      break;
    }
    default: return ToGrpc(InvalidArgumentError("budget: set `bytes` or `percent`"));
  }
  runtime::Plan chosen;
  Result<uint64_t> bytes = SetBudget(spec, &chosen);
  if (!bytes.ok()) return ToGrpc(bytes.status());
  resp->set_budget_bytes(*bytes);
  FillPlan(chosen, resp->mutable_plan());  // the plan for the new budget, applied or not yet
  return grpc::Status::OK;
}

Result<uint64_t> Daemon::SetBudget(const BudgetSpec& spec, runtime::Plan* chosen) {
  RETURN_IF_ERROR(model_.runtime->SetBudget(spec, chosen));
  const uint64_t bytes = spec.Resolve(model_.runtime->int8_bytes());
  // Idle: apply now so that memory is released at once; busy: the runtime applies it at the next
  // token.
  if (engine_mu_.TryLock()) {
    const Status applied = ApplyPendingPlan();
    engine_mu_.Unlock();
    RETURN_IF_ERROR(applied);
  }
  spdlog::info("budget set to {} ({} bytes): {}", bytes ? FormatBytes(bytes) : "unlimited", bytes,
               chosen != nullptr ? chosen->Summary() : model_.runtime->plan().Summary());
  return bytes;
}

void Daemon::FillPlan(const runtime::Plan& p, v1::PlanInfo* out) const {
  if (model_.runtime == nullptr) return;
  const runtime::RuntimeStats st = model_.runtime->stats();
  out->set_summary(p.Summary());
  out->set_slots(p.slots);
  out->set_compute_threads(p.compute_threads);
  out->set_decode_threads(p.decode_threads);
  out->set_flash_bytes_per_token(p.flash_bytes_per_token);
  out->set_flash_head_matrices(p.flash_head);
  out->set_estimated_seconds_per_token(p.est_seconds_per_token);
  out->set_replans(st.replans);
  out->set_last_replan(st.last_replan);
}

void Daemon::FillStatus(v1::StatusResponse* out) const {
  out->set_version(DCOMP_VERSION);
  out->set_uptime_seconds(Since(start_));
  out->set_serving(serving() && !draining());
  if (serving()) {
    const Scheduler::Stats s = scheduler_->stats();
    out->set_queue_length(s.waiting);
    out->set_running(s.running);
    out->set_queue_depth(s.queue_depth);
    out->set_max_batch(s.max_batch);
    out->set_kv_cache_bytes(s.kv_pool_bytes);
    out->set_kv_cache_used_bytes(s.kv_used_bytes);
    out->set_steps(s.steps);
    out->set_step_tokens(s.step_tokens);
    out->set_step_requests(s.step_requests);
  } else {
    MutexLock l(&config_mu_);
    out->set_queue_depth(static_cast<int32_t>(config_.queue_depth()));
    out->set_max_batch(static_cast<int32_t>(config_.max_batch()));
  }
  {
    MutexLock l(&config_mu_);
    out->set_http_listen(config_.http_listen());
  }
  if (Result<runtime::ProcMemory> m = runtime::ReadProcMemory(); m.ok()) {
    out->set_rss_bytes(m->rss);
    out->set_peak_rss_bytes(m->hwm);
  }
  const auto fill = [](const LatencyWindow& w, v1::Latency* l) {
    const LatencyWindow::Summary s = w.Get();
    l->set_p50_seconds(s.p50);
    l->set_p95_seconds(s.p95);
    l->set_p99_seconds(s.p99);
    l->set_count(s.count);
    l->set_sum_seconds(s.sum);
  };
  fill(token_latency_, out->mutable_token_latency());
  fill(ttft_, out->mutable_time_to_first_token());
  fill(queue_wait_, out->mutable_queue_wait());
  {
    MutexLock l(&stats_mu_);
    for (const auto& [key, n] : requests_by_code_) {
      (*out->mutable_requests())[key.second] += n;
      v1::RequestCount* c = out->add_request_counts();
      c->set_protocol(key.first);
      c->set_code(key.second);
      c->set_count(n);
    }
    out->set_generated_tokens(generated_tokens_);
    out->set_tokens_per_second(last_tokens_per_second_);
  }
  out->set_memory_pressure(-1);
  if (!serving()) return;
  v1::ModelInfo* mi = out->mutable_model();
  {
    MutexLock l(&config_mu_);
    mi->set_path(config_.model());
  }
  mi->set_format(model_.model.file->format());
  mi->set_summary(model_.model.file->config().Summary());
  mi->set_context_length(model_.model.model->context_length());
  mi->set_vocab_size(model_.model.tokenizer->vocab_size());
  mi->set_streamed(model_.runtime != nullptr);
  mi->set_chat_template(chat_family_);
  if (model_.runtime == nullptr) {
    mi->set_int8_bytes(model_.model.resident_weight_bytes);
    return;
  }
  mi->set_int8_bytes(model_.runtime->int8_bytes());
  const runtime::RuntimeStats st = model_.runtime->stats();
  const runtime::Plan p = model_.runtime->plan();
  out->set_budget_bytes(st.budget);
  out->set_effective_budget_bytes(st.effective_budget);  // 0: no limit
  out->set_minimum_budget_bytes(st.minimum_budget);
  out->set_flash_read_bytes(st.flash_bytes);
  if (st.decode_thread_seconds > 0) {
    out->set_decode_gb_per_second(static_cast<double>(st.decoded_bytes) / st.decode_thread_seconds /
                                  1e9);
  }
  out->set_memory_pressure(st.pressure_some_avg10);
  out->set_budget_factor(st.budget_factor);
  const auto tier = [&](const char* name, uint64_t bytes, int units) {
    v1::TierBytes* t = out->add_tiers();
    t->set_tier(name);
    t->set_bytes(bytes);
    t->set_units(units);
  };
  tier("decoded", p.decoded_bytes, p.count(runtime::Tier::kDecoded));
  tier("packed", p.packed_bytes, p.count(runtime::Tier::kPacked));
  tier("compressed", p.compressed_bytes, p.count(runtime::Tier::kCompressed));
  tier("flash", p.flash_head_bytes, p.count(runtime::Tier::kFlash));
  tier("pipeline",
       p.slot_bytes * static_cast<uint64_t>(p.slots) +
           p.staging_bytes * static_cast<uint64_t>(p.staging),
       0);
  FillPlan(p, out->mutable_plan());
}

std::string Daemon::StatusLine() const {
  v1::StatusResponse s;
  FillStatus(&s);
  if (draining()) return "draining";
  if (!serving()) return "loading the model";
  std::string line = fmt::format("serving; {:.1f} tokens/s; RSS {}", s.tokens_per_second(),
                                 FormatBytes(s.rss_bytes()));
  if (s.budget_bytes() != 0) line += " of " + FormatBytes(s.budget_bytes()) + " budget";
  uint64_t n = 0;
  for (const auto& [code, c] : s.requests()) n += c;
  line +=
      fmt::format("; {} requests; queue {}/{}", n, s.queue_length() + s.running(), s.queue_depth());
  return line;
}

}  // namespace dcomp::server
