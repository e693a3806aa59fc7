#pragma once

// The blocking halves of a leased run's life, run on the daemon's worker pool: preparing it (run
// folder, snapshot download and secure extraction, job, plan, inputs, then its runtime's
// environment or image), launching it, finding it again after a restart, and finalizing it (exit
// record, ./outputs upload). They use the same steps and the same runtime seam as `amlnode run`
// (agent/run_steps.h, agent/run_runtime.h).

#include <filesystem>
#include <functional>
#include <memory>
#include <optional>

#include "agent/config.h"
#include "agent/daemon/control_plane_client.h"
#include "agent/run_runtime.h"
#include "agent/run_steps.h"
#include "common/clock.h"
#include "docker/runtime.h"
#include "executors/shim/launcher.h"

namespace amlnode::agent {

struct RunEnvironment {
  NodeConfig config;
  std::filesystem::path state_dir;
  double kill_grace_seconds = 10.0;
  std::shared_ptr<Clock> clock;
  std::shared_ptr<executors::ProcessLauncher> launcher;
  std::shared_ptr<ControlPlaneClient> client;
  // Called on the launching thread just before the run's processes start (the shim, or the
  // container created); it must record durably that the run is being launched
  // (StateStore::mark_launching), so that a restart before the shim's pid is stored never launches
  // the process a second time. An error fails the run.
  std::function<Result<void>(const LeasedRun&)> before_launch;
  // A Docker run's container was created: its id is stored (StateStore::save_container_id).
  std::function<void(const std::string& run_id, const std::string& container_id)>
      on_container_created;
  // Where blocking calls of a watched run go (the daemon's pool).
  std::function<void(std::function<void()>)> blocking;
  // Whether the run was canceled while being prepared; polled on the preparing thread, so that an
  // environment build in progress stops instead of running to its end. Unset: never canceled.
  std::function<bool(const std::string& run_id)> canceled;
  // Set when the node runs Docker jobs (docker_enabled); Docker jobs fail NotSupported without.
  std::shared_ptr<docker::ContainerRuntime> docker;
  docker::DockerRuntimeConfig docker_config;
  // For MPI runs across nodes (executors::ShareContext): the control plane's URL and CA file as
  // the agent's settings give them, and this program, which Open MPI runs as its rsh agent.
  std::string control_plane_url;
  std::string control_plane_ca_file;
  std::filesystem::path agent_program;
};

// A leased run once prepared: its plan, and the runtime its processes run under
// (agent/run_runtime.h), which holds what the preparation made (the environment cache's lease, the
// container's spec) for as long as it lives.
struct StartedRun {
  executors::Plan plan;
  std::shared_ptr<RunRuntime> runtime;
  // A run found again after a restart: what was found, for the agent's log.
  std::string found;
};

// What a leased run's runtime is given: the node's config, Docker client and pool, and the
// launch hooks bound to the lease.
RunRuntimeContext runtime_context(const RunEnvironment& env, const LeasedRun& lease);

// Everything up to the launch: run folder, snapshot, job, plan, inputs, and the runtime's
// preparation (an environment built, an image pulled). Errors carry the code the run fails with
// (InvalidJob, SnapshotFailed, UnsafeArchive, NotSupported, ...). A StaleEpoch error means the
// lease moved on while preparing.
Result<std::shared_ptr<StartedRun>> prepare_leased_run(const RunEnvironment& env,
                                                       const NodeIdentity& node,
                                                       const LeasedRun& lease);

// Starts the prepared run's processes (before_launch first: a canceled run fails "Canceled"). A
// share of a run across nodes first waits at the run's barrier until every share is prepared.
Result<void> launch_leased_run(const RunEnvironment& env, const NodeIdentity& node,
                               const LeasedRun& lease, const StartedRun& run);

// A share's plan context: this node's, and for a run across nodes its share (node rank, every
// node's address, the master's port).
executors::PlanContext leased_plan_context(
    const RunEnvironment& env, const LeasedRun& lease,
    const executors::environments::EnvironmentConfig& environments);

// The barrier of a run across nodes: tells the control plane this share is prepared and waits
// until every share is (retrying while the control plane is unreachable). "Canceled" when the run
// was canceled meanwhile; StaleEpoch when it ended or moved on.
Result<void> wait_at_barrier(const RunEnvironment& env, const NodeIdentity& node,
                             const LeasedRun& lease);

// A run the state store says this node held when it stopped: its plan again (resolution is
// deterministic from the lease and the snapshot already in wd/), and its runtime, found again
// (recover_run_runtime): its shim by the pid and start time stored (or, when the agent stopped
// before storing them, by the shim's own shim.json), or its container by the id stored, else by
// its amlnode.run_id label. "NotStarted" when no process was ever started (or no container ever
// created): the caller prepares the run afresh. "DockerUnavailable" when Docker cannot say (the
// caller tries again later).
// When `launching` (the launch was recorded before the agent stopped) and neither the store nor
// shim.json names the shim, it is looked for among the processes by its launch file; if it is not
// there and left no exit.json, the error is "LaunchInterrupted": the run fails rather than risk
// running its process twice. A re-attached conda / pip run takes its environment lease again.
Result<std::shared_ptr<StartedRun>> reattach_run(
    const RunEnvironment& env, const LeasedRun& lease,
    std::optional<executors::LaunchedShim> stored_shim,
    std::optional<std::string> stored_container = std::nullopt, bool launching = false);

// The plan of a run whose snapshot is in wd/ already: resolution is deterministic from the lease.
Result<executors::Plan> leased_plan(const RunEnvironment& env, const LeasedRun& lease);

// Removes what an interrupted preparation left in the run folder, so it can start over.
void discard_run_folder(const RunEnvironment& env, const std::string& run_id);

// After the run's processes have ended and its runtime released them: the outcome from their exit
// record (noted in the run's system log).
RunOutcome finalize_run(const RunEnvironment& env, const executors::Plan& plan,
                        const Result<executors::ExitRecord>& exit);

// Packs ./outputs and uploads it. Only the errors worth retrying or acting on are returned
// (Unreachable, StaleEpoch, Canceled); any other failure (too large, refused) is written to the
// run's system log and the run goes on without its outputs at the control plane.
Result<void> upload_run_outputs(const RunEnvironment& env, const NodeIdentity& node,
                                const LeasedRun& lease);

}  // namespace amlnode::agent
