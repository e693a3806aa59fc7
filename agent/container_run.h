#pragma once

// Running a Docker run's container to its end, for `amlnode run`: start it, stop it (SIGTERM, the
// grace period, SIGKILL) at the deadline or on cancel, wait for it, remove it. The outcome is the
// same ExitRecord the shim writes for a process, so both kinds of run finish the same way.
//
// The container writes its own output into the run's std_log.txt (docker/container_spec.h), so
// nothing here copies output and the log keeps growing even if this process dies; the container
// then runs on (found again by its amlnode.run_id label) and is not stopped at its deadline.

#include <chrono>
#include <functional>
#include <optional>

#include "agent/config.h"
#include "common/result.h"
#include "docker/container_spec.h"
#include "docker/runtime.h"
#include "executors/shim/protocol.h"

namespace amlnode::agent {

struct ContainerRunHooks {
  std::function<void(const std::string& container_id)> on_running;
  std::function<void()> on_cancel_requested;
};

// Runs `spec` to its end. SIGINT / SIGTERM to this process cancel the run. Fails only when the
// container could not be created or started (the run never ran).
Result<executors::ExitRecord> run_container_to_end(
    docker::ContainerRuntime& runtime, const docker::ContainerSpec& spec,
    std::optional<std::chrono::milliseconds> deadline, std::chrono::seconds grace,
    const ContainerRunHooks& hooks);

// The Docker settings of the node config (`docker:` and `images:` sections):
//   docker: {host: unix:///var/run/docker.sock, image_repository: amlnode/env,
//            pip_install_options: [--no-index, --find-links, /amlnode/wheels],
//            local_wheel_dir: /srv/wheels, conda_tool: conda, python: python, gpus: 0}
Result<docker::DockerRuntimeConfig> docker_runtime_config(const NodeConfig& config,
                                                          const std::filesystem::path& state_dir);

// docker.disk_budget_bytes: after a build, least-recently-used images are evicted down to it.
std::optional<std::uint64_t> docker_disk_budget(const NodeConfig& config);

// GPUs this node can give containers: the config's docker.gpus, else the /dev/nvidiaN devices.
int node_gpu_count(const NodeConfig& config);

}  // namespace amlnode::agent
