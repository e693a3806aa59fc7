// The Engine API client against the real daemon, and against no daemon at all.

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <nlohmann/json.hpp>

#include "docker/engine_client.h"
#include "tests/docker/docker_test_support.h"
#include "tests/support/temp_dir.h"

namespace amlnode::docker {
namespace {

using test::services;
using Clock = std::chrono::steady_clock;

EngineClient test_client(EngineConfig config = {}) {
  return EngineClient(*resolve_docker_socket(services().docker_host, nullptr), config);
}

// A Unix socket that is bound (and listening when asked) but never answers.
class SilentSocket {
 public:
  SilentSocket(const std::filesystem::path& path, bool listening) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::snprintf(address.sun_path, sizeof address.sun_path, "%s", path.c_str());
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
    if (listening) REQUIRE(::listen(fd_, 8) == 0);
  }
  ~SilentSocket() { ::close(fd_); }

 private:
  int fd_ = -1;
};

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

TEST_CASE("engine: the API version is negotiated down to what both speak", "[docker]") {
  auto client = test_client();
  auto raw = client.call([] {
    auto request = Request::get("/version");
    request.versioned = false;
    return request;
  }());
  REQUIRE(raw.ok());
  std::string daemon = nlohmann::json::parse(raw->body)["ApiVersion"];
  auto version = client.api_version();
  REQUIRE(version.ok());
  auto as_number = [](const std::string& v) { return std::stod(v); };
  CHECK(as_number(*version) == std::min(as_number(daemon), as_number(kClientMaxApiVersion)));

  auto info = client.call(Request::get("/info"));
  REQUIRE(info.ok());
  CHECK(info->status == 200);
}

TEST_CASE("engine: the daemon's error message is passed through", "[docker]") {
  auto client = test_client();
  auto response = client.call(Request::get("/images/amlnode-test/no-such-image:none/json"));
  REQUIRE(response.ok());
  CHECK(response->status == 404);
  auto error = daemon_error(*response, "inspecting image");
  CHECK(error.code == "DockerError");
  CHECK(error.message.find("inspecting image: no such image: amlnode-test/no-such-image:none") !=
        std::string::npos);

  auto runtime = test::make_runtime(std::filesystem::path());
  auto container = runtime->inspect_container("amlnode-no-such-container");
  REQUIRE_FALSE(container.ok());
  CHECK(container.error().message.find("No such container: amlnode-no-such-container") !=
        std::string::npos);
}

TEST_CASE("engine: a missing socket is DockerUnavailable at once", "[docker]") {
  test::TempDir dir;
  auto start = Clock::now();
  EngineClient client(dir / "missing.sock", {});
  auto version = client.api_version();
  REQUIRE_FALSE(version.ok());
  CHECK(seconds_since(start) < 1.0);
  CHECK(version.error().code == "DockerUnavailable");
  CHECK(version.error().message.find("cannot reach the Docker daemon at unix://" +
                                     (dir / "missing.sock").string() + ": ") != std::string::npos);

  DockerRuntimeConfig config;
  config.engine.docker_host = "unix://" + (dir / "missing.sock").string();
  auto runtime = test::make_runtime(config);
  ImageRequest request;
  request.environment = test::fresh_environment();
  auto ensured = runtime->ensure_image(request, {});
  REQUIRE_FALSE(ensured.ok());
  CHECK(ensured.error().code == "DockerUnavailable");
}

TEST_CASE("engine: a socket nobody listens on is DockerUnavailable at once", "[docker]") {
  test::TempDir dir;
  SilentSocket socket(dir / "refused.sock", false);
  auto start = Clock::now();
  EngineClient client(dir / "refused.sock", {});
  auto version = client.api_version();
  REQUIRE_FALSE(version.ok());
  CHECK(seconds_since(start) < 1.0);
  CHECK(version.error().code == "DockerUnavailable");
  CHECK(version.error().message.find("Connection refused") != std::string::npos);
}

TEST_CASE("engine: a daemon that never answers times out instead of hanging", "[docker]") {
  test::TempDir dir;
  SilentSocket socket(dir / "silent.sock", true);
  EngineConfig config;
  config.request_timeout = std::chrono::milliseconds(300);
  EngineClient client(dir / "silent.sock", config);
  auto start = Clock::now();
  auto version = client.api_version();
  REQUIRE_FALSE(version.ok());
  CHECK(seconds_since(start) < 2.0);
  CHECK(version.error().code == "DockerUnavailable");
  CHECK(version.error().message.find("did not answer GET /version within 0.3 s") !=
        std::string::npos);
}

}  // namespace
}  // namespace amlnode::docker
