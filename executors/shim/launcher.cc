#include "executors/shim/launcher.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

#include "common/fs.h"
#include "executors/run_cgroup.h"
#include "executors/shim/proc.h"

extern char** environ;

namespace amlnode::executors {
namespace {

// posix_spawn's attributes and file actions, released on every path out of launch().
class SpawnSetup {
 public:
  SpawnSetup() {
    posix_spawnattr_init(&attr_);
    posix_spawn_file_actions_init(&actions_);
  }
  ~SpawnSetup() {
    posix_spawn_file_actions_destroy(&actions_);
    posix_spawnattr_destroy(&attr_);
  }
  SpawnSetup(const SpawnSetup&) = delete;
  SpawnSetup& operator=(const SpawnSetup&) = delete;

  posix_spawnattr_t attr_;
  posix_spawn_file_actions_t actions_;
};

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

Error launch_error(const std::string& message) {
  return Error{"ShimLaunchFailed", message};
}

class ShimLauncher final : public ProcessLauncher {
 public:
  explicit ShimLauncher(std::filesystem::path binary) : binary_(std::move(binary)) {}

  Result<LaunchedShim> launch(const LaunchSpec& requested, const std::filesystem::path& launch_file,
                              const std::filesystem::path& shim_log) override {
    // The run's cgroup is made here, for the shim to join; a run whose cgroup cannot be made runs
    // without one (its shim still stops its process tree), and the shim's log says so.
    LaunchSpec spec = requested;
    std::string cgroup_problem;
    if (spec.cgroup) {
      if (auto made = create_run_cgroup(*spec.cgroup); !made) {
        cgroup_problem = made.error().message;
        spec.cgroup.reset();
      }
    }
    // The launch file holds the job's whole environment, which may carry secrets: owner only. It
    // is not synced: only the shim started right below reads it, and a machine that crashes before
    // it reached the disk has no shim left that could.
    auto written = write_file_atomically(launch_file, launch_spec_to_json(spec), false, 0600);
    if (!written.ok()) return written.error();

    Fd log(::open(shim_log.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644));
    if (log.get() < 0) return launch_error(errno_message("cannot open", shim_log, errno));
    if (!cgroup_problem.empty()) {
      std::string line = "amlnode-shim: the run has no cgroup: " + cgroup_problem + "\n";
      (void)write_all_to(log.get(), line, shim_log);
    }
    Fd null(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    if (null.get() < 0) return launch_error(errno_message("cannot open", "/dev/null", errno));

    // posix_spawn (vfork-like in glibc) rather than fork: the caller may be a large,
    // multi-threaded agent, and exec errors come back as its return value.
    SpawnSetup setup;
    posix_spawn_file_actions_adddup2(&setup.actions_, null.get(), STDIN_FILENO);
    posix_spawn_file_actions_adddup2(&setup.actions_, log.get(), STDOUT_FILENO);
    posix_spawn_file_actions_adddup2(&setup.actions_, log.get(), STDERR_FILENO);
    // Descriptors the caller leaked without O_CLOEXEC must not live on in the shim (and its job).
    posix_spawn_file_actions_addclosefrom_np(&setup.actions_, 3);

    // Its own session: the caller's terminal and the end of the caller's session do not reach it.
    // Every signal at its default; SIGTERM, SIGINT and SIGHUP blocked until the shim has its
    // handlers, so that a cancel sent right after this returns is not lost (see Supervisor::run).
    sigset_t all, early;
    sigfillset(&all);
    sigemptyset(&early);
    sigaddset(&early, SIGTERM);
    sigaddset(&early, SIGINT);
    sigaddset(&early, SIGHUP);
    posix_spawnattr_setflags(&setup.attr_,
                             POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
    posix_spawnattr_setsigdefault(&setup.attr_, &all);
    posix_spawnattr_setsigmask(&setup.attr_, &early);

    std::string binary = binary_.string();
    std::string file = launch_file.string();
    char* argv[] = {binary.data(), file.data(), nullptr};
    pid_t pid = 0;
    int err = posix_spawn(&pid, binary.c_str(), &setup.actions_, &setup.attr_, argv, environ);
    if (err != 0) {
      return launch_error("cannot start the shim " + binary + ": " + std::strerror(err));
    }

    // The shim is our unreaped child, so its /proc entry cannot go away under us.
    auto start_time = process_start_time(pid);
    if (!start_time) {
      ::kill(pid, SIGKILL);
      while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
      }
      return launch_error("cannot read /proc/" + std::to_string(pid) +
                          "/stat of the shim just started; is /proc mounted?");
    }
    return LaunchedShim{pid, *start_time};
  }

 private:
  std::filesystem::path binary_;
};

}  // namespace

std::unique_ptr<ProcessLauncher> make_shim_launcher(std::filesystem::path shim_binary) {
  return std::make_unique<ShimLauncher>(std::move(shim_binary));
}

std::filesystem::path default_shim_binary() {
  if (const char* env = std::getenv("AMLNODE_SHIM"); env && *env) return env;
  std::error_code ec;
  auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return "amlnode-shim";
  return self.parent_path() / "amlnode-shim";
}

std::optional<unsigned long long> process_start_time(pid_t pid) {
  if (pid <= 0) return std::nullopt;
  auto stat = proc::read_stat(pid);
  if (!stat) return std::nullopt;
  return stat->start_time;
}

bool is_same_process(pid_t pid, unsigned long long start_time) {
  auto now = process_start_time(pid);
  return now && *now == start_time;
}

Result<void> request_cancel(const LaunchedShim& shim) {
  proc::Stat target;
  target.pid = shim.pid;
  target.start_time = shim.start_time;
  if (shim.pid <= 0 || !proc::signal_exact(target, SIGTERM)) {
    return Error{"ShimNotRunning", "the shim (pid " + std::to_string(shim.pid) +
                                       ") is no longer running; the run is over"};
  }
  return ok();
}

int open_pidfd(pid_t pid) {
  return proc::pidfd_open(pid);
}

}  // namespace amlnode::executors
