// dcompd's configuration: reading a DaemonConfig (proto/config.proto) from protobuf text format,
// defaults for unset fields, listen addresses, and validation whose errors name the file, the field
// and what was expected. A small library (proto + base) so that dcompctl reads the daemon's config
// with the daemon's reader and defaults without linking the daemon. Checks that need the runtime
// (policy and reader names) are the daemon's: daemon/config.h.
#pragma once

#include <string>

#include "base/status.h"
#include "proto/config.pb.h"

namespace dcomp::config {

inline constexpr const char* kDefaultListen = "unix:/run/dcompd/dcompd.sock";
inline constexpr uint32_t kDefaultUnixSocketMode = 0660;
inline constexpr uint32_t kDefaultQueueDepth = 16;
inline constexpr uint32_t kDefaultMaxBatch = 8;
inline constexpr uint32_t kMaxMaxBatch = 64;  // Transformer::kMaxBatch
inline constexpr uint32_t kDefaultMaxPromptBytes = 16384;
inline constexpr uint32_t kDefaultMaxTokens = 1024;
inline constexpr uint32_t kDefaultMaxMessageBytes = 65536;
inline constexpr uint32_t kDefaultShutdownGraceSeconds = 10;

// A gRPC listen address: "unix:/abs/path" or "HOST:PORT" (IPv4, "[IPv6]" or "localhost").
struct ListenAddress {
  bool is_unix = false;
  std::string path;  // unix
  std::string host;  // tcp, without brackets
  int port = 0;      // tcp; 0 = any free port
  bool loopback = false;
  std::string uri;  // as gRPC wants it
};
Result<ListenAddress> ParseListenAddress(const std::string& addr);

// Parses `path` (text format). Errors are "PATH:LINE:COLUMN: message".
Result<v1::DaemonConfig> ReadDaemonConfig(const std::string& path);
// Fills unset fields with their defaults (see config.proto).
void ApplyDefaults(v1::DaemonConfig* config);
// Checks every field after ApplyDefaults, except the runtime's names (policy, reader; see
// daemon/config.h); errors are "SOURCE: field `name`: what was expected, what
// was given". `source` names where the config came from (a file, "command line").
Status ValidateDaemonConfig(const v1::DaemonConfig& config, const std::string& source);

// INVALID_ARGUMENT "SOURCE: field `FIELD`: WHAT", the form of every config error.
Status FieldError(const std::string& source, const std::string& field, const std::string& what);

}  // namespace dcomp::config
