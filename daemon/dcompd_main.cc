// dcompd: serves text generation from one model over gRPC (dcomp.v1.Dcomp, grpc.health.v1,
// reflection) on a unix socket and/or loopback TCP, under a RAM budget; Prometheus metrics on a
// loopback port; systemd notify (READY, STATUS, WATCHDOG, STOPPING); SIGHUP re-reads budget and
// limits; SIGTERM drains within the grace period and exits 0.
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/sinks/systemd_sink.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <thread>

#include "base/file.h"
#include "base/flags.h"
#include "daemon/config.h"
#include "daemon/health.h"
#include "daemon/metrics.h"
#include "daemon/service.h"

namespace dcomp::server {
namespace {

constexpr const char* kUsage =
    "usage: dcompd [--config FILE] [--model PATH] [--listen ADDR]... [--budget BYTES|PCT%]\n"
    "              [--metrics-port N] [options]\n"
    "ADDR is unix:/absolute/path or HOST:PORT (loopback unless the config sets allow_remote).\n"
    "Options override the config file (proto/config.proto; example: configs/dcompd.textproto).\n";

// The config file (if any) with the command line's overrides, defaults and validation.
Result<v1::DaemonConfig> BuildConfig(const Flags& f) {
  v1::DaemonConfig c;
  std::string source = "command line";
  if (auto path = f.Get("config")) {
    ASSIGN_OR_RETURN(c, ReadDaemonConfig(*path));
    source = *path;
  }
  if (auto v = f.Get("model")) c.set_model(*v);
  if (f.Has("listen")) {
    c.clear_listen();
    for (const std::string& a : f.GetAll("listen")) c.add_listen(a);
  }
  if (auto v = f.Get("budget")) c.set_budget(*v);
  if (auto v = f.Get("policy")) c.set_policy(*v);
  if (auto v = f.Get("reader")) c.set_reader(*v);
  const auto u32 = [&](const char* name, uint32_t max, auto setter) -> Status {
    if (!f.Has(name)) return Status::Ok();
    ASSIGN_OR_RETURN(int64_t v, f.GetInt(name, 0));
    if (v < 0 || v > max) {
      return InvalidArgumentError("--" + std::string(name) + ": expected 0.." +
                                  std::to_string(max) + ", got " + std::to_string(v));
    }
    setter(static_cast<uint32_t>(v));
    return Status::Ok();
  };
  RETURN_IF_ERROR(u32("metrics-port", 65535, [&](uint32_t v) { c.set_metrics_port(v); }));
  RETURN_IF_ERROR(u32("threads", 256, [&](uint32_t v) { c.set_threads(v); }));
  RETURN_IF_ERROR(u32("ctx", 1 << 20, [&](uint32_t v) { c.set_context_length(v); }));
  RETURN_IF_ERROR(u32("queue-depth", 1024, [&](uint32_t v) { c.set_queue_depth(v); }));
  RETURN_IF_ERROR(
      u32("shutdown-grace", 3600, [&](uint32_t v) { c.set_shutdown_grace_seconds(v); }));
  if (f.IsSet("direct")) c.set_direct(true);
  ApplyDefaults(&c);
  if (f.Has("config") && (f.Has("model") || f.Has("listen") || f.Has("budget"))) {
    source += " (with command-line overrides)";
  }
  RETURN_IF_ERROR(ValidateDaemonConfig(c, source));
  return c;
}

void SetUpLogging(const std::string& level) {
  std::shared_ptr<spdlog::logger> logger;
  if (std::getenv("JOURNAL_STREAM") != nullptr) {
    // Under systemd: native journal entries with priorities, no duplicate timestamps.
    logger = std::make_shared<spdlog::logger>(
        "dcompd", std::make_shared<spdlog::sinks::systemd_sink_mt>("dcompd"));
    logger->set_pattern("%v");
  } else {
    logger = std::make_shared<spdlog::logger>(
        "dcompd", std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
    logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  }
  logger->set_level(spdlog::level::from_str(level));
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
}

// A unix socket path another live process answers on must not be taken over (gRPC would unlink
// it); a stale one (ECONNREFUSED) is replaced.
Status CheckUnixSocket(const std::string& path) {
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  std::error_code ec;
  if (!std::filesystem::is_directory(parent, ec)) {
    return FailedPreconditionError("listen unix:" + path + ": directory " + parent.string() +
                                   " does not exist (systemd creates /run/dcompd through "
                                   "RuntimeDirectory=)");
  }
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::Ok();
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::strncpy(sa.sun_path, path.c_str(), sizeof(sa.sun_path) - 1);
  const int r = connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa));
  close(fd);
  if (r == 0) {
    return FailedPreconditionError("listen unix:" + path +
                                   ": another process (a running dcompd?) is serving on it");
  }
  return Status::Ok();
}

void Notify(const std::string& msg) { sd_notify(0, msg.c_str()); }

// Credentials of the TCP listeners: plaintext, TLS, or mutual TLS (config `tls`).
Result<std::shared_ptr<grpc::ServerCredentials>> TcpCredentials(const v1::DaemonConfig& c) {
  const v1::TlsConfig& tls = c.tls();
  if (tls.cert_file().empty()) return grpc::InsecureServerCredentials();
  ASSIGN_OR_RETURN(std::string cert, ReadFileToString(tls.cert_file()));
  ASSIGN_OR_RETURN(std::string key, ReadFileToString(tls.key_file()));
  grpc::SslServerCredentialsOptions o(
      tls.client_ca_file().empty() ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                                   : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  if (!tls.client_ca_file().empty()) {
    ASSIGN_OR_RETURN(o.pem_root_certs, ReadFileToString(tls.client_ca_file()));
  }
  o.pem_key_cert_pairs.push_back({key, cert});
  return grpc::SslServerCredentials(o);
}

int Run(int argc, char** argv) {
  Flags f;
  f.Value("config", "DaemonConfig text proto (configs/dcompd.textproto)")
      .Value("model", "model to serve (.dcm, .gguf, llama2.c .bin); overrides `model`")
      .Value("listen", "unix:/path or HOST:PORT; repeatable; replaces `listen`")
      .Value("budget", "RAM budget BYTES[K|M|G|KiB|MiB|GiB|KB|MB|GB] or PCT% of the INT8 size")
      .Value("metrics-port", "loopback port of GET /metrics (0: off)")
      .Value("threads", "compute + decode threads (default: all CPUs)")
      .Value("ctx", "context length (default: the model's)")
      .Value("queue-depth", "requests waiting or running at most")
      .Value("policy", "adaptive | all-compressed | stream-all | static-split | all-decoded")
      .Value("reader", "auto | io_uring | pread")
      .Switch("direct", "O_DIRECT block reads")
      .Value("shutdown-grace", "seconds SIGTERM lets running requests finish")
      .Value("log-level", "trace | debug | info | warn | error (default info)")
      .Switch("help", "this text");
  std::vector<std::string> args(argv + 1, argv + argc);
  if (Status s = f.Parse(args); !s.ok() || f.IsSet("help") || !f.positional().empty()) {
    if (!s.ok()) std::fprintf(stderr, "dcompd: %s\n", s.message().c_str());
    if (s.ok() && !f.positional().empty()) {
      std::fprintf(stderr, "dcompd: unexpected argument '%s'\n", f.positional()[0].c_str());
    }
    std::fprintf(f.IsSet("help") ? stdout : stderr, "%s\noptions:\n%s", kUsage, f.Help().c_str());
    return f.IsSet("help") && s.ok() ? 0 : 2;
  }
  SetUpLogging(f.GetOr("log-level", "info"));
  Result<v1::DaemonConfig> config = BuildConfig(f);
  if (!config.ok()) {
    spdlog::error("{}", config.status().message());
    return 2;
  }

  // Signals are taken synchronously by the main loop; block them before any thread starts.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  Daemon daemon(*config);
  HealthService health;
  // Validated with the config: parsed once here.
  std::vector<ListenAddress> addrs;
  for (const std::string& a : config->listen()) addrs.push_back(*ParseListenAddress(a));
  for (const ListenAddress& a : addrs) {
    if (a.is_unix) {
      if (Status s = CheckUnixSocket(a.path); !s.ok()) {
        spdlog::error("{}", s.message());
        return 1;
      }
    }
  }
  Result<std::shared_ptr<grpc::ServerCredentials>> tcp_creds = TcpCredentials(*config);
  if (!tcp_creds.ok()) {
    spdlog::error("{}", tcp_creds.status().message());
    return 2;
  }
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  std::vector<int> ports(addrs.size(), 0);
  for (size_t i = 0; i < addrs.size(); ++i) {
    builder.AddListeningPort(
        addrs[i].uri, addrs[i].is_unix ? grpc::InsecureServerCredentials() : *tcp_creds, &ports[i]);
  }
  builder.SetMaxReceiveMessageSize(static_cast<int>(config->limits().max_message_bytes()));
  builder.RegisterService(daemon.service());
  builder.RegisterService(&health);
  const mode_t old_umask = umask(~config->unix_socket_mode() & 0777);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  umask(old_umask);
  if (server == nullptr) {
    spdlog::error("cannot serve gRPC on {} (address in use or not allowed; see the log above)",
                  fmt::join(config->listen(), ", "));
    return 1;
  }
  for (size_t i = 0; i < addrs.size(); ++i) {
    const ListenAddress& a = addrs[i];
    if (a.is_unix) {
      chmod(a.path.c_str(), config->unix_socket_mode());
      spdlog::info("listening on {} (mode {:04o})", a.uri, config->unix_socket_mode());
      continue;
    }
    if (ports[i] == 0) {
      spdlog::error("cannot listen on {}", a.uri);
      return 1;
    }
    const v1::TlsConfig& tls = config->tls();
    spdlog::info("listening on {} (port {}; {})", a.uri, ports[i],
                 tls.cert_file().empty()        ? "plaintext"
                 : tls.client_ca_file().empty() ? "TLS"
                                                : "mutual TLS");
    if (!a.loopback && tls.client_ca_file().empty()) {
      spdlog::warn(
          "{} is reachable from other hosts without client authentication (set "
          "tls.client_ca_file for mutual TLS)",
          a.uri);
    }
  }
  std::unique_ptr<MetricsServer> metrics;
  if (config->metrics_port() != 0) {
    Result<std::unique_ptr<MetricsServer>> m =
        MetricsServer::Start(static_cast<int>(config->metrics_port()), [&daemon] {
          v1::StatusResponse s;
          daemon.FillStatus(&s);
          return PrometheusText(s);
        });
    if (!m.ok()) {
      spdlog::error("{}", m.status().message());
      return 1;
    }
    metrics = std::move(*m);
    spdlog::info("metrics on http://127.0.0.1:{}/metrics", metrics->port());
  }

  // The model loads while the server already answers (health NOT_SERVING, Generate UNAVAILABLE).
  std::atomic<int> load_state{0};  // 0 loading, 1 serving, -1 failed
  std::thread loader([&] {
    Status s = daemon.Load();
    if (!s.ok()) {
      spdlog::error("cannot serve the model: {}", s.message());
      load_state.store(-1);
      return;
    }
    health.SetServing(true);
    Notify("READY=1\nSTATUS=" + daemon.StatusLine());
    load_state.store(1);
  });
  Notify("STATUS=loading " + config->model());

  uint64_t watchdog_usec = 0;
  const bool watchdog = sd_watchdog_enabled(0, &watchdog_usec) > 0 && watchdog_usec > 0;
  const auto tick = watchdog
                        ? std::chrono::microseconds(std::max<uint64_t>(watchdog_usec / 4, 50000))
                        : std::chrono::microseconds(1000000);
  if (watchdog) spdlog::info("systemd watchdog: {} ms", watchdog_usec / 1000);
  auto last_status = std::chrono::steady_clock::now();
  int exit_code = 0;
  for (;;) {
    timespec ts{};
    ts.tv_sec = static_cast<time_t>(tick.count() / 1000000);
    ts.tv_nsec = static_cast<long>(tick.count() % 1000000) * 1000;
    siginfo_t info{};
    const int sig = sigtimedwait(&signals, &info, &ts);
    if (sig == SIGTERM || sig == SIGINT) {
      spdlog::info("{}: draining (grace {} s)", sig == SIGTERM ? "SIGTERM" : "SIGINT",
                   config->shutdown_grace_seconds());
      break;
    }
    if (sig == SIGHUP) {
      Result<v1::DaemonConfig> c = BuildConfig(f);
      if (!c.ok()) {
        spdlog::error("SIGHUP: config not reloaded: {}", c.status().message());
      } else if (Status s = daemon.Reload(*c); !s.ok()) {
        spdlog::error("SIGHUP: {}", s.message());
      } else {
        Notify("RELOADING=0\nSTATUS=" + daemon.StatusLine());
      }
    }
    if (load_state.load() < 0) {
      exit_code = 1;
      break;
    }
    if (watchdog && daemon.Progressing(std::chrono::microseconds(watchdog_usec))) {
      Notify("WATCHDOG=1");
    }
    if (std::chrono::steady_clock::now() - last_status > std::chrono::seconds(2)) {
      Notify("STATUS=" + daemon.StatusLine());
      last_status = std::chrono::steady_clock::now();
    }
  }

  Notify("STOPPING=1\nSTATUS=draining");
  // Drain: new Generate calls get UNAVAILABLE and health says NOT_SERVING; admitted requests run
  // to completion for up to the grace period; whatever is left is then cancelled (it stops within
  // one token) and the server closes every connection.
  daemon.StartDraining();
  health.Shutdown();
  const auto t0 = std::chrono::steady_clock::now();
  const auto grace = std::chrono::seconds(config->shutdown_grace_seconds());
  auto last_ping = t0;
  while (daemon.InFlight() > 0 && std::chrono::steady_clock::now() - t0 < grace) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    if (watchdog && std::chrono::steady_clock::now() - last_ping >= tick) {
      Notify("WATCHDOG=1");
      last_ping = std::chrono::steady_clock::now();
    }
  }
  if (const int left = daemon.InFlight(); left > 0) {
    spdlog::warn("{} request(s) still queued or running after the {} s grace period: cancelled",
                 left, config->shutdown_grace_seconds());
  }
  server->Shutdown(std::chrono::system_clock::now());
  server->Wait();
  metrics.reset();
  spdlog::info("stopped in {:.2f} s",
               std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  if (load_state.load() == 0) {
    // Still loading: nothing to finish, do not wait for the load.
    spdlog::default_logger()->flush();
    _exit(exit_code);
  }
  loader.join();
  return exit_code;
}

}  // namespace
}  // namespace dcomp::server

int main(int argc, char** argv) { return dcomp::server::Run(argc, argv); }
