// A SIGHUP reload of the `metrics` section, on the real agent process against the real control
// plane, with a real datagram socket standing in for systemd's NOTIFY_SOCKET (as
// tests/agent/daemon/service_process_test.cc does): the endpoint moves, fails to bind and is tried
// again, survives a bad section, and turns off.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <fstream>

#include "tests/agent/daemon/control_plane_process.h"
#include "tests/agent/daemon/notify_socket.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

using namespace amlnode;
using namespace std::chrono_literals;

namespace {

// One agent under a stand-in service manager, whose `metrics` section the test rewrites.
class ReloadedAgent {
 public:
  ReloadedAgent(const test::TempDir& dir, std::string url, std::string token)
      : dir_(dir.path() / "agent"), url_(std::move(url)), token_(std::move(token)) {}
  ~ReloadedAgent() {
    if (pid_ > 0) signal_and_wait(SIGKILL);
  }

  // `metrics` is the flow mapping written as the `metrics` section.
  void write_config(const std::string& metrics) {
    std::filesystem::create_directories(dir_);
    std::ofstream(dir_ / "config.yml")
        << "state_dir: " << (dir_ / "state").string() << "\ncontrol_plane:\n  url: " << url_
        << "\n  registration_token: " << token_
        << "\nnode:\n  labels: {compute_name: cpu-cluster}\n  lease_wait_seconds: 2\n"
        << "metrics: " << metrics << "\n";
  }
  void start(const std::vector<std::string>& env) {
    pid_ = test::start_command(
        {test::amlnode_binary().string(), "agent", "--config", (dir_ / "config.yml").string()},
        dir_ / "out", dir_ / "err", env);
  }
  int signal_and_wait(int signal) {
    ::kill(pid_, signal);
    int code = test::wait_command(pid_, std::chrono::seconds(30));
    pid_ = -1;
    return code;
  }
  void signal(int number) const { ::kill(pid_, number); }
  std::string log() const { return test::slurp(dir_ / "out") + test::slurp(dir_ / "err"); }

 private:
  std::filesystem::path dir_;
  std::string url_;
  std::string token_;
  pid_t pid_ = -1;
};

// The ports of every `metrics: serving http://127.0.0.1:PORT/metrics` line, in order.
std::vector<std::uint16_t> served_ports(const std::string& log) {
  const std::string prefix = "metrics: serving http://127.0.0.1:";
  std::vector<std::uint16_t> ports;
  for (auto at = log.find(prefix); at != std::string::npos; at = log.find(prefix, at + 1))
    ports.push_back(static_cast<std::uint16_t>(std::atoi(log.c_str() + at + prefix.size())));
  return ports;
}

// The HTTP status of GET /metrics on 127.0.0.1:`port`, 0 when nothing accepts the connection.
int metrics_status(std::uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  timeval timeout{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(port);
  std::string answer;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0) {
    const std::string request =
        "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if (::write(fd, request.data(), request.size()) == static_cast<ssize_t>(request.size())) {
      char buffer[4096];
      for (ssize_t n; (n = ::read(fd, buffer, sizeof buffer)) > 0;) answer.append(buffer, n);
    }
  }
  ::close(fd);
  return answer.rfind("HTTP/1.1 ", 0) == 0 ? std::atoi(answer.c_str() + 9) : 0;
}

// A loopback port some other program listens on, so the agent cannot bind it.
class TakenPort {
 public:
  TakenPort() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
    REQUIRE(::listen(fd_, 1) == 0);
    socklen_t length = sizeof address;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&address), &length);
    port_ = ntohs(address.sin_port);
  }
  ~TakenPort() { release(); }
  std::uint16_t port() const { return port_; }
  void release() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
  std::uint16_t port_ = 0;
};

// SIGHUP, and the reload's RELOADING=1 and READY=1: once READY=1 has come, the reload is done.
void reload(ReloadedAgent& agent, test::NotifySocket& manager) {
  agent.signal(SIGHUP);
  REQUIRE(manager.wait_for("RELOADING=1", 10s));
  REQUIRE(manager.wait_for("READY=1", 10s));
}

}  // namespace

TEST_CASE("SIGHUP moves the metrics endpoint, retries a taken port, and turns it off",
          "[metrics][daemon][service]") {
  test::TempDir dir;
  test::ControlPlaneProcess server(dir / "cp", {"--heartbeat-interval", "1"});
  server.start();
  test::NotifySocket manager(test::NotifySocket::unique_abstract_name());
  ReloadedAgent agent(dir, server.url(), server.registration_token("cpu-cluster"));
  agent.write_config("{interval_seconds: 1, listen: '127.0.0.1:0'}");
  agent.start({"NOTIFY_SOCKET=" + manager.address()});
  REQUIRE(manager.wait_for("READY=1", 20s));
  auto ports = served_ports(agent.log());
  REQUIRE(ports.size() == 1);
  const std::uint16_t first = ports[0];
  CHECK(metrics_status(first) == 200);

  // A new address whose port someone else holds: the old endpoint closes, the new one cannot
  // open, and the agent goes on without one, as it does at start.
  TakenPort taken;
  const std::string moved = "127.0.0.1:" + std::to_string(taken.port());
  agent.write_config("{interval_seconds: 2, listen: '" + moved + "'}");
  reload(agent, manager);
  {
    std::string log = agent.log();
    INFO("the agent logged:\n" << log);
    CHECK(log.find("metrics reloaded: interval_seconds 1 -> 2, listen 127.0.0.1:0 -> " + moved +
                   "\n") != std::string::npos);
    CHECK(log.find("error metrics: cannot serve metrics on " + moved +
                   ": Address already in use; /metrics is off, sampling goes on") !=
          std::string::npos);
    CHECK(metrics_status(first) == 0);
    CHECK(served_ports(log).size() == 1);
  }

  // The port is free now: a reload of the same section tries it again.
  taken.release();
  reload(agent, manager);
  {
    INFO("the agent logged:\n" << agent.log());
    ports = served_ports(agent.log());
    REQUIRE(ports.size() == 2);
    CHECK(ports[1] == taken.port());
    CHECK(metrics_status(taken.port()) == 200);
  }

  // A bad metrics section fails the whole reload, with its key named; the endpoint stays.
  agent.write_config("{interval_seconds: 2, listen: '0.0.0.0:0'}");
  reload(agent, manager);
  {
    std::string log = agent.log();
    INFO("the agent logged:\n" << log);
    CHECK(log.find("config reload failed; the running settings stay: ") != std::string::npos);
    CHECK(log.find("metrics.listen: 0.0.0.0 is not a loopback address") != std::string::npos);
    CHECK(metrics_status(taken.port()) == 200);
  }

  // An empty listen address turns the endpoint off; sampling goes on.
  agent.write_config("{interval_seconds: 2, listen: ''}");
  reload(agent, manager);
  {
    std::string log = agent.log();
    INFO("the agent logged:\n" << log);
    CHECK(log.find("metrics reloaded: listen " + moved + " -> off\n") != std::string::npos);
    CHECK(metrics_status(taken.port()) == 0);
    CHECK(served_ports(log).size() == 2);
  }
  CHECK(agent.signal_and_wait(SIGTERM) == 0);
}
