#pragma once

// Starting shims, and finding them again. The seam through which `amlnode run` (and later the
// agent) starts each job process: production code uses make_shim_launcher(), tests of callers can
// implement ProcessLauncher with a fake.

#include <sys/types.h>

#include <filesystem>
#include <memory>
#include <optional>

#include "common/result.h"
#include "executors/shim/protocol.h"

namespace amlnode::executors {

// A started shim, identified by pid and start time together: a pid alone may have been reused by
// the time anyone looks at it again.
struct LaunchedShim {
  pid_t pid = 0;
  unsigned long long start_time = 0;  // /proc/<pid>/stat field 22
};

class ProcessLauncher {
 public:
  virtual ~ProcessLauncher() = default;
  // Writes `spec` as JSON to `launch_file`, starts amlnode-shim on it in its own session with stdin
  // /dev/null and stdout+stderr appended to `shim_log`, and returns as soon as the shim exists.
  // The shim is a direct child of the calling process (waitpid it, or poll open_pidfd()), but it
  // does not depend on the caller: it goes on, and writes exit.json, if the caller dies.
  virtual Result<LaunchedShim> launch(const LaunchSpec& spec,
                                      const std::filesystem::path& launch_file,
                                      const std::filesystem::path& shim_log) = 0;
};

std::unique_ptr<ProcessLauncher> make_shim_launcher(std::filesystem::path shim_binary);

// $AMLNODE_SHIM if set, else `amlnode-shim` beside the running executable (/proc/self/exe).
std::filesystem::path default_shim_binary();

// /proc/<pid>/stat field 22, or nullopt if no such process.
std::optional<unsigned long long> process_start_time(pid_t pid);

// True if `pid` is still the very process that had `start_time` (never trust a pid alone). A
// process that has exited but not been reaped yet (a zombie) still counts.
bool is_same_process(pid_t pid, unsigned long long start_time);

// Asks the shim to cancel the run (SIGTERM) if it is still that process. Fails with code
// "ShimNotRunning" when it is not (the run is over, or the pid belongs to someone else now).
Result<void> request_cancel(const LaunchedShim& shim);

// pidfd_open(2) wrapper (the caller polls it for the shim's exit); -1 with errno when unsupported.
int open_pidfd(pid_t pid);

}  // namespace amlnode::executors
