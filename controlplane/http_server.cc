// Boost.Beast lives in this file only (plus the tests' client), so the rest of the server compiles
// quickly and without it.

#include "controlplane/http_server.h"

#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <limits>
#include <optional>
#include <unordered_map>

#include "controlplane/json_fields.h"

namespace amlnode::controlplane {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;

namespace {

// Raw bytes read ahead of the parser: enough for any header plus a read of body bytes. The
// parsers consume body bytes as they arrive, so this never has to hold a whole body.
std::size_t read_buffer_limit(const Limits& limits) {
  return limits.max_header_bytes + 64 * 1024;
}

std::string to_string(beast::string_view view) {
  return std::string(view.data(), view.size());
}

bool is_http_parse_error(const beast::error_code& ec) {
  return ec.category() == http::make_error_code(http::error::bad_method).category() &&
         ec != http::error::end_of_stream && ec != http::error::partial_message;
}

class SessionBase {
 public:
  virtual ~SessionBase() = default;
  virtual void close_now() = 0;
};

// What every connection shares: the router, the limits, the TLS context and two budgets.
struct Shared {
  Router& router;
  Limits limits;
  Timeouts timeouts;
  std::optional<ssl::context> tls;
  std::uint64_t buffered_body_bytes = 0;  // reserved by bodies being read into memory
  std::unordered_map<SessionBase*, std::weak_ptr<SessionBase>> sessions;
};

Response plain_error(int status, const std::string& code, const std::string& message) {
  Response response;
  response.status = status;
  response.body = dump_json({{"error", {{"code", code}, {"message", message}}}});
  response.close = true;
  return response;
}

template <class Stream>
class Session final : public SessionBase, public std::enable_shared_from_this<Session<Stream>> {
  static constexpr bool kTls = !std::is_same_v<Stream, beast::tcp_stream>;

 public:
  template <class... Args>
  Session(std::shared_ptr<Shared> shared, Args&&... stream_args)
      : shared_(std::move(shared)),
        stream_(std::forward<Args>(stream_args)...),
        buffer_(read_buffer_limit(shared_->limits)) {}

  ~Session() override {
    shared_->sessions.erase(this);
    release_reservation();
    discard_upload();
  }

  void start() {
    shared_->sessions[this] = this->weak_from_this();
    if constexpr (kTls) {
      lowest().expires_after(shared_->timeouts.handshake);
      stream_.async_handshake(ssl::stream_base::server,
                              [self = this->shared_from_this()](beast::error_code ec) {
                                if (ec) return self->close_now();
                                self->read_head();
                              });
    } else {
      read_head();
    }
  }

  void close_now() override {
    closed_ = true;
    beast::error_code ec;
    lowest().socket().shutdown(tcp::socket::shutdown_both, ec);
    lowest().close();
  }

 private:
  beast::tcp_stream& lowest() { return beast::get_lowest_layer(stream_); }

  void read_head() {
    ++request_number_;
    responded_ = false;
    head_parser_.emplace();
    head_parser_->header_limit(shared_->limits.max_header_bytes);
    // The endpoint's own limit is applied once the route is known; this parser reads no body.
    head_parser_->body_limit(std::numeric_limits<std::uint64_t>::max());
    string_parser_.reset();
    file_parser_.reset();
    sized_body_.reset();
    receive_low_water(1);
    lowest().expires_after(shared_->timeouts.idle);
    http::async_read_header(stream_, buffer_, *head_parser_,
                            [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
                              self->on_head(ec);
                            });
  }

  // SO_RCVLOWAT: the socket reports itself readable only once this many bytes are queued (or
  // the peer closed). While a large body streams in, that turns thousands of wake-ups and reads
  // of a segment each into one read per kBodyLowWater; never more than the body still owes, so a
  // read can always complete. Headers are read with the default of 1 byte. Plain TCP only: the
  // TLS layer keeps ciphertext it has read in a buffer of its own, so the socket may never again
  // hold as many bytes as the body still owes.
  void receive_low_water(std::size_t bytes) {
    if constexpr (kTls) return;
    if (bytes == low_water_) return;
    int value = static_cast<int>(bytes);
    if (::setsockopt(lowest().socket().native_handle(), SOL_SOCKET, SO_RCVLOWAT, &value,
                     sizeof value) == 0) {
      low_water_ = bytes;
    }
  }

  void on_head(beast::error_code ec) {
    if (ec == http::error::header_limit) {
      return send(plain_error(431, "HeaderTooLarge", "the request header is over the limit"));
    }
    if (ec == http::error::buffer_overflow) {
      return send(plain_error(431, "HeaderTooLarge", "the request header is over the limit"));
    }
    if (ec && is_http_parse_error(ec)) {
      return send(plain_error(400, "BadRequest", "not an HTTP/1.1 request: " + ec.message()));
    }
    if (ec) return close_now();  // closed, timed out or reset: nobody to answer

    const auto& message = head_parser_->get();
    head_.method = to_string(message.method_string());
    head_.target = to_string(message.target());
    head_.authorization = to_string(message[http::field::authorization]);
    if (auto epoch = message.find("X-Amlnode-Epoch"); epoch != message.end()) {
      head_.epoch = to_string(epoch->value());
    } else {
      head_.epoch.reset();
    }
    head_.content_length.reset();
    if (auto length = head_parser_->content_length()) head_.content_length = *length;
    keep_alive_ = message.keep_alive();

    Routing routing = shared_->router.route(head_);
    if (auto* answer = std::get_if<Response>(&routing)) {
      // The body, if any, was not read: the connection cannot be used for another request.
      if (!head_parser_->is_done()) answer->close = true;
      return send(std::move(*answer));
    }
    plan_ = std::move(std::get<RoutePlan>(routing));
    if (head_.content_length && *head_.content_length > plan_.body_limit) {
      return send(plain_error(413, "PayloadTooLarge",
                              "the body is " + std::to_string(*head_.content_length) +
                                  " bytes; this endpoint takes at most " +
                                  std::to_string(plan_.body_limit)));
    }
    if (plan_.body == BodyKind::Buffer && !head_parser_->is_done()) {
      std::uint64_t want = head_.content_length.value_or(plan_.body_limit);
      if (shared_->buffered_body_bytes + want > shared_->limits.max_buffered_body_bytes) {
        Response busy = plain_error(503, "ServerBusy", "too many request bodies in flight");
        busy.headers.emplace_back("Retry-After", "1");
        return send(std::move(busy));
      }
      reserved_ = want;
      shared_->buffered_body_bytes += want;
    }
    if (!head_parser_->is_done() && beast::iequals(message[http::field::expect], "100-continue")) {
      return send_continue();
    }
    start_body();
  }

  void send_continue() {
    auto interim = std::make_shared<http::response<http::empty_body>>(http::status::continue_, 11);
    lowest().expires_after(shared_->timeouts.io);
    http::async_write(
        stream_, *interim,
        [self = this->shared_from_this(), interim](beast::error_code ec, std::size_t) {
          if (ec) return self->close_now();
          self->start_body();
        });
  }

  void start_body() {
    if (plan_.body == BodyKind::File) {
      file_parser_.emplace(std::move(*head_parser_));
      file_parser_->body_limit(plan_.body_limit);
      beast::error_code ec;
      file_parser_->get().body().open(plan_.body_file.c_str(), beast::file_mode::write, ec);
      if (ec) {
        spdlog::error("cannot create {}: {}", plan_.body_file.string(), ec.message());
        return send(plain_error(503, "StorageError", "cannot store the upload"));
      }
      upload_ = plan_.body_file;
      read_body(*file_parser_);
    } else if (head_.content_length && !head_parser_->is_done()) {
      read_sized_body(static_cast<std::size_t>(*head_.content_length));
    } else {
      string_parser_.emplace(std::move(*head_parser_));
      string_parser_->body_limit(plan_.body_limit);
      read_body(*string_parser_);
    }
  }

  // A body of known length (every log chunk) is read straight into the request's buffer: first
  // what the header read brought along, then reads from the socket as large as the socket has,
  // with no parser copying in between. A log chunk is so copied once on its way in and once on
  // its way out (into the file). The length was checked against the endpoint's limit and the
  // memory budget already. Chunked bodies go through the parser, which enforces the limit.
  void read_sized_body(std::size_t length) {
    sized_body_.emplace(length, '\0');
    auto ahead = buffer_.data();
    std::size_t have = std::min(ahead.size(), length);
    asio::buffer_copy(asio::buffer(sized_body_->data(), have), ahead);
    buffer_.consume(have);
    read_sized_rest(have);
  }

  // The timeout is reset on every read: a slow but steady body may take as long as it needs.
  void read_sized_rest(std::size_t filled) {
    if (filled == sized_body_->size()) return dispatch();
    receive_low_water(std::min(sized_body_->size() - filled, kBodyLowWater));
    lowest().expires_after(shared_->timeouts.io);
    stream_.async_read_some(
        asio::buffer(sized_body_->data() + filled, sized_body_->size() - filled),
        [self = this->shared_from_this(), filled](beast::error_code ec, std::size_t n) {
          if (ec) return self->close_now();  // cut off mid-body: nobody to answer
          self->read_sized_rest(filled + n);
        });
  }

  template <class Parser>
  void read_body(Parser& parser) {
    if (parser.is_done()) return dispatch();
    lowest().expires_after(shared_->timeouts.io);
    http::async_read_some(
        stream_, buffer_, parser,
        [self = this->shared_from_this(), &parser](beast::error_code ec, std::size_t) {
          if (ec == http::error::body_limit) {
            return self->send(
                plain_error(413, "PayloadTooLarge", "the body is over this endpoint's limit"));
          }
          if (ec && is_http_parse_error(ec)) {
            return self->send(plain_error(400, "BadRequest", "bad body: " + ec.message()));
          }
          if (ec) return self->close_now();
          self->read_body(parser);
        });
  }

  void dispatch() {
    Request request;
    request.head = head_;
    if (file_parser_) {
      beast::error_code ec;
      file_parser_->get().body().file().close(ec);
      request.body_file = upload_;
      upload_.clear();  // the handler owns it now
    } else if (sized_body_) {
      request.body = std::move(*sized_body_);
      sized_body_.reset();
    } else if (string_parser_) {
      request.body = std::move(string_parser_->get().body());
      string_parser_.reset();
    }
    std::weak_ptr<Session> weak = this->shared_from_this();
    request.peer_connected = [weak] {
      auto self = weak.lock();
      return self && self->peer_connected();
    };
    auto handler = std::move(plan_.handler);
    plan_ = RoutePlan{};
    handler(std::move(request), responder());
    release_reservation();
  }

  Responder responder() {
    return [self = this->shared_from_this(), number = request_number_](Response response) {
      if (number != self->request_number_ || self->responded_) return;
      self->send(std::move(response));
    };
  }

  // Whether the client is still there, without reading anything: a closed or reset connection
  // reads as end of stream (or an error); a live idle one would block.
  bool peer_connected() {
    if (closed_) return false;
    char byte;
    ssize_t n = ::recv(lowest().socket().native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n > 0) return true;
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
  }

  void send(Response response) {
    responded_ = true;
    release_reservation();
    discard_upload();
    if (closed_) {
      if (response.on_sent) response.on_sent(false);
      return;
    }
    bool keep_alive = keep_alive_ && !response.close;
    if (!response.file.empty()) {
      auto out = std::make_shared<Outgoing<http::file_body>>();
      beast::error_code ec;
      out->message.body().open(response.file.c_str(), beast::file_mode::scan, ec);
      if (!ec) {
        fill(out->message, response, keep_alive);
        return write_some(out, std::move(response.on_sent), keep_alive);
      }
      response = plain_error(503, "StorageError", "cannot read the file: " + ec.message());
      keep_alive = false;
    }
    auto out = std::make_shared<Outgoing<http::string_body>>();
    out->message.body() = std::move(response.body);
    fill(out->message, response, keep_alive);
    write_some(out, std::move(response.on_sent), keep_alive);
  }

  template <class Body>
  struct Outgoing {
    http::response<Body> message;
    std::optional<http::response_serializer<Body>> serializer;
  };

  template <class Body>
  static void fill(http::response<Body>& message, const Response& response, bool keep_alive) {
    message.version(11);
    message.result(static_cast<unsigned>(response.status));
    message.set(http::field::server, "amlnode-controlplane");
    message.set(http::field::content_type, response.content_type);
    for (const auto& [name, value] : response.headers) message.set(name, value);
    message.keep_alive(keep_alive);
    message.prepare_payload();
  }

  template <class Body>
  void write_some(std::shared_ptr<Outgoing<Body>> out, std::function<void(bool)> on_sent,
                  bool keep_alive) {
    if (!out->serializer) out->serializer.emplace(out->message);
    lowest().expires_after(shared_->timeouts.io);
    http::async_write_some(stream_, *out->serializer,
                           [self = this->shared_from_this(), out, on_sent = std::move(on_sent),
                            keep_alive](beast::error_code ec, std::size_t) mutable {
                             if (ec) {
                               if (on_sent) on_sent(false);
                               return self->close_now();
                             }
                             if (!out->serializer->is_done())
                               return self->write_some(out, std::move(on_sent), keep_alive);
                             if (on_sent) on_sent(true);
                             if (keep_alive) return self->read_head();
                             self->finish();
                           });
  }

  // Ends the connection after an answer: TLS says goodbye first, within a short deadline; plain
  // TCP lingers (below).
  void finish() {
    if constexpr (kTls) {
      lowest().expires_after(kLingerTime);
      stream_.async_shutdown(
          [self = this->shared_from_this()](beast::error_code) { self->close_now(); });
    } else {
      beast::error_code ec;
      lowest().socket().shutdown(tcp::socket::shutdown_send, ec);
      lowest().expires_after(kLingerTime);
      linger(0);
    }
  }

  // Closing a socket with unread input makes the kernel send a reset, which can destroy the answer
  // (a 413, say) before the client reads it. So after an answer that closes the connection, what
  // the client still sends is read and dropped, up to kLingerBytes and kLingerTime, until it
  // closes its side.
  void linger(std::size_t dropped) {
    if (dropped > kLingerBytes) return close_now();
    if (!scratch_) scratch_ = std::make_unique<char[]>(kScratchBytes);
    lowest().async_read_some(
        asio::buffer(scratch_.get(), kScratchBytes),
        [self = this->shared_from_this(), dropped](beast::error_code ec, std::size_t n) {
          if (ec) return self->close_now();
          self->linger(dropped + n);
        });
  }

  static constexpr std::size_t kBodyLowWater = 256 * 1024;
  static constexpr std::chrono::seconds kLingerTime{2};
  static constexpr std::size_t kLingerBytes = 16 << 20;
  static constexpr std::size_t kScratchBytes = 16 * 1024;

  void release_reservation() {
    shared_->buffered_body_bytes -= reserved_;
    reserved_ = 0;
  }

  void discard_upload() {
    if (upload_.empty()) return;
    if (file_parser_) {
      beast::error_code ec;
      file_parser_->get().body().file().close(ec);
    }
    std::error_code ec;
    std::filesystem::remove(upload_, ec);
    upload_.clear();
  }

  std::shared_ptr<Shared> shared_;
  Stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::empty_body>> head_parser_;
  std::optional<http::request_parser<http::string_body>> string_parser_;
  std::optional<http::request_parser<http::file_body>> file_parser_;
  std::optional<std::string> sized_body_;  // a body of known length being read (read_sized_body)
  std::size_t low_water_ = 1;              // the socket's SO_RCVLOWAT
  RequestHead head_;
  RoutePlan plan_;
  bool keep_alive_ = false;
  bool responded_ = false;
  bool closed_ = false;
  std::uint64_t request_number_ = 0;
  std::uint64_t reserved_ = 0;
  std::filesystem::path upload_;     // a partial upload to remove unless a handler took it
  std::unique_ptr<char[]> scratch_;  // where lingering input is dropped
};

}  // namespace

struct HttpServer::Impl {
  Impl(asio::io_context& io, Router& router, const ServerOptions& options)
      : io(io),
        options(options),
        shared(
            std::make_shared<Shared>(Shared{router, options.limits, options.timeouts, {}, 0, {}})),
        acceptor(io),
        retry(io) {}

  void accept() {
    acceptor.async_accept([this](beast::error_code ec, tcp::socket socket) {
      if (ec == asio::error::operation_aborted || !acceptor.is_open()) return;
      if (ec) {
        // Out of file descriptors and the like: try again shortly instead of spinning.
        spdlog::warn("accepting a connection failed: {}", ec.message());
        retry.expires_after(std::chrono::milliseconds(100));
        retry.async_wait([this](beast::error_code wait_ec) {
          if (!wait_ec) accept();
        });
        return;
      }
      start_session(std::move(socket));
      accept();
    });
  }

  void start_session(tcp::socket socket) {
    if (shared->sessions.size() >= shared->limits.max_connections) {
      beast::error_code ignored;
      socket.close(ignored);
      return;
    }
    beast::error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    if (shared->tls) {
      std::make_shared<Session<beast::ssl_stream<beast::tcp_stream>>>(shared, std::move(socket),
                                                                      *shared->tls)
          ->start();
    } else {
      std::make_shared<Session<beast::tcp_stream>>(shared, std::move(socket))->start();
    }
  }

  Result<void> load_tls() {
    if (!options.tls) return ok();
    shared->tls.emplace(ssl::context::tls_server);
    shared->tls->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                             ssl::context::no_sslv3 | ssl::context::no_tlsv1 |
                             ssl::context::no_tlsv1_1);
    beast::error_code ec;
    shared->tls->use_certificate_chain_file(options.tls->certificate_chain.string(), ec);
    if (ec) {
      return Error{"TlsError",
                   "loading " + options.tls->certificate_chain.string() + ": " + ec.message()};
    }
    shared->tls->use_private_key_file(options.tls->private_key.string(), ssl::context::pem, ec);
    if (ec)
      return Error{"TlsError",
                   "loading " + options.tls->private_key.string() + ": " + ec.message()};
    return ok();
  }

  asio::io_context& io;
  const ServerOptions& options;
  std::shared_ptr<Shared> shared;
  tcp::acceptor acceptor;
  asio::steady_timer retry;
};

HttpServer::HttpServer(asio::io_context& io, Router& router, const ServerOptions& options)
    : impl_(std::make_unique<Impl>(io, router, options)) {}

HttpServer::~HttpServer() = default;

Result<std::uint16_t> HttpServer::listen() {
  if (auto tls = impl_->load_tls(); !tls) return tls.error();
  beast::error_code ec;
  auto address = asio::ip::make_address(impl_->options.listen_address, ec);
  if (ec) return Error{"InvalidAddress", "not an IP address: " + impl_->options.listen_address};
  tcp::endpoint endpoint(address, impl_->options.port);
  auto& acceptor = impl_->acceptor;
  acceptor.open(endpoint.protocol(), ec);
  if (!ec) acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor.bind(endpoint, ec);
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return Error{"ListenFailed", "listening on " + impl_->options.listen_address + ":" +
                                     std::to_string(impl_->options.port) + ": " + ec.message()};
  }
  impl_->accept();
  return acceptor.local_endpoint().port();
}

void HttpServer::close() {
  beast::error_code ignored;
  impl_->acceptor.close(ignored);
  impl_->retry.cancel();
  // Copied: closing a session can end it, and its destructor edits the map.
  std::vector<std::shared_ptr<SessionBase>> open;
  for (auto& [raw, weak] : impl_->shared->sessions) {
    if (auto session = weak.lock()) open.push_back(std::move(session));
  }
  for (auto& session : open) session->close_now();
}

}  // namespace amlnode::controlplane
