#include "agent/daemon/service_hooks.h"

#include <signal.h>
#include <spdlog/spdlog.h>

#include "agent/daemon/footprint.h"

namespace amlnode::agent {

namespace {

std::shared_ptr<ServiceNotifier> notifier_for(const ServiceManagerEnv& env) {
  if (env.notify_socket.empty()) return make_null_notifier();
  auto notifier = make_socket_notifier(env.notify_socket);
  if (notifier.ok()) return std::move(notifier.value());
  spdlog::warn("{}; not notifying the service manager", notifier.error().message);
  return make_null_notifier();
}

// The `node` section without the keys a reload applies, to see whether anything else changed.
nlohmann::json restart_only_node_keys(nlohmann::json node) {
  for (const char* key : {"run_concurrency", "lease_wait_seconds", "min_free_bytes"})
    node.erase(key);
  return node;
}

}  // namespace

ServiceHooks::ServiceHooks(boost::asio::io_context& io, Daemon& daemon, ServiceHooksOptions options)
    : io_(io),
      daemon_(daemon),
      options_(std::move(options)),
      notifier_(notifier_for(options_.env)),
      reporter_(notifier_),
      hangup_(io, SIGHUP),
      termination_(io, SIGTERM, SIGINT),
      max_run_concurrency_(options_.settings.run_concurrency) {}

void ServiceHooks::start() {
  if (auto token = registration_token(options_.settings); token.ok()) redact_in_logs(*token);
  reporter_.status(current_status());
  daemon_.set_state_listener([this] { on_state(); });
  if (options_.env.watchdog && !options_.env.notify_socket.empty()) {
    watchdog_ = std::make_unique<ServiceWatchdog>(io_, notifier_, *options_.env.watchdog);
    watchdog_->start();
    spdlog::info(
        "watchdog: pinging systemd every {} ms",
        std::chrono::duration_cast<std::chrono::milliseconds>(watchdog_->ping_interval()).count());
  }
  watch_hangup();
  watch_termination();
}

void ServiceHooks::finished(const std::string& message) {
  stopping_ = true;
  reporter_.stopping(message);
  if (watchdog_) watchdog_->stop();
  hangup_.cancel();
  termination_.cancel();
}

std::string ServiceHooks::current_status() const {
  std::string status;
  if (!daemon_.identity()) {
    status = "registering with the control plane";
  } else if (!daemon_.recovered()) {
    status = "recovering the runs held before the restart";
  } else {
    status =
        describe_node_state(daemon_.node_state(), daemon_.held_runs(), daemon_.unusable_reason());
  }
  if (!daemon_.control_plane_reachable()) status += "; control plane unreachable";
  return status;
}

void ServiceHooks::on_state() {
  // The reload sends its own READY=1 with the state it leads to.
  if (reloading_) return;
  if (const auto& identity = daemon_.identity()) redact_in_logs(identity->node_token);
  // Idle is most of a node's life: what start-up and the last runs needed is given back then.
  bool idle = daemon_.recovered() && daemon_.held_runs() == 0;
  if (idle && !idle_) release_free_memory();
  idle_ = idle;
  if (!reporter_.ready_sent() && daemon_.recovered()) {
    spdlog::info("ready: {}", current_status());
    reporter_.ready(current_status());
    return;
  }
  reporter_.status(current_status());
}

void ServiceHooks::watch_termination() {
  termination_.async_wait([this](const boost::system::error_code& ec, int) {
    if (ec || stopping_) return;
    stopping_ = true;
    reporter_.stopping("draining: " + current_status());
  });
}

void ServiceHooks::watch_hangup() {
  hangup_.async_wait([this](const boost::system::error_code& ec, int) {
    if (ec) return;
    reload();
    watch_hangup();
  });
}

// Reading a config file of at most 1 MiB is quick enough for the event loop.
void ServiceHooks::reload() {
  reporter_.reloading();
  reloading_ = true;
  auto applied = apply_reload();
  reloading_ = false;
  if (!applied.ok())
    spdlog::error("config reload failed; the running settings stay: {}", applied.error().message);
  if (reporter_.ready_sent()) {
    reporter_.ready(current_status());
  } else {
    reporter_.status(current_status());
  }
}

Result<void> ServiceHooks::apply_reload() {
  if (options_.config.file.empty())
    return Error{"NoConfigFile", "the agent was started without a config file"};
  auto config = load_node_config(options_.config.file);
  if (!config.ok()) return config.error();
  auto settings = read_agent_settings(*config);
  if (!settings.ok()) return settings.error();
  auto log = resolve_daemon_log_options(*config);
  if (!log.ok()) return log.error();
  if (settings->run_concurrency > max_run_concurrency_) {
    spdlog::warn(
        "node.run_concurrency {} is more than the {} the agent started with; using {} "
        "until the next restart",
        settings->run_concurrency, max_run_concurrency_, max_run_concurrency_);
    settings->run_concurrency = max_run_concurrency_;
  }
  warn_restart_only_changes(*config);
  apply_log_options(*log);
  daemon_.reconfigure(*settings, *config);
  spdlog::info(
      "config reloaded from {}: run_concurrency {}, lease_wait_seconds {}, min_free_bytes {}, "
      "log level {}",
      options_.config.file.string(), settings->run_concurrency, settings->lease_wait.count(),
      settings->min_free_bytes, spdlog::level::to_string_view(log->level));
  return ok();
}

void ServiceHooks::warn_restart_only_changes(const NodeConfig& next) const {
  const NodeConfig& now = options_.config;
  auto warn = [](const char* what) {
    spdlog::warn("{} changed; it takes effect at the next restart", what);
  };
  if (next.state_dir != now.state_dir) warn("state_dir");
  if (next.control_plane != now.control_plane) warn("control_plane");
  if (next.docker != now.docker) warn("docker");
  if (restart_only_node_keys(next.node) != restart_only_node_keys(now.node)) {
    spdlog::warn(
        "node.labels or node.ssh_port changed; the control plane learns them at registration "
        "only, so this node keeps the ones it registered with");
  }
}

}  // namespace amlnode::agent
