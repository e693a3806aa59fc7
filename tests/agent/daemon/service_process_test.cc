// `amlnode agent` as systemd runs it: the real agent process against the real control plane, with
// a real datagram socket standing in for systemd's NOTIFY_SOCKET. READY=1 after recovery,
// STATUS=, WATCHDOG=1 that stops when the process is stalled, STOPPING=1, RELOADING=1 around a
// SIGHUP reload (the metrics endpoint moving with it); journald priority prefixes, JSON lines, and
// no token in the log.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <fstream>
#include <sstream>

#include "agent/daemon/state_store.h"
#include "tests/agent/daemon/agent_config.h"
#include "tests/agent/daemon/control_plane_process.h"
#include "tests/agent/daemon/notify_socket.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

using namespace amlnode;
using namespace std::chrono_literals;

namespace {

// One agent under a stand-in service manager.
class ServiceAgent {
 public:
  ServiceAgent(const test::TempDir& dir, std::string url, std::string token)
      : dir_(dir.path() / "agent"), url_(std::move(url)), token_(std::move(token)) {
    write_config();
  }
  ~ServiceAgent() {
    if (pid_ > 0) signal_and_wait(SIGKILL);
  }

  static constexpr const char* kNodeKeys =
      "  labels: {compute_name: cpu-cluster}\n  lease_wait_seconds: 2\n  run_concurrency: 2\n";

  // `node_keys` is the body of the `node:` section; `rest` is appended (a `log:` section);
  // `metrics` is the `metrics` section as a flow mapping (test::AgentConfigSections).
  void write_config(const std::string& node_keys = kNodeKeys, const std::string& rest = "",
                    const std::string& metrics = test::AgentConfigSections{}.metrics) {
    std::filesystem::create_directories(dir_);
    std::ofstream(dir_ / "config.yml") << test::agent_config_text(
        dir_ / "state", url_, token_,
        test::AgentConfigSections().with_node(node_keys).with_metrics(metrics).with_extra(rest));
  }

  void start(const std::vector<std::string>& env, const std::vector<std::string>& flags = {}) {
    std::vector<std::string> argv{test::amlnode_binary().string(), "agent", "--config",
                                  (dir_ / "config.yml").string()};
    argv.insert(argv.end(), flags.begin(), flags.end());
    ++starts_;
    pid_ = test::start_command(argv, out(), err(), env);
  }
  int signal_and_wait(int signal) {
    ::kill(pid_, signal);
    int code = test::wait_command(pid_, std::chrono::seconds(30));
    pid_ = -1;
    return code;
  }
  void signal(int number) const { ::kill(pid_, number); }

  std::filesystem::path out() const { return dir_ / ("out." + std::to_string(starts_)); }
  std::filesystem::path err() const { return dir_ / ("err." + std::to_string(starts_)); }
  std::filesystem::path next_out() const { return dir_ / ("out." + std::to_string(starts_ + 1)); }
  std::string log() const { return test::slurp(out()) + test::slurp(err()); }
  std::filesystem::path state_dir() const { return dir_ / "state"; }

 private:
  std::filesystem::path dir_;
  std::string url_;
  std::string token_;
  pid_t pid_ = -1;
  int starts_ = 0;
};

std::vector<std::string> lines_of(const std::string& text) {
  std::istringstream in(text);
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

std::string node_state(test::ControlPlaneProcess& server) {
  auto [status, body] = server.user_call("GET", "/v1/nodes");
  REQUIRE(status == 200);
  return body.size() == 1 ? body[0]["nodeState"].get<std::string>() : "";
}

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
void reload(ServiceAgent& agent, test::NotifySocket& manager) {
  agent.signal(SIGHUP);
  REQUIRE(manager.wait_for("RELOADING=1", 10s));
  REQUIRE(manager.wait_for("READY=1", 10s));
}

}  // namespace

TEST_CASE("under systemd the agent says READY=1 once registered, its STATUS=, and STOPPING=1",
          "[daemon][service]") {
  test::TempDir dir;
  test::ControlPlaneProcess server(dir / "cp", {"--heartbeat-interval", "1"});
  server.start();
  test::NotifySocket manager(test::NotifySocket::unique_abstract_name());
  ServiceAgent agent(dir, server.url(), server.registration_token("cpu-cluster"));
  agent.start({"NOTIFY_SOCKET=" + manager.address()});

  auto ready = manager.wait_for("READY=1", 20s);
  INFO("the agent logged:\n" << agent.log());
  REQUIRE(ready);
  CHECK(test::value_of(*ready, "STATUS") == "idle");
  // Before it: the agent said what it was waiting for.
  REQUIRE(manager.messages().size() >= 2);
  CHECK(manager.messages().front() == "STATUS=registering with the control plane");
  CHECK(node_state(server) == "idle");

  agent.signal(SIGTERM);
  auto stopping = manager.wait_for("STOPPING=1", 10s);
  REQUIRE(stopping);
  CHECK(test::value_of(*stopping, "STATUS").rfind("draining", 0) == 0);
  CHECK(agent.signal_and_wait(0) == 0);
}

TEST_CASE("after a restart READY=1 comes only once the runs held before it are back",
          "[daemon][service]") {
  test::TempDir dir;
  test::ControlPlaneProcess server(dir / "cp", {"--heartbeat-interval", "1"});
  server.start();
  dir.write("src/long.sh", "echo started\nsleep 60\n");
  std::string id = server.submit("entry_script: long.sh\nuser_managed: true\nuse_docker: false\n",
                                 dir / "src", "cpu-cluster");
  ServiceAgent agent(dir, server.url(), server.registration_token("cpu-cluster"));
  agent.start({});
  REQUIRE(test::eventually([&] { return server.run(id)["status"] == "Running"; }, 30s));
  agent.signal_and_wait(SIGKILL);  // the run goes on under its shim

  test::NotifySocket manager(test::NotifySocket::unique_abstract_name());
  agent.start({"NOTIFY_SOCKET=" + manager.address()});
  auto ready = manager.wait_for("READY=1", 20s);
  INFO("the agent logged:\n" << agent.log());
  REQUIRE(ready);
  CHECK(test::value_of(*ready, "STATUS") == "running 1 run");

  server.user_call("POST", "/v1/runs/" + id + "/cancel", nlohmann::json::object());
  CHECK(test::eventually([&] { return server.run(id)["status"] == "Canceled"; }, 30s));
  CHECK(manager.wait_for("STATUS=idle", 10s));
}

TEST_CASE("the watchdog pings at half of WATCHDOG_USEC and a stalled agent stops pinging",
          "[daemon][service]") {
  test::TempDir dir;
  test::ControlPlaneProcess server(dir / "cp", {"--heartbeat-interval", "1"});
  server.start();
  test::NotifySocket manager(test::NotifySocket::unique_abstract_name());
  ServiceAgent agent(dir, server.url(), server.registration_token("cpu-cluster"));
  agent.start({"NOTIFY_SOCKET=" + manager.address(), "WATCHDOG_USEC=200000"});
  REQUIRE(manager.wait_for("READY=1", 20s));
  for (int i = 0; i < 3; ++i) REQUIRE(manager.wait_for("WATCHDOG=1", 1s));

  // A stopped process is the extreme of a stalled event loop: nothing runs, nothing pings.
  agent.signal(SIGSTOP);
  std::this_thread::sleep_for(50ms);  // a ping already sent may still be queued
  manager.drain();
  CHECK_FALSE(manager.receive(600ms));  // six intervals

  agent.signal(SIGCONT);
  CHECK(manager.wait_for("WATCHDOG=1", 2s));
  CHECK(agent.signal_and_wait(SIGTERM) == 0);
}

TEST_CASE("a watchdog interval meant for another process is not fed", "[daemon][service]") {
  test::TempDir dir;
  test::ControlPlaneProcess server(dir / "cp", {"--heartbeat-interval", "1"});
  server.start();
  test::NotifySocket manager(test::NotifySocket::unique_abstract_name());
  ServiceAgent agent(dir, server.url(), server.registration_token("cpu-cluster"));
  agent.start({"NOTIFY_SOCKET=" + manager.address(), "WATCHDOG_USEC=200000", "WATCHDOG_PID=1"});
  REQUIRE(manager.wait_for("READY=1", 20s));
  CHECK_FALSE(manager.wait_for("WATCHDOG=1", 500ms));
  CHECK(agent.signal_and_wait(SIGTERM) == 0);
}

TEST_CASE("SIGHUP reloads the config between RELOADING=1 and READY=1", "[daemon][service]") {
  test::TempDir dir;
  test::ControlPlaneProcess server(dir / "cp", {"--heartbeat-interval", "1"});
  server.start();
  test::NotifySocket manager(test::NotifySocket::unique_abstract_name());
  ServiceAgent agent(dir, server.url(), server.registration_token("cpu-cluster"));
  agent.start({"NOTIFY_SOCKET=" + manager.address()});
  REQUIRE(manager.wait_for("READY=1", 20s));
  REQUIRE(test::eventually([&] { return node_state(server) == "idle"; }, 10s));

  // More free space than any disk has: the reloaded node must call itself unusable.
  agent.write_config(
      "  min_free_bytes: 1000000000000000000\n  run_concurrency: 8\n"
      "  labels: {compute_name: other}\n",
      "log: {level: debug}\n");
  agent.signal(SIGHUP);
  auto reloading = manager.wait_for("RELOADING=1", 10s);
  REQUIRE(reloading);
  CHECK_FALSE(test::value_of(*reloading, "MONOTONIC_USEC").empty());
  auto ready = manager.wait_for("READY=1", 10s);
  INFO("the agent logged:\n" << agent.log());
  REQUIRE(ready);
  CHECK(test::value_of(*ready, "STATUS").rfind("unusable: disk full", 0) == 0);
  CHECK(test::eventually([&] { return node_state(server) == "unusable"; }, 10s));
  std::string log = agent.log();
  CHECK(log.find("config reloaded") != std::string::npos);
  CHECK(log.find("log level debug") != std::string::npos);
  CHECK(log.find("node.run_concurrency 8 is more than the 2 the agent started with") !=
        std::string::npos);
  CHECK(log.find("node.labels or node.ssh_port changed") != std::string::npos);

  SECTION("a config that no longer reads keeps the running settings") {
    agent.write_config(ServiceAgent::kNodeKeys, "log: {level: loud}\n");
    agent.signal(SIGHUP);
    REQUIRE(manager.wait_for("RELOADING=1", 10s));
    REQUIRE(manager.wait_for("READY=1", 10s));
    CHECK(agent.log().find("config reload failed; the running settings stay: ") !=
          std::string::npos);
    CHECK(agent.log().find("log.level: expected one of debug, info, warn, error") !=
          std::string::npos);
    CHECK(node_state(server) == "unusable");
    CHECK(agent.signal_and_wait(SIGTERM) == 0);
  }
}

TEST_CASE("when stdout is the journal's stream each line starts with its syslog priority",
          "[daemon][service]") {
  test::TempDir dir;
  test::ControlPlaneProcess server(dir / "cp", {"--heartbeat-interval", "1"});
  server.start();
  ServiceAgent agent(dir, server.url(), server.registration_token("cpu-cluster"));
  // systemd sets JOURNAL_STREAM to the device and inode of the stream it gives as stdout; the
  // file stands in for that stream (start_command truncates it, keeping its inode).
  std::ofstream(agent.next_out()).flush();
  struct stat info {};
  REQUIRE(::stat(agent.next_out().c_str(), &info) == 0);
  agent.start(
      {"JOURNAL_STREAM=" + std::to_string(info.st_dev) + ":" + std::to_string(info.st_ino)});
  REQUIRE(test::eventually(
      [&] { return agent.log().find("registered as node") != std::string::npos; }, 20s));
  CHECK(agent.signal_and_wait(SIGTERM) == 0);
  auto lines = lines_of(test::slurp(agent.out()));
  REQUIRE_FALSE(lines.empty());
  for (const auto& line : lines) {
    INFO(line);
    CHECK((line.rfind("<6>", 0) == 0 || line.rfind("<4>", 0) == 0 || line.rfind("<3>", 0) == 0));
  }
  CHECK(std::count(lines.begin(), lines.end(),
                   "<6>draining: no new runs; stopping once no run is held") == 1);
}

TEST_CASE("the JSON log format writes one object per line, and no token ever appears",
          "[daemon][service]") {
  test::TempDir dir;
  test::ControlPlaneProcess server(dir / "cp", {"--heartbeat-interval", "1"});
  server.start();
  std::string token = server.registration_token("cpu-cluster");
  ServiceAgent agent(dir, server.url(), token);
  agent.start({}, {"--log-format", "json", "--log-level", "debug"});
  REQUIRE(test::eventually(
      [&] { return agent.log().find("registered as node") != std::string::npos; }, 20s));
  CHECK(agent.signal_and_wait(SIGTERM) == 0);
  auto store = agent::open_sqlite_state_store(agent.state_dir());
  REQUIRE(store.ok());
  auto identity = (*store)->load_identity();
  REQUIRE(identity.ok());
  REQUIRE(*identity);

  std::string log = agent.log();
  CHECK(log.find(token) == std::string::npos);
  CHECK(log.find((**identity).node_token) == std::string::npos);
  auto key = (*store)->registration_key();
  REQUIRE(key.ok());
  CHECK(log.find(*key) == std::string::npos);
  auto lines = lines_of(test::slurp(agent.out()));
  REQUIRE(lines.size() >= 3);
  for (const auto& line : lines) {
    INFO(line);
    auto record = nlohmann::json::parse(line);
    CHECK(record.contains("time"));
    CHECK(record.contains("level"));
    CHECK(record.contains("message"));
  }
}

TEST_CASE("SIGHUP moves the metrics endpoint, retries a taken port, and turns it off",
          "[daemon][service]") {
  test::TempDir dir;
  test::ControlPlaneProcess server(dir / "cp", {"--heartbeat-interval", "1"});
  server.start();
  test::NotifySocket manager(test::NotifySocket::unique_abstract_name());
  ServiceAgent agent(dir, server.url(), server.registration_token("cpu-cluster"));
  agent.write_config(ServiceAgent::kNodeKeys, "", "{interval_seconds: 1, listen: '127.0.0.1:0'}");
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
  agent.write_config(ServiceAgent::kNodeKeys, "", "{interval_seconds: 2, listen: '" + moved + "'}");
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
  agent.write_config(ServiceAgent::kNodeKeys, "", "{interval_seconds: 2, listen: '0.0.0.0:0'}");
  reload(agent, manager);
  {
    std::string log = agent.log();
    INFO("the agent logged:\n" << log);
    CHECK(log.find("config reload failed; the running settings stay: ") != std::string::npos);
    CHECK(log.find("metrics.listen: 0.0.0.0 is not a loopback address") != std::string::npos);
    CHECK(metrics_status(taken.port()) == 200);
  }

  // An empty listen address turns the endpoint off; sampling goes on.
  agent.write_config(ServiceAgent::kNodeKeys, "", "{interval_seconds: 2, listen: ''}");
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
