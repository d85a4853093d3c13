#include "client/client.h"

#include <google/protobuf/text_format.h>

#include <cstdlib>
#include <filesystem>

#include "base/file.h"
#include "base/status.h"
#include "proto/config.pb.h"

namespace dcomp::client {

std::string ResolveAddress(const std::optional<std::string>& explicit_address,
                           const std::optional<std::string>& config_path, std::string* source) {
  if (explicit_address) {
    *source = "--address";
    return *explicit_address;
  }
  if (const char* env = std::getenv("DCOMPCTL_ADDRESS"); env != nullptr && *env != '\0') {
    *source = "$DCOMPCTL_ADDRESS";
    return env;
  }
  std::error_code ec;
  const std::string path = config_path.value_or(kDefaultConfigPath);
  if (config_path || std::filesystem::exists(path, ec)) {
    Result<std::string> text = ReadFileToString(path);
    v1::DaemonConfig c;
    if (text.ok() && google::protobuf::TextFormat::ParseFromString(*text, &c) &&
        !c.listen().empty()) {
      *source = path;
      return c.listen(0);
    }
  }
  *source = "default";
  return kDefaultAddress;
}

std::shared_ptr<grpc::Channel> Connect(const std::string& address) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
}

std::string DescribeError(const grpc::Status& s, const std::string& address) {
  const std::string code(StatusCodeName(static_cast<StatusCode>(s.error_code())));
  if (s.error_code() == grpc::StatusCode::UNAVAILABLE &&
      s.error_message().find("failed to connect") != std::string::npos) {
    return "cannot reach dcompd at " + address + " (" + s.error_message() +
           "): is it running? (systemctl status dcompd; --address ADDR picks another)";
  }
  if (s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    return code + ": no answer from dcompd at " + address + " in time (" + s.error_message() + ")";
  }
  return code + ": " + s.error_message();
}

}  // namespace dcomp::client
