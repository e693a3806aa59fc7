#include "docker/engine_client.h"

#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cctype>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <vector>

#include "common/error_codes.h"
#include "common/format.h"

namespace amlnode::docker {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using Protocol = asio::local::stream_protocol;
using Stream = beast::basic_stream<Protocol>;
using Clock = std::chrono::steady_clock;

// An error body is only read for its message; anything past this is dropped.
constexpr std::size_t kErrorBodyLimit = 64u << 10;
// How much of a streamed body is read per step (the memory a stream holds at once).
constexpr std::size_t kReadPiece = 64u << 10;

std::string seconds_text(std::chrono::milliseconds duration) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1f s", static_cast<double>(duration.count()) / 1000.0);
  return text;
}

// Runs one asynchronous operation to completion on `ioc` and returns its error code. The stream's
// expiry, set by the caller before each operation, is what bounds it in time.
template <class Start>
beast::error_code complete(asio::io_context& ioc, Start&& start) {
  beast::error_code result = asio::error::would_block;
  start([&result](beast::error_code ec, auto&&...) { result = ec; });
  ioc.restart();
  ioc.run();
  return result;
}

// How often a cancelable call looks at its caller's `canceled`.
constexpr std::chrono::milliseconds kCancelPollInterval{100};

// The same, looking at `canceled` between slices of waiting; once it says so, `stop` is called,
// which must make the operation complete (closing its socket aborts it).
template <class Start, class Stop>
beast::error_code complete(asio::io_context& ioc, Start&& start,
                           const std::function<bool()>& canceled, Stop&& stop) {
  if (!canceled) return complete(ioc, std::forward<Start>(start));
  beast::error_code result = asio::error::would_block;
  bool done = false;
  start([&result, &done](beast::error_code ec, auto&&...) {
    result = ec;
    done = true;
  });
  ioc.restart();
  bool stopped = false;
  while (!done) {
    ioc.run_for(kCancelPollInterval);
    if (!done && !stopped && canceled()) {
      stopped = true;
      stop();
    }
  }
  return result;
}

// What limits a call in time: a deadline for the whole call, a limit on each silence, or nothing.
class Timer {
 public:
  enum class Kind { Total, Idle, None };
  Timer(Kind kind, std::chrono::milliseconds limit)
      : kind_(limit.count() > 0 ? kind : Kind::None),
        limit_(limit),
        deadline_(Clock::now() + limit) {}

  void arm(Stream& stream) const {
    switch (kind_) {
      case Kind::Total:
        stream.expires_at(deadline_);
        break;
      case Kind::Idle:
        stream.expires_after(limit_);
        break;
      case Kind::None:
        stream.expires_never();
        break;
    }
  }
  std::chrono::milliseconds limit() const { return limit_; }

 private:
  Kind kind_;
  std::chrono::milliseconds limit_;
  Clock::time_point deadline_;
};

// One connection carrying one request and its response.
class Exchange {
 public:
  Exchange(const EngineClient& client, const EngineConfig& config)
      : client_(client), config_(config), stream_(ioc_) {}

  Result<void> connect() {
    stream_.expires_after(config_.connect_timeout);
    auto ec = complete(ioc_, [&](auto handler) {
      stream_.async_connect(Protocol::endpoint(client_.socket().string()), std::move(handler));
    });
    if (ec == beast::error::timeout) {
      return Error{kDockerUnavailable, "cannot reach the Docker daemon at " + client_.endpoint() +
                                           ": no connection within " +
                                           seconds_text(config_.connect_timeout)};
    }
    if (ec) {
      return Error{kDockerUnavailable,
                   "cannot reach the Docker daemon at " + client_.endpoint() + ": " + ec.message()};
    }
    return ok();
  }

  Result<void> send(const Request& request, const std::string& target, const Timer& timer) {
    http::request<http::string_body> message{http::string_to_verb(request.method), target, 11};
    message.set(http::field::host, "docker");
    message.set(http::field::user_agent, "amlnode");
    for (const auto& [name, value] : request.headers) message.set(name, value);
    if (!request.body.empty() || request.method == "POST") {
      message.set(http::field::content_type, request.content_type);
      message.body() = request.body;
    }
    message.prepare_payload();
    timer.arm(stream_);
    auto ec = complete(
        ioc_, [&](auto handler) { http::async_write(stream_, message, std::move(handler)); });
    if (ec) return transport_error(request, ec, timer);
    return ok();
  }

  // Reads the status line and headers, then the body piece by piece into `on_piece`.
  Result<int> receive(const Request& request, const Timer& timer,
                      const std::function<Result<void>(int, std::string_view)>& on_piece) {
    http::response_parser<http::buffer_body> parser;
    parser.body_limit(boost::none);  // The callers bound what they keep.
    parser.header_limit(kErrorBodyLimit);
    timer.arm(stream_);
    auto ec = complete(
        ioc_,
        [&](auto handler) {
          http::async_read_header(stream_, buffer_, parser, std::move(handler));
        },
        request.canceled, [&] { stream_.close(); });
    if (ec) return failure(request, ec, timer);
    int status = parser.get().result_int();
    std::vector<char> piece(kReadPiece);
    while (!parser.is_done()) {
      parser.get().body().data = piece.data();
      parser.get().body().size = piece.size();
      timer.arm(stream_);
      ec = complete(
          ioc_,
          [&](auto handler) {
            http::async_read_some(stream_, buffer_, parser, std::move(handler));
          },
          request.canceled, [&] { stream_.close(); });
      if (ec == http::error::need_buffer) ec = {};
      if (ec) return failure(request, ec, timer);
      std::size_t received = piece.size() - parser.get().body().size;
      if (received == 0) continue;
      if (auto delivered = on_piece(status, std::string_view(piece.data(), received)); !delivered) {
        return delivered.error();
      }
    }
    return status;
  }

 private:
  // An operation of `request` ended with `ec`: canceled by its caller, or a transport error.
  Error failure(const Request& request, beast::error_code ec, const Timer& timer) const {
    if (request.canceled && request.canceled()) {
      return Error{errors::kCanceled, request.method + " " + request.target + " was canceled"};
    }
    return transport_error(request, ec, timer);
  }

  Error transport_error(const Request& request, beast::error_code ec, const Timer& timer) const {
    std::string call = request.method + " " + request.target;
    if (ec == beast::error::timeout) {
      return Error{kDockerUnavailable, "the Docker daemon at " + client_.endpoint() +
                                           " did not answer " + call + " within " +
                                           seconds_text(timer.limit())};
    }
    return Error{kDockerUnavailable, "lost the connection to the Docker daemon at " +
                                         client_.endpoint() + " during " + call + ": " +
                                         ec.message()};
  }

  const EngineClient& client_;
  const EngineConfig& config_;
  asio::io_context ioc_;
  Stream stream_;
  beast::flat_buffer buffer_;
};

struct ApiVersion {
  int major = 0;
  int minor = 0;
  auto operator<=>(const ApiVersion&) const = default;
};

std::optional<ApiVersion> parse_api_version(std::string_view text) {
  ApiVersion version;
  if (std::sscanf(std::string(text).c_str(), "%d.%d", &version.major, &version.minor) != 2) {
    return std::nullopt;
  }
  return version;
}

std::string to_string(const ApiVersion& version) {
  return std::to_string(version.major) + "." + std::to_string(version.minor);
}

Result<std::filesystem::path> socket_from(std::string_view host, std::string_view source) {
  constexpr std::string_view kUnix = "unix://";
  std::string_view path = host;
  if (host.starts_with(kUnix)) {
    path = host.substr(kUnix.size());
  } else if (host.find("://") != std::string_view::npos) {
    return Error{"InvalidConfiguration",
                 std::string(source) + " is '" + std::string(host) +
                     "': amlnode talks to Docker over a Unix socket only (unix:///path)"};
  }
  if (path.empty() || path.front() != '/') {
    return Error{"InvalidConfiguration", std::string(source) + " is '" + std::string(host) +
                                             "': expected unix:///absolute/path"};
  }
  return std::filesystem::path(path);
}

}  // namespace

Result<std::filesystem::path> resolve_docker_socket(std::string_view configured,
                                                    const char* docker_host_env) {
  if (!configured.empty()) return socket_from(configured, "the configured docker host");
  if (docker_host_env && *docker_host_env) return socket_from(docker_host_env, "DOCKER_HOST");
  return std::filesystem::path(kDefaultDockerSocket);
}

std::string daemon_message(const Response& response) {
  try {
    auto body = nlohmann::json::parse(response.body);
    if (body.is_object() && body.contains("message") && body["message"].is_string()) {
      return body["message"].get<std::string>();
    }
  } catch (const nlohmann::json::exception&) {
    // Not JSON: the body text itself is the message.
  }
  std::string text = response.body.substr(0, 4096);
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  return text.empty() ? "HTTP status " + std::to_string(response.status) : text;
}

Error daemon_error(const Response& response, std::string_view doing) {
  return Error{kDockerError, std::string(doing) + ": " + daemon_message(response)};
}

std::string query_escape(std::string_view value) {
  return percent_escape(value, "-_.~");
}

std::string path_escape(std::string_view value) {
  return percent_escape(value, "-_.~/:@");
}

Request Request::get(std::string target) {
  Request request;
  request.target = std::move(target);
  return request;
}

Request Request::post(std::string target, std::string body) {
  Request request;
  request.method = "POST";
  request.target = std::move(target);
  request.body = std::move(body);
  return request;
}

Request Request::del(std::string target) {
  Request request;
  request.method = "DELETE";
  request.target = std::move(target);
  return request;
}

Request& Request::with_timeout(std::chrono::milliseconds limit) {
  timeout = limit;
  return *this;
}

Request& Request::with_header(std::string name, std::string value) {
  headers.emplace_back(std::move(name), std::move(value));
  return *this;
}

EngineClient::EngineClient(std::filesystem::path socket, EngineConfig config)
    : socket_(std::move(socket)), config_(std::move(config)) {}

std::string EngineClient::endpoint() const {
  return "unix://" + socket_.string();
}

Result<std::string> EngineClient::api_version() {
  std::lock_guard lock(version_mutex_);
  if (version_) return *version_;
  Request request = Request::get("/version");
  request.versioned = false;
  auto response = call(request);
  if (!response) return response.error();
  if (!response->success()) return daemon_error(*response, "asking the Docker daemon's version");
  std::optional<ApiVersion> daemon;
  try {
    daemon = parse_api_version(nlohmann::json::parse(response->body).value("ApiVersion", ""));
  } catch (const nlohmann::json::exception&) {
    daemon.reset();
  }
  if (!daemon) {
    return Error{kDockerError, "the Docker daemon at " + endpoint() + " reported no ApiVersion"};
  }
  auto newest = *parse_api_version(kClientMaxApiVersion);
  auto oldest = *parse_api_version(kClientMinApiVersion);
  if (*daemon < oldest) {
    return Error{kDockerError, "the Docker daemon at " + endpoint() + " speaks API " +
                                   to_string(*daemon) + "; amlnode needs " + kClientMinApiVersion +
                                   " or newer (Docker 19.03+)"};
  }
  version_ = to_string(std::min(*daemon, newest));
  return *version_;
}

Result<std::string> EngineClient::versioned_target(const Request& request) {
  if (!request.versioned) return request.target;
  auto version = api_version();
  if (!version) return version.error();
  return "/v" + *version + request.target;
}

Result<Response> EngineClient::call(const Request& request) {
  auto target = versioned_target(request);
  if (!target) return target.error();
  Timer timer(Timer::Kind::Total, request.timeout.value_or(config_.request_timeout));
  Exchange exchange(*this, config_);
  if (auto connected = exchange.connect(); !connected) return connected.error();
  if (auto sent = exchange.send(request, *target, timer); !sent) return sent.error();
  Response response;
  auto status = exchange.receive(request, timer, [&](int, std::string_view piece) -> Result<void> {
    if (response.body.size() + piece.size() > config_.max_response_bytes) {
      return Error{kDockerError, "the Docker daemon's answer to " + request.method + " " +
                                     request.target + " is larger than " +
                                     std::to_string(config_.max_response_bytes) +
                                     " bytes, the most amlnode holds; it was discarded"};
    }
    response.body.append(piece);
    return ok();
  });
  if (!status) return status.error();
  response.status = *status;
  return response;
}

Result<void> EngineClient::stream(const Request& request, const BodySink& on_body) {
  auto target = versioned_target(request);
  if (!target) return target.error();
  Timer timer(Timer::Kind::Idle, request.timeout.value_or(config_.stream_idle_timeout));
  Exchange exchange(*this, config_);
  if (auto connected = exchange.connect(); !connected) return connected.error();
  if (auto sent = exchange.send(request, *target, timer); !sent) return sent.error();
  Response failure;
  auto status = exchange.receive(request, timer, [&](int status, std::string_view piece) {
    if (status >= 200 && status < 300) {
      on_body(piece);
    } else if (failure.body.size() < kErrorBodyLimit) {
      failure.body.append(piece.substr(0, kErrorBodyLimit - failure.body.size()));
    }
    return ok();
  });
  if (!status) return status.error();
  if (*status < 200 || *status >= 300) {
    failure.status = *status;
    return Error{kDockerError, daemon_message(failure)};
  }
  return ok();
}

}  // namespace amlnode::docker
