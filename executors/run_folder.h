#pragma once

// Every path and file name of a run's folder, <state_dir>/runs/<run_id>/, in one place:
//
//   wd/                           the snapshot; the run's working directory
//   wd/outputs, wd/logs           as on Azure ML (outputs uploaded at the end, logs shipped live)
//   user_logs/std_log.txt         the process's stdout and stderr
//   user_logs/std_log_process_NN.txt, mpi_log.txt   per rank, and mpirun's (distributed runs)
//   system_logs/lifecycle.txt     preparation and release, written by the agent
//   system_logs/shim.txt          the supervisor's own messages
//   system_logs/resources.jsonl   the agent's resource samples of the run
//   system_logs/metrics.jsonl     what the script logged (amlnode_run, azureml.core.Run)
//   system_logs/container.txt     the Docker side of a container run
//   run.json, exit.json, shim.json, launch.json
//   ranks_launch.json, ranks_shim.json, ranks_exit.json   a Docker run of several ranks: the
//                                 files of the shim inside its container
//
// The job can write in the whole folder (a container gets it mounted read-write), so whatever the
// agent itself writes or reads there goes through write()/read() below, which never follow a link
// (common/fs.h, open_beneath).

#include <fcntl.h>

#include <filesystem>
#include <string>
#include <string_view>

#include "common/fs.h"
#include "common/result.h"

namespace amlnode::executors {

struct RunFolder {
  // Names relative to the folder.
  static constexpr std::string_view kWorkingDir = "wd";
  static constexpr std::string_view kUserLogs = "user_logs";
  static constexpr std::string_view kSystemLogs = "system_logs";
  static constexpr std::string_view kStdLog = "user_logs/std_log.txt";
  // A distributed MPI run: mpirun's own messages (each rank has std_log_process_NN.txt).
  static constexpr std::string_view kMpiLog = "user_logs/mpi_log.txt";
  static constexpr std::string_view kLifecycle = "system_logs/lifecycle.txt";
  static constexpr std::string_view kShimLog = "system_logs/shim.txt";
  static constexpr std::string_view kResources = "system_logs/resources.jsonl";
  static constexpr std::string_view kMetrics = "system_logs/metrics.jsonl";
  static constexpr std::string_view kContainerLog = "system_logs/container.txt";
  static constexpr std::string_view kRunRecord = "run.json";
  static constexpr std::string_view kExit = "exit.json";
  static constexpr std::string_view kShimState = "shim.json";
  static constexpr std::string_view kLaunch = "launch.json";
  static constexpr std::string_view kRanksLaunch = "ranks_launch.json";
  static constexpr std::string_view kRanksShimState = "ranks_shim.json";
  static constexpr std::string_view kRanksExit = "ranks_exit.json";

  std::filesystem::path root;

  static RunFolder of(const std::filesystem::path& state_dir, const std::string& run_id) {
    return RunFolder{state_dir / "runs" / run_id};
  }

  std::filesystem::path path(std::string_view relative) const { return root / relative; }
  std::filesystem::path working_dir() const { return path(kWorkingDir); }
  std::filesystem::path outputs() const { return working_dir() / "outputs"; }
  std::filesystem::path logs() const { return working_dir() / "logs"; }

  // Appends below the folder without following links (the file is created when missing).
  Result<void> append(std::string_view relative, std::string_view data) const {
    return append_beneath(root, relative, data);
  }
  // Replaces the content of a file below the folder (not atomically: for the agent's own
  // diagnostics) without following links.
  Result<void> write(std::string_view relative, std::string_view data) const {
    auto file = open(relative, O_WRONLY | O_CREAT | O_TRUNC);
    if (!file.ok()) return file.error();
    return write_all_to(file->get(), data, path(relative));
  }
  // Opens below the folder without following links.
  Result<UniqueFd> open(std::string_view relative, int flags, unsigned mode = 0644) const {
    return open_beneath(root, relative, flags, mode);
  }
};

}  // namespace amlnode::executors
