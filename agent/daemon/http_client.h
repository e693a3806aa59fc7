#pragma once

// A small blocking HTTP/1.1 client (Boost.Beast, TLS optional) for the agent's calls to the
// control plane. Calls block the calling thread, so the daemon makes them on its worker pool and
// posts the results back to its event loop; the event loop thread never calls it.
//
// Connections are kept alive and reused. The client is safe to use from several threads at once:
// each call takes an idle connection (or opens one) and puts it back when the answer was read in
// full. At most `max_idle_connections` are kept; more are closed when returned.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/result.h"

namespace amlnode::agent {

// "http://host:port" or "https://host:port", with an optional path prefix put before every
// request target.
struct HttpEndpoint {
  bool tls = false;
  std::string host;
  std::string port;
  std::string base_path;  // "" or "/prefix" without a trailing slash
};

// Parses a control plane URL; errors say what was wrong with it.
Result<HttpEndpoint> parse_http_url(const std::string& url);
// The URL an endpoint was parsed from (parse_http_url's inverse).
std::string http_url(const HttpEndpoint& endpoint);

struct HttpTlsOptions {
  std::optional<std::filesystem::path> ca_file;  // PEM; the system's trust store when unset
  bool verify = true;                            // off only for tests with self-signed certs
};

struct HttpRequest {
  std::string method = "GET";  // GET, POST, PUT
  std::string target;          // path and query, e.g. "/v1/nodes/abc/heartbeat"
  std::string bearer_token;
  std::string content_type;  // "" when there is no body
  std::string body;
  // A body the caller keeps alive for the whole call, sent instead of `body` when not empty, so a
  // 4 MiB log chunk goes out of the log shipper's reused buffer with no copy.
  std::string_view borrowed_body;
  std::vector<std::pair<std::string, std::string>> headers;
  // The whole exchange (connect, send, answer) must finish within this; long polls pass their
  // wait plus a margin.
  std::chrono::milliseconds timeout{30000};
  // Answers with a larger body are an error (the connection is then dropped), so a broken or
  // hostile server cannot make the agent allocate without bound.
  std::uint64_t max_response_bytes = 8 << 20;
  // When set, a 200 answer's body is streamed into this file instead of memory (snapshots).
  std::optional<std::filesystem::path> response_file;
};

struct HttpResponse {
  int status = 0;
  std::string body;  // empty when streamed to response_file
  // The answer's X-Amlnode-* headers (the protocol's own), names as sent; other headers are not
  // kept.
  std::vector<std::pair<std::string, std::string>> headers;

  // The value of header `name` (compared without regard to case), empty when absent.
  std::string header(std::string_view name) const;
};

class HttpClient {
 public:
  virtual ~HttpClient() = default;
  // Error codes: "Unreachable" (connect, TLS, send or receive failed, or timed out: worth
  // retrying), "ResponseTooLarge", "FileError". Any HTTP status is a successful call.
  virtual Result<HttpResponse> send(const HttpRequest& request) = 0;
  // Ends every call in flight (a long poll the agent no longer wants) and makes later calls fail
  // at once with "Canceled": how the daemon stops without waiting out a long poll. Thread-safe.
  virtual void cancel_all() = 0;
};

std::unique_ptr<HttpClient> make_http_client(HttpEndpoint endpoint, HttpTlsOptions tls = {},
                                             std::size_t max_idle_connections = 4);

}  // namespace amlnode::agent
