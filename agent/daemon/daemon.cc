#include "agent/daemon/daemon.h"

#include <boost/asio/post.hpp>
#include <spdlog/spdlog.h>

namespace amlnode::agent {

namespace asio = boost::asio;

Daemon::Daemon(asio::io_context& io, DaemonOptions options, std::shared_ptr<ControlPlaneClient> client,
               std::shared_ptr<StateStore> store)
    : io_(io),
      options_(std::move(options)),
      client_(std::move(client)),
      store_(std::move(store)),
      heartbeat_timer_(io),
      retry_timer_(io),
      retry_delay_(options_.first_retry) {}

// Work still on the pool finishes (each call is bounded by its timeout) before the members it
// uses go away; its results are dropped, since `alive_` no longer lets them in.
Daemon::~Daemon() {
  alive_.reset();
  pool_.join();
}

template <class Work, class Done>
void Daemon::offload(Work work, Done done) {
  std::weak_ptr<bool> alive = alive_;
  asio::post(pool_, [this, alive, work = std::move(work), done = std::move(done)]() mutable {
    auto result = work();
    asio::post(io_, [alive, done = std::move(done), result = std::move(result)]() mutable {
      if (alive.lock()) done(std::move(result));
    });
  });
}

void Daemon::start(std::function<void(DaemonExit)> on_exit) {
  on_exit_ = std::move(on_exit);
  load_identity();
}

void Daemon::load_identity() {
  offload([store = store_] { return store->load_identity(); },
          [this](Result<std::optional<NodeIdentity>> loaded) {
            if (!loaded.ok()) return finish({1, loaded.error().message});
            if (!*loaded) return register_node();
            identity_ = std::move(**loaded);
            spdlog::info("node {}: identity loaded from the state store", identity_->node_id);
            heartbeat_now();
          });
}

void Daemon::register_node() {
  if (stopped_) return;
  auto token = registration_token(options_.settings);
  if (!token.ok()) return finish({1, token.error().message});
  offload(
      [client = client_, store = store_, token = *token, facts = options_.facts]() -> Result<Registration> {
        auto registration = client->register_node(token, facts);
        if (!registration.ok()) return registration;
        // Stored before it is used: a node that registered and then lost its identity could
        // never register again (the token is spent).
        if (auto saved = store->save_identity(registration->identity); !saved) return saved.error();
        return registration;
      },
      [this](Result<Registration> registration) { on_registered(std::move(registration)); });
}

void Daemon::on_registered(Result<Registration> registration) {
  if (!registration.ok()) {
    if (registration.error().code == "Unreachable") return retry_later([this] { register_node(); });
    return finish({1, "registration failed: " + registration.error().message});
  }
  identity_ = registration->identity;
  heartbeat_interval_ = registration->heartbeat_interval;
  spdlog::info("registered as node {}", identity_->node_id);
  heartbeat_now();
}

void Daemon::retry_later(std::function<void()> step) {
  if (control_plane_reachable_) spdlog::warn("control plane unreachable; retrying until it answers");
  control_plane_reachable_ = false;
  retry_timer_.expires_after(retry_delay_);
  retry_timer_.async_wait([step = std::move(step)](const boost::system::error_code& ec) {
    if (!ec) step();
  });
  retry_delay_ = std::min(retry_delay_ * 2, options_.last_retry);
}

std::string Daemon::node_state() const {
  if (!unusable_reason_.empty()) return "unusable";
  if (draining_) return "leaving";
  return "idle";
}

HeartbeatReport Daemon::heartbeat_report() const {
  HeartbeatReport report;
  report.state = node_state();
  report.reason = unusable_reason_;
  return report;
}

void Daemon::heartbeat_now() {
  if (stopped_ || !identity_ || heartbeat_in_flight_) return;
  heartbeat_timer_.cancel();
  heartbeat_in_flight_ = true;
  offload([client = client_, node = *identity_, report = heartbeat_report()] { return client->heartbeat(node, report); },
          [this](Result<HeartbeatAnswer> answer) { on_heartbeat(std::move(answer)); });
}

void Daemon::on_heartbeat(Result<HeartbeatAnswer> answer) {
  heartbeat_in_flight_ = false;
  if (stopped_) return;
  if (!answer.ok()) {
    if (answer.error().code == "Unreachable") {
      if (control_plane_reachable_) spdlog::warn("control plane unreachable: {}", answer.error().message);
      control_plane_reachable_ = false;
    } else {
      spdlog::error("heartbeat refused: {}", answer.error().message);
    }
    schedule_heartbeat(std::min<std::chrono::milliseconds>(heartbeat_interval_, options_.last_retry));
    return;
  }
  if (!control_plane_reachable_) spdlog::info("control plane reachable again");
  control_plane_reachable_ = true;
  retry_delay_ = options_.first_retry;
  heartbeat_interval_ = answer->heartbeat_interval;
  for (const auto& command : answer->commands) handle_command(command);
  if (draining_) return finish({0, "drained"});
  schedule_heartbeat(heartbeat_interval_);
}

void Daemon::schedule_heartbeat(std::chrono::milliseconds delay) {
  heartbeat_timer_.expires_after(delay);
  heartbeat_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (!ec) heartbeat_now();
  });
}

void Daemon::handle_command(const Command& command) {
  if (command.type == "drain") {
    spdlog::info("the control plane asks this node to drain");
    draining_ = true;
    return;
  }
  spdlog::warn("ignoring the control plane's {} command for run {}: this node holds no such run",
               command.type, command.run_id);
}

void Daemon::drain() {
  if (stopped_) return;
  spdlog::info("draining: no new runs; stopping once no run is held");
  draining_ = true;
  // The last heartbeat tells the control plane the node is leaving; once it is answered (or the
  // control plane is unreachable) and no run is held, the daemon stops.
  if (!identity_) return finish({0, "drained before registration"});
  if (!control_plane_reachable_) return finish({0, "drained; the control plane was unreachable"});
  heartbeat_now();
}

void Daemon::stop_now() { finish({0, "stopped"}); }

void Daemon::finish(DaemonExit exit) {
  if (stopped_) return;
  stopped_ = true;
  heartbeat_timer_.cancel();
  retry_timer_.cancel();
  if (exit.code != 0) spdlog::error("{}", exit.message);
  else spdlog::info("{}", exit.message);
  if (on_exit_) asio::post(io_, [callback = on_exit_, exit] { callback(exit); });
}

}  // namespace amlnode::agent
