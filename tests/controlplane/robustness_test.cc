// Malformed, oversized, slow and garbage requests: each gets its answer (or its connection
// closed) and none disturbs anyone else.

#include <catch2/catch.hpp>
#include <future>
#include <thread>

#include "tests/controlplane/cp_test_support.h"

using namespace amlnode::controlplane;
using namespace amlnode::controlplane::test;
using namespace std::chrono_literals;

namespace {

std::string status_line(const std::string& received) {
  return received.substr(0, received.find("\r\n"));
}

// The server still answers a normal request promptly.
void check_still_serving(TestServer& server) {
  HttpClient fresh(server.port());
  auto started = std::chrono::steady_clock::now();
  CHECK(fresh.get("/v1/nodes", server.user_token()).status == 200);
  CHECK(std::chrono::steady_clock::now() - started < 1s);
}

}  // namespace

TEST_CASE("malformed JSON is a 400 that says where", "[robustness]") {
  TestServer server;
  auto response =
      server.user().request("POST", "/v1/runs", server.user_token(), R"({"job": {"text": )");
  CHECK(response.status == 400);
  auto error = response.json()["error"];
  CHECK(error["code"] == "InvalidRequest");
  CHECK(error["message"].get<std::string>().rfind("body: malformed JSON", 0) == 0);
  CHECK(server.user().request("POST", "/v1/runs", server.user_token(), "[1, 2]").status == 400);
  CHECK(server.user().request("POST", "/v1/runs", server.user_token(), "\xff\xfe").status == 400);
  // A number no double holds is malformed too (nlohmann reports it as out_of_range, not as a
  // parse_error); found by fuzz/request_bodies_fuzz.cc.
  auto overflow = server.user().request("POST", "/v1/runs", server.user_token(),
                                        R"({"job": {"text": "x"}, "experiment_name": 1e500})");
  CHECK(overflow.status == 400);
  CHECK_THAT(overflow.json()["error"]["message"].get<std::string>(),
             Catch::Contains("number overflow"));
  check_still_serving(server);
}

TEST_CASE("a body over the endpoint's limit is a 413 before it is read", "[robustness]") {
  TestServer server;
  auto node = server.node("cpu");
  auto run_id = server.queue_run("cpu");
  REQUIRE(node.lease().json()["runs"].size() == 1);

  SECTION("a declared length over the limit is refused from the header alone") {
    // 64 GiB announced, a few bytes sent: the answer cannot have waited for the body.
    std::string request = "PUT /v1/runs/" + run_id +
                          "/logs/user_logs/std_log.txt?offset=0 HTTP/1.1\r\n"
                          "Host: x\r\nAuthorization: Bearer " +
                          node.token() +
                          "\r\nX-Amlnode-Epoch: 1\r\nContent-Length: 68719476736\r\n\r\nabc";
    auto started = std::chrono::steady_clock::now();
    auto exchange = raw_exchange(server.port(), request);
    CHECK(status_line(exchange.received) == "HTTP/1.1 413 Payload Too Large");
    CHECK(exchange.closed);
    CHECK(std::chrono::steady_clock::now() - started < 4s);
  }
  SECTION("JSON endpoints take at most 1 MiB") {
    auto big = server.user().request("POST", "/v1/runs", server.user_token(),
                                     std::string((1 << 20) + 1, ' '));
    CHECK(big.status == 413);
  }
  SECTION("a chunked body is cut off at the limit") {
    std::string request = "POST /v1/runs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                          server.user_token() + "\r\nTransfer-Encoding: chunked\r\n\r\n";
    std::string chunk(64 * 1024, 'x');
    char size[32];
    std::snprintf(size, sizeof size, "%zx\r\n", chunk.size());
    for (int i = 0; i < 20; ++i) request += size + chunk + "\r\n";  // 1.25 MiB
    request += "0\r\n\r\n";
    auto exchange = raw_exchange(server.port(), request);
    CHECK(status_line(exchange.received) == "HTTP/1.1 413 Payload Too Large");
  }
  SECTION("a log chunk may be up to 8 MiB") {
    std::string chunk(8 << 20, 'l');
    CHECK(node.append(run_id, "user_logs/std_log.txt", 0, 1, chunk).json()["length"] ==
          chunk.size());
    CHECK(node.append(run_id, "user_logs/std_log.txt", 0, 1, chunk + "x").status == 413);
  }
  check_still_serving(server);
}

TEST_CASE("garbage bytes get a 400 and a closed connection", "[robustness]") {
  TestServer server;
  for (std::string garbage : {std::string("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11),
                              std::string("HELLO\r\n\r\n"), std::string("GET / HTTP/9.9\r\n\r\n"),
                              std::string("GET /v1/nodes HTTP/1.1\r\nBad Header\r\n\r\n"),
                              std::string("\0\0\0\0\r\n\r\n", 8)}) {
    auto exchange = raw_exchange(server.port(), garbage, 3s);
    CHECK(exchange.closed);
    CHECK(status_line(exchange.received) == "HTTP/1.1 400 Bad Request");
  }
  check_still_serving(server);
}

TEST_CASE("an oversized header is refused", "[robustness]") {
  TestServer server;
  std::string request =
      "GET /v1/nodes HTTP/1.1\r\nHost: x\r\nX-Padding: " + std::string(64 * 1024, 'p') + "\r\n\r\n";
  auto exchange = raw_exchange(server.port(), request);
  CHECK(status_line(exchange.received) == "HTTP/1.1 431 Request Header Fields Too Large");
  CHECK(exchange.closed);
  check_still_serving(server);
}

TEST_CASE("a slow client holds only its own connection, and only until the idle timeout",
          "[robustness]") {
  TestServer server([](ServerOptions& options) { options.timeouts.idle = 1s; });
  auto started = std::chrono::steady_clock::now();
  auto slow = std::async(std::launch::async, [&] {
    return raw_exchange(server.port(), "POST /v1/nodes/x/heartbeat HTTP/1.1\r\nHost: x\r\n", 10s);
  });
  auto silent =
      std::async(std::launch::async, [&] { return raw_exchange(server.port(), "", 10s); });
  std::this_thread::sleep_for(100ms);
  for (int i = 0; i < 5; ++i) check_still_serving(server);
  CHECK(slow.get().closed);
  CHECK(silent.get().closed);
  CHECK(std::chrono::steady_clock::now() - started < 5s);
}

TEST_CASE("unknown endpoints and methods", "[robustness]") {
  TestServer server;
  CHECK(server.user().get("/v1/nothing", server.user_token()).status == 404);
  CHECK(server.user().get("/", server.user_token()).status == 404);
  CHECK(server.user().get("/v1/runs/%zz", server.user_token()).status == 400);
  auto wrong = server.user().request("DELETE", "/v1/nodes", server.user_token());
  CHECK(wrong.status == 405);
  CHECK(wrong.header("allow") == "GET");
  CHECK(server.user().get("/v1/health", "").json()["status"] == "ok");
}

TEST_CASE("many requests on one kept-alive connection", "[robustness]") {
  TestServer server;
  auto node = server.node("cpu");
  for (int i = 0; i < 200; ++i) REQUIRE(node.heartbeat().status == 200);
}
