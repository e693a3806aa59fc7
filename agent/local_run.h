#pragma once

// `amlnode run`: one job on this machine with no control plane. Loads and checks the job, makes the
// run folder, snapshots the source, stages inputs, starts the process under a shim, shows its
// output live, enforces cancel, and records the outcome in run.json. The exit code is the run's.

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "agent/config.h"
#include "common/clock.h"
#include "executors/shim/launcher.h"

namespace amlnode::agent {

// Exit codes of `amlnode run` besides the process's own.
inline constexpr int kExitInvalidJob = 2;
inline constexpr int kExitTimeout = 124;
inline constexpr int kExitBeforeStart = 125;
inline constexpr int kExitCanceled = 130;

struct LocalRunOptions {
  std::filesystem::path job_file;
  std::optional<std::filesystem::path> source_dir;
  std::filesystem::path state_dir;
  std::optional<std::string> run_id;
  std::optional<std::string> experiment;      // -e/--experiment, over the job's
  std::optional<std::string> script;          // SCRIPT after the job file, over the job's
  std::vector<std::string> script_arguments;  // its arguments, over the job's
  double kill_grace_seconds = 10.0;
  bool dry_run = false;
  bool json = false;   // print the final run.json (or the plan) as JSON on stdout
  bool quiet = false;  // print only the run's output
  NodeConfig config;   // installer options, image mirrors
};

int run_local(const LocalRunOptions& options, std::shared_ptr<Clock> clock,
              executors::ProcessLauncher& launcher);

// $AMLNODE_STATE_DIR, else /var/lib/amlnode for root, else $XDG_STATE_HOME/amlnode or
// ~/.local/state/amlnode.
std::filesystem::path default_state_dir();

// "<experiment>_<unix seconds>_<8 hex digits>", the shape of Azure ML v1 run ids.
std::string new_run_id(const std::string& experiment_name,
                       std::chrono::system_clock::time_point now);

// Run ids name folders: letters, digits, '_', '-', '.', not starting with '.', at most 200 chars.
bool is_valid_run_id(const std::string& run_id);

}  // namespace amlnode::agent
