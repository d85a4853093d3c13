// Prometheus metrics for dcompd: the figures of the Status RPC in the text exposition format
// (version 0.0.4), served on a loopback HTTP port (GET /metrics) by Boost.Beast on its own Asio
// thread.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "base/status.h"
#include "proto/dcomp.pb.h"

namespace dcomp::server {

// The exposition text of a Status snapshot.
std::string PrometheusText(const v1::StatusResponse& s);

class MetricsServer {
 public:
  // Listens on 127.0.0.1:`port` (0: a free port, see port()) and answers GET /metrics with
  // `render()`; other paths get 404, other methods 405.
  static Result<std::unique_ptr<MetricsServer>> Start(int port,
                                                      std::function<std::string()> render);
  ~MetricsServer();  // stops the thread and closes every connection
  int port() const;

  struct Impl;

 private:
  MetricsServer() = default;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dcomp::server
