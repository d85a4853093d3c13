// dcompd's server: the gRPC server (dcomp.v1.Dcomp, grpc.health.v1, reflection) on a unix socket
// and/or TCP, the OpenAI-compatible HTTP API, the Prometheus metrics endpoint and the model, which
// loads in the background while the server already answers. BuildAndStart starts them; Wait serves
// until SIGTERM or SIGINT, re-reads budget and limits on SIGHUP, keeps systemd informed (READY,
// STATUS, WATCHDOG, STOPPING) and drains within the grace period.
//
// Ownership: the Server owns all it starts (the Daemon, the health service, the gRPC and metrics
// servers, the loader thread) and keeps a copy of its ServerOptions. Thread-safety: none; call
// BuildAndStart and then Wait once, from the main thread. BuildAndStart blocks SIGTERM, SIGINT and
// SIGHUP in the calling thread (and ignores SIGPIPE) before it starts any thread, so it must run
// before any other thread starts: every thread then inherits the mask and Wait takes the signals
// synchronously.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "base/status.h"
#include "daemon/config.h"
#include "daemon/health.h"
#include "daemon/http_server.h"
#include "daemon/metrics.h"
#include "daemon/reflection.h"
#include "daemon/service.h"
#include "proto/config.pb.h"

namespace grpc {
class Server;
}  // namespace grpc

namespace dcomp::server {

// What dcompd's command line says about the config: the file to read and the options that
// override its fields. Numbers are kept as given; ResolveConfig checks them after reading the file
// (whose errors come first).
struct ConfigOverrides {
  std::optional<std::string> config_file;      // --config
  std::optional<std::string> model;            // --model
  std::vector<std::string> listen;             // --listen, repeatable; replaces `listen` if given
  std::optional<std::string> budget;           // --budget
  std::optional<std::string> policy;           // --policy
  std::optional<std::string> reader;           // --reader
  std::optional<std::string> metrics_port;     // --metrics-port
  std::optional<std::string> threads;          // --threads
  std::optional<std::string> ctx;              // --ctx
  std::optional<std::string> queue_depth;      // --queue-depth
  std::optional<std::string> max_batch;        // --max-batch
  std::optional<std::string> kv_cache_tokens;  // --kv-cache-tokens
  std::optional<std::string> kv_cache_type;    // --kv-cache-type
  std::optional<std::string> shutdown_grace;   // --shutdown-grace
  std::optional<std::string> chat_template;    // --chat-template
  std::optional<std::string> http_listen;      // --http-listen
  std::optional<std::string> api_key_file;     // --api-key-file
  bool direct = false;                         // --direct
};

// The config file (if any) with the overrides, defaults and validation. Errors name the file (or
// "command line") or the option.
Result<v1::DaemonConfig> ResolveConfig(const ConfigOverrides& overrides);

struct ServerOptions {
  // ResolveConfig(overrides): validated, defaults applied. What the server is started with
  // (listeners, TLS, metrics port, grace period) stays as given here for its lifetime.
  v1::DaemonConfig config;
  // Resolved again on SIGHUP (the file is re-read); the Daemon applies what can change.
  ConfigOverrides overrides;
};

class Server {
 public:
  // Blocks the signals Wait takes, starts the gRPC server and the metrics endpoint and the model's
  // load. On failure nothing is left running and the error's message is what dcompd logs; its code
  // is InvalidArgument when the config cannot be served as written (a TLS file: dcompd exits 2),
  // another code when serving could not start (exit 1).
  static Result<std::unique_ptr<Server>> BuildAndStart(const ServerOptions& options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Serves until SIGTERM or SIGINT (exit code 0) or a failed model load (1), then drains and
  // returns the exit code. When the model is still loading at that point, flushes the log and ends
  // the process with _exit(exit code) instead of returning (nothing to finish, no waiting for the
  // load).
  int Wait();

 private:
  explicit Server(const ServerOptions& options);

  Status StartGrpc();
  // Logs each listener once the server runs (unix sockets get their mode); a TCP listener that got
  // no port is an error.
  Status CheckListeners(const std::vector<ListenAddress>& addrs, const std::vector<int>& ports);
  Status StartMetrics();
  Status StartHttp();
  void StartLoading();
  void LoadModel();  // the loader thread

  void SetUpWatchdog();
  // The main loop: returns 0 on SIGTERM/SIGINT, 1 when the model failed to load.
  int ServeUntilSignal();
  void Reload();  // SIGHUP
  void NotifyProgress(std::chrono::steady_clock::time_point* last_status);
  void Drain();

  // In dependency order: destroyed in reverse, the loader thread and the servers go before the
  // services they call into.
  const ServerOptions options_;
  Daemon daemon_;
  HealthService health_;
  ReflectionV1 reflection_v1_{{"dcomp.v1.Dcomp", "grpc.health.v1.Health",
                               "grpc.reflection.v1.ServerReflection",
                               "grpc.reflection.v1alpha.ServerReflection"}};
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<MetricsServer> metrics_;
  std::unique_ptr<HttpServer> http_;
  std::atomic<int> load_state_{0};  // 0 loading, 1 serving, -1 failed
  std::thread loader_;

  bool watchdog_ = false;
  uint64_t watchdog_usec_ = 0;
  std::chrono::microseconds tick_{1000000};  // the main loop's period
};

}  // namespace dcomp::server
