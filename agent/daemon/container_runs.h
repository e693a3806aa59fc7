#pragma once

// The daemon's side of Docker runs, for its worker pool: its one Docker client, and finding a run's
// container again after a restart. Preparing, starting, watching and removing containers is the
// container runtime's (agent/run_runtime.h), as for `amlnode run`.

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "agent/container_run.h"
#include "agent/daemon/run_execution.h"
#include "agent/daemon/state_store.h"

namespace amlnode::agent {

// The node config's Docker runtime, when it enables Docker (docker_enabled); nullptr otherwise.
// Errors for a docker section it cannot use (a tcp:// host, a bad value), naming the key.
Result<std::shared_ptr<docker::ContainerRuntime>> daemon_docker_runtime(
    const NodeConfig& config, const std::filesystem::path& state_dir,
    docker::DockerRuntimeConfig& runtime_config);

// The run's container after a restart: the stored id when that container still exists, else the
// one labelled amlnode.run_id=<container key> (executors::container_key_of); nullopt when there
// is none.
Result<std::optional<docker::ContainerInfo>> find_run_container(
    docker::ContainerRuntime& runtime, const std::string& container_key,
    const std::optional<std::string>& stored_id);

// A run held before a restart, when Docker has its container (found by the stored id or the
// label), or when it is a Docker run whose container is gone and whose exit.json is there: its
// runtime found again (recover_run_runtime). A Docker run recorded as launching whose container
// was never created fails "NotStarted" (it is prepared afresh: Docker refuses a second container
// of the same name, so nothing can run twice). nullptr when none of these holds (a process run, or
// a Docker run not yet launching): the caller goes on as for a process run.
Result<std::shared_ptr<StartedRun>> reattach_container_run(
    const RunEnvironment& env, const LeasedRun& lease,
    const std::optional<std::string>& stored_container, bool launching);

}  // namespace amlnode::agent
