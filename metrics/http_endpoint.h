#pragma once

// The `/metrics` endpoint: HTTP/1.1 over Boost.Beast on the caller's io_context (the daemon's
// event loop thread, which owns the samples it renders, so nothing is locked).
//
// GET /metrics answers the exposition (text format 0.0.4); HEAD the same without a body; any
// other path 404, any other method 405. Bounds: request header 8 KiB (a larger one is 431 and
// closed), no request body, 64 connections at once (one more is accepted and closed at once),
// 30 s without progress closes a connection. Keep-alive as the client asks.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "common/result.h"

namespace boost::asio {
class io_context;
}

namespace amlnode::metrics {

struct ListenAddress {
  std::string host;  // a numeric IPv4 or IPv6 address
  std::uint16_t port = 0;
  bool loopback = true;
};

// Parses "HOST:PORT" ("127.0.0.1:9108", "[::1]:9108"). `field` names the setting in errors. A
// non-loopback address is refused unless `allow_public`: metrics describe the node and its runs,
// and the endpoint has no authentication.
Result<ListenAddress> parse_listen_address(const std::string& text, bool allow_public,
                                           const std::string& field);

class MetricsEndpoint {
 public:
  // Appends the exposition to `out` (empty when called).
  using Render = std::function<void(std::string& out)>;

  MetricsEndpoint(boost::asio::io_context& io, ListenAddress address, Render render);
  ~MetricsEndpoint();
  MetricsEndpoint(const MetricsEndpoint&) = delete;
  MetricsEndpoint& operator=(const MetricsEndpoint&) = delete;

  // Binds and starts accepting. "MetricsListenFailed" names the address and why.
  Result<void> start();
  // The bound port (the chosen one when the address said 0).
  std::uint16_t port() const;
  // Stops accepting and closes every connection; call on the io_context thread.
  void stop();

  // What the endpoint and its connections share (defined in http_endpoint.cc).
  struct State;

 private:
  std::shared_ptr<State> state_;
};

}  // namespace amlnode::metrics
