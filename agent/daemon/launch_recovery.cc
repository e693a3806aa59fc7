#include "agent/daemon/launch_recovery.h"

#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "common/fs.h"
#include "executors/environments/file_lock.h"
#include "executors/environments/layout.h"

namespace amlnode::agent {

namespace fs = std::filesystem;
namespace envs = executors::environments;

namespace {

// A shim's command line is two paths; anything much longer is not one.
constexpr std::size_t kMaxCmdline = 64 << 10;

std::vector<std::string> command_line(const fs::path& proc_entry) {
  std::vector<std::string> argv;
  auto text = read_file(proc_entry / "cmdline", kMaxCmdline);
  if (!text.ok()) return argv;
  std::size_t start = 0;
  while (start < text->size()) {
    std::size_t end = text->find('\0', start);
    if (end == std::string::npos) end = text->size();
    argv.push_back(text->substr(start, end - start));
    start = end + 1;
  }
  return argv;
}

bool is_pid_name(const std::string& name) {
  return !name.empty() && name.find_first_not_of("0123456789") == std::string::npos;
}

}  // namespace

std::optional<executors::LaunchedShim> find_shim_process(const fs::path& launch_file) {
  std::error_code ec;
  for (fs::directory_iterator it("/proc", ec), end; !ec && it != end; it.increment(ec)) {
    std::string name = it->path().filename().string();
    if (!is_pid_name(name)) continue;
    auto argv = command_line(it->path());
    if (argv.size() != 2 || argv[1] != launch_file.string()) continue;
    pid_t pid = static_cast<pid_t>(std::stol(name));
    auto start_time = executors::process_start_time(pid);
    if (start_time) return executors::LaunchedShim{pid, *start_time};
  }
  return std::nullopt;
}

std::optional<envs::PreparedEnvironment> retake_environment_lease(
    const executors::Plan& plan, const envs::EnvironmentConfig& config, const SystemLog& log) {
  if (!plan.python_environment) return std::nullopt;
  const envs::EnvironmentSpec& spec = *plan.python_environment;
  auto paths = envs::env_paths(config.envs_dir, spec.hash);
  auto lease = envs::FileLock::acquire(paths.lease_lock, envs::LockMode::Shared);
  if (!lease.ok()) {
    log.line("environment " + spec.hash +
             ": its lease could not be taken again: " + lease.error().message);
    return std::nullopt;
  }
  // Eviction deletes only what it holds exclusively, so with the lease held a marker seen now
  // stays; one missing now was evicted while no agent held the lease.
  if (!envs::read_marker(paths.marker)) {
    log.line("environment " + spec.hash + " was evicted while the agent was down");
    return std::nullopt;
  }
  envs::PreparedEnvironment prepared;
  prepared.hash = spec.hash;
  prepared.kind = spec.kind;
  prepared.prefix = paths.prefix;
  prepared.python = paths.prefix / "bin" / "python";
  prepared.lease = envs::EnvironmentLease(std::move(*lease));
  log.line("environment " + spec.hash + ": lease taken again");
  return prepared;
}

void test_hook_crash_at(std::string_view point) {
  const char* wanted = std::getenv("AMLNODE_TEST_HOOK_CRASH");
  if (wanted && point == wanted) ::kill(::getpid(), SIGKILL);
}

}  // namespace amlnode::agent
