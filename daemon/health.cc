#include "daemon/health.h"

#include <chrono>

namespace dcomp::server {

using grpc::health::v1::HealthCheckResponse;

void HealthService::SetServing(bool serving) {
  {
    std::lock_guard<std::mutex> l(mu_);
    serving_ = serving;
  }
  cv_.notify_all();
}

void HealthService::Shutdown() {
  {
    std::lock_guard<std::mutex> l(mu_);
    shutdown_ = true;
    serving_ = false;
  }
  cv_.notify_all();
}

HealthCheckResponse::ServingStatus HealthService::StatusOf(const std::string& service) const {
  if (!service.empty() && service != "dcomp.v1.Dcomp") return HealthCheckResponse::SERVICE_UNKNOWN;
  return serving_ ? HealthCheckResponse::SERVING : HealthCheckResponse::NOT_SERVING;
}

grpc::Status HealthService::Check(grpc::ServerContext*,
                                  const grpc::health::v1::HealthCheckRequest* req,
                                  HealthCheckResponse* resp) {
  std::lock_guard<std::mutex> l(mu_);
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
  std::unique_lock<std::mutex> l(mu_);
  bool first = true;
  auto last = HealthCheckResponse::UNKNOWN;
  while (!ctx->IsCancelled()) {
    const auto s = StatusOf(req->service());
    if (first || s != last) {
      HealthCheckResponse r;
      r.set_status(s);
      l.unlock();
      if (!writer->Write(r)) return grpc::Status::OK;
      l.lock();
      first = false;
      last = s;
    }
    if (shutdown_) {
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "dcompd is shutting down");
    }
    cv_.wait_for(l, std::chrono::milliseconds(100));
  }
  return grpc::Status(grpc::StatusCode::CANCELLED, "watch cancelled");
}

}  // namespace dcomp::server
