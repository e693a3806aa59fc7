#include "agent/daemon/agent_main.h"

#include <signal.h>
#include <spdlog/spdlog.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <cstdio>

#include "agent/daemon/container_runs.h"
#include "agent/daemon/daemon.h"
#include "agent/daemon/footprint.h"
#include "agent/daemon/node_facts.h"
#include "agent/daemon/service_hooks.h"
#include "executors/run_cgroup.h"
#include "executors/shim/launcher.h"

namespace amlnode::agent {

namespace {

constexpr int kExitConfig = 2;

// Each SIGTERM/SIGINT is handled on the io_context: the first drains, the next one stops.
void watch_signals(boost::asio::signal_set& signals, Daemon& daemon, int& received) {
  signals.async_wait(
      [&signals, &daemon, &received](const boost::system::error_code& ec, int number) {
        if (ec) return;
        spdlog::info("signal {} received", number);
        if (++received == 1) {
          daemon.drain();
        } else {
          daemon.stop_now();
        }
        watch_signals(signals, daemon, received);
      });
}

}  // namespace

int run_agent(const NodeConfig& config, const std::filesystem::path& state_dir) {
  // Taken before any thread starts (setenv is not thread-safe) and before any run is launched, so
  // runs do not inherit the service manager's variables.
  ServiceManagerEnv service_env = take_service_manager_env();
  tune_allocator_for_daemon();
  auto settings = read_agent_settings(config);
  if (!settings.ok()) {
    std::fprintf(stderr, "amlnode agent: %s\n", settings.error().message.c_str());
    return kExitConfig;
  }
  auto store = open_sqlite_state_store(state_dir);
  if (!store.ok()) {
    std::fprintf(stderr, "amlnode agent: %s\n", store.error().message.c_str());
    return 1;
  }
  ::signal(SIGPIPE, SIG_IGN);
  std::shared_ptr<ControlPlaneClient> client =
      make_http_control_plane_client(make_http_client(settings->endpoint, settings->tls));

  boost::asio::io_context io;
  DaemonOptions options;
  options.settings = *settings;
  options.facts = collect_node_facts(settings->labels, settings->ssh_port);
  // The address peers reach this node on: the configured one, else the one it reaches the
  // control plane from.
  put_address_first(options.facts,
                    settings->address.empty()
                        ? route_address_to(settings->endpoint.host, settings->endpoint.port)
                        : settings->address);
  options.runs.config = config;
  options.runs.state_dir = state_dir;
  options.runs.control_plane_url = http_url(settings->endpoint);
  if (settings->tls.ca_file) options.runs.control_plane_ca_file = settings->tls.ca_file->string();
  std::error_code program_error;
  options.runs.agent_program = std::filesystem::read_symlink("/proc/self/exe", program_error);
  options.runs.clock = make_system_clock();
  options.runs.launcher = executors::make_shim_launcher(executors::default_shim_binary());
  auto docker = daemon_docker_runtime(config, state_dir, options.runs.docker_config);
  if (!docker.ok()) {
    std::fprintf(stderr, "amlnode agent: %s\n", docker.error().message.c_str());
    return kExitConfig;
  }
  options.runs.docker = *docker;
  Daemon daemon(io, std::move(options), client, std::move(store.value()));
  DaemonExit exit;
  boost::asio::signal_set signals(io, SIGTERM, SIGINT);
  int received = 0;
  watch_signals(signals, daemon, received);
  ServiceHooks service(io, daemon, {service_env, config, *settings});
  spdlog::info("amlnode agent starting; state in {}", state_dir.string());
  if (const auto& cgroups = executors::run_cgroup_support(); cgroups.available) {
    spdlog::info("runs are held in cgroups below {}", cgroups.base.string());
  } else {
    spdlog::warn(
        "runs are not held in cgroups ({}): a run's processes can outlive a killed "
        "supervisor",
        cgroups.why_not);
  }
  service.start();
  daemon.start([&](DaemonExit result) {
    exit = std::move(result);
    io.stop();
  });
  io.run();
  service.finished(exit.message);
  return exit.code;
}

}  // namespace amlnode::agent
