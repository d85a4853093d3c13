#include "daemon/http_server.h"

#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <atomic>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <chrono>
#include <optional>
#include <set>
#include <system_error>
#include <thread>

#include "base/file.h"
#include "base/mutex.h"
#include "daemon/http_wire.h"
#include "daemon/openai.h"
#include "daemon/service.h"

namespace dcomp::server {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;

constexpr auto kIoTimeout = std::chrono::seconds(30);    // reading a request, any write
constexpr auto kIdleTimeout = std::chrono::seconds(60);  // keep-alive between requests
constexpr uint32_t kMaxHeaderBytes = 16 * 1024;

// The completion handler of every operation: one type, so that each operation on each stream type
// is compiled once (daemon/http_wire.h says why that matters).
struct Done {
  std::optional<beast::error_code>* result;
  void operator()(beast::error_code ec, std::size_t = 0) const { *result = ec; }
};

// Runs one asynchronous operation on the connection's own context until it completes (its
// stream's expiry turns a stall into beast::error::timeout).
template <typename Start>
beast::error_code RunOp(asio::io_context& io, Start&& start) {
  std::optional<beast::error_code> result;
  start(Done{&result});
  io.restart();
  while (!result && io.run_one() > 0) {
  }
  return result.value_or(asio::error::operation_aborted);
}

// Constant-time comparison of a presented key with the configured one.
bool SameKey(std::string_view a, std::string_view b) {
  unsigned diff = a.size() == b.size() ? 0u : 1u;
  for (size_t i = 0; i < a.size(); ++i) {
    diff |= static_cast<unsigned>(a[i] ^ (i < b.size() ? b[i] : 0));
  }
  return diff == 0;
}

}  // namespace

Result<std::string> ReadApiKey(const std::string& path) {
  ASSIGN_OR_RETURN(std::string key, ReadFileToString(path));
  const size_t b = key.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return InvalidArgumentError(path + ": api_key_file is empty");
  key = key.substr(b, key.find_last_not_of(" \t\r\n") - b + 1);
  if (key.find_first_of("\r\n") != std::string::npos) {
    return InvalidArgumentError(path + ": api_key_file holds more than one line");
  }
  return key;
}

struct HttpServer::Impl {
  Daemon* daemon = nullptr;
  Options options;
  asio::io_context accept_io{1};
  tcp::acceptor acceptor{accept_io};
  std::optional<ssl::context> tls;
  std::thread accept_thread;
  int port = 0;
  std::atomic<bool> stopping{false};
  Mutex mu;
  CondVar cv;
  int active GUARDED_BY(mu) = 0;
  std::set<int> fds GUARDED_BY(mu);  // connections' sockets, shut down by Stop()

  void Accept();
  void Serve(std::shared_ptr<asio::io_context> io, tcp::socket socket);
  // The requests of one connection (TLS handshake first when configured).
  void ServeStream(asio::io_context& io, beast::tcp_stream& stream, int fd,
                   const std::string& peer);
  void Stop();
};

namespace {

// One connection: requests read and answered in turn until the client closes or an error.
template <typename Stream>
class Connection {
 public:
  Connection(HttpServer::Impl* server, asio::io_context& io, Stream& stream, int fd,
             std::string peer)
      : s_(server), io_(io), stream_(stream), fd_(fd), peer_(std::move(peer)) {}

  void Run() {
    for (;;) {
      http::request_parser<http::string_body> parser;
      parser.header_limit(kMaxHeaderBytes);
      parser.body_limit(s_->options.max_body_bytes);
      beast::get_lowest_layer(stream_).expires_after(kIdleTimeout);
      beast::error_code ec = Read(parser, false);
      if (ec == http::error::end_of_stream || ec == beast::error::timeout ||
          ec == asio::error::eof || ec == asio::error::connection_reset ||
          ec == asio::error::operation_aborted || s_->stopping.load()) {
        return;
      }
      if (!ec && parser.get()[http::field::expect] == "100-continue") {
        if (!Send("HTTP/1.1 100 Continue\r\n\r\n")) return;
      }
      if (!ec && !parser.is_done()) {
        beast::get_lowest_layer(stream_).expires_after(kIoTimeout);
        ec = Read(parser, true);
      }
      if (ec == http::error::body_limit) {
        Error(OutOfRangeError("body: larger than " + std::to_string(s_->options.max_body_bytes) +
                              " bytes (limits.max_message_bytes)"),
              false);
        return;
      }
      if (ec) {
        if (ec != beast::error::timeout && ec != asio::error::eof &&
            ec != http::error::partial_message) {
          Error(InvalidArgumentError("malformed HTTP request: " + ec.message()), false);
        }
        return;
      }
      req_ = parser.release();
      keep_alive_ = req_.keep_alive();
      if (!Handle() || !keep_alive_ || s_->stopping.load()) return;
    }
  }

 private:
  // Reads until the parser holds the request's header, or (`whole`) the whole request. One
  // operation, Beast's async_read_some, for both (what async_read_header and async_read loop on).
  beast::error_code Read(http::request_parser<http::string_body>& parser, bool whole) {
    beast::error_code ec;
    while (!ec && !(whole ? parser.is_done() : parser.is_header_done())) {
      ec = RunOp(io_, [&](Done h) { http::async_read_some(stream_, buffer_, parser, h); });
    }
    return ec;
  }

  // Writes `bytes` whole (a response, its header or a chunk: daemon/http_wire.h); false on error.
  bool Send(std::string_view bytes) {
    beast::get_lowest_layer(stream_).expires_after(kIoTimeout);
    return !RunOp(io_, [&](Done h) {
      asio::async_write(stream_, asio::const_buffer(bytes.data(), bytes.size()), h);
    });
  }

  // Answers req_; false when the connection must close.
  bool Handle() {
    const std::string target(req_.target());
    const std::string path = target.substr(0, target.find('?'));
    const http::verb method = req_.method();
    const bool generation = path == "/v1/completions" || path == "/v1/chat/completions";
    if (path == "/health") {
      if (method != http::verb::get && method != http::verb::head) return NotAllowed("GET");
      if (!s_->daemon->serving() || s_->daemon->draining()) {
        return Error(UnavailableError(s_->daemon->draining() ? "dcompd is shutting down"
                                                             : "the model is loading"));
      }
      return Json(http::status::ok, R"({"status":"ok"})");
    }
    if (path.rfind("/v1/", 0) == 0 && !s_->options.api_key.empty()) {
      const beast::string_view field = req_[http::field::authorization];
      const std::string_view auth(field.data(), field.size());
      constexpr std::string_view kBearer = "Bearer ";
      if (auth.substr(0, kBearer.size()) != kBearer ||
          !SameKey(auth.substr(kBearer.size()), s_->options.api_key)) {
        const Status st(
            StatusCode::kUnauthenticated,
            auth.empty() ? "missing API key: send 'Authorization: Bearer KEY'" : "invalid API key");
        if (generation) s_->daemon->CountRefused("http", st);
        spdlog::info("http {} {} peer={}: 401 {}", std::string(req_.method_string()), path, peer_,
                     st.message());
        return Error(st);
      }
    }
    const HttpServer::Options& o = s_->options;
    if (path == "/v1/models" || path.rfind("/v1/models/", 0) == 0) {
      if (method != http::verb::get) return NotAllowed("GET");
      if (path == "/v1/models") {
        return Json(http::status::ok, openai::ModelListBody(o.model_name, o.created));
      }
      const std::string id = path.substr(std::string("/v1/models/").size());
      if (id != o.model_name) {
        return Error(NotFoundError("model '" + id + "' does not exist; this daemon serves '" +
                                   o.model_name + "'"));
      }
      return Json(http::status::ok, openai::ModelBody(o.model_name, o.created));
    }
    if (generation) {
      if (method != http::verb::post) return NotAllowed("POST");
      return Generate(path == "/v1/chat/completions");
    }
    return Error(NotFoundError("no route " + std::string(req_.method_string()) + " " + path +
                               " (serving /v1/models, /v1/completions, /v1/chat/completions, "
                               "/health)"));
  }

  // A generation request: parsed into the gRPC request, then Daemon::Run with this connection as
  // its call.
  bool Generate(bool chat) {
    openai::Options opt;
    Daemon& d = *s_->daemon;
    v1::GenerateRequest completion;
    v1::ChatRequest conversation;
    Status parsed = Status::Ok();
    if (chat) {
      Result<v1::ChatRequest> r = openai::ParseChatRequest(req_.body(), d.limits(), &opt);
      parsed = r.status();
      if (r.ok()) conversation = std::move(*r);
    } else {
      Result<v1::GenerateRequest> r = openai::ParseCompletionRequest(req_.body(), &opt);
      parsed = r.status();
      if (r.ok()) completion = std::move(*r);
    }
    if (!parsed.ok()) {
      d.CountRefused("http", parsed);
      spdlog::info("http POST {} peer={}: {} {}", std::string(req_.target()), peer_,
                   openai::HttpStatus(parsed.code()), parsed.message());
      return Error(parsed);
    }
    Call call(this, chat, opt, opt.echo ? completion.prompt() : std::string());
    const Status st = chat ? d.Run(call, "http", "chat.completions", peer_, conversation)
                           : d.Run(call, "http", "completions", peer_, completion);
    if (st.ok()) return call.ok();
    if (!call.started()) return Error(st);
    // Streaming had begun: the error as a last event, then the end of the stream.
    if (st.code() != StatusCode::kCancelled && st.code() != StatusCode::kDeadlineExceeded) {
      call.Event(openai::ErrorBody(st));
    }
    call.End();
    return false;
  }

  // The GenerationCall of one HTTP generation request.
  class Call final : public GenerationCall {
   public:
    Call(Connection* c, bool chat, const openai::Options& o, std::string echo)
        : c_(c), chat_(chat), opt_(o), echo_(std::move(echo)) {
      info_.created = std::time(nullptr);
      info_.model = c->s_->options.model_name;
    }

    bool started() const { return started_; }
    bool ok() const { return ok_; }

    bool WriteToken(const Job::Token& t) override {
      if (!opt_.stream) return true;  // the response is written whole at the end
      if (!Start()) return false;
      if (t.text.empty()) return true;
      return Event(openai::ChunkBody(info_, chat_, t.text, false, ""));
    }

    bool WriteResult(const Job& job, uint64_t request_id) override {
      const v1::GenerateResult r = ResultProto(job, request_id);
      SetId();
      if (!opt_.stream) {
        ok_ = c_->Json(http::status::ok,
                       openai::CompletionBody(info_, chat_, echo_ + r.completion(), r));
        return ok_;
      }
      if (!Start()) return false;
      ok_ = Event(openai::ChunkBody(info_, chat_, r.tail_text(), false,
                                    openai::FinishReason(r.stop_reason()))) &&
            (!opt_.include_usage || Event(openai::UsageChunkBody(info_, chat_, r))) &&
            Event("[DONE]") && End();
      return ok_;
    }

    Status Interrupted() override {
      if (c_->s_->stopping.load()) return CancelledError("dcompd is shutting down");
      pollfd p{c_->fd_, POLLRDHUP, 0};
      if (poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0) {
        return CancelledError("the client closed the connection");
      }
      return Status::Ok();
    }

    Status WriteFailed(const std::string& otherwise) override {
      Status s = Interrupted();
      return s.ok() ? CancelledError(otherwise) : s;
    }

    // The response header and the first chunk (the chat role, the echoed prompt), once.
    bool Start() {
      if (started_) return true;
      started_ = true;
      SetId();
      http::response<http::empty_body> res{http::status::ok, c_->req_.version()};
      res.set(http::field::server, "dcompd");
      res.set(http::field::content_type, "text/event-stream");
      res.set(http::field::cache_control, "no-cache");
      res.keep_alive(c_->keep_alive_);
      res.chunked(true);
      if (!c_->Send(HeaderBytes(res.base()))) return false;
      if (chat_) return Event(openai::ChunkBody(info_, chat_, "", true, ""));
      return echo_.empty() || Event(openai::ChunkBody(info_, chat_, echo_, false, ""));
    }

    // One server-sent event.
    bool Event(const std::string& data) { return c_->Send(ChunkBytes("data: " + data + "\n\n")); }

    bool End() { return c_->Send(kLastChunk); }

   private:
    void SetId() {
      info_.id = std::string(chat_ ? "chatcmpl-" : "cmpl-") + std::to_string(request_id);
    }

    Connection* c_;
    const bool chat_;
    const openai::Options opt_;
    const std::string echo_;
    openai::ResponseInfo info_;
    bool started_ = false, ok_ = false;
  };

  bool Json(http::status status, std::string body,
            const std::vector<std::pair<http::field, std::string>>& extra = {}) {
    http::response<http::string_body> res{status, req_.version()};
    res.set(http::field::server, "dcompd");
    res.set(http::field::content_type, "application/json");
    for (const auto& [f, v] : extra) res.set(f, v);
    res.keep_alive(keep_alive_);
    if (req_.method() != http::verb::head) res.body() = std::move(body);
    res.prepare_payload();
    return Send(ResponseBytes(res));
  }

  // An error response in OpenAI's shape; false (close) when `keep` is false or writing failed.
  bool Error(const Status& s, bool keep = true) {
    if (!keep) keep_alive_ = false;
    const int code = openai::HttpStatus(s.code());
    std::vector<std::pair<http::field, std::string>> extra;
    if (code == 401) extra.emplace_back(http::field::www_authenticate, "Bearer");
    if (code == 429 || code == 503) extra.emplace_back(http::field::retry_after, "1");
    return Json(static_cast<http::status>(code), openai::ErrorBody(s), extra) && keep;
  }

  bool NotAllowed(const char* allow) {
    const Status s =
        InvalidArgumentError(std::string(req_.method_string()) + " " + std::string(req_.target()) +
                             ": method not allowed (use " + allow + ")");
    return Json(http::status::method_not_allowed, openai::ErrorBody(s),
                {{http::field::allow, allow}});
  }

  HttpServer::Impl* s_;
  asio::io_context& io_;
  Stream& stream_;
  const int fd_;
  const std::string peer_;
  beast::flat_buffer buffer_;
  http::request<http::string_body> req_;
  bool keep_alive_ = true;
};

}  // namespace

void HttpServer::Impl::Accept() {
  auto io = std::make_shared<asio::io_context>(1);
  acceptor.async_accept(*io, [this, io](beast::error_code ec, tcp::socket socket) {
    if (ec) {
      if (ec != asio::error::operation_aborted && !stopping.load()) Accept();
      return;
    }
    Accept();
    {
      MutexLock l(&mu);
      if (stopping.load() || active >= options.max_connections) {
        if (!stopping.load()) {
          const std::string body = openai::ErrorBody(UnavailableError(
              "too many connections (" + std::to_string(options.max_connections) + ")"));
          const std::string busy =
              "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
              "Retry-After: 1\r\nConnection: close\r\nContent-Length: " +
              std::to_string(body.size()) + "\r\n\r\n" + body;
          beast::error_code ignored;
          asio::write(socket, asio::buffer(busy), ignored);
        }
        return;
      }
      ++active;
      fds.insert(socket.native_handle());
    }
    const int fd = socket.native_handle();
    try {
      std::thread([this, io, s = std::move(socket)]() mutable {
        Serve(io, std::move(s));
      }).detach();
    } catch (const std::system_error& e) {  // no thread: the connection is dropped
      spdlog::warn("http: cannot start a connection thread: {}", e.what());
      MutexLock l(&mu);
      fds.erase(fd);
      --active;
    }
  });
}

void HttpServer::Impl::Serve(std::shared_ptr<asio::io_context> io, tcp::socket socket) {
  const int fd = socket.native_handle();
  beast::error_code ec;
  const tcp::endpoint remote = socket.remote_endpoint(ec);
  const std::string peer =
      ec ? "-" : remote.address().to_string() + ":" + std::to_string(remote.port());
  beast::tcp_stream stream(std::move(socket));
  try {
    ServeStream(*io, stream, fd, peer);
  } catch (const std::exception& e) {  // never the daemon: this connection ends
    spdlog::error("http peer={}: connection closed after an unexpected error: {}", peer, e.what());
  }
  stream.socket().shutdown(tcp::socket::shutdown_both, ec);
  {
    MutexLock l(&mu);
    fds.erase(fd);
    stream.socket().close(ec);  // under mu: Stop() never shuts down a reused descriptor
    --active;
  }
  cv.NotifyAll();
}

void HttpServer::Impl::ServeStream(asio::io_context& ioc, beast::tcp_stream& stream, int fd,
                                   const std::string& peer) {
  asio::io_context* io = &ioc;
  if (tls) {
    beast::ssl_stream<beast::tcp_stream&> tls_stream(stream, *tls);
    stream.expires_after(kIoTimeout);
    const beast::error_code hs =
        RunOp(*io, [&](Done h) { tls_stream.async_handshake(ssl::stream_base::server, h); });
    if (!hs) {
      Connection<beast::ssl_stream<beast::tcp_stream&>>(this, *io, tls_stream, fd, peer).Run();
      stream.expires_after(std::chrono::seconds(2));
      RunOp(*io, [&](Done h) { tls_stream.async_shutdown(h); });
    } else {
      spdlog::debug("http peer={}: TLS handshake failed: {}", peer, hs.message());
    }
  } else {
    Connection<beast::tcp_stream>(this, *io, stream, fd, peer).Run();
  }
}

void HttpServer::Impl::Stop() {
  if (stopping.exchange(true)) return;
  asio::post(accept_io, [this] {
    beast::error_code ec;
    acceptor.close(ec);
  });
  if (accept_thread.joinable()) accept_thread.join();
  MutexLock l(&mu);
  // Running requests see `stopping` within a step; idle keep-alive reads end at the shutdown.
  for (int fd : fds) shutdown(fd, SHUT_RDWR);
  cv.Wait(&mu, [this]() REQUIRES(mu) { return active == 0; });
}

Result<std::unique_ptr<HttpServer>> HttpServer::Start(Daemon* daemon, const Options& o) {
  std::unique_ptr<HttpServer> server(new HttpServer());
  server->impl_ = std::make_unique<Impl>();
  Impl& impl = *server->impl_;
  impl.daemon = daemon;
  impl.options = o;
  if (!o.cert_file.empty()) {
    impl.tls.emplace(ssl::context::tls_server);
    ssl::context& t = *impl.tls;
    beast::error_code ec;
    t.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                      ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1,
                  ec);
    t.use_certificate_chain_file(o.cert_file, ec);
    if (ec) return InvalidArgumentError("tls.cert_file " + o.cert_file + ": " + ec.message());
    t.use_private_key_file(o.key_file, ssl::context::pem, ec);
    if (ec) return InvalidArgumentError("tls.key_file " + o.key_file + ": " + ec.message());
    if (!o.client_ca_file.empty()) {
      t.load_verify_file(o.client_ca_file, ec);
      if (ec) {
        return InvalidArgumentError("tls.client_ca_file " + o.client_ca_file + ": " + ec.message());
      }
      t.set_verify_mode(ssl::verify_peer | ssl::verify_fail_if_no_peer_cert);
    }
  }
  beast::error_code ec;
  const asio::ip::address addr =
      asio::ip::make_address(o.host == "localhost" ? "127.0.0.1" : o.host, ec);
  if (ec) return InvalidArgumentError("http_listen: bad host '" + o.host + "'");
  const tcp::endpoint ep(addr, static_cast<uint16_t>(o.port));
  impl.acceptor.open(ep.protocol(), ec);
  if (!ec) impl.acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) impl.acceptor.bind(ep, ec);
  if (!ec) impl.acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return UnavailableError("http_listen " + o.host + ":" + std::to_string(o.port) + ": " +
                            ec.message());
  }
  impl.port = impl.acceptor.local_endpoint().port();
  impl.Accept();
  impl.accept_thread = std::thread([&impl] { impl.accept_io.run(); });
  return server;
}

HttpServer::~HttpServer() { Stop(); }

void HttpServer::Stop() {
  if (impl_) impl_->Stop();
}

int HttpServer::port() const { return impl_->port; }

}  // namespace dcomp::server
