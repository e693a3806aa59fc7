// Boost.Beast is compiled in this file only.

#include "metrics/http_endpoint.h"

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <charconv>
#include <chrono>
#include <optional>
#include <unordered_map>

#include "metrics/exposition.h"

namespace amlnode::metrics {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

constexpr std::size_t kHeaderLimit = 8 * 1024;
constexpr int kMaxConnections = 64;
constexpr auto kIdleTimeout = std::chrono::seconds(30);

Result<std::uint16_t> parse_port(std::string_view text, const std::string& field) {
  unsigned value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || value > 65535)
    return Error{"InvalidConfig",
                 field + ": expected a port 0 to 65535, found \"" + std::string(text) + "\""};
  return static_cast<std::uint16_t>(value);
}

}  // namespace

Result<ListenAddress> parse_listen_address(const std::string& text, bool allow_public,
                                           const std::string& field) {
  std::string host;
  std::string port;
  if (!text.empty() && text.front() == '[') {
    auto close = text.find("]:");
    if (close == std::string::npos)
      return Error{"InvalidConfig", field + ": expected [IPv6]:PORT, found \"" + text + "\""};
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    auto colon = text.rfind(':');
    if (colon == std::string::npos)
      return Error{"InvalidConfig", field + ": expected HOST:PORT, found \"" + text + "\""};
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  boost::system::error_code ec;
  auto address = asio::ip::make_address(host, ec);
  if (ec)
    return Error{"InvalidConfig", field + ": \"" + host +
                                      "\" is not a numeric IPv4 or IPv6 address (names are not "
                                      "looked up)"};
  auto number = parse_port(port, field);
  if (!number.ok()) return number.error();
  ListenAddress listen{host, *number, address.is_loopback()};
  if (!listen.loopback && !allow_public)
    return Error{"InvalidConfig",
                 field + ": " + host +
                     " is not a loopback address; metrics have no authentication, so set "
                     "metrics.allow_public: true to serve them on it"};
  return listen;
}

class MetricsSession;

struct MetricsEndpoint::State {
  State(asio::io_context& io, ListenAddress address, Render render)
      : io(io), acceptor(io), address(std::move(address)), render(std::move(render)) {}
  asio::io_context& io;
  tcp::acceptor acceptor;
  ListenAddress address;
  Render render;
  bool stopped = false;
  std::unordered_map<MetricsSession*, std::weak_ptr<MetricsSession>> sessions;
};

class MetricsSession : public std::enable_shared_from_this<MetricsSession> {
 public:
  MetricsSession(std::shared_ptr<MetricsEndpoint::State> state, tcp::socket socket)
      : state_(std::move(state)), stream_(std::move(socket)), buffer_(2 * kHeaderLimit) {}

  void start() { read(); }
  void close() {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.close();
  }
  ~MetricsSession() { state_->sessions.erase(this); }

 private:
  void read() {
    parser_.emplace();
    parser_->header_limit(kHeaderLimit);
    parser_->body_limit(0);
    stream_.expires_after(kIdleTimeout);
    http::async_read(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_read(ec); });
  }

  void on_read(beast::error_code ec) {
    if (ec == http::error::header_limit) return answer(431, "request header too large\n", false);
    if (ec) return close();
    const auto& request = parser_->get();
    std::string_view target(request.target().data(), request.target().size());
    target = target.substr(0, target.find('?'));
    bool keep_alive = request.keep_alive();
    if (target != "/metrics") return answer(404, "not found; try /metrics\n", keep_alive);
    if (request.method() != http::verb::get && request.method() != http::verb::head)
      return answer(405, "only GET and HEAD\n", keep_alive);
    response_ = {};
    state_->render(response_.body());
    finish(200, kExpositionContentType, keep_alive, request.method() == http::verb::head);
  }

  void answer(int status, std::string body, bool keep_alive) {
    response_ = {};
    response_.body() = std::move(body);
    finish(status, "text/plain; charset=utf-8", keep_alive, false);
  }

  void finish(int status, const char* content_type, bool keep_alive, bool head) {
    response_.result(static_cast<unsigned>(status));
    response_.version(11);
    response_.set(http::field::content_type, content_type);
    if (status == 405) response_.set(http::field::allow, "GET, HEAD");
    response_.keep_alive(keep_alive);
    response_.prepare_payload();
    if (head) response_.body().clear();  // Content-Length stays the GET's, as HEAD requires
    stream_.expires_after(kIdleTimeout);
    http::async_write(stream_, response_,
                      [self = shared_from_this(), keep_alive](beast::error_code ec, std::size_t) {
                        if (ec || !keep_alive) return self->close();
                        self->read();
                      });
  }

  std::shared_ptr<MetricsEndpoint::State> state_;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::empty_body>> parser_;
  http::response<http::string_body> response_;
};

namespace {

void accept(const std::shared_ptr<MetricsEndpoint::State>& state) {
  state->acceptor.async_accept([state](beast::error_code ec, tcp::socket socket) {
    if (ec || state->stopped) return;
    if (state->sessions.size() >= static_cast<std::size_t>(kMaxConnections)) {
      socket.close(ec);
    } else {
      auto session = std::make_shared<MetricsSession>(state, std::move(socket));
      state->sessions.emplace(session.get(), session);
      session->start();
    }
    accept(state);
  });
}

}  // namespace

MetricsEndpoint::MetricsEndpoint(asio::io_context& io, ListenAddress address, Render render)
    : state_(std::make_shared<State>(io, std::move(address), std::move(render))) {}

MetricsEndpoint::~MetricsEndpoint() {
  stop();
}

Result<void> MetricsEndpoint::start() {
  const auto& address = state_->address;
  std::string where = address.host + ":" + std::to_string(address.port);
  boost::system::error_code ec;
  tcp::endpoint endpoint(asio::ip::make_address(address.host, ec), address.port);
  if (!ec) state_->acceptor.open(endpoint.protocol(), ec);
  if (!ec) state_->acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) state_->acceptor.bind(endpoint, ec);
  if (!ec) state_->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec)
    return Error{"MetricsListenFailed", "cannot serve metrics on " + where + ": " + ec.message()};
  accept(state_);
  return ok();
}

std::uint16_t MetricsEndpoint::port() const {
  boost::system::error_code ec;
  auto endpoint = state_->acceptor.local_endpoint(ec);
  return ec ? 0 : endpoint.port();
}

void MetricsEndpoint::stop() {
  if (state_->stopped) return;
  state_->stopped = true;
  boost::system::error_code ec;
  state_->acceptor.close(ec);
  auto sessions = state_->sessions;
  for (auto& [raw, weak] : sessions) {
    if (auto session = weak.lock()) session->close();
  }
}

}  // namespace amlnode::metrics
