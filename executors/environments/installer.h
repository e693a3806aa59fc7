#pragma once

// Running installer processes (micromamba / mamba / conda, python -m venv, python -m pip). The
// runner is a seam: the cache takes any InstallerRunner, and tests wrap the real one to count what
// it is asked to run.

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "executors/environments/build_log.h"
#include "spec/job.h"

namespace amlnode::executors::environments {

struct InstallerCommand {
  std::vector<std::string> argv;  // argv[0] is a path, or a name looked up on the PATH of env
  spec::EnvVars env;              // set over the agent's own environment
  std::optional<std::chrono::seconds> timeout;
  // Polled while the command runs (every 100 ms); once it returns true the command's process group
  // is killed and the outcome says canceled. Unset: the command runs to its end or its timeout.
  std::function<bool()> canceled;
};

struct InstallerOutcome {
  int exit_code = 0;  // the exit status, when it exited
  int signal = 0;     // the signal that ended it, when one did
  bool timed_out = false;
  bool canceled = false;  // stopped because InstallerCommand::canceled said so

  bool succeeded() const { return !timed_out && !canceled && signal == 0 && exit_code == 0; }
  // "exit status 3", "killed by signal 9 (Killed)", "timed out after 3600 s", "canceled".
  std::string describe(const InstallerCommand& command) const;
};

class InstallerRunner {
 public:
  virtual ~InstallerRunner() = default;
  // Runs the command to completion, its stdout and stderr going to `log` as they arrive. An Error
  // means it could not be started; an installer that ran and failed is an unsuccessful outcome.
  virtual Result<InstallerOutcome> run(const InstallerCommand& command, BuildLog& log) = 0;
};

// Runs commands as real child processes (fork + exec): stdin from /dev/null, stdout and stderr into
// one pipe read by this process, in a process group of their own that is killed as a whole when the
// command ends or times out. The child is also told to die with the thread that started it
// (PR_SET_PDEATHSIG), so that killing the agent does not leave an installer writing into a prefix.
std::shared_ptr<InstallerRunner> make_process_runner();

// Every installer process of a build carries this variable, set to the prefix being built.
// Grandchildren of a killed agent (pip under conda, say) escape PR_SET_PDEATHSIG; the next build of
// the same prefix finds them by it and kills them before it clears the prefix.
inline constexpr const char* kBuildTagVariable = "AMLNODE_ENV_BUILD";

// SIGKILLs every process this user may signal whose environment has kBuildTagVariable=`tag`.
// Returns how many were signalled. Reads /proc; only called on the (rare) build path.
int kill_tagged_processes(const std::string& tag);

}  // namespace amlnode::executors::environments
