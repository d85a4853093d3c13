// dcompd's OpenAI-compatible HTTP API (Boost.Beast): GET /health, GET /v1/models[/ID], POST
// /v1/completions and POST /v1/chat/completions, streamed as server-sent events or not. A request
// is translated into the gRPC request (daemon/openai.h) and runs through Daemon::Run, so both
// protocols share validation, the queue, batching, limits, the log and the metrics (protocol
// "http"). Optional bearer-token auth on /v1/*, and TLS (mutual TLS included) as for gRPC.
//
// Threads: one accepts; each connection (keep-alive, at most `max_connections`) has its own thread
// and Asio context, in which every socket operation runs with a timeout. A generation request
// blocks its connection's thread in Daemon::Run, which polls the socket for a client that goes
// away (the request is then cancelled within a step). Stop() cancels what still runs.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "base/status.h"

namespace dcomp::server {

class Daemon;

class HttpServer {
 public:
  struct Options {
    std::string host = "127.0.0.1";
    int port = 0;  // 0: any free port (see port())
    // The model name responses carry and /v1/models lists (requests may name any model).
    std::string model_name;
    int64_t created = 0;  // unix time /v1/models reports
    // Clients must send "Authorization: Bearer <api_key>" to /v1/*; empty: no auth.
    std::string api_key;
    // TLS: PEM files; cert and key set turn it on, client_ca asks for client certificates.
    std::string cert_file, key_file, client_ca_file;
    uint32_t max_body_bytes = 65536;  // larger bodies get 413
    int max_connections = 64;         // more get 503 at once
  };

  // Listens and serves on its own threads. `daemon` must outlive the server. Errors name the
  // address or the TLS file.
  static Result<std::unique_ptr<HttpServer>> Start(Daemon* daemon, const Options& options);
  ~HttpServer();  // Stop()
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Stops accepting, cancels running requests, closes every connection and joins the threads.
  void Stop();
  int port() const;

  struct Impl;

 private:
  HttpServer() = default;
  std::unique_ptr<Impl> impl_;
};

// The key of an api_key_file: its content without surrounding whitespace; errors name the file
// (unreadable, empty, or more than one line).
Result<std::string> ReadApiKey(const std::string& path);

}  // namespace dcomp::server
