// The bytes of HTTP/1.1 responses for the daemon's HTTP servers (the OpenAI API, the metrics
// endpoint): Beast serializes the header (status line, fields, blank line) and the rest is
// framed here, so that each server writes with one operation, asio::async_write of a buffer, for
// every response. Beast's own asynchronous writes would be one composed operation per message
// type and stream type, and those instantiations dominated the daemon's build time.
#pragma once

#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <string>
#include <string_view>

namespace dcomp::server {

// The header as sent: status line, fields, the empty line that ends it.
std::string HeaderBytes(const boost::beast::http::response_header<>& h);

// A whole response with a string body (Content-Length set by the caller: prepare_payload()).
std::string ResponseBytes(const boost::beast::http::response<boost::beast::http::string_body>& r);

// One chunk of a chunked body (size in hex, CRLF, data, CRLF), and the last chunk with no
// trailer. An empty `data` is not a chunk (it would end the body): the caller skips it.
std::string ChunkBytes(std::string_view data);
inline constexpr std::string_view kLastChunk = "0\r\n\r\n";

}  // namespace dcomp::server
