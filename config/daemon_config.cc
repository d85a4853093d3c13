#include "config/daemon_config.h"

#include <arpa/inet.h>
#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/text_format.h>

#include <set>

#include "base/bytes.h"
#include "base/file.h"
#include "base/flags.h"

namespace dcomp::config {
namespace {

class Collector : public google::protobuf::io::ErrorCollector {
 public:
  explicit Collector(std::string path) : path_(std::move(path)) {}
  void AddError(int line, google::protobuf::io::ColumnNumber column,
                const std::string& message) override {
    if (first_.empty()) {
      first_ = path_ + ":" + std::to_string(line + 1) + ":" + std::to_string(column + 1) + ": " +
               message;
    }
  }
  const std::string& first() const { return first_; }

 private:
  std::string path_;
  std::string first_;
};

bool IsLoopbackHost(const std::string& host) {
  if (host == "localhost") return true;
  in_addr a4{};
  if (inet_pton(AF_INET, host.c_str(), &a4) == 1) return (ntohl(a4.s_addr) >> 24) == 127;
  in6_addr a6{};
  if (inet_pton(AF_INET6, host.c_str(), &a6) == 1) return IN6_IS_ADDR_LOOPBACK(&a6);
  return false;
}

Status CheckRange(const std::string& source, const std::string& field, uint64_t v, uint64_t lo,
                  uint64_t hi) {
  if (v < lo || v > hi) {
    return FieldError(source, field,
                      "expected " + std::to_string(lo) + ".." + std::to_string(hi) + ", got " +
                          std::to_string(v));
  }
  return Status::Ok();
}

}  // namespace

Status FieldError(const std::string& source, const std::string& field, const std::string& what) {
  return InvalidArgumentError(source + ": field `" + field + "`: " + what);
}

Result<ListenAddress> ParseListenAddress(const std::string& addr) {
  ListenAddress a;
  const std::string expected =
      "expected unix:/absolute/path or HOST:PORT (e.g. 127.0.0.1:50051), got '" + addr + "'";
  if (addr.rfind("unix:", 0) == 0) {
    a.is_unix = true;
    a.path = addr.substr(5);
    if (a.path.empty() || a.path[0] != '/') return InvalidArgumentError(expected);
    if (a.path.size() >= 108) {  // sun_path
      return InvalidArgumentError("unix socket path longer than 107 bytes: '" + a.path + "'");
    }
    a.loopback = true;
    a.uri = addr;
    return a;
  }
  const size_t colon = addr.rfind(':');
  if (colon == std::string::npos || colon == 0) return InvalidArgumentError(expected);
  std::string host = addr.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  } else if (host.find(':') != std::string::npos) {
    return InvalidArgumentError(expected + " (IPv6 hosts go in brackets: [::1]:PORT)");
  }
  Result<int64_t> port = ParseInt(addr.substr(colon + 1), "port");
  if (!port.ok() || *port < 0 || *port > 65535) {
    return InvalidArgumentError(expected + " (port must be 0..65535)");
  }
  in_addr a4{};
  in6_addr a6{};
  if (host != "localhost" && inet_pton(AF_INET, host.c_str(), &a4) != 1 &&
      inet_pton(AF_INET6, host.c_str(), &a6) != 1) {
    return InvalidArgumentError(expected + " (HOST must be an IP address or localhost)");
  }
  a.host = host;
  a.port = static_cast<int>(*port);
  a.loopback = IsLoopbackHost(host);
  a.uri = addr;
  return a;
}

Result<v1::DaemonConfig> ReadDaemonConfig(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  v1::DaemonConfig config;
  google::protobuf::TextFormat::Parser parser;
  Collector errors(path);
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(text, &config)) {
    return InvalidArgumentError(errors.first().empty() ? path + ": not a DaemonConfig text proto"
                                                       : errors.first());
  }
  return config;
}

void ApplyDefaults(v1::DaemonConfig* c) {
  if (c->listen().empty()) c->add_listen(kDefaultListen);
  if (c->unix_socket_mode() == 0) c->set_unix_socket_mode(kDefaultUnixSocketMode);
  if (c->budget().empty()) c->set_budget("0");
  if (c->policy().empty()) c->set_policy("adaptive");
  if (c->reader().empty()) c->set_reader("auto");
  if (c->queue_depth() == 0) c->set_queue_depth(kDefaultQueueDepth);
  if (c->max_batch() == 0) c->set_max_batch(kDefaultMaxBatch);
  if (c->kv_cache_type().empty()) c->set_kv_cache_type("f32");
  v1::RequestLimits* l = c->mutable_limits();
  if (l->max_prompt_bytes() == 0) l->set_max_prompt_bytes(kDefaultMaxPromptBytes);
  if (l->max_tokens() == 0) l->set_max_tokens(kDefaultMaxTokens);
  if (l->max_message_bytes() == 0) l->set_max_message_bytes(kDefaultMaxMessageBytes);
  if (c->shutdown_grace_seconds() == 0) c->set_shutdown_grace_seconds(kDefaultShutdownGraceSeconds);
}

Status ValidateDaemonConfig(const v1::DaemonConfig& c, const std::string& source) {
  if (c.model().empty()) {
    return FieldError(source, "model",
                      "required: the path of the model to serve (.dcm, .gguf, "
                      "llama2.c .bin)");
  }
  std::set<std::string> seen;
  for (const std::string& addr : c.listen()) {
    Result<ListenAddress> a = ParseListenAddress(addr);
    if (!a.ok()) return FieldError(source, "listen", a.status().message());
    if (!a->loopback && !c.allow_remote()) {
      return FieldError(source, "listen",
                        "'" + addr +
                            "' is not a loopback address; the daemon has no authentication, set "
                            "allow_remote: true to serve other hosts anyway");
    }
    if (!seen.insert(a->uri).second) return FieldError(source, "listen", "'" + addr + "' twice");
  }
  if (!c.http_listen().empty()) {
    Result<ListenAddress> a = ParseListenAddress(c.http_listen());
    if (!a.ok()) return FieldError(source, "http_listen", a.status().message());
    if (a->is_unix) {
      return FieldError(source, "http_listen",
                        "expected HOST:PORT (e.g. 127.0.0.1:8080), got '" + c.http_listen() + "'");
    }
    if (!a->loopback && !c.allow_remote()) {
      return FieldError(source, "http_listen",
                        "'" + c.http_listen() +
                            "' is not a loopback address; set allow_remote: true (and "
                            "api_key_file or mutual TLS) to serve other hosts");
    }
    for (const std::string& addr : c.listen()) {
      Result<ListenAddress> g = ParseListenAddress(addr);
      if (g.ok() && !g->is_unix && g->port != 0 && g->port == a->port &&
          (g->host == a->host || g->host == "0.0.0.0" || a->host == "0.0.0.0")) {
        return FieldError(source, "http_listen",
                          "'" + c.http_listen() + "' is also a gRPC `listen` address");
      }
    }
  }
  RETURN_IF_ERROR(CheckRange(source, "unix_socket_mode", c.unix_socket_mode(), 0, 0777));
  if (Result<BudgetSpec> b = ParseBudgetSpec(c.budget()); !b.ok()) {
    return FieldError(source, "budget", b.status().message());
  }
  RETURN_IF_ERROR(CheckRange(source, "threads", c.threads(), 0, 256));
  RETURN_IF_ERROR(CheckRange(source, "context_length", c.context_length(), 0, 1 << 20));
  RETURN_IF_ERROR(CheckRange(source, "queue_depth", c.queue_depth(), 1, 1024));
  RETURN_IF_ERROR(CheckRange(source, "max_batch", c.max_batch(), 1, kMaxMaxBatch));
  RETURN_IF_ERROR(CheckRange(source, "kv_cache_tokens", c.kv_cache_tokens(), 0, 1 << 24));
  if (c.kv_cache_type() != "f32" && c.kv_cache_type() != "int8") {
    return FieldError(source, "kv_cache_type",
                      "expected \"f32\" or \"int8\", got \"" + c.kv_cache_type() + "\"");
  }
  const v1::RequestLimits& l = c.limits();
  RETURN_IF_ERROR(CheckRange(source, "limits.max_prompt_bytes", l.max_prompt_bytes(), 1, 16 << 20));
  RETURN_IF_ERROR(CheckRange(source, "limits.max_tokens", l.max_tokens(), 1, 1 << 20));
  RETURN_IF_ERROR(
      CheckRange(source, "limits.max_message_bytes", l.max_message_bytes(), 1024, 64 << 20));
  if (l.max_message_bytes() < l.max_prompt_bytes()) {
    return FieldError(source, "limits.max_message_bytes",
                      "must be at least limits.max_prompt_bytes (" +
                          std::to_string(l.max_prompt_bytes()) + "), got " +
                          std::to_string(l.max_message_bytes()));
  }
  RETURN_IF_ERROR(CheckRange(source, "metrics_port", c.metrics_port(), 0, 65535));
  const v1::TlsConfig& tls = c.tls();
  if (tls.cert_file().empty() != tls.key_file().empty()) {
    return FieldError(source, tls.cert_file().empty() ? "tls.cert_file" : "tls.key_file",
                      "tls.cert_file and tls.key_file go together (the server's certificate chain "
                      "and its private key, PEM)");
  }
  if (!tls.client_ca_file().empty() && tls.cert_file().empty()) {
    return FieldError(source, "tls.client_ca_file",
                      "mutual TLS needs the server's own tls.cert_file and tls.key_file");
  }
  for (const auto& [field, path] :
       {std::pair<const char*, std::string>{"tls.cert_file", tls.cert_file()},
        {"tls.key_file", tls.key_file()},
        {"tls.client_ca_file", tls.client_ca_file()}}) {
    if (path.empty()) continue;
    Result<std::string> pem = ReadFileToString(path);
    if (!pem.ok()) return FieldError(source, field, pem.status().message());
    if (pem->find("-----BEGIN ") == std::string::npos) {
      return FieldError(source, field, "'" + path + "' is not a PEM file (no -----BEGIN line)");
    }
  }
  RETURN_IF_ERROR(
      CheckRange(source, "shutdown_grace_seconds", c.shutdown_grace_seconds(), 1, 3600));
  return Status::Ok();
}

}  // namespace dcomp::config
