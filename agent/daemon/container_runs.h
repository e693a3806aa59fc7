#pragma once

// The blocking steps of a leased Docker run, for the daemon's worker pool: preparing its container
// (the image and the spec, as `amlnode run` does), creating and starting it, finding it again
// after a restart, and releasing it once it has ended. The daemon's event loop supervises the
// running container with ContainerWatch (agent/container_run.h).

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

// Preparing a Docker run, after its snapshot and inputs: the image (built, pulled or reused) and
// the container's spec in `started`. NotSupported when this node does not run Docker jobs;
// Canceled when `canceled` said so while the image was pulled or built.
Result<std::shared_ptr<StartedRun>> prepare_container_run(const RunEnvironment& env,
                                                          const spec::Job& job,
                                                          std::shared_ptr<StartedRun> started,
                                                          const SystemLog& log,
                                                          std::function<bool()> canceled);

// Creates the run's container (named amlnode-<run id>, so Docker itself refuses a second one),
// stores its id, and starts it. A container that cannot start is removed again.
Result<docker::ContainerInfo> create_and_start_container(const RunEnvironment& env,
                                                         StateStore& store, const StartedRun& run,
                                                         const std::string& run_id);

// Starts a container found again in the "created" state (the agent stopped between creating and
// starting it); its state afterwards.
Result<docker::ContainerInfo> start_found_container(const RunEnvironment& env,
                                                    const std::string& id);

// The run's container after a restart: the stored id when that container still exists, else the
// one labelled amlnode.run_id=<run id>; nullopt when there is none.
Result<std::optional<docker::ContainerInfo>> find_run_container(
    docker::ContainerRuntime& runtime, const std::string& run_id,
    const std::optional<std::string>& stored_id);

// A run held before a restart, when Docker has its container (found by the stored id or the
// label), or when it is a Docker run whose container is gone and whose exit.json is there. nullptr
// when neither holds (a process run, or a Docker run that never created its container): the
// caller goes on as for a process run. `resolve` gives the run's plan.
Result<std::shared_ptr<StartedRun>> reattach_container_run(
    const RunEnvironment& env, const LeasedRun& lease,
    const std::optional<std::string>& stored_container,
    const std::function<Result<executors::Plan>()>& resolve);

// How the daemon supervises a container: the grace period, the deadline left (counted from when
// the container started, so a restart does not extend it), and a retry while Docker is down.
// A container found ended whose run had used up its deadline ended by the deadline.
ContainerWatch::Settings container_watch_settings(const RunEnvironment& env,
                                                  const executors::Plan& plan,
                                                  const docker::ContainerInfo& container);

// After the container ended: exit.json from `exit` (when given; after a restart that found the
// container gone it is already there), the container's own output in
// system_logs/container.txt when it wrote any, and every container of the run removed.
void release_run_container(const RunEnvironment& env, const executors::Plan& plan,
                           const std::string& run_id,
                           const std::optional<executors::ExitRecord>& exit);

}  // namespace amlnode::agent
