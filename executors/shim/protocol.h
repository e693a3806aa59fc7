#pragma once

// The contract between whoever starts a run's process (amlnode run, later the agent) and
// `amlnode-shim`, the small per-process supervisor. The shim reads a LaunchSpec from a JSON file,
// writes ShimState once the process has started and an ExitRecord when everything of the run has
// ended. All three are plain JSON files in the run folder, written atomically, so the shim never
// needs its parent and a restarted parent can read where things stand.

#include <sys/types.h>

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"

namespace amlnode::executors {

// One process of a run of several (a distributed run's ranks on this node).
struct RankLaunch {
  int rank = 0;
  std::vector<std::string> argv;
  std::vector<std::string> env;  // "NAME=value" over the LaunchSpec's env (same name: replaced)
  std::filesystem::path log_path;
};

struct LaunchSpec {
  std::vector<std::string> argv;  // argv[0] is resolved against PATH of `env` if not a path
  std::vector<std::string> env;   // the complete environment, "NAME=value"
  std::filesystem::path cwd;
  std::filesystem::path log_path;  // stdout and stderr of the process, opened O_APPEND
  // stderr apart from stdout (an AzureBatchStep's task: stdout.txt and stderr.txt); empty: both
  // go to log_path. Only for a run of one process.
  std::filesystem::path stderr_path;
  std::filesystem::path state_path;        // shim.json
  std::filesystem::path exit_path;         // exit.json
  std::optional<double> deadline_seconds;  // measured from the process's start
  double kill_grace_seconds = 10.0;        // SIGTERM -> SIGKILL
  std::optional<uid_t> uid;
  std::optional<gid_t> gid;
  // The caller stores the outcome durably itself as soon as it reads exit.json (`amlnode run`
  // writes the terminal run.json synced). While that caller is still the shim's parent, exit.json
  // is then written without a sync; once the caller is gone, it is synced as always.
  bool caller_syncs_outcome = false;
  // The run's cgroup (executors/run_cgroup.h), made by the caller: the shim joins it before it
  // starts the entry process, so every process of the run is in it. Unset: no cgroup.
  std::optional<std::filesystem::path> cgroup;
  // A run of several processes: each rank started as the entry process is (argv, env and log its
  // own), all under this one shim. The first rank to end with a non-zero status or a signal ends
  // the run: every other process gets SIGTERM, the grace period, then SIGKILL. Empty: the one
  // process of argv and log_path (argv is then still required, and names the run's program).
  std::vector<RankLaunch> ranks;
  // The processes start from the shim's own environment with `env` over it, instead of `env`
  // alone: a shim inside a container passes on the image's variables, which its caller cannot
  // know.
  bool inherit_env = false;
};

// Written once the entry process has been spawned.
struct ShimState {
  pid_t shim_pid = 0;
  unsigned long long shim_start_time = 0;  // /proc/<pid>/stat field 22 (clock ticks since boot)
  pid_t child_pid = 0;
  long long started_at_ms = 0;  // Unix epoch milliseconds
};

enum class ExitReason {
  Exited,       // the entry process exited by itself (exit_code set)
  Signaled,     // the entry process was killed by a signal it did not get from us (signal set)
  Timeout,      // the deadline passed and the shim stopped the run
  Canceled,     // the shim got SIGTERM/SIGINT (a cancel) and stopped the run
  SpawnFailed,  // the process never started (error says why)
};

// How one rank of a run of several ended.
struct RankExit {
  int rank = 0;
  std::optional<int> exit_code;
  std::optional<int> signal;
  long long ended_at_ms = 0;
};

struct ExitRecord {
  ExitReason reason = ExitReason::Exited;
  std::optional<int> exit_code;  // when the entry process exited
  std::optional<int> signal;     // when it died from a signal (also set for Timeout/Canceled
                                 // when it was the shim's signal that ended it)
  long long started_at_ms = 0;
  long long ended_at_ms = 0;  // when the last process of the run was gone
  std::string error;          // SpawnFailed: what went wrong
  // Runs of several ranks: each rank's end, in the order they ended, and the first rank that
  // ended with a non-zero status or a signal (its status is exit_code / signal above). For a
  // single process both are empty.
  std::vector<RankExit> ranks;
  std::optional<int> failed_rank;
};

std::string to_string(ExitReason);

std::string launch_spec_to_json(const LaunchSpec&);
Result<LaunchSpec> launch_spec_from_json(const std::string& text);
std::string shim_state_to_json(const ShimState&);
Result<ShimState> shim_state_from_json(const std::string& text);
std::string exit_record_to_json(const ExitRecord&);
Result<ExitRecord> exit_record_from_json(const std::string& text);

}  // namespace amlnode::executors
