#pragma once

// A small synchronous HTTP/1.1 client for the control plane tests (Boost.Beast, TLS optional),
// plus a raw-socket helper for sending bytes no HTTP client would send.

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace amlnode::controlplane::test {

struct HttpResponse {
  int status = 0;  // 0 when no answer came (connection closed, timeout)
  std::string body;
  std::map<std::string, std::string> headers;  // names in lower case

  nlohmann::json json() const;
  std::string header(const std::string& lower_case_name) const;
};

using Headers = std::vector<std::pair<std::string, std::string>>;

class HttpClient {
 public:
  // `tls`: speak HTTPS and accept any certificate (the tests make self-signed ones).
  HttpClient(std::uint16_t port, bool tls = false);
  ~HttpClient();
  HttpClient(HttpClient&&) noexcept;

  // One request on a kept-alive connection, reconnecting when the server closed it.
  HttpResponse request(const std::string& method, const std::string& target,
                       const std::string& token, const std::string& body = "",
                       const Headers& headers = {},
                       std::chrono::milliseconds timeout = std::chrono::seconds(30));

  HttpResponse get(const std::string& target, const std::string& token) {
    return request("GET", target, token);
  }
  HttpResponse post(const std::string& target, const std::string& token,
                    const nlohmann::json& body) {
    return request("POST", target, token, body.dump(), {{"Content-Type", "application/json"}});
  }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Connects, sends `bytes`, then reads whatever comes back until the server closes the connection
// or `timeout` passes. `closed` says whether the server closed it.
struct RawExchange {
  std::string received;
  bool closed = false;
};
RawExchange raw_exchange(std::uint16_t port, const std::string& bytes,
                         std::chrono::milliseconds timeout = std::chrono::seconds(5));

}  // namespace amlnode::controlplane::test
