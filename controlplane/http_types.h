#pragma once

// The seam between the HTTP transport (Beast, in http_server.cc) and the endpoints (api.cc):
// plain values, so the endpoints compile without Beast and the transport knows no endpoint.

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace amlnode::controlplane {

// What is known once the request's header is read, before any of its body.
struct RequestHead {
  std::string method;  // as sent, e.g. "GET"
  std::string target;  // the raw request-target: path and query, still percent-encoded
  std::string authorization;
  std::optional<std::string> epoch;  // the X-Amlnode-Epoch header
  std::optional<std::uint64_t> content_length;
};

struct Request {
  RequestHead head;
  std::string body;                 // for BodyKind::Buffer
  std::filesystem::path body_file;  // for BodyKind::File: the handler owns (renames or removes) it
  // Whether the client is still there; long polls check it before handing out work.
  std::function<bool()> peer_connected;
};

struct Response {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::filesystem::path file;  // when set, its content is the body instead of `body`
  std::vector<std::pair<std::string, std::string>> headers;
  bool close = false;  // close the connection after this answer
  // Called once the answer was written to the connection (true) or could not be (false).
  std::function<void(bool delivered)> on_sent;
};

// Sends the answer to a request. Called exactly once, on the io thread, possibly much later
// (long polls, answers that wait for a commit).
using Responder = std::function<void(Response)>;

enum class BodyKind {
  Buffer,  // read into memory, up to body_limit (endpoints without a body use the JSON limit)
  File,    // streamed to body_file, up to body_limit
};

struct RoutePlan {
  BodyKind body = BodyKind::Buffer;
  std::uint64_t body_limit = 0;
  std::filesystem::path body_file;
  std::function<void(Request, Responder)> handler;
};

// Decided from the header alone: an answer right away (401, 403, 404, 413 ...), or how to read
// the body and who handles the request.
using Routing = std::variant<Response, RoutePlan>;

class Router {
 public:
  virtual ~Router() = default;
  virtual Routing route(const RequestHead& head) = 0;
};

}  // namespace amlnode::controlplane
