#pragma once

// The blocking halves of a leased run's life, run on the daemon's worker pool: preparing and
// launching it (run folder, snapshot download and secure extraction, job, plan, inputs,
// environment, shim), and finalizing it (exit record, ./outputs upload). They use the same steps
// as `amlnode run` (agent/run_steps.h).

#include <filesystem>
#include <functional>
#include <memory>
#include <optional>

#include "agent/config.h"
#include "agent/daemon/control_plane_client.h"
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
  // Called on the preparing thread just before the shim is started; it must record durably that
  // the run is being launched (StateStore::mark_launching), so that a restart before the shim's
  // pid is stored never launches the process a second time. An error fails the run.
  std::function<Result<void>(const LeasedRun&)> before_launch;
  // Whether the run was canceled while being prepared; polled on the preparing thread, so that an
  // environment build in progress stops instead of running to its end. Unset: never canceled.
  std::function<bool(const std::string& run_id)> canceled;
  // Set when the node runs Docker jobs (docker_enabled); Docker jobs fail NotSupported without.
  std::shared_ptr<docker::ContainerRuntime> docker;
  docker::DockerRuntimeConfig docker_config;
};

// A run whose process is under its shim.
struct StartedRun {
  executors::Plan plan;
  executors::LaunchedShim shim;
  // Holds the environment cache's lease while the run uses it.
  std::optional<executors::environments::PreparedEnvironment> environment;
  bool shim_alive = true;  // false for a re-attached run whose shim has ended meanwhile
  // Docker runs have no shim: the container to create, or the one found again after a restart
  // (unset when it had ended and been removed: exit.json tells the outcome).
  bool in_container = false;
  std::optional<docker::ContainerSpec> container_spec;
  std::optional<docker::ContainerInfo> container;
  // The container's first process and its start time, once it runs: the root its resources are
  // sampled from (unset for a process run, or a container whose process was never seen).
  std::optional<std::pair<pid_t, std::uint64_t>> container_root;
};

// Everything up to the shim's launch. Errors carry the code the run fails with (InvalidJob,
// SnapshotFailed, UnsafeArchive, NotSupported, ProcessStartFailed, ...). A StaleEpoch error
// means the lease moved on while preparing.
Result<std::shared_ptr<StartedRun>> prepare_and_launch(const RunEnvironment& env,
                                                       const NodeIdentity& node,
                                                       const LeasedRun& lease);

// A run the state store says this node held when it stopped: its plan again (resolution is
// deterministic from the lease and the snapshot already in wd/), and its shim, found by the pid
// and start time stored (or, when the agent stopped before storing them, by the shim's own
// shim.json). "NotStarted" when no shim was ever started: the caller prepares the run afresh.
// Docker runs are found by the container id stored, else by their amlnode.run_id label;
// "DockerUnavailable" when Docker cannot say (the caller tries again later).
// When `launching` (the launch was recorded before the agent stopped) and neither the store nor
// shim.json names the shim, it is looked for among the processes by its launch file; if it is not
// there and left no exit.json, the error is "LaunchInterrupted": the run fails rather than risk
// running its process twice. A re-attached conda / pip run takes its environment lease again.
Result<std::shared_ptr<StartedRun>> reattach_run(
    const RunEnvironment& env, const LeasedRun& lease,
    std::optional<executors::LaunchedShim> stored_shim,
    std::optional<std::string> stored_container = std::nullopt, bool launching = false);

// Removes what an interrupted preparation left in the run folder, so it can start over.
void discard_run_folder(const RunEnvironment& env, const std::string& run_id);

// After the shim has ended: the outcome from exit.json (noted in the run's system log).
RunOutcome finalize_run(const RunEnvironment& env, const executors::Plan& plan);

// Packs ./outputs and uploads it. Only the errors worth retrying or acting on are returned
// (Unreachable, StaleEpoch, Canceled); any other failure (too large, refused) is written to the
// run's system log and the run goes on without its outputs at the control plane.
Result<void> upload_run_outputs(const RunEnvironment& env, const NodeIdentity& node,
                                const LeasedRun& lease);

}  // namespace amlnode::agent
