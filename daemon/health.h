// grpc.health.v1.Health for dcompd: "" (the server) and "dcomp.v1.Dcomp" report NOT_SERVING until
// the model is loaded and warmed up, SERVING then, NOT_SERVING again while draining. Watch streams
// the status and every change until the client cancels or the server shuts down.
#pragma once

#include <atomic>

#include "base/mutex.h"
#include "proto/grpc/health/v1/health.grpc.pb.h"

namespace dcomp::server {

class HealthService final : public grpc::health::v1::Health::Service {
 public:
  void SetServing(bool serving) EXCLUDES(mu_);
  // Ends every Watch stream (before the server shuts down).
  void Shutdown() EXCLUDES(mu_);

  grpc::Status Check(grpc::ServerContext* ctx, const grpc::health::v1::HealthCheckRequest* req,
                     grpc::health::v1::HealthCheckResponse* resp) override EXCLUDES(mu_);
  grpc::Status Watch(grpc::ServerContext* ctx, const grpc::health::v1::HealthCheckRequest* req,
                     grpc::ServerWriter<grpc::health::v1::HealthCheckResponse>* writer) override
      EXCLUDES(mu_);

 private:
  grpc::health::v1::HealthCheckResponse::ServingStatus StatusOf(const std::string& service) const
      REQUIRES(mu_);

  mutable Mutex mu_;
  CondVar cv_;  // notified when serving_ or shutdown_ changes
  bool serving_ GUARDED_BY(mu_) = false;
  bool shutdown_ GUARDED_BY(mu_) = false;
};

}  // namespace dcomp::server
