// Boost.Beast is compiled in this file only, so the rest of the agent builds quickly without it.

#include "agent/daemon/http_client.h"

#include <algorithm>
#include <boost/algorithm/string/predicate.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/http/span_body.hpp>
#include <boost/beast/ssl.hpp>
#include <mutex>

#include "common/error_codes.h"

namespace amlnode::agent {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;

Result<HttpEndpoint> parse_http_url(const std::string& url) {
  HttpEndpoint endpoint;
  std::string rest;
  if (url.rfind("http://", 0) == 0) {
    rest = url.substr(7);
  } else if (url.rfind("https://", 0) == 0) {
    endpoint.tls = true;
    rest = url.substr(8);
  } else {
    return Error{"InvalidConfig", "control plane URL must start with http:// or https://: " + url};
  }
  auto slash = rest.find('/');
  std::string authority = rest.substr(0, slash);
  if (slash != std::string::npos) endpoint.base_path = rest.substr(slash);
  while (!endpoint.base_path.empty() && endpoint.base_path.back() == '/')
    endpoint.base_path.pop_back();
  auto colon = authority.rfind(':');
  bool bracketed = !authority.empty() && authority.front() == '[';
  if (colon != std::string::npos && (!bracketed || authority[colon - 1] == ']')) {
    endpoint.host = authority.substr(0, colon);
    endpoint.port = authority.substr(colon + 1);
  } else {
    endpoint.host = authority;
    endpoint.port = endpoint.tls ? "443" : "80";
  }
  if (endpoint.host.size() >= 2 && endpoint.host.front() == '[') {
    endpoint.host = endpoint.host.substr(1, endpoint.host.size() - 2);
  }
  if (endpoint.host.empty()) return Error{"InvalidConfig", "control plane URL has no host: " + url};
  if (endpoint.port.empty() || endpoint.port.find_first_not_of("0123456789") != std::string::npos) {
    return Error{"InvalidConfig", "control plane URL has a bad port: " + url};
  }
  return endpoint;
}

std::string http_url(const HttpEndpoint& endpoint) {
  bool ipv6 = endpoint.host.find(':') != std::string::npos;
  return std::string(endpoint.tls ? "https://" : "http://") + (ipv6 ? "[" : "") + endpoint.host +
         (ipv6 ? "]" : "") + ":" + endpoint.port + endpoint.base_path;
}

namespace {

Error unreachable(const std::string& what, const beast::error_code& ec) {
  return Error{errors::kUnreachable, what + ": " + ec.message()};
}

// One kept-alive connection. Every operation is asynchronous on the connection's own io_context,
// run to completion by the calling thread, because only asynchronous Beast operations honour the
// stream's expiry (the timeout).
class Connection {
 public:
  virtual ~Connection() = default;
  virtual Result<HttpResponse> exchange(const HttpRequest& request, const std::string& target) = 0;
  virtual bool reusable() const = 0;
  // Closes the socket from any thread; the operation in progress ends with an error.
  virtual void cancel() = 0;
};

template <class Stream>
class StreamConnection final : public Connection {
  static constexpr bool kTls = !std::is_same_v<Stream, beast::tcp_stream>;

 public:
  StreamConnection(const HttpEndpoint& endpoint, ssl::context* tls)
      : endpoint_(endpoint), stream_(make_stream(tls)) {}

  Result<HttpResponse> exchange(const HttpRequest& request, const std::string& target) override {
    reusable_ = false;
    deadline_ = std::chrono::steady_clock::now() + request.timeout;
    if (!connected_) {
      if (auto connected = connect(); !connected) return connected.error();
      connected_ = true;
    }
    if (auto sent = send(request, target); !sent) return sent.error();
    auto response = request.response_file ? receive_to_file(request) : receive_to_memory(request);
    return response;
  }

  bool reusable() const override { return reusable_; }

  void cancel() override {
    asio::post(io_, [this] {
      beast::error_code ec;
      tcp().socket().shutdown(tcp::socket::shutdown_both, ec);
      tcp().cancel();
    });
  }

 private:
  Stream make_stream(ssl::context* tls) {
    if constexpr (kTls) {
      return Stream(io_, *tls);
    } else {
      return Stream(io_);
    }
  }

  beast::tcp_stream& tcp() { return beast::get_lowest_layer(stream_); }

  // Runs the queued operation to completion within the request's deadline.
  void run() {
    tcp().expires_at(deadline_);
    io_.restart();
    io_.run();
  }

  Result<void> connect() {
    tcp::resolver resolver(io_);
    beast::error_code ec;
    auto results = resolver.resolve(endpoint_.host, endpoint_.port, ec);
    if (ec) return unreachable("resolving " + endpoint_.host, ec);
    tcp().expires_at(deadline_);
    tcp().async_connect(results, [&](beast::error_code e, const tcp::endpoint&) { ec = e; });
    run();
    if (ec) return unreachable("connecting to " + endpoint_.host + ":" + endpoint_.port, ec);
    tcp().socket().set_option(tcp::no_delay(true), ec);
    if constexpr (kTls) {
      if (!SSL_set_tlsext_host_name(stream_.native_handle(), endpoint_.host.c_str())) {
        return Error{errors::kUnreachable, "TLS: cannot set the server name " + endpoint_.host};
      }
      stream_.set_verify_callback(ssl::host_name_verification(endpoint_.host));
      stream_.async_handshake(ssl::stream_base::client, [&](beast::error_code e) { ec = e; });
      run();
      if (ec) return unreachable("TLS handshake with " + endpoint_.host, ec);
    }
    return ok();
  }

  // The body is sent from the request's own buffer (a span, not a copy): log chunks are up to
  // 4 MiB, and copying each one again would cost as much as reading it from the file.
  Result<void> send(const HttpRequest& request, const std::string& target) {
    http::request<http::span_body<const char>> message{http::string_to_verb(request.method), target,
                                                       11};
    message.set(http::field::host, endpoint_.host);
    message.set(http::field::user_agent, "amlnode-agent");
    if (!request.bearer_token.empty()) {
      message.set(http::field::authorization, "Bearer " + request.bearer_token);
    }
    for (const auto& [name, value] : request.headers) message.set(name, value);
    if (!request.content_type.empty()) message.set(http::field::content_type, request.content_type);
    std::string_view body = request.borrowed_body.empty() ? request.body : request.borrowed_body;
    message.body() = {body.data(), body.size()};
    message.prepare_payload();
    beast::error_code ec;
    http::async_write(stream_, message, [&](beast::error_code e, std::size_t) { ec = e; });
    run();
    if (ec) return unreachable("sending " + request.method + " " + request.target, ec);
    return ok();
  }

  Result<HttpResponse> receive_to_memory(const HttpRequest& request) {
    http::response_parser<http::string_body> parser;
    parser.body_limit(request.max_response_bytes);
    beast::error_code ec;
    http::async_read(stream_, buffer_, parser, [&](beast::error_code e, std::size_t) { ec = e; });
    run();
    if (ec == http::error::body_limit) {
      return Error{"ResponseTooLarge", request.target + ": answer over " +
                                           std::to_string(request.max_response_bytes) + " bytes"};
    }
    if (ec)
      return unreachable("reading the answer to " + request.method + " " + request.target, ec);
    reusable_ = parser.get().keep_alive();
    HttpResponse response{
        static_cast<int>(parser.get().result_int()), std::move(parser.get().body()), {}};
    for (const auto& field : parser.get()) {
      if (boost::istarts_with(field.name_string(), "X-Amlnode-"))
        response.headers.emplace_back(field.name_string(), field.value());
    }
    return response;
  }

  // Reads the header first, so only a 200 answer is written to the file; any other answer's
  // (small, JSON) body is read into memory.
  Result<HttpResponse> receive_to_file(const HttpRequest& request) {
    http::response_parser<http::file_body> parser;
    parser.body_limit(request.max_response_bytes);
    beast::error_code ec;
    http::async_read_header(stream_, buffer_, parser,
                            [&](beast::error_code e, std::size_t) { ec = e; });
    run();
    if (ec) return unreachable("reading the answer to " + request.target, ec);
    if (parser.get().result_int() != 200) {
      http::response_parser<http::string_body> rest(std::move(parser));
      rest.body_limit(1 << 20);
      http::async_read(stream_, buffer_, rest, [&](beast::error_code e, std::size_t) { ec = e; });
      run();
      if (ec) return unreachable("reading the answer to " + request.target, ec);
      reusable_ = rest.get().keep_alive();
      return HttpResponse{
          static_cast<int>(rest.get().result_int()), std::move(rest.get().body()), {}};
    }
    parser.get().body().open(request.response_file->c_str(), beast::file_mode::write, ec);
    if (ec) return Error{"FileError", request.response_file->string() + ": " + ec.message()};
    http::async_read(stream_, buffer_, parser, [&](beast::error_code e, std::size_t) { ec = e; });
    run();
    if (ec == http::error::body_limit) {
      return Error{"ResponseTooLarge", request.target + ": answer over " +
                                           std::to_string(request.max_response_bytes) + " bytes"};
    }
    if (ec) return unreachable("reading the answer to " + request.target, ec);
    reusable_ = parser.get().keep_alive();
    return HttpResponse{200, "", {}};
  }

  HttpEndpoint endpoint_;
  asio::io_context io_;
  Stream stream_;
  beast::flat_buffer buffer_{64 * 1024};
  std::chrono::steady_clock::time_point deadline_;
  bool connected_ = false;
  bool reusable_ = false;
};

class PooledHttpClient final : public HttpClient {
 public:
  PooledHttpClient(HttpEndpoint endpoint, HttpTlsOptions tls_options, std::size_t max_idle)
      : endpoint_(std::move(endpoint)), max_idle_(max_idle) {
    if (endpoint_.tls) {
      tls_.emplace(ssl::context::tls_client);
      if (tls_options.ca_file) {
        tls_->load_verify_file(tls_options.ca_file->string());
      } else {
        tls_->set_default_verify_paths();
      }
      tls_->set_verify_mode(tls_options.verify ? ssl::verify_peer : ssl::verify_none);
    }
  }

  Result<HttpResponse> send(const HttpRequest& request) override {
    std::string target = endpoint_.base_path + request.target;
    // A kept-alive connection the server closed meanwhile fails on first use; one fresh retry
    // covers that without retrying a request a live server actually refused.
    auto connection = take_idle();
    bool was_idle = connection != nullptr;
    if (!connection) connection = open();
    auto response = exchange(*connection, request, target);
    if (!response.ok() && response.error().code == errors::kUnreachable && was_idle) {
      connection = open();
      response = exchange(*connection, request, target);
    }
    if (response.ok() && connection->reusable()) give_back(std::move(connection));
    return response;
  }

  void cancel_all() override {
    std::lock_guard lock(mutex_);
    canceled_ = true;
    for (Connection* connection : busy_) connection->cancel();
  }

 private:
  // The exchange, with the connection registered as busy so cancel_all() can reach it.
  Result<HttpResponse> exchange(Connection& connection, const HttpRequest& request,
                                const std::string& target) {
    {
      std::lock_guard lock(mutex_);
      if (canceled_) return Error{errors::kCanceled, "the client was shut down"};
      busy_.push_back(&connection);
    }
    auto response = connection.exchange(request, target);
    std::lock_guard lock(mutex_);
    busy_.erase(std::find(busy_.begin(), busy_.end(), &connection));
    if (canceled_ && !response.ok()) return Error{errors::kCanceled, "the client was shut down"};
    return response;
  }

  std::unique_ptr<Connection> open() {
    if (endpoint_.tls) {
      return std::make_unique<StreamConnection<ssl::stream<beast::tcp_stream>>>(endpoint_, &*tls_);
    }
    return std::make_unique<StreamConnection<beast::tcp_stream>>(endpoint_, nullptr);
  }

  std::unique_ptr<Connection> take_idle() {
    std::lock_guard lock(mutex_);
    if (idle_.empty()) return nullptr;
    auto connection = std::move(idle_.back());
    idle_.pop_back();
    return connection;
  }

  void give_back(std::unique_ptr<Connection> connection) {
    std::lock_guard lock(mutex_);
    if (idle_.size() < max_idle_ && !canceled_) idle_.push_back(std::move(connection));
  }

  HttpEndpoint endpoint_;
  std::size_t max_idle_;
  std::optional<ssl::context> tls_;
  std::mutex mutex_;
  std::vector<std::unique_ptr<Connection>> idle_;
  std::vector<Connection*> busy_;  // in an exchange on some thread
  bool canceled_ = false;
};

}  // namespace

std::unique_ptr<HttpClient> make_http_client(HttpEndpoint endpoint, HttpTlsOptions tls,
                                             std::size_t max_idle_connections) {
  return std::make_unique<PooledHttpClient>(std::move(endpoint), std::move(tls),
                                            max_idle_connections);
}

std::string HttpResponse::header(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (boost::iequals(key, name)) return value;
  }
  return {};
}

}  // namespace amlnode::agent
