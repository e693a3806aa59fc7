#pragma once

// The steps of a run that `amlnode run` (agent/local_run.cc) and the daemon (agent/daemon/) both
// take, so the two never disagree on how a run is planned, prepared, launched and judged.

#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agent/config.h"
#include "agent/run_lifecycle.h"
#include "common/clock.h"
#include "common/result.h"
#include "executors/environments/cache.h"
#include "executors/environments/config.h"
#include "executors/plan.h"
#include "executors/run_folder.h"
#include "executors/shim/launcher.h"
#include "executors/shim/protocol.h"
#include "spec/run_status.h"

namespace amlnode::agent {

// Appends lines about the run's preparation and release to system_logs/lifecycle.txt.
// The job may have put a link where the file goes: it is not followed, and the line goes to the
// agent's own log instead, with the refusal.
class SystemLog {
 public:
  SystemLog(std::filesystem::path run_dir, std::shared_ptr<Clock> clock)
      : folder_{std::move(run_dir)}, clock_(std::move(clock)) {}
  void line(const std::string& text) const;

 private:
  executors::RunFolder folder_;
  std::shared_ptr<Clock> clock_;
};

Result<executors::environments::EnvironmentConfig> environment_config(
    const NodeConfig& config, const std::filesystem::path& state_dir);

// The NVIDIA device nodes present (/dev/nvidia<N>): a node without the driver has none. What
// the node registers as its GPUs, and a ParallelRunStep's default worker count.
int nvidia_gpu_count();

// AZ_BATCH_NODE_ROOT_DIR: the config's batch.root_dir, else <state_dir>/batch.
std::filesystem::path batch_root_dir(const NodeConfig& config,
                                     const std::filesystem::path& state_dir);

executors::PlanContext plan_context(const NodeConfig& config,
                                    const std::filesystem::path& state_dir,
                                    const std::string& run_id, double kill_grace_seconds,
                                    const executors::environments::EnvironmentConfig& environments);

// What a job names that the node defines (agent/config.h): its environment by name (or the
// node's default one for a ScriptRunConfig that names none), and registered datasets by id or
// name; and the node's choice about the SDK (sdk.stand_in, sdk.install_azureml_packages,
// docs/sdk-compat.md). An unknown name is an "UnknownEnvironment" / "UnknownDataset" error naming
// the field and what the node has, before anything runs. Returns notes for the run's system log
// (azureml packages left out of its environment).
Result<std::vector<std::string>> resolve_node_references(spec::Job& job, const NodeConfig& config);

// Creates <state_dir>/runs/<run_id>/ with user_logs/ and system_logs/. A run folder that exists
// already is "RunIdTaken"; one that cannot be made is "StateDirUnusable".
Result<void> make_run_folder(const std::filesystem::path& state_dir, const std::string& run_id);

// What follows the snapshot: wd/outputs and wd/logs, then the inputs (each logged).
Result<void> make_outputs_and_stage_inputs(const executors::Plan& plan, const SystemLog& log);

// Removes what the run's inputs put outside the run folder (an absolute path_on_compute).
void release_outside_inputs(const executors::Plan& plan);

// Builds or reuses the plan's conda / pip environment and adds its variables to the plan under
// the job's own. The returned environment holds the cache lease: keep it while the run uses it.
// `canceled` is polled while an installer runs; once true the build stops and this fails
// "Canceled".
Result<executors::environments::PreparedEnvironment> prepare_python_environment(
    executors::Plan& plan, const executors::environments::EnvironmentConfig& config,
    std::shared_ptr<Clock> clock, const SystemLog& log,
    std::function<void(std::string_view)> progress, std::function<bool()> canceled);

// The launch spec of the run's single process under a shim, with the caller's environment under
// the plan's variables.
executors::LaunchSpec shim_launch_spec(const executors::Plan& plan);

// A run whose cancel had to kill its processes (the stop was overdue) leaves no exit record; it
// is Canceled all the same. Other outcomes are returned as they are.
RunOutcome canceled_if_stopped(RunOutcome outcome, bool cancel_requested);

// exit.json of a run whose shim has ended; kSupervisorFailed when the shim left none.
// Once a run's shim is gone, for whatever reason: kills what is left in the run's cgroup and
// removes it (executors/run_cgroup.h), saying in the system log how many processes it had to kill.
void end_run_processes(const std::filesystem::path& run_dir, const SystemLog& log);

Result<executors::ExitRecord> read_exit_record(const std::filesystem::path& run_dir,
                                               const std::string& detail);

// How a run ends, from its exit record.
RunOutcome outcome_of(const executors::ExitRecord& exit, const executors::Plan& plan);

// After the process ended: a script that called run.fail() (the SDK stand-in wrote
// system_logs/script_status.json) ends the run Failed with its error, even when it exited 0.
void apply_script_status(RunOutcome& outcome, const std::filesystem::path& run_dir,
                         const SystemLog& log);

std::string argv_text(const executors::Plan& plan);

}  // namespace amlnode::agent
