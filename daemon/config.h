// The daemon's view of its configuration: the config library (config/daemon_config.h) plus the
// checks that need the runtime and storage: the policy and block-reader names.
#pragma once

#include <string>

#include "base/status.h"
#include "config/daemon_config.h"

namespace dcomp::server {

using config::ApplyDefaults;
using config::kDefaultListen;
using config::kDefaultMaxMessageBytes;
using config::kDefaultMaxPromptBytes;
using config::kDefaultMaxTokens;
using config::kDefaultQueueDepth;
using config::kDefaultShutdownGraceSeconds;
using config::kDefaultUnixSocketMode;
using config::ListenAddress;
using config::ParseListenAddress;
using config::ReadDaemonConfig;

// config::ValidateDaemonConfig, then the runtime's names: `policy` and `reader`.
Status ValidateDaemonConfig(const v1::DaemonConfig& config, const std::string& source);

}  // namespace dcomp::server
