// The sd_notify side of the agent in-process: the datagram protocol against a real socket, the
// environment it reads, and a watchdog that stops pinging when its event loop stalls.

#include "agent/daemon/service_notifier.h"

#include <stdlib.h>
#include <unistd.h>

#include <boost/asio/post.hpp>
#include <catch2/catch.hpp>
#include <ctime>
#include <future>
#include <thread>

#include "tests/agent/daemon/notify_socket.h"
#include "tests/support/temp_dir.h"

using namespace amlnode;
using namespace std::chrono_literals;

TEST_CASE("the notifier sends one datagram per message to a path or an abstract socket",
          "[service]") {
  test::TempDir dir;
  std::string address = GENERATE_COPY(std::string("path"), std::string("abstract"));
  test::NotifySocket socket(address == "path" ? (dir / "notify").string()
                                              : test::NotifySocket::unique_abstract_name());
  auto notifier = agent::make_socket_notifier(socket.address());
  REQUIRE(notifier.ok());
  REQUIRE((*notifier)->notify("READY=1\nSTATUS=idle").ok());
  REQUIRE((*notifier)->notify("WATCHDOG=1").ok());
  CHECK(socket.receive(2s) == "READY=1\nSTATUS=idle");
  CHECK(socket.receive(2s) == "WATCHDOG=1");
}

TEST_CASE("a message longer than the bound is cut, never sent unbounded", "[service]") {
  test::NotifySocket socket(test::NotifySocket::unique_abstract_name());
  auto notifier = agent::make_socket_notifier(socket.address());
  REQUIRE(notifier.ok());
  REQUIRE((*notifier)->notify("STATUS=" + std::string(100000, 'x')).ok());
  auto received = socket.receive(2s);
  REQUIRE(received);
  CHECK(received->size() == agent::kMaxNotifyMessage);
}

TEST_CASE("a bad NOTIFY_SOCKET is an error naming the variable", "[service]") {
  for (std::string bad :
       {std::string("relative/path"), std::string(""), "/" + std::string(200, 'a')}) {
    auto notifier = agent::make_socket_notifier(bad);
    REQUIRE_FALSE(notifier.ok());
    CHECK(notifier.error().code == "InvalidNotifySocket");
    CHECK(notifier.error().message.find("NOTIFY_SOCKET=") == 0);
  }
}

TEST_CASE("a service manager that is gone makes notify fail, not block or crash", "[service]") {
  test::TempDir dir;
  auto notifier = agent::make_socket_notifier((dir / "nobody-listens").string());
  REQUIRE(notifier.ok());
  auto sent = (*notifier)->notify("READY=1");
  REQUIRE_FALSE(sent.ok());
  CHECK(sent.error().code == "NotifyFailed");
}

TEST_CASE("the service manager's variables are read once and hidden from children", "[service]") {
  ::setenv("NOTIFY_SOCKET", "@somewhere", 1);
  ::setenv("WATCHDOG_USEC", "3000000", 1);
  SECTION("a watchdog meant for this process") {
    ::setenv("WATCHDOG_PID", std::to_string(::getpid()).c_str(), 1);
    auto env = agent::take_service_manager_env();
    CHECK(env.notify_socket == "@somewhere");
    REQUIRE(env.watchdog);
    CHECK(*env.watchdog == 3s);
  }
  SECTION("a watchdog meant for another process is not ours to feed") {
    ::setenv("WATCHDOG_PID", std::to_string(::getpid() + 1).c_str(), 1);
    CHECK_FALSE(agent::take_service_manager_env().watchdog);
  }
  SECTION("no WATCHDOG_PID: the interval is for whoever reads it") {
    ::unsetenv("WATCHDOG_PID");
    CHECK(agent::take_service_manager_env().watchdog == std::chrono::microseconds(3000000));
  }
  SECTION("a malformed interval is ignored") {
    ::setenv("WATCHDOG_USEC", "soon", 1);
    CHECK_FALSE(agent::take_service_manager_env().watchdog);
  }
  CHECK(std::getenv("NOTIFY_SOCKET") == nullptr);
  CHECK(std::getenv("WATCHDOG_USEC") == nullptr);
  CHECK(std::getenv("WATCHDOG_PID") == nullptr);
}

TEST_CASE("STATUS= describes the node's state", "[service]") {
  CHECK(agent::describe_node_state("idle", 0, "") == "idle");
  CHECK(agent::describe_node_state("running", 1, "") == "running 1 run");
  CHECK(agent::describe_node_state("running", 3, "") == "running 3 runs");
  CHECK(agent::describe_node_state("preparing", 2, "") == "preparing 2 runs");
  CHECK(agent::describe_node_state("leaving", 1, "") == "leaving (1 run held)");
  CHECK(agent::describe_node_state("unusable", 0, "disk full: 12 bytes free") ==
        "unusable: disk full: 12 bytes free");
}

TEST_CASE("the reporter sends READY=1 with the status and repeats no unchanged STATUS=",
          "[service]") {
  test::NotifySocket socket(test::NotifySocket::unique_abstract_name());
  auto notifier = agent::make_socket_notifier(socket.address());
  REQUIRE(notifier.ok());
  agent::ServiceReporter reporter(std::move(notifier.value()));
  reporter.status("registering with the control plane");
  reporter.ready("idle");
  reporter.status("idle");
  reporter.status("running 1 run");
  reporter.reloading();
  reporter.stopping("draining: running 1 run");
  CHECK(socket.receive(2s) == "STATUS=registering with the control plane");
  CHECK(socket.receive(2s) == "READY=1\nSTATUS=idle");
  CHECK(socket.receive(2s) == "STATUS=running 1 run");
  auto reloading = socket.receive(2s);
  REQUIRE(reloading);
  CHECK(test::has_line(*reloading, "RELOADING=1"));
  // systemd 253+ wants the reload's start time on CLOCK_MONOTONIC.
  timespec now{};
  ::clock_gettime(CLOCK_MONOTONIC, &now);
  long long usec = std::stoll(test::value_of(*reloading, "MONOTONIC_USEC"));
  CHECK(usec <= now.tv_sec * 1000000LL + now.tv_nsec / 1000);
  CHECK(usec > now.tv_sec * 1000000LL - 10000000);
  CHECK(socket.receive(2s) == "STOPPING=1\nSTATUS=draining: running 1 run");
}

TEST_CASE("the watchdog pings at half the interval and stops while its event loop stalls",
          "[service]") {
  test::NotifySocket socket(test::NotifySocket::unique_abstract_name());
  auto notifier = agent::make_socket_notifier(socket.address());
  REQUIRE(notifier.ok());
  boost::asio::io_context io;
  agent::ServiceWatchdog watchdog(io, std::move(notifier.value()), 100ms);
  CHECK(watchdog.ping_interval() == 50ms);
  watchdog.start();
  std::thread loop([&] { io.run(); });

  for (int i = 0; i < 3; ++i) CHECK(socket.receive(2s) == "WATCHDOG=1");

  // Block the event loop itself, as a handler stuck in a blocking call would.
  std::promise<void> stalled;
  std::promise<void> release;
  boost::asio::post(io, [&] {
    stalled.set_value();
    release.get_future().wait();
  });
  stalled.get_future().wait();
  socket.drain();                      // a ping that was already on its way
  CHECK_FALSE(socket.receive(400ms));  // eight intervals without a ping

  release.set_value();
  CHECK(socket.receive(2s) == "WATCHDOG=1");
  boost::asio::post(io, [&] { watchdog.stop(); });
  loop.join();
}
