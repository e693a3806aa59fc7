#pragma once

// The node agent (`amlnode agent`): registers once, then heartbeats at the interval the control
// plane sets, reporting the node's state and the runs it holds, and obeys the commands the answers
// carry.
//
// Threads: one Boost.Asio io_context (the caller runs it) owns every member of Daemon; nothing
// here is locked. Calls that block (HTTP to the control plane, SQLite writes) run on a small
// worker pool and post their results back to the io_context.
//
// The control plane being unreachable is a normal condition: registration and heartbeats are
// retried (with backoff, at most the heartbeat interval apart) for as long as it takes, and
// nothing the node is doing stops meanwhile.

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>

#include "agent/daemon/control_plane_client.h"
#include "agent/daemon/settings.h"
#include "agent/daemon/state_store.h"

namespace amlnode::agent {

struct DaemonOptions {
  AgentSettings settings;
  NodeFacts facts;
  // Retry delays when the control plane cannot be reached: doubling from the first to the last.
  std::chrono::milliseconds first_retry{200};
  std::chrono::milliseconds last_retry{5000};
};

// How the daemon ended, for the process's exit code.
struct DaemonExit {
  int code = 0;         // 0 after a drain, 1 when it could not go on (e.g. registration refused)
  std::string message;  // why, for the log
};

class Daemon {
 public:
  Daemon(boost::asio::io_context& io, DaemonOptions options, std::shared_ptr<ControlPlaneClient> client,
         std::shared_ptr<StateStore> store);
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // Loads or makes the node identity, then starts heartbeating. `on_exit` is called (on the
  // io_context) once the daemon has stopped; the caller then stops the io_context.
  void start(std::function<void(DaemonExit)> on_exit);

  // SIGTERM: take no new work, report `leaving`, and stop once no run is held.
  void drain();

  // A second SIGTERM: stop now. Runs go on under their shims and are picked up at the next start.
  void stop_now();

  // For tests and logs; read on the io_context thread only.
  const std::optional<NodeIdentity>& identity() const { return identity_; }
  std::string node_state() const;

 private:
  template <class Work, class Done>
  void offload(Work work, Done done);

  void load_identity();
  void register_node();
  void on_registered(Result<Registration> registration);
  void heartbeat_now();
  void on_heartbeat(Result<HeartbeatAnswer> answer);
  void schedule_heartbeat(std::chrono::milliseconds delay);
  void handle_command(const Command& command);
  void retry_later(std::function<void()> step);
  void finish(DaemonExit exit);
  HeartbeatReport heartbeat_report() const;

  boost::asio::io_context& io_;
  DaemonOptions options_;
  std::shared_ptr<ControlPlaneClient> client_;
  std::shared_ptr<StateStore> store_;
  // Two threads: a long poll can hold one while heartbeats and writes go through the other.
  boost::asio::thread_pool pool_{2};
  boost::asio::steady_timer heartbeat_timer_;
  boost::asio::steady_timer retry_timer_;
  std::function<void(DaemonExit)> on_exit_;

  // Results posted back from the pool check this first, so none reaches a destroyed daemon.
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  std::optional<NodeIdentity> identity_;
  std::chrono::milliseconds heartbeat_interval_{5000};
  std::chrono::milliseconds retry_delay_;
  bool heartbeat_in_flight_ = false;
  bool control_plane_reachable_ = true;  // for logging an outage once, not on every retry
  bool draining_ = false;
  bool stopped_ = false;
  std::string unusable_reason_;
};

}  // namespace amlnode::agent
