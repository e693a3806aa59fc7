#include "agent/daemon/container_runs.h"

#include <cmath>

#include "common/error_codes.h"
#include "common/fs.h"
#include "executors/run_folder.h"

namespace amlnode::agent {

Result<std::shared_ptr<docker::ContainerRuntime>> daemon_docker_runtime(
    const NodeConfig& config, const std::filesystem::path& state_dir,
    docker::DockerRuntimeConfig& runtime_config) {
  auto enabled = docker_enabled(config);
  if (!enabled.ok()) return enabled.error();
  if (!*enabled) return std::shared_ptr<docker::ContainerRuntime>();
  auto settings = docker_runtime_config(config, state_dir);
  if (!settings.ok()) return settings.error();
  runtime_config = *settings;
  auto runtime = docker::make_docker_runtime(*settings);
  if (!runtime.ok()) return runtime.error();
  return std::shared_ptr<docker::ContainerRuntime>(std::move(runtime.value()));
}

Result<std::optional<docker::ContainerInfo>> find_run_container(
    docker::ContainerRuntime& runtime, const std::string& container_key,
    const std::optional<std::string>& stored_id) {
  if (stored_id) {
    auto info = runtime.inspect_container(*stored_id);
    if (info.ok()) return std::optional<docker::ContainerInfo>(*info);
    if (info.error().code == docker::kDockerUnavailable) return info.error();
  }
  auto listed = runtime.list_containers(run_container_label(container_key));
  if (!listed.ok()) return listed.error();
  if (listed->empty()) return std::optional<docker::ContainerInfo>();
  // The listing has no times or exit codes; inspecting has.
  auto info = runtime.inspect_container(listed->front().id);
  if (!info.ok()) return info.error();
  return std::optional<docker::ContainerInfo>(*info);
}

Result<std::shared_ptr<StartedRun>> reattach_container_run(
    const RunEnvironment& env, const LeasedRun& lease,
    const std::optional<std::string>& stored_container, bool launching) {
  auto run_dir = executors::RunFolder::of(env.state_dir, lease.run_id).root;
  std::error_code ec;
  if (!env.docker || std::filesystem::exists(run_dir / "shim.json", ec))
    return std::shared_ptr<StartedRun>();
  auto found = find_run_container(
      *env.docker,
      executors::container_key_of(lease.run_id, lease.node_count > 1 ? lease.node_rank : -1),
      stored_container);
  if (!found.ok()) return found.error();
  bool exited = std::filesystem::exists(run_dir / "exit.json", ec);
  if (!*found && !exited && !launching) return std::shared_ptr<StartedRun>();
  auto plan = leased_plan(env, lease);
  if (!plan.ok()) return plan.error();
  if (plan->environment_kind != executors::EnvironmentKind::Docker)
    return std::shared_ptr<StartedRun>();
  if (!*found && !exited)
    return Error{errors::kNotStarted, "run " + lease.run_id + " never created its container"};
  FoundRun recovered;
  // With exit.json written, only the release was left to do: the container is not watched again.
  if (!exited) recovered.container = *found;
  std::string note = recovered.container
                         ? "container " + (*found)->id + " found again (" + (*found)->state + ")"
                         : "the run's container had ended";
  SystemLog(run_dir, env.clock).line("agent restarted: " + note);
  auto started = std::make_shared<StartedRun>();
  started->found = note;
  started->plan = std::move(plan.value());
  started->runtime =
      recover_run_runtime(started->plan, runtime_context(env, lease), std::move(recovered));
  return started;
}

}  // namespace amlnode::agent
