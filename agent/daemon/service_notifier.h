#pragma once

// Telling the service manager (systemd) how the agent is doing, through the sd_notify protocol:
// each message is one datagram of newline-separated KEY=VALUE assignments ("READY=1",
// "STATUS=idle", "WATCHDOG=1", "STOPPING=1", "RELOADING=1") sent to the AF_UNIX socket named by
// $NOTIFY_SOCKET, a file system path or, when it starts with '@', a name in the abstract
// namespace. This is spoken on a plain SOCK_DGRAM socket: the protocol is a single sendto(), so
// libsystemd would add a library (and its resident pages) for no gain.

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "common/result.h"

namespace amlnode::agent {

// One message is at most this long; a longer STATUS= is cut, so a datagram is always bounded.
constexpr std::size_t kMaxNotifyMessage = 4096;

class ServiceNotifier {
 public:
  virtual ~ServiceNotifier() = default;
  // Sends one message. Never blocks: when the service manager's queue is full the message is
  // dropped and an error returned ("NotifyFailed").
  virtual Result<void> notify(const std::string& message) = 0;
};

// What the service manager told this process in its environment.
struct ServiceManagerEnv {
  std::string notify_socket;  // $NOTIFY_SOCKET; empty when not started by a service manager
  // $WATCHDOG_USEC, when set and meant for this process ($WATCHDOG_PID unset or this pid).
  std::optional<std::chrono::microseconds> watchdog;
};

// Reads NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID, then removes them from the environment so
// that runs started by the agent do not inherit them (a run's process is not the service's main
// process and must not talk to systemd in its name). Call it before any thread starts.
ServiceManagerEnv take_service_manager_env();

// A notifier sending to `address` ("/run/systemd/notify" or "@abstract-name"). Errors
// ("InvalidNotifySocket") name NOTIFY_SOCKET and say what is wrong with the address.
Result<std::unique_ptr<ServiceNotifier>> make_socket_notifier(const std::string& address);

// For a process no service manager watches: every message goes nowhere, successfully.
std::unique_ptr<ServiceNotifier> make_null_notifier();

// The STATUS= text for a node state: "idle", "running 2 runs", "leaving (1 run held)",
// "unusable: disk full: ...". `reason` is used only for the unusable state.
std::string describe_node_state(const std::string& state, std::size_t runs,
                                const std::string& reason);

// Sends READY=1, STATUS=, STOPPING=1 and RELOADING=1, each STATUS= only when it changed.
// Failures are logged once per kind of failure, never fatal: a service manager that stops
// listening must not stop the agent.
class ServiceReporter {
 public:
  explicit ServiceReporter(std::shared_ptr<ServiceNotifier> notifier);

  void ready(const std::string& status);  // READY=1 with the current status
  void status(const std::string& status);
  void reloading();  // RELOADING=1 with MONOTONIC_USEC, as systemd 253+ expects
  void stopping(const std::string& status);
  bool ready_sent() const { return ready_sent_; }

 private:
  void send(const std::string& message);

  std::shared_ptr<ServiceNotifier> notifier_;
  std::string last_status_;
  bool ready_sent_ = false;
  bool failure_logged_ = false;
};

// Sends WATCHDOG=1 every half of the watchdog interval from a timer on the event loop. Because
// the ping is itself an event-loop callback, a loop that is stuck (a blocking call on its thread,
// a deadlock, a stopped process) stops pinging and systemd restarts the agent.
class ServiceWatchdog {
 public:
  ServiceWatchdog(boost::asio::io_context& io, std::shared_ptr<ServiceNotifier> notifier,
                  std::chrono::microseconds watchdog_interval);
  void start();
  void stop();
  std::chrono::microseconds ping_interval() const { return ping_interval_; }

 private:
  void schedule();

  boost::asio::steady_timer timer_;
  std::shared_ptr<ServiceNotifier> notifier_;
  std::chrono::microseconds ping_interval_;
  bool stopped_ = false;
};

}  // namespace amlnode::agent
