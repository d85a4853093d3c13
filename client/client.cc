#include "client/client.h"

#include <cstdlib>
#include <filesystem>

#include "base/file.h"
#include "base/status.h"
#include "config/daemon_config.h"

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
    Result<v1::DaemonConfig> c = config::ReadDaemonConfig(path);
    if (c.ok() && !c->listen().empty()) {
      *source = path;
      return c->listen(0);
    }
  }
  *source = "default";
  return config::kDefaultListen;
}

Result<std::shared_ptr<grpc::Channel>> Connect(const std::string& address, const TlsOptions& tls) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  const bool use_tls = !tls.ca_file.empty() || !tls.cert_file.empty();
  if (!use_tls || address.rfind("unix:", 0) == 0) {
    return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
  }
  if (tls.cert_file.empty() != tls.key_file.empty()) {
    return InvalidArgumentError("--tls-cert and --tls-key go together (mutual TLS)");
  }
  grpc::SslCredentialsOptions o;
  if (!tls.ca_file.empty()) {
    ASSIGN_OR_RETURN(o.pem_root_certs, ReadFileToString(tls.ca_file));
  }
  if (!tls.cert_file.empty()) {
    ASSIGN_OR_RETURN(o.pem_cert_chain, ReadFileToString(tls.cert_file));
    ASSIGN_OR_RETURN(o.pem_private_key, ReadFileToString(tls.key_file));
  }
  if (!tls.server_name.empty()) args.SetSslTargetNameOverride(tls.server_name);
  return grpc::CreateCustomChannel(address, grpc::SslCredentials(o), args);
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
