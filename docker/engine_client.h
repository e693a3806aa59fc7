#pragma once

// A client for the Docker Engine API over its Unix socket. Every call opens its own connection and
// runs on its own small event loop, so calls are independent: one thread can block in
// POST /containers/{id}/wait while another stops that container. Nothing here shells out to the
// docker CLI.
//
// Bounds: a buffered response body is capped (`max_response_bytes`, 64 MiB by default); a larger
// one fails the call and is discarded. Streamed bodies (build, pull, logs) are handed to the
// caller piece by piece and never held whole. Error bodies are capped at 64 KiB.

#include <chrono>
#include <cstddef>
#include <filesystem>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/result.h"

namespace amlnode::docker {

inline constexpr const char* kDefaultDockerSocket = "/var/run/docker.sock";
// The newest API version this client speaks, and the oldest it accepts (1.40, Docker 19.03, is
// the first with DeviceRequests, which GPU containers need).
inline constexpr const char* kClientMaxApiVersion = "1.41";
inline constexpr const char* kClientMinApiVersion = "1.40";

// Error codes this library returns.
inline constexpr const char* kDockerUnavailable = "DockerUnavailable";
inline constexpr const char* kDockerError = "DockerError";

struct EngineConfig {
  // "unix:///path/to/docker.sock" or a plain path. Empty: $DOCKER_HOST when it is a unix:// URL,
  // else /var/run/docker.sock.
  std::string docker_host;
  std::chrono::milliseconds connect_timeout{5000};
  // Whole-request limit for ordinary calls.
  std::chrono::milliseconds request_timeout{60000};
  // Streaming calls (build, pull) may run for a long time; they fail only after this long without
  // a single byte from the daemon.
  std::chrono::milliseconds stream_idle_timeout{std::chrono::minutes(30)};
  std::size_t max_response_bytes = 64u << 20;
};

// The socket path: the configured value, else $DOCKER_HOST (`docker_host_env`, may be null), else
// the default. Only unix:// hosts are supported; anything else is an error naming it.
Result<std::filesystem::path> resolve_docker_socket(std::string_view configured,
                                                    const char* docker_host_env);

// One API call. `target` is the path and query without the /v1.xx prefix, which the client adds.
struct Request {
  std::string method = "GET";
  std::string target;
  std::string body;
  std::string content_type = "application/json";
  std::vector<std::pair<std::string, std::string>> headers;
  // Overrides the configured limit (total for buffered calls, idle for streamed ones).
  // Zero means no limit, for calls that block on purpose (container wait).
  std::optional<std::chrono::milliseconds> timeout;
  bool versioned = true;
  // Streamed calls only: polled every 100 ms while the call waits on the daemon. Once it returns
  // true the connection is closed, which makes the daemon abandon the build or pull it was doing,
  // and the call fails with the code "Canceled".
  std::function<bool()> canceled;

  static Request get(std::string target);
  static Request post(std::string target, std::string body = {});
  static Request del(std::string target);
  Request& with_timeout(std::chrono::milliseconds limit);
  Request& with_header(std::string name, std::string value);
};

struct Response {
  int status = 0;
  std::string body;
  bool success() const { return status >= 200 && status < 300; }
};

// The daemon's own message from an error response (`{"message": ...}`), or the body text.
std::string daemon_message(const Response& response);
// An Error (code DockerError) carrying the daemon's message, prefixed with what was being done.
Error daemon_error(const Response& response, std::string_view doing);

// Percent-encodes a query parameter value.
std::string query_escape(std::string_view value);
// Percent-encodes a path segment such as an image name, keeping '/', ':' and '@' (the daemon's
// routes take image names with slashes whole).
std::string path_escape(std::string_view value);

class EngineClient {
 public:
  EngineClient(std::filesystem::path socket, EngineConfig config);

  const std::filesystem::path& socket() const { return socket_; }
  // "unix:///path", as error messages show it.
  std::string endpoint() const;

  // The negotiated API version: min(daemon's ApiVersion, kClientMaxApiVersion), asked once with
  // GET /version and kept. A daemon older than kClientMinApiVersion is an error.
  Result<std::string> api_version();

  // A buffered call. Transport failures (no daemon, timeout) are errors; any HTTP status is a
  // response for the caller to judge.
  Result<Response> call(const Request& request);

  // A streamed call: `on_body` receives the body piece by piece as it arrives (chunk boundaries
  // are arbitrary). A non-2xx status becomes an Error with the daemon's message.
  using BodySink = std::function<void(std::string_view)>;
  Result<void> stream(const Request& request, const BodySink& on_body);

 private:
  Result<std::string> versioned_target(const Request& request);

  std::filesystem::path socket_;
  EngineConfig config_;
  std::mutex version_mutex_;
  std::optional<std::string> version_;
};

}  // namespace amlnode::docker
