#include "agent/daemon/container_runs.h"

#include <cmath>

#include "common/fs.h"
#include "executors/run_folder.h"

namespace amlnode::agent {

namespace {

// How much of a container's own stdout/stderr (the wrapper's complaints; the run's output goes to
// std_log.txt) is kept in system_logs/container.txt.
constexpr std::size_t kRuntimeOutputLimit = 64u << 10;

std::string run_label(const std::string& run_id) {
  return "amlnode.run_id=" + run_id;
}

}  // namespace

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

Result<std::shared_ptr<StartedRun>> prepare_container_run(const RunEnvironment& env,
                                                          const spec::Job& job,
                                                          std::shared_ptr<StartedRun> started,
                                                          const SystemLog& log,
                                                          std::function<bool()> canceled) {
  if (!env.docker) {
    return Error{"NotSupported",
                 "this node does not run Docker jobs (no docker section in its config, or "
                 "docker.enabled: false)"};
  }
  auto spec = prepare_run_container(*env.docker, env.docker_config, env.config, started->plan, job,
                                    log, nullptr, std::move(canceled));
  if (!spec.ok()) return spec.error();
  started->in_container = true;
  started->container_spec = std::move(spec.value());
  return started;
}

Result<docker::ContainerInfo> create_and_start_container(const RunEnvironment& env,
                                                         StateStore& store, const StartedRun& run,
                                                         const std::string& run_id) {
  SystemLog log(run.plan.run_dir, env.clock);
  if (auto written = write_container_launch(*run.container_spec); !written.ok())
    return written.error();
  auto id = env.docker->create_container(*run.container_spec);
  if (!id.ok()) return id.error();
  // Stored before it starts; should this write fail, the label still finds it after a restart.
  if (auto saved = store.save_container_id(run_id, *id); !saved.ok())
    log.line("container id not stored: " + saved.error().message);
  auto started = env.docker->start_container(*id);
  if (!started.ok()) {
    (void)env.docker->remove_container(*id);
    return started.error();
  }
  log.line("container " + *id + " started from " + run.container_spec->image);
  return env.docker->inspect_container(*id);
}

Result<docker::ContainerInfo> start_found_container(const RunEnvironment& env,
                                                    const std::string& id) {
  if (auto started = env.docker->start_container(id); !started.ok()) return started.error();
  return env.docker->inspect_container(id);
}

Result<std::optional<docker::ContainerInfo>> find_run_container(
    docker::ContainerRuntime& runtime, const std::string& run_id,
    const std::optional<std::string>& stored_id) {
  if (stored_id) {
    auto info = runtime.inspect_container(*stored_id);
    if (info.ok()) return std::optional<docker::ContainerInfo>(*info);
    if (info.error().code == docker::kDockerUnavailable) return info.error();
  }
  auto listed = runtime.list_containers(run_label(run_id));
  if (!listed.ok()) return listed.error();
  if (listed->empty()) return std::optional<docker::ContainerInfo>();
  // The listing has no times or exit codes; inspecting has.
  auto info = runtime.inspect_container(listed->front().id);
  if (!info.ok()) return info.error();
  return std::optional<docker::ContainerInfo>(*info);
}

Result<std::shared_ptr<StartedRun>> reattach_container_run(
    const RunEnvironment& env, const LeasedRun& lease,
    const std::optional<std::string>& stored_container,
    const std::function<Result<executors::Plan>()>& resolve) {
  auto run_dir = executors::RunFolder::of(env.state_dir, lease.run_id).root;
  std::error_code ec;
  if (!env.docker || std::filesystem::exists(run_dir / "shim.json", ec))
    return std::shared_ptr<StartedRun>();
  auto found = find_run_container(*env.docker, lease.run_id, stored_container);
  if (!found.ok()) return found.error();
  bool exited = std::filesystem::exists(run_dir / "exit.json", ec);
  if (!*found && !exited) return std::shared_ptr<StartedRun>();
  auto plan = resolve();
  if (!plan.ok()) return plan.error();
  if (!*found && plan->environment_kind != executors::EnvironmentKind::Docker)
    return std::shared_ptr<StartedRun>();
  auto started = std::make_shared<StartedRun>();
  started->plan = std::move(plan.value());
  started->in_container = true;
  // With exit.json written, only the release was left to do: the container is not watched again.
  if (!exited) started->container = *found;
  started->shim_alive = false;
  SystemLog(run_dir, env.clock)
      .line(started->container
                ? "agent restarted: found container " + (*found)->id + " (" + (*found)->state + ")"
                : "agent restarted: the run's container had ended");
  return started;
}

ContainerWatch::Settings container_watch_settings(const RunEnvironment& env,
                                                  const executors::Plan& plan,
                                                  const docker::ContainerInfo& container) {
  ContainerWatch::Settings settings;
  settings.grace = std::chrono::seconds(static_cast<long long>(std::ceil(plan.kill_grace_seconds)));
  settings.retry_when_unreachable = true;
  auto started_at = container.started_at.value_or(env.clock->now());
  settings.started_at_ms = unix_millis(started_at);
  if (plan.deadline_seconds) {
    auto limit = std::chrono::seconds(*plan.deadline_seconds);
    auto end = container.running ? env.clock->now() : container.finished_at.value_or(started_at);
    settings.deadline =
        std::chrono::duration_cast<std::chrono::milliseconds>(limit - (end - started_at));
  }
  return settings;
}

void release_run_container(const RunEnvironment& env, const executors::Plan& plan,
                           const std::string& run_id,
                           const std::optional<executors::ExitRecord>& exit) {
  SystemLog log(plan.run_dir, env.clock);
  if (exit) {
    auto written =
        write_file_atomically(plan.run_dir / "exit.json",
                              executors::exit_record_to_json(container_exit_record(plan, *exit)));
    if (!written.ok()) log.line(written.error().message);
  }
  if (!env.docker) return;
  auto containers = env.docker->list_containers(run_label(run_id));
  if (!containers.ok()) {
    log.line("container not removed: " + containers.error().message);
    return;
  }
  for (const auto& container : *containers) {
    auto output = env.docker->container_output(container.id, kRuntimeOutputLimit);
    if (output.ok() && !output->empty()) {
      (void)executors::RunFolder{plan.run_dir}.write(executors::RunFolder::kContainerLog, *output);
    }
    auto removed = env.docker->remove_container(container.id);
    log.line(removed.ok() ? "container " + container.id + " removed"
                          : "container not removed: " + removed.error().message);
  }
}

}  // namespace amlnode::agent
