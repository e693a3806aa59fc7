#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <catch2/catch.hpp>
#include <thread>

#include "metrics/exposition.h"
#include "metrics/http_endpoint.h"
#include "tests/metrics/metrics_test_support.h"

using namespace amlnode::metrics;
using amlnode::test::http_request;

namespace {

// An endpoint on an io_context run by a thread of its own, rendering a counter that counts the
// scrapes.
class ServedEndpoint {
 public:
  explicit ServedEndpoint(ListenAddress address)
      : endpoint_(io_, std::move(address), [this](std::string& out) {
          ExpositionWriter w(out);
          w.family("demo_scrapes_total", "counter", "Scrapes so far.");
          w.sample("demo_scrapes_total", {{"who", "test"}}, static_cast<std::uint64_t>(++scrapes_));
        }) {}
  amlnode::Result<void> start() {
    auto started = endpoint_.start();
    if (started.ok()) thread_ = std::thread([this] { io_.run(); });
    return started;
  }
  ~ServedEndpoint() {
    boost::asio::post(io_, [this] { endpoint_.stop(); });
    if (thread_.joinable()) thread_.join();
  }
  std::uint16_t port() const { return endpoint_.port(); }

 private:
  boost::asio::io_context io_;
  int scrapes_ = 0;
  MetricsEndpoint endpoint_;
  std::thread thread_;
};

}  // namespace

TEST_CASE("Listen addresses: loopback by default, public only when allowed", "[metrics]") {
  auto v4 = parse_listen_address("127.0.0.1:9108", false, "metrics.listen");
  REQUIRE(v4.ok());
  CHECK(v4->host == "127.0.0.1");
  CHECK(v4->port == 9108);
  CHECK(v4->loopback);
  auto v6 = parse_listen_address("[::1]:0", false, "metrics.listen");
  REQUIRE(v6.ok());
  CHECK(v6->host == "::1");

  auto any = parse_listen_address("0.0.0.0:9108", false, "metrics.listen");
  REQUIRE_FALSE(any.ok());
  CHECK(any.error().message ==
        "metrics.listen: 0.0.0.0 is not a loopback address; metrics have no authentication, so "
        "set metrics.allow_public: true to serve them on it");
  auto allowed = parse_listen_address("0.0.0.0:9108", true, "metrics.listen");
  REQUIRE(allowed.ok());
  CHECK_FALSE(allowed->loopback);

  CHECK(parse_listen_address("localhost:9108", false, "metrics.listen").error().message ==
        "metrics.listen: \"localhost\" is not a numeric IPv4 or IPv6 address (names are not "
        "looked up)");
  CHECK(parse_listen_address("127.0.0.1", false, "metrics.listen").error().message ==
        "metrics.listen: expected HOST:PORT, found \"127.0.0.1\"");
  CHECK(parse_listen_address("127.0.0.1:70000", false, "metrics.listen").error().message ==
        "metrics.listen: expected a port 0 to 65535, found \"70000\"");
  CHECK_FALSE(parse_listen_address("[::1:9108", false, "metrics.listen").ok());
}

TEST_CASE("GET /metrics answers the exposition over loopback HTTP", "[metrics]") {
  ServedEndpoint served({"127.0.0.1", 0, true});
  REQUIRE(served.start().ok());
  auto first = http_request(served.port(), "GET", "/metrics");
  CHECK(first.status == 200);
  CHECK(first.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8");
  CHECK(amlnode::test::sample_value(first.body, "demo_scrapes_total{who=\"test\"}") == 1);
  auto second = http_request(served.port(), "GET", "/metrics?x=1");
  CHECK(amlnode::test::sample_value(second.body, "demo_scrapes_total{who=\"test\"}") == 2);

  auto head = http_request(served.port(), "HEAD", "/metrics");
  CHECK(head.status == 200);
  CHECK(head.body.empty());
  CHECK(std::stoul(head.headers["content-length"]) > 0);
  CHECK(http_request(served.port(), "GET", "/").status == 404);
  auto post = http_request(served.port(), "POST", "/metrics");
  CHECK(post.status == 405);
  CHECK(post.headers["allow"] == "GET, HEAD");
}

TEST_CASE("The endpoint serves IPv6 loopback, and a taken port is a clear error", "[metrics]") {
  ServedEndpoint served({"::1", 0, true});
  auto started = served.start();
  if (!started.ok()) {
    WARN("no IPv6 loopback here: " << started.error().message);
    return;
  }
  CHECK(http_request(served.port(), "GET", "/metrics", "::1").status == 200);
  boost::asio::io_context io;
  MetricsEndpoint second(io, {"::1", served.port(), true}, [](std::string&) {});
  auto taken = second.start();
  REQUIRE_FALSE(taken.ok());
  CHECK(taken.error().code == "MetricsListenFailed");
  CHECK(taken.error().message.rfind("cannot serve metrics on ::1:" + std::to_string(served.port()),
                                    0) == 0);
}
