#pragma once

// What ties a running Daemon to systemd (systemd/amlnode.service, Type=notify):
//
// - STATUS= follows the node's state: "registering with the control plane", "recovering held
//   runs", "idle", "running 2 runs", "leaving (1 run held)", "unusable: disk full: ...", with
//   "; control plane unreachable" added while it is.
// - READY=1 once the runs held before a restart are back under watch (the node then has its
//   identity too), so `systemctl start` returns when the agent really runs.
// - WATCHDOG=1 at half of $WATCHDOG_USEC, from a timer on the daemon's event loop.
// - STOPPING=1 on the first SIGTERM/SIGINT (the drain), and when the daemon stops for any reason.
// - SIGHUP reloads the config between RELOADING=1 and READY=1: the log level and format, and what
//   Daemon::reconfigure takes (node keys, images, environments, the metrics section); a change to
//   anything else is logged as needing a restart. A config that no longer reads (a bad value in
//   any section, metrics included) is logged and the running settings are kept.
//
// Without $NOTIFY_SOCKET only the SIGHUP reload remains.

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <memory>

#include "agent/config.h"
#include "agent/daemon/daemon.h"
#include "agent/daemon/log_setup.h"
#include "agent/daemon/service_notifier.h"
#include "agent/daemon/settings.h"

namespace amlnode::agent {

struct ServiceHooksOptions {
  ServiceManagerEnv env;   // from take_service_manager_env()
  NodeConfig config;       // as the daemon started with it; config.file is what a reload reads
  AgentSettings settings;  // likewise
};

class ServiceHooks {
 public:
  ServiceHooks(boost::asio::io_context& io, Daemon& daemon, ServiceHooksOptions options);
  ServiceHooks(const ServiceHooks&) = delete;
  ServiceHooks& operator=(const ServiceHooks&) = delete;

  // Registers the daemon's state listener, starts the watchdog and the signal handlers.
  void start();
  // The daemon has stopped (`message` says why): STOPPING=1, and the timers end.
  void finished(const std::string& message);

 private:
  void on_state();
  std::string current_status() const;
  void watch_hangup();
  void watch_termination();
  void reload();
  Result<void> apply_reload();
  void warn_restart_only_changes(const NodeConfig& next) const;

  boost::asio::io_context& io_;
  Daemon& daemon_;
  ServiceHooksOptions options_;
  std::shared_ptr<ServiceNotifier> notifier_;
  ServiceReporter reporter_;
  std::unique_ptr<ServiceWatchdog> watchdog_;
  boost::asio::signal_set hangup_;
  boost::asio::signal_set termination_;
  int max_run_concurrency_;
  bool stopping_ = false;
  bool idle_ = false;       // recovered and holding no run, as of the last state change
  bool reloading_ = false;  // between RELOADING=1 and its READY=1
};

}  // namespace amlnode::agent
