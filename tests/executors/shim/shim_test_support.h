#pragma once

// Helpers for the shim tests: launching the real amlnode-shim, waiting for it with an upper bound,
// and markers that let a test find the processes of its run. Generic process helpers (run_command,
// eventually, processes_with_marker) are in tests/support/process.h.

#include <sys/types.h>

#include <string>
#include <vector>

#include "executors/shim/launcher.h"
#include "executors/shim/protocol.h"
#include "tests/support/temp_dir.h"

namespace amlnode::test::shim {

// A launch spec for `argv` in `dir`: minimal PATH, cwd = dir, files in dir, 1 s grace.
executors::LaunchSpec make_spec(const TempDir& dir, std::vector<std::string> argv);

// Shorthand for `sh -c SCRIPT`.
executors::LaunchSpec make_sh_spec(const TempDir& dir, const std::string& script);

// `sh -c SCRIPT` with $M set to `marker`. The marker travels in the environment so that only the
// commands the script runs with "$M" carry it in their command line, not the shell itself.
executors::LaunchSpec make_marked_sh_spec(const TempDir& dir, const std::string& script,
                                          const std::string& marker);

// Launches the real shim (AMLNODE_SHIM_PATH) through the launcher; fails the test if it cannot.
executors::LaunchedShim launch(const executors::LaunchSpec& spec, const TempDir& dir);

// Waits (waitpid, at most 20 s, then SIGKILL) for the shim and requires that it exited 0, which it
// does whenever it has written exit.json, whatever happened to the run.
void require_clean_shim_exit(pid_t shim_pid);

// The exit record the shim wrote; fails the test if there is none or it does not parse.
executors::ExitRecord read_exit(const executors::LaunchSpec& spec);

long long elapsed_ms(const executors::ExitRecord& record);

// A string unique to this test process and call that is also a valid extra `sleep` operand
// ("0.000<pid><counter>"), so `sleep 300 MARKER` carries it in its command line, for
// processes_with_marker (tests/support/process.h) to find.
std::string unique_marker();

// SIGKILLs whatever still carries the marker when the test ends, passed or failed, so that a
// failing test does not leave 300-second sleeps behind.
class MarkerCleanup {
 public:
  explicit MarkerCleanup(std::string marker) : marker_(std::move(marker)) {}
  ~MarkerCleanup();
  MarkerCleanup(const MarkerCleanup&) = delete;
  MarkerCleanup& operator=(const MarkerCleanup&) = delete;

 private:
  std::string marker_;
};

}  // namespace amlnode::test::shim
