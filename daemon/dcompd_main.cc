// dcompd: serves text generation from one model over gRPC (dcomp.v1.Dcomp, grpc.health.v1,
// reflection) on a unix socket and/or loopback TCP, under a RAM budget; Prometheus metrics on a
// loopback port; systemd notify (READY, STATUS, WATCHDOG, STOPPING); SIGHUP re-reads budget and
// limits; SIGTERM drains within the grace period and exits 0. The serving is daemon/server.h; this
// file parses the command line and sets up logging.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/sinks/systemd_sink.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "base/flags.h"
#include "daemon/server.h"

namespace dcomp::server {
namespace {

constexpr const char* kUsage =
    "usage: dcompd [--config FILE] [--model PATH] [--listen ADDR]... [--budget BYTES|PCT%]\n"
    "              [--metrics-port N] [options]\n"
    "ADDR is unix:/absolute/path or HOST:PORT (loopback unless the config sets allow_remote).\n"
    "Options override the config file (proto/config.proto; example: configs/dcompd.textproto).\n";

void DeclareFlags(Flags* f) {
  f->Value("config", "DaemonConfig text proto (configs/dcompd.textproto)")
      .Value("model", "model to serve (.dcm, .gguf, llama2.c .bin); overrides `model`")
      .Value("listen", "unix:/path or HOST:PORT; repeatable; replaces `listen`")
      .Value("budget", "RAM budget BYTES[K|M|G|KiB|MiB|GiB|KB|MB|GB] or PCT% of the INT8 size")
      .Value("metrics-port", "loopback port of GET /metrics (0: off)")
      .Value("threads", "compute + decode threads (default: all CPUs)")
      .Value("ctx", "context length (default: the model's)")
      .Value("queue-depth", "requests waiting or running at most")
      .Value("max-batch", "requests generating together (default 8)")
      .Value("kv-cache-tokens", "KV-cache positions for all running requests (default 2 x ctx)")
      .Value("kv-cache-type", "f32 | int8 (default f32)")
      .Value("policy",
             "adaptive | all-compressed | stream-all | static-split | all-decoded | all-packed")
      .Value("reader", "auto | io_uring | pread")
      .Switch("direct", "O_DIRECT block reads")
      .Value("shutdown-grace", "seconds SIGTERM lets running requests finish")
      .Value(
          "chat-template",
          "chatml | llama3 | llama2 | zephyr | gemma | phi3: Chat requests naming none (default: "
          "recognised from the model)")
      .Value("http-listen", "HOST:PORT of the OpenAI-compatible HTTP API (default: off)")
      .Value("api-key-file", "file with the key HTTP clients send as 'Authorization: Bearer KEY'")
      .Value("log-level", "trace | debug | info | warn | error (default info)")
      .Switch("version", "print the version and exit")
      .Switch("help", "this text");
}

ConfigOverrides OverridesFrom(const Flags& f) {
  ConfigOverrides o;
  o.config_file = f.Get("config");
  o.model = f.Get("model");
  o.listen = f.GetAll("listen");
  o.budget = f.Get("budget");
  o.policy = f.Get("policy");
  o.reader = f.Get("reader");
  o.metrics_port = f.Get("metrics-port");
  o.threads = f.Get("threads");
  o.ctx = f.Get("ctx");
  o.queue_depth = f.Get("queue-depth");
  o.max_batch = f.Get("max-batch");
  o.kv_cache_tokens = f.Get("kv-cache-tokens");
  o.kv_cache_type = f.Get("kv-cache-type");
  o.shutdown_grace = f.Get("shutdown-grace");
  o.chat_template = f.Get("chat-template");
  o.http_listen = f.Get("http-listen");
  o.api_key_file = f.Get("api-key-file");
  o.direct = f.IsSet("direct");
  return o;
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

}  // namespace
}  // namespace dcomp::server

int main(int argc, char** argv) {
  using namespace dcomp;
  using namespace dcomp::server;
  Flags f;
  DeclareFlags(&f);
  std::vector<std::string> args(argv + 1, argv + argc);
  for (std::string& a : args) {
    if (a == "-h") a = "--help";
  }
  const Status s = f.Parse(args);
  if (s.ok() && f.IsSet("version")) {
    std::printf("dcompd %s\n", DCOMP_VERSION);
    return 0;
  }
  if (!s.ok() || f.IsSet("help") || !f.positional().empty()) {
    if (!s.ok()) std::fprintf(stderr, "dcompd: %s\n", s.message().c_str());
    if (s.ok() && !f.positional().empty()) {
      std::fprintf(stderr, "dcompd: unexpected argument '%s'\n", f.positional()[0].c_str());
    }
    std::fprintf(f.IsSet("help") ? stdout : stderr, "%s\noptions:\n%s", kUsage, f.Help().c_str());
    return f.IsSet("help") && s.ok() ? 0 : 2;
  }
  SetUpLogging(f.GetOr("log-level", "info"));
  ServerOptions options;
  options.overrides = OverridesFrom(f);
  Result<v1::DaemonConfig> config = ResolveConfig(options.overrides);
  if (!config.ok()) {
    spdlog::error("{}", config.status().message());
    return 2;
  }
  options.config = *std::move(config);
  Result<std::unique_ptr<Server>> started = Server::BuildAndStart(options);
  if (!started.ok()) {
    spdlog::error("{}", started.status().message());
    return started.status().code() == StatusCode::kInvalidArgument ? 2 : 1;
  }
  return (*started)->Wait();
}
