#include "daemon/health.h"

#include <chrono>

namespace dcomp::server {

using grpc::health::v1::HealthCheckResponse;

void HealthService::SetServing(bool serving) {
  {
    MutexLock l(&mu_);
    serving_ = serving;
  }
  cv_.NotifyAll();
}

void HealthService::Shutdown() {
  {
    MutexLock l(&mu_);
    shutdown_ = true;
    serving_ = false;
  }
  cv_.NotifyAll();
}

HealthCheckResponse::ServingStatus HealthService::StatusOf(const std::string& service) const {
  if (!service.empty() && service != "dcomp.v1.Dcomp") return HealthCheckResponse::SERVICE_UNKNOWN;
  return serving_ ? HealthCheckResponse::SERVING : HealthCheckResponse::NOT_SERVING;
}

grpc::Status HealthService::Check(grpc::ServerContext*,
                                  const grpc::health::v1::HealthCheckRequest* req,
                                  HealthCheckResponse* resp) {
  MutexLock l(&mu_);
  const auto s = StatusOf(req->service());
  if (s == HealthCheckResponse::SERVICE_UNKNOWN) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        "unknown service '" + req->service() + "' (known: '', 'dcomp.v1.Dcomp')");
  }
  resp->set_status(s);
  return grpc::Status::OK;
}

grpc::Status HealthService::Watch(grpc::ServerContext* ctx,
                                  const grpc::health::v1::HealthCheckRequest* req,
                                  grpc::ServerWriter<HealthCheckResponse>* writer) {
  MutexLock l(&mu_);
  bool first = true;
  auto last = HealthCheckResponse::UNKNOWN;
  while (!ctx->IsCancelled()) {
    const auto s = StatusOf(req->service());
    if (first || s != last) {
      HealthCheckResponse r;
      r.set_status(s);
      l.Unlock();
      if (!writer->Write(r)) return grpc::Status::OK;
      l.Lock();
      first = false;
      last = s;
    }
    if (shutdown_) {
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "dcompd is shutting down");
    }
    // Until the status changes or the server shuts down (both notify), or 100 ms pass: then the
    // client's cancellation is checked again.
    cv_.WaitFor(&mu_, std::chrono::milliseconds(100), [&] {
      mu_.AssertHeld();
      return shutdown_ || StatusOf(req->service()) != last;
    });
  }
  return grpc::Status(grpc::StatusCode::CANCELLED, "watch cancelled");
}

}  // namespace dcomp::server
