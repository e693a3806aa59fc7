#pragma once

// Running real programs from tests: the amlnode binary, scripts, shells.

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

namespace amlnode::test {

struct CommandResult {
  int exit_code = -1;  // 128 + signal when killed by a signal
  std::string out;
  std::string err;
  bool timed_out = false;
};

// Runs argv to completion with stdin from /dev/null, capturing stdout and stderr. `extra_env`
// entries ("NAME=value") are added to the test's own environment. A command still running after
// `timeout` is SIGKILLed and reported as timed out, so a bug fails a test instead of hanging it.
CommandResult run_command(const std::vector<std::string>& argv,
                          const std::vector<std::string>& extra_env = {},
                          std::chrono::seconds timeout = std::chrono::seconds(60));

// Starts argv in the background with stdout and stderr going to files; returns its pid.
pid_t start_command(const std::vector<std::string>& argv, const std::filesystem::path& out,
                    const std::filesystem::path& err,
                    const std::vector<std::string>& extra_env = {});

// Waits for a child started with start_command; returns its exit code (128 + signal when killed),
// or -1 after `timeout` (then the child is SIGKILLed).
int wait_command(pid_t pid, std::chrono::seconds timeout = std::chrono::seconds(60));

// Polls `condition` every 10 ms until it holds or `timeout` passes; returns whether it held.
template <class Condition>
bool eventually(Condition condition, std::chrono::milliseconds timeout);

// Pids of live processes whose command line contains `marker`.
std::vector<pid_t> processes_with_marker(const std::string& marker);

// The amlnode binary under test.
std::filesystem::path amlnode_binary();

}  // namespace amlnode::test

#include <thread>

namespace amlnode::test {
template <class Condition>
bool eventually(Condition condition, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return condition();
}
}  // namespace amlnode::test
