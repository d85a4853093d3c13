// The client side shared by dcompctl (and usable by other C++ clients): which address to talk to,
// a channel to it, and error messages that say what to do when the daemon is down.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <optional>
#include <string>

#include "base/status.h"

namespace dcomp::client {

inline constexpr const char* kDefaultConfigPath = "/etc/dcomp/dcompd.textproto";

// The daemon's address: `explicit_address` if given, else $DCOMPCTL_ADDRESS, else the first
// `listen` entry of the daemon config (`config_path`, or /etc/dcomp/dcompd.textproto when it
// exists), else dcompd's default unix:/run/dcompd/dcompd.sock. `source` says which one was used.
std::string ResolveAddress(const std::optional<std::string>& explicit_address,
                           const std::optional<std::string>& config_path, std::string* source);

// TLS for TCP addresses (unix sockets are always plaintext).
struct TlsOptions {
  std::string ca_file;      // PEM CA bundle that signed the daemon's certificate; set: use TLS
  std::string cert_file;    // PEM client certificate chain (mutual TLS)
  std::string key_file;     // its private key
  std::string server_name;  // name to verify instead of the address's host
};

// A channel to `address`; errors name the TLS file that cannot be read.
Result<std::shared_ptr<grpc::Channel>> Connect(const std::string& address, const TlsOptions& tls);

// "cannot reach dcompd at ADDR (...): is it running? ..." for UNAVAILABLE, else "CODE: message".
std::string DescribeError(const grpc::Status& s, const std::string& address);

}  // namespace dcomp::client
