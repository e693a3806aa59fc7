#include "tests/controlplane/http_client.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <optional>

namespace amlnode::controlplane::test {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;

nlohmann::json HttpResponse::json() const {
  return nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
}

std::string HttpResponse::header(const std::string& name) const {
  auto it = headers.find(name);
  return it == headers.end() ? "" : it->second;
}

struct HttpClient::Impl {
  std::uint16_t port;
  asio::io_context io;
  std::optional<ssl::context> tls;
  std::optional<beast::tcp_stream> plain;
  std::optional<beast::ssl_stream<beast::tcp_stream>> secure;
  beast::flat_buffer buffer;

  beast::tcp_stream& lowest() { return secure ? beast::get_lowest_layer(*secure) : *plain; }

  // Runs the queued async operations to completion; the stream's deadline bounds them.
  void run() {
    io.restart();
    io.run();
  }

  bool connected() const { return plain.has_value() || secure.has_value(); }

  void disconnect() {
    if (!connected()) return;
    beast::error_code ec;
    lowest().socket().close(ec);
    plain.reset();
    secure.reset();
    buffer.clear();
  }

  bool connect(std::chrono::milliseconds timeout) {
    beast::error_code ec;
    tcp::endpoint endpoint(asio::ip::make_address("127.0.0.1"), port);
    if (tls) {
      secure.emplace(io, *tls);
    } else {
      plain.emplace(io);
    }
    lowest().expires_after(timeout);
    lowest().async_connect(endpoint, [&](beast::error_code e) { ec = e; });
    run();
    if (!ec && secure) {
      secure->async_handshake(ssl::stream_base::client, [&](beast::error_code e) { ec = e; });
      run();
    }
    if (ec) disconnect();
    return !ec;
  }

  template <class Op>
  beast::error_code with_stream(Op op) {
    beast::error_code ec;
    if (secure) {
      op(*secure, ec);
    } else {
      op(*plain, ec);
    }
    run();
    return ec;
  }

  HttpResponse once(const http::request<http::string_body>& request,
                    std::chrono::milliseconds timeout, bool& sent) {
    HttpResponse response;
    sent = false;
    if (!connected() && !connect(timeout)) return response;
    lowest().expires_after(timeout);
    auto ec = with_stream([&](auto& stream, beast::error_code& out) {
      http::async_write(stream, request, [&](beast::error_code e, std::size_t) { out = e; });
    });
    if (ec) {
      disconnect();
      return response;
    }
    sent = true;
    http::response_parser<http::string_body> parser;
    parser.body_limit(1ull << 30);
    ec = with_stream([&](auto& stream, beast::error_code& out) {
      http::async_read(stream, buffer, parser, [&](beast::error_code e, std::size_t) { out = e; });
    });
    if (ec) {
      disconnect();
      return response;
    }
    auto& message = parser.get();
    response.status = static_cast<int>(message.result_int());
    response.body = std::move(message.body());
    for (const auto& field : message) {
      std::string name(field.name_string().data(), field.name_string().size());
      for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      response.headers[name] = std::string(field.value().data(), field.value().size());
    }
    if (!message.keep_alive()) disconnect();
    return response;
  }
};

HttpClient::HttpClient(std::uint16_t port, bool tls) : impl_(std::make_unique<Impl>()) {
  impl_->port = port;
  if (tls) {
    impl_->tls.emplace(ssl::context::tls_client);
    impl_->tls->set_verify_mode(ssl::verify_none);
  }
}

HttpClient::~HttpClient() {
  if (impl_) impl_->disconnect();
}

HttpClient::HttpClient(HttpClient&&) noexcept = default;

HttpResponse HttpClient::request(const std::string& method, const std::string& target,
                                 const std::string& token, const std::string& body,
                                 const Headers& headers, std::chrono::milliseconds timeout) {
  http::request<http::string_body> request;
  request.method_string(method);
  request.target(target);
  request.version(11);
  request.set(http::field::host, "127.0.0.1");
  if (!token.empty()) request.set(http::field::authorization, "Bearer " + token);
  for (const auto& [name, value] : headers) request.set(name, value);
  request.body() = body;
  request.prepare_payload();
  request.keep_alive(true);
  bool sent = false;
  HttpResponse response = impl_->once(request, timeout, sent);
  // A kept-alive connection the server has since closed fails on first use: try a fresh one.
  if (response.status == 0 && !sent) response = impl_->once(request, timeout, sent);
  return response;
}

RawExchange raw_exchange(std::uint16_t port, const std::string& bytes,
                         std::chrono::milliseconds timeout) {
  RawExchange exchange;
  asio::io_context io;
  tcp::socket socket(io);
  beast::error_code ec;
  socket.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port), ec);
  if (ec) return exchange;
  asio::write(socket, asio::buffer(bytes), ec);
  auto deadline = std::chrono::steady_clock::now() + timeout;
  int fd = socket.native_handle();
  while (true) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    pollfd pfd{fd, POLLIN, 0};
    if (::poll(&pfd, 1, static_cast<int>(left.count())) <= 0) continue;
    char chunk[4096];
    ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
    if (n <= 0) {
      exchange.closed = true;
      break;
    }
    exchange.received.append(chunk, static_cast<std::size_t>(n));
  }
  return exchange;
}

}  // namespace amlnode::controlplane::test
