#include "daemon/metrics.h"

#include <spdlog/spdlog.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cmath>
#include <cstdio>
#include <thread>

#include "daemon/http_wire.h"

namespace dcomp::server {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

std::string Number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.17g", v);
  return buf;
}

std::string EscapeLabel(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

class Writer {
 public:
  // Starts a family: HELP and TYPE lines.
  Writer& Family(const std::string& name, const char* type, const std::string& help) {
    out_ += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
    return *this;
  }
  Writer& Sample(const std::string& name, double v, const std::string& labels = "") {
    out_ += name + (labels.empty() ? "" : "{" + labels + "}") + " " + Number(v) + "\n";
    return *this;
  }
  Writer& Gauge(const std::string& name, const std::string& help, double v) {
    return Family(name, "gauge", help).Sample(name, v);
  }
  Writer& Counter(const std::string& name, const std::string& help, double v) {
    return Family(name, "counter", help).Sample(name, v);
  }
  Writer& Summary(const std::string& name, const std::string& help, const v1::Latency& l) {
    Family(name, "summary", help);
    Sample(name, l.p50_seconds(), "quantile=\"0.5\"");
    Sample(name, l.p95_seconds(), "quantile=\"0.95\"");
    Sample(name, l.p99_seconds(), "quantile=\"0.99\"");
    Sample(name + "_sum", l.sum_seconds());
    return Sample(name + "_count", static_cast<double>(l.count()));
  }
  std::string str() && { return std::move(out_); }

 private:
  std::string out_;
};

std::string Label(const std::string& k, const std::string& v) {
  return k + "=\"" + EscapeLabel(v) + "\"";
}

}  // namespace

std::string PrometheusText(const v1::StatusResponse& s) {
  Writer w;
  w.Gauge("dcomp_up", "1 when the model is loaded and requests are served.", s.serving() ? 1 : 0);
  // Labels that change only with a restart; the plan is in the dcomp_plan_* and dcomp_tier_*
  // series (a label would start a new series at every re-plan).
  w.Family("dcomp_info", "gauge", "Version and model of the daemon (always 1).")
      .Sample("dcomp_info", 1,
              Label("version", s.version()) + "," + Label("model", s.model().path()) + "," +
                  Label("format", s.model().format()));
  w.Gauge("dcomp_uptime_seconds", "Seconds since the daemon started.", s.uptime_seconds());
  w.Gauge("dcomp_context_length", "Context length served, tokens.", s.model().context_length());
  w.Gauge("dcomp_model_int8_bytes", "Bytes of every weight matrix decoded to INT8.",
          static_cast<double>(s.model().int8_bytes()));
  w.Gauge("dcomp_budget_bytes", "RAM budget of the process (0: no limit).",
          static_cast<double>(s.budget_bytes()));
  w.Gauge("dcomp_effective_budget_bytes", "Budget in force after memory-pressure scaling.",
          static_cast<double>(s.effective_budget_bytes()));
  if (s.budget_factor() > 0) {
    w.Gauge("dcomp_budget_factor",
            "Share of the budget planned for under memory pressure (1: no pressure).",
            s.budget_factor());
  }
  w.Gauge("dcomp_minimum_budget_bytes", "Smallest budget the model and context can run in.",
          static_cast<double>(s.minimum_budget_bytes()));
  w.Gauge("dcomp_resident_memory_bytes", "Resident set size (VmRSS).",
          static_cast<double>(s.rss_bytes()));
  w.Gauge("dcomp_peak_resident_memory_bytes", "Peak resident set size (VmHWM).",
          static_cast<double>(s.peak_rss_bytes()));
  w.Family("dcomp_tier_bytes", "gauge", "RAM held by each residency tier.");
  for (const v1::TierBytes& t : s.tiers()) {
    w.Sample("dcomp_tier_bytes", static_cast<double>(t.bytes()), Label("tier", t.tier()));
  }
  w.Family("dcomp_tier_units", "gauge", "Layers (and the output matrix) in each residency tier.");
  for (const v1::TierBytes& t : s.tiers()) {
    w.Sample("dcomp_tier_units", t.units(), Label("tier", t.tier()));
  }
  w.Gauge("dcomp_plan_slots", "Decoded slots of the prefetch pipeline.", s.plan().slots());
  w.Gauge("dcomp_plan_compute_threads", "Threads computing the transformer.",
          s.plan().compute_threads());
  w.Gauge("dcomp_plan_decode_threads", "Threads decoding streamed blocks.",
          s.plan().decode_threads());
  w.Gauge("dcomp_plan_flash_bytes_per_token", "Compressed bytes the plan reads per token.",
          static_cast<double>(s.plan().flash_bytes_per_token()));
  w.Gauge("dcomp_plan_flash_head_matrices",
          "Matrices of each flash layer held packed in RAM (the rest is read per token).",
          s.plan().flash_head_matrices());
  w.Gauge("dcomp_plan_estimated_seconds_per_token", "The controller's estimate for its plan.",
          s.plan().estimated_seconds_per_token());
  w.Counter("dcomp_replans_total", "Plans the controller made after the first.",
            static_cast<double>(s.plan().replans()));
  w.Summary("dcomp_token_latency_seconds", "Time between consecutive generated tokens.",
            s.token_latency());
  w.Summary("dcomp_time_to_first_token_seconds",
            "Time from a request's first step to its first token (prefill and one sample).",
            s.time_to_first_token());
  w.Summary("dcomp_queue_wait_seconds", "Time from admission to a request's first step.",
            s.queue_wait());
  w.Gauge("dcomp_tokens_per_second", "Decode speed of the last request with two or more tokens.",
          s.tokens_per_second());
  w.Counter("dcomp_flash_read_bytes_total", "Compressed bytes read from flash while streaming.",
            static_cast<double>(s.flash_read_bytes()));
  w.Gauge("dcomp_decode_bytes_per_second", "Decode throughput per decode thread, INT8 bytes/s.",
          s.decode_gb_per_second() * 1e9);
  w.Gauge("dcomp_queue_waiting", "Generate requests waiting for their turn.", s.queue_length());
  w.Gauge("dcomp_queue_running", "Generate requests running (the batch).", s.running());
  w.Gauge("dcomp_queue_depth", "Requests the queue holds at most (waiting and running).",
          s.queue_depth());
  w.Gauge("dcomp_max_batch", "Requests that generate together at most.", s.max_batch());
  w.Gauge("dcomp_kv_cache_bytes", "KV-cache room of all running requests, in the budget.",
          static_cast<double>(s.kv_cache_bytes()));
  w.Gauge("dcomp_kv_cache_used_bytes", "KV cache the running requests hold.",
          static_cast<double>(s.kv_cache_used_bytes()));
  w.Counter("dcomp_steps_total", "Forward steps (one pass over the weights each).",
            static_cast<double>(s.steps()));
  w.Counter("dcomp_step_tokens_total", "Tokens in the forward steps.",
            static_cast<double>(s.step_tokens()));
  w.Counter("dcomp_step_requests_total", "Requests in the forward steps (batch sizes summed).",
            static_cast<double>(s.step_requests()));
  w.Family("dcomp_requests_total", "counter",
           "Finished generation requests by protocol (grpc, http) and status code.");
  for (const v1::RequestCount& c : s.request_counts()) {
    w.Sample("dcomp_requests_total", static_cast<double>(c.count()),
             Label("protocol", c.protocol()) + "," + Label("code", c.code()));
  }
  w.Counter("dcomp_generated_tokens_total", "Tokens generated.",
            static_cast<double>(s.generated_tokens()));
  if (s.memory_pressure() >= 0) {
    w.Gauge("dcomp_memory_pressure_some_avg10",
            "Share of the last 10 s some task stalled on memory (PSI), percent.",
            s.memory_pressure());
  }
  return std::move(w).str();
}

struct MetricsServer::Impl {
  asio::io_context io{1};
  tcp::acceptor acceptor{io};
  std::function<std::string()> render;
  std::thread thread;
  int port = 0;

  void Accept() {
    acceptor.async_accept([this](beast::error_code ec, tcp::socket socket) {
      if (ec) {
        if (ec != asio::error::operation_aborted) Accept();
        return;
      }
      std::make_shared<Session>(std::move(socket), this)->Read();
      Accept();
    });
  }

  struct Session : std::enable_shared_from_this<Session> {
    Session(tcp::socket s, Impl* impl) : stream(std::move(s)), impl(impl) {}
    beast::tcp_stream stream;
    beast::flat_buffer buffer;
    http::request<http::string_body> req;
    http::response<http::string_body> resp;
    std::string out;  // resp's bytes while they are written
    Impl* impl;

    void Read() {
      req = {};
      stream.expires_after(std::chrono::seconds(10));
      http::async_read(stream, buffer, req,
                       [self = shared_from_this()](beast::error_code ec, size_t) {
                         if (ec) {
                           beast::error_code ignored;
                           self->stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
                           return;
                         }
                         self->Respond();
                       });
    }

    void Respond() {
      resp = {};
      resp.version(req.version());
      resp.keep_alive(req.keep_alive());
      resp.set(http::field::server, "dcompd");
      const std::string target(req.target());
      const std::string path = target.substr(0, target.find('?'));
      if (req.method() != http::verb::get && req.method() != http::verb::head) {
        resp.result(http::status::method_not_allowed);
        resp.set(http::field::allow, "GET, HEAD");
        resp.set(http::field::content_type, "text/plain");
        resp.body() = "only GET /metrics\n";
      } else if (path != "/metrics") {
        resp.result(http::status::not_found);
        resp.set(http::field::content_type, "text/plain");
        resp.body() = "not found: metrics are at /metrics\n";
      } else {
        resp.result(http::status::ok);
        resp.set(http::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
        if (req.method() == http::verb::get) resp.body() = impl->render();
      }
      resp.prepare_payload();
      out = ResponseBytes(resp);
      asio::async_write(stream, asio::buffer(out),
                        [self = shared_from_this()](beast::error_code ec, size_t) {
                          if (ec || !self->resp.keep_alive()) {
                            beast::error_code ignored;
                            self->stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
                            return;
                          }
                          self->Read();
                        });
    }
  };
};

Result<std::unique_ptr<MetricsServer>> MetricsServer::Start(int port,
                                                            std::function<std::string()> render) {
  std::unique_ptr<MetricsServer> m(new MetricsServer());
  m->impl_ = std::make_unique<Impl>();
  Impl& impl = *m->impl_;
  impl.render = std::move(render);
  beast::error_code ec;
  const tcp::endpoint ep(asio::ip::make_address("127.0.0.1"), static_cast<uint16_t>(port));
  impl.acceptor.open(ep.protocol(), ec);
  if (!ec) impl.acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) impl.acceptor.bind(ep, ec);
  if (!ec) impl.acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return UnavailableError("metrics endpoint 127.0.0.1:" + std::to_string(port) + ": " +
                            ec.message());
  }
  impl.port = impl.acceptor.local_endpoint().port();
  impl.Accept();
  impl.thread = std::thread([&impl] { impl.io.run(); });
  return m;
}

MetricsServer::~MetricsServer() {
  if (!impl_) return;
  impl_->io.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

int MetricsServer::port() const { return impl_->port; }

}  // namespace dcomp::server
