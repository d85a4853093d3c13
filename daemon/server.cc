#include "daemon/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <functional>

#include "base/file.h"
#include "base/flags.h"

namespace dcomp::server {
namespace {

// The signals Wait takes synchronously.
sigset_t HandledSignals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  return signals;
}

// Sets a uint32 field from a numeric override ("--NAME", 0..max) when it was given.
Status ApplyU32(const std::optional<std::string>& value, const char* name, uint32_t max,
                const std::function<void(uint32_t)>& setter) {
  if (!value) return Status::Ok();
  ASSIGN_OR_RETURN(int64_t v, ParseInt(*value, "--" + std::string(name)));
  if (v < 0 || v > max) {
    return InvalidArgumentError("--" + std::string(name) + ": expected 0.." + std::to_string(max) +
                                ", got " + std::to_string(v));
  }
  setter(static_cast<uint32_t>(v));
  return Status::Ok();
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

}  // namespace

Result<v1::DaemonConfig> ResolveConfig(const ConfigOverrides& o) {
  v1::DaemonConfig c;
  std::string source = "command line";
  if (o.config_file) {
    ASSIGN_OR_RETURN(c, ReadDaemonConfig(*o.config_file));
    source = *o.config_file;
  }
  if (o.model) c.set_model(*o.model);
  if (!o.listen.empty()) {
    c.clear_listen();
    for (const std::string& a : o.listen) c.add_listen(a);
  }
  if (o.budget) c.set_budget(*o.budget);
  if (o.policy) c.set_policy(*o.policy);
  if (o.reader) c.set_reader(*o.reader);
  RETURN_IF_ERROR(
      ApplyU32(o.metrics_port, "metrics-port", 65535, [&](uint32_t v) { c.set_metrics_port(v); }));
  RETURN_IF_ERROR(ApplyU32(o.threads, "threads", 256, [&](uint32_t v) { c.set_threads(v); }));
  RETURN_IF_ERROR(ApplyU32(o.ctx, "ctx", 1 << 20, [&](uint32_t v) { c.set_context_length(v); }));
  RETURN_IF_ERROR(
      ApplyU32(o.queue_depth, "queue-depth", 1024, [&](uint32_t v) { c.set_queue_depth(v); }));
  RETURN_IF_ERROR(ApplyU32(o.max_batch, "max-batch", config::kMaxMaxBatch,
                           [&](uint32_t v) { c.set_max_batch(v); }));
  RETURN_IF_ERROR(ApplyU32(o.kv_cache_tokens, "kv-cache-tokens", 1 << 24,
                           [&](uint32_t v) { c.set_kv_cache_tokens(v); }));
  if (o.kv_cache_type) c.set_kv_cache_type(*o.kv_cache_type);
  if (o.chat_template) c.set_chat_template(*o.chat_template);
  if (o.http_listen) c.set_http_listen(*o.http_listen);
  if (o.api_key_file) c.set_api_key_file(*o.api_key_file);
  RETURN_IF_ERROR(ApplyU32(o.shutdown_grace, "shutdown-grace", 3600,
                           [&](uint32_t v) { c.set_shutdown_grace_seconds(v); }));
  if (o.direct) c.set_direct(true);
  ApplyDefaults(&c);
  if (o.config_file && (o.model || !o.listen.empty() || o.budget)) {
    source += " (with command-line overrides)";
  }
  RETURN_IF_ERROR(ValidateDaemonConfig(c, source));
  return c;
}

Server::Server(const ServerOptions& options) : options_(options), daemon_(options.config) {}

Server::~Server() {
  // Wait joins the loader (or ends the process); this covers a Server that never waited.
  if (loader_.joinable()) loader_.join();
}

Result<std::unique_ptr<Server>> Server::BuildAndStart(const ServerOptions& options) {
  // Signals are taken synchronously by the main loop; block them before any thread starts.
  const sigset_t signals = HandledSignals();
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  std::unique_ptr<Server> server(new Server(options));
  RETURN_IF_ERROR(server->StartGrpc());
  RETURN_IF_ERROR(server->StartMetrics());
  RETURN_IF_ERROR(server->StartHttp());
  server->StartLoading();
  return server;
}

Status Server::StartGrpc() {
  const v1::DaemonConfig& config = options_.config;
  // Validated with the config: parsed once here.
  std::vector<ListenAddress> addrs;
  for (const std::string& a : config.listen()) addrs.push_back(*ParseListenAddress(a));
  for (const ListenAddress& a : addrs) {
    if (a.is_unix) RETURN_IF_ERROR(CheckUnixSocket(a.path));
  }
  Result<std::shared_ptr<grpc::ServerCredentials>> tcp_creds = TcpCredentials(config);
  if (!tcp_creds.ok()) {
    return InvalidArgumentError(tcp_creds.status().message());  // exit 2, see BuildAndStart
  }
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  std::vector<int> ports(addrs.size(), 0);
  for (size_t i = 0; i < addrs.size(); ++i) {
    builder.AddListeningPort(
        addrs[i].uri, addrs[i].is_unix ? grpc::InsecureServerCredentials() : *tcp_creds, &ports[i]);
  }
  builder.SetMaxReceiveMessageSize(static_cast<int>(config.limits().max_message_bytes()));
  builder.RegisterService(daemon_.service());
  builder.RegisterService(&health_);
  builder.RegisterService(&reflection_v1_);  // v1alpha: gRPC's plugin
  const mode_t old_umask = umask(~config.unix_socket_mode() & 0777);
  server_ = builder.BuildAndStart();
  umask(old_umask);
  if (server_ == nullptr) {
    return UnavailableError(
        fmt::format("cannot serve gRPC on {} (address in use or not allowed; see the log above)",
                    fmt::join(config.listen(), ", ")));
  }
  return CheckListeners(addrs, ports);
}

Status Server::CheckListeners(const std::vector<ListenAddress>& addrs,
                              const std::vector<int>& ports) {
  const v1::DaemonConfig& config = options_.config;
  for (size_t i = 0; i < addrs.size(); ++i) {
    const ListenAddress& a = addrs[i];
    if (a.is_unix) {
      chmod(a.path.c_str(), config.unix_socket_mode());
      spdlog::info("listening on {} (mode {:04o})", a.uri, config.unix_socket_mode());
      continue;
    }
    if (ports[i] == 0) return UnavailableError("cannot listen on " + a.uri);
    const v1::TlsConfig& tls = config.tls();
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
  return Status::Ok();
}

Status Server::StartMetrics() {
  if (options_.config.metrics_port() == 0) return Status::Ok();
  Result<std::unique_ptr<MetricsServer>> m =
      MetricsServer::Start(static_cast<int>(options_.config.metrics_port()), [this] {
        v1::StatusResponse s;
        daemon_.FillStatus(&s);
        return PrometheusText(s);
      });
  if (!m.ok()) return UnavailableError(m.status().message());  // exit 1, see BuildAndStart
  metrics_ = std::move(*m);
  spdlog::info("metrics on http://127.0.0.1:{}/metrics", metrics_->port());
  return Status::Ok();
}

Status Server::StartHttp() {
  const v1::DaemonConfig& c = options_.config;
  if (c.http_listen().empty()) return Status::Ok();
  const ListenAddress a = *ParseListenAddress(c.http_listen());  // validated with the config
  HttpServer::Options o;
  o.host = a.host;
  o.port = a.port;
  o.model_name = std::filesystem::path(c.model()).filename().string();
  o.created = static_cast<int64_t>(std::time(nullptr));
  o.max_body_bytes = c.limits().max_message_bytes();
  o.max_connections = static_cast<int>(std::max<uint32_t>(64, 2 * c.queue_depth()));
  if (!c.api_key_file().empty()) {
    Result<std::string> key = ReadApiKey(c.api_key_file());
    if (!key.ok()) return InvalidArgumentError("api_key_file: " + key.status().message());
    o.api_key = *key;
  }
  o.cert_file = c.tls().cert_file();
  o.key_file = c.tls().key_file();
  o.client_ca_file = c.tls().client_ca_file();
  Result<std::unique_ptr<HttpServer>> h = HttpServer::Start(&daemon_, o);
  if (!h.ok()) return h.status();  // a TLS file: InvalidArgument, exit 2; the address: 1
  http_ = std::move(*h);
  spdlog::info("HTTP API (OpenAI-compatible) on {}://{}:{} ({}; {})",
               o.cert_file.empty() ? "http" : "https", a.host, http_->port(),
               o.cert_file.empty()        ? "plaintext"
               : o.client_ca_file.empty() ? "TLS"
                                          : "mutual TLS",
               o.api_key.empty() ? "no API key" : "API key required");
  if (!a.loopback && o.api_key.empty() && o.client_ca_file.empty()) {
    spdlog::warn("{} is reachable from other hosts without authentication (set api_key_file)",
                 c.http_listen());
  }
  return Status::Ok();
}

void Server::StartLoading() {
  // The model loads while the server already answers (health NOT_SERVING, Generate UNAVAILABLE).
  loader_ = std::thread([this] { LoadModel(); });
  Notify("STATUS=loading " + options_.config.model());
}

void Server::LoadModel() {
  Status s = daemon_.Load();
  if (!s.ok()) {
    spdlog::error("cannot serve the model: {}", s.message());
    load_state_.store(-1);
    return;
  }
  health_.SetServing(true);
  Notify("READY=1\nSTATUS=" + daemon_.StatusLine());
  load_state_.store(1);
}

int Server::Wait() {
  SetUpWatchdog();
  const int exit_code = ServeUntilSignal();
  Drain();
  if (load_state_.load() == 0) {
    // Still loading: nothing to finish, do not wait for the load.
    spdlog::default_logger()->flush();
    _exit(exit_code);
  }
  loader_.join();
  return exit_code;
}

void Server::SetUpWatchdog() {
  watchdog_ = sd_watchdog_enabled(0, &watchdog_usec_) > 0 && watchdog_usec_ > 0;
  tick_ = watchdog_ ? std::chrono::microseconds(std::max<uint64_t>(watchdog_usec_ / 4, 50000))
                    : std::chrono::microseconds(1000000);
  if (watchdog_) spdlog::info("systemd watchdog: {} ms", watchdog_usec_ / 1000);
}

int Server::ServeUntilSignal() {
  const sigset_t signals = HandledSignals();
  auto last_status = std::chrono::steady_clock::now();
  for (;;) {
    timespec ts{};
    ts.tv_sec = static_cast<time_t>(tick_.count() / 1000000);
    ts.tv_nsec = static_cast<long>(tick_.count() % 1000000) * 1000;
    siginfo_t info{};
    const int sig = sigtimedwait(&signals, &info, &ts);
    if (sig == SIGTERM || sig == SIGINT) {
      spdlog::info("{}: draining (grace {} s)", sig == SIGTERM ? "SIGTERM" : "SIGINT",
                   options_.config.shutdown_grace_seconds());
      return 0;
    }
    if (sig == SIGHUP) Reload();
    if (load_state_.load() < 0) return 1;
    NotifyProgress(&last_status);
  }
}

void Server::Reload() {
  Result<v1::DaemonConfig> c = ResolveConfig(options_.overrides);
  if (!c.ok()) {
    spdlog::error("SIGHUP: config not reloaded: {}", c.status().message());
  } else if (Status s = daemon_.Reload(*c); !s.ok()) {
    spdlog::error("SIGHUP: {}", s.message());
  } else {
    Notify("RELOADING=0\nSTATUS=" + daemon_.StatusLine());
  }
}

// Pings the watchdog while requests make progress; refreshes STATUS= every 2 s.
void Server::NotifyProgress(std::chrono::steady_clock::time_point* last_status) {
  if (watchdog_ && daemon_.Progressing(std::chrono::microseconds(watchdog_usec_))) {
    Notify("WATCHDOG=1");
  }
  if (std::chrono::steady_clock::now() - *last_status > std::chrono::seconds(2)) {
    Notify("STATUS=" + daemon_.StatusLine());
    *last_status = std::chrono::steady_clock::now();
  }
}

void Server::Drain() {
  Notify("STOPPING=1\nSTATUS=draining");
  // Drain: new Generate calls get UNAVAILABLE and health says NOT_SERVING; admitted requests run
  // to completion for up to the grace period; whatever is left is then cancelled (it stops within
  // one token) and the server closes every connection.
  daemon_.StartDraining();
  health_.Shutdown();
  const auto t0 = std::chrono::steady_clock::now();
  const auto grace = std::chrono::seconds(options_.config.shutdown_grace_seconds());
  auto last_ping = t0;
  while (daemon_.InFlight() > 0 && std::chrono::steady_clock::now() - t0 < grace) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    if (watchdog_ && std::chrono::steady_clock::now() - last_ping >= tick_) {
      Notify("WATCHDOG=1");
      last_ping = std::chrono::steady_clock::now();
    }
  }
  if (const int left = daemon_.InFlight(); left > 0) {
    spdlog::warn("{} request(s) still queued or running after the {} s grace period: cancelled",
                 left, options_.config.shutdown_grace_seconds());
  }
  if (http_) http_->Stop();  // cancels what still runs over HTTP
  server_->Shutdown(std::chrono::system_clock::now());
  server_->Wait();
  http_.reset();
  metrics_.reset();
  spdlog::info("stopped in {:.2f} s",
               std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
}

}  // namespace dcomp::server
