#include "daemon/http_wire.h"

#include <boost/beast/http/write.hpp>
#include <cstdio>
#include <sstream>

namespace dcomp::server {

std::string HeaderBytes(const boost::beast::http::response_header<>& h) {
  std::ostringstream os;
  os << h;
  return std::move(os).str();
}

std::string ResponseBytes(const boost::beast::http::response<boost::beast::http::string_body>& r) {
  std::string out = HeaderBytes(r.base());
  out += r.body();
  return out;
}

std::string ChunkBytes(std::string_view data) {
  char size[24];
  const int n = std::snprintf(size, sizeof size, "%zx\r\n", data.size());
  std::string out;
  out.reserve(static_cast<size_t>(n) + data.size() + 2);
  out.append(size, static_cast<size_t>(n));
  out.append(data);
  out += "\r\n";
  return out;
}

}  // namespace dcomp::server
