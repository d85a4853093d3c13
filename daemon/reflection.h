// grpc.reflection.v1, the stable server-reflection protocol that grpcurl and newer tools ask for
// before v1alpha (which gRPC's own plugin serves): lists the services and answers file
// descriptors, by file name, symbol or extension, from the process's generated descriptor pool.
// Each file is sent with the dependencies this stream has not sent yet.
#pragma once

#include <string>
#include <vector>

#include "proto/grpc/reflection/v1/reflection.grpc.pb.h"

namespace dcomp::server {

class ReflectionV1 final : public grpc::reflection::v1::ServerReflection::Service {
 public:
  // `services`: the full names the server serves (list_services answers them).
  explicit ReflectionV1(std::vector<std::string> services) : services_(std::move(services)) {}

  grpc::Status ServerReflectionInfo(
      grpc::ServerContext* ctx,
      grpc::ServerReaderWriter<grpc::reflection::v1::ServerReflectionResponse,
                               grpc::reflection::v1::ServerReflectionRequest>* stream) override;

 private:
  const std::vector<std::string> services_;
};

}  // namespace dcomp::server
