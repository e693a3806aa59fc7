#pragma once

// The HTTP/1.1 transport: accepts connections (plain or TLS), reads each request's header with
// bounded size and time, asks the Router what to do, reads the body within its limit (into
// memory or to a file), and writes the answer. Everything runs on the one io thread; a slow or
// broken client only ever holds its own connection, and only for a bounded time.

#include <boost/asio/io_context.hpp>
#include <cstdint>
#include <memory>
#include <string>

#include "common/result.h"
#include "controlplane/http_types.h"
#include "controlplane/options.h"

namespace amlnode::controlplane {

class HttpServer {
 public:
  HttpServer(boost::asio::io_context& io, Router& router, const ServerOptions& options);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Loads the TLS files (when given), binds, listens and starts accepting. Returns the port.
  Result<std::uint16_t> listen();

  // Stops accepting and closes every open connection. Call on the io thread.
  void close();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace amlnode::controlplane
