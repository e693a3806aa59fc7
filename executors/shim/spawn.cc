#include "executors/shim/spawn.h"

#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "common/fs.h"

namespace amlnode::executors::shim {
namespace {

// execvp's fallback when the environment has no PATH at all.
constexpr std::string_view kDefaultPath = "/usr/local/bin:/usr/bin:/bin";

Result<pid_t> spawn_process(const LaunchSpec& spec);

// What the child reports through the error pipe when it cannot reach exec.
enum class Step : int { Stdio = 1, Groups, Gid, Uid, Cwd, Exec };
struct ChildFailure {
  Step step;
  int err;
};

std::string_view search_path(const std::vector<std::string>& env) {
  for (const auto& entry : env) {
    if (entry.starts_with("PATH=")) return std::string_view(entry).substr(5);
  }
  return kDefaultPath;
}

// The files to try for `program`, in order, with execvp's rules: a name with a slash is used as it
// is; otherwise each PATH element in turn, an empty element meaning the working directory. The
// list is built before fork because the child must not allocate.
std::vector<std::string> exec_candidates(const std::string& program, std::string_view path) {
  if (program.find('/') != std::string::npos) return {program};
  std::vector<std::string> out;
  while (true) {
    auto colon = path.find(':');
    auto dir = path.substr(0, colon);
    out.push_back(dir.empty() ? program : std::string(dir) + "/" + program);
    if (colon == std::string_view::npos) break;
    path.remove_prefix(colon + 1);
  }
  return out;
}

std::vector<char*> c_strings(const std::vector<std::string>& strings) {
  std::vector<char*> out;
  out.reserve(strings.size() + 1);
  for (const auto& s : strings) out.push_back(const_cast<char*>(s.c_str()));
  out.push_back(nullptr);
  return out;
}

std::string describe(const ChildFailure& failure, const LaunchSpec& spec) {
  std::string reason = std::strerror(failure.err);
  switch (failure.step) {
    case Step::Stdio:
      return "cannot connect stdin/stdout/stderr of " + spec.argv[0] + ": " + reason;
    case Step::Groups:
      return "cannot set the supplementary groups: " + reason;
    case Step::Gid:
      return "cannot switch to group id " + std::to_string(*spec.gid) + ": " + reason;
    case Step::Uid:
      return "cannot switch to user id " + std::to_string(*spec.uid) + ": " + reason;
    case Step::Cwd:
      return "cannot change directory to " + spec.cwd.string() + ": " + reason;
    case Step::Exec:
      return "cannot start " + spec.argv[0] + ": " + reason;
  }
  return "cannot start " + spec.argv[0] + ": " + reason;
}

// Everything below runs in the forked child, before exec: only async-signal-safe calls, no
// allocation, and every failure leaves through child_fail.

[[noreturn]] void child_fail(int error_fd, Step step, int err) {
  ChildFailure failure{step, err};
  // Nothing useful can be done if this write fails; the parent then sees EOF and a dead child.
  ssize_t ignored = ::write(error_fd, &failure, sizeof failure);
  (void)ignored;
  ::_exit(127);
}

// The shim ignores SIGHUP/SIGPIPE and has libuv's handlers installed; ignored dispositions survive
// exec, and a job must start as if launched from a plain shell. Handlers are reset while every
// signal is still blocked (the parent blocked them before fork), so a signal arriving now can never
// run libuv's handler in the child and write into the pipe that the shim's loop shares with us.
void reset_signals() {
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    ::sigaction(sig, &dfl, nullptr);  // fails harmlessly for the signals glibc reserves
  }
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
}

void mark_inherited_fds_cloexec() {
  if (::close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) == 0) return;
  // Kernels before 5.11: mark them one by one up to the descriptor limit.
  long max_fd = ::sysconf(_SC_OPEN_MAX);
  if (max_fd < 0 || max_fd > 65536) max_fd = 65536;
  for (int fd = 3; fd < max_fd; ++fd) ::fcntl(fd, F_SETFD, FD_CLOEXEC);
}

void change_identity(const LaunchSpec& spec, int error_fd) {
  if (!spec.uid && !spec.gid) return;
  // Dropping from root must not keep root's supplementary groups. Without root there is nothing
  // to drop, and setgid/setuid below report any identity we may not take.
  if (::geteuid() == 0) {
    gid_t group = spec.gid ? *spec.gid : ::getegid();
    if (::setgroups(1, &group) != 0) child_fail(error_fd, Step::Groups, errno);
  }
  if (spec.gid && ::setgid(*spec.gid) != 0) child_fail(error_fd, Step::Gid, errno);
  if (spec.uid && ::setuid(*spec.uid) != 0) child_fail(error_fd, Step::Uid, errno);
}

[[noreturn]] void exec_child(const LaunchSpec& spec, int error_fd, int null_fd, int log_fd,
                             int err_fd, std::vector<std::string>& candidates, char* const* argv,
                             char** sh_argv, char* const* envp) {
  reset_signals();
  // dup2 clears close-on-exec on the copies; the originals (and everything else) close on exec.
  if (::dup2(null_fd, STDIN_FILENO) < 0 || ::dup2(log_fd, STDOUT_FILENO) < 0 ||
      ::dup2(err_fd, STDERR_FILENO) < 0) {
    child_fail(error_fd, Step::Stdio, errno);
  }
  mark_inherited_fds_cloexec();
  change_identity(spec, error_fd);
  if (!spec.cwd.empty() && ::chdir(spec.cwd.c_str()) != 0) child_fail(error_fd, Step::Cwd, errno);

  // execvp's loop: try each candidate, remember EACCES, stop at the first error that says the file
  // exists but cannot run for another reason.
  bool saw_eacces = false;
  int last = ENOENT;
  for (auto& candidate : candidates) {
    ::execve(candidate.c_str(), argv, envp);
    int err = errno;
    if (err == ENOEXEC) {
      // A script without "#!": like execvp, hand it to /bin/sh.
      sh_argv[1] = candidate.data();
      ::execve("/bin/sh", sh_argv, envp);
      err = errno;
    }
    switch (err) {
      case EACCES:
        saw_eacces = true;
        [[fallthrough]];
      case ENOENT:
      case ENOTDIR:
      case ESTALE:
      case ENODEV:
      case ETIMEDOUT:
        last = err;
        continue;
      default:
        child_fail(error_fd, Step::Exec, err);
    }
  }
  child_fail(error_fd, Step::Exec, saw_eacces ? EACCES : last);
}

}  // namespace

Result<pid_t> spawn_entry(const LaunchSpec& spec) {
  return spawn_process(spec);
}

Result<pid_t> spawn_rank(const LaunchSpec& spec, const RankLaunch& rank) {
  LaunchSpec process = spec;
  process.argv = rank.argv;
  process.log_path = rank.log_path;
  process.stderr_path.clear();
  for (const auto& entry : rank.env) {
    auto name = entry.substr(0, entry.find('=') + 1);
    auto same = std::find_if(process.env.begin(), process.env.end(),
                             [&](const std::string& e) { return e.starts_with(name); });
    if (same != process.env.end()) {
      *same = entry;
    } else {
      process.env.push_back(entry);
    }
  }
  return spawn_process(process);
}

namespace {

Result<pid_t> spawn_process(const LaunchSpec& spec) {
  int log_fd = ::open(spec.log_path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (log_fd < 0) {
    return Error{"SpawnFailed", errno_message("cannot open the log file", spec.log_path, errno)};
  }
  int err_fd = log_fd;
  if (!spec.stderr_path.empty()) {
    err_fd = ::open(spec.stderr_path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (err_fd < 0) {
      int err = errno;
      ::close(log_fd);
      return Error{"SpawnFailed", errno_message("cannot open the log file", spec.stderr_path, err)};
    }
  }
  auto close_logs = [&] {
    ::close(log_fd);
    if (err_fd != log_fd) ::close(err_fd);
  };
  int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  int error_pipe[2] = {-1, -1};
  if (null_fd < 0 || ::pipe2(error_pipe, O_CLOEXEC) != 0) {
    int err = errno;
    close_logs();
    if (null_fd >= 0) ::close(null_fd);
    return Error{"SpawnFailed", std::string("cannot prepare to start ") + spec.argv[0] + ": " +
                                    std::strerror(err)};
  }

  // Everything the child needs is built now: after fork it may not allocate.
  auto candidates = exec_candidates(spec.argv[0], search_path(spec.env));
  auto argv = c_strings(spec.argv);
  auto envp = c_strings(spec.env);
  std::vector<char*> sh_argv{const_cast<char*>("/bin/sh"), nullptr};
  sh_argv.insert(sh_argv.end(), argv.begin() + 1, argv.end());

  // Block every signal across fork so that neither side runs a handler in between; see
  // reset_signals for the child's side.
  sigset_t all, previous;
  sigfillset(&all);
  ::sigprocmask(SIG_SETMASK, &all, &previous);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(error_pipe[0]);
    exec_child(spec, error_pipe[1], null_fd, log_fd, err_fd, candidates, argv.data(),
               sh_argv.data(), envp.data());
  }
  int fork_errno = errno;
  ::sigprocmask(SIG_SETMASK, &previous, nullptr);
  ::close(error_pipe[1]);
  close_logs();
  ::close(null_fd);
  if (pid < 0) {
    ::close(error_pipe[0]);
    return Error{"SpawnFailed", std::string("cannot start ") + spec.argv[0] +
                                    ": fork: " + std::strerror(fork_errno)};
  }

  // The pipe closes on a successful exec (EOF) or carries why the child gave up. Waiting here
  // blocks the shim only for the few system calls between fork and exec.
  ChildFailure failure{};
  ssize_t n;
  do {
    n = ::read(error_pipe[0], &failure, sizeof failure);
  } while (n < 0 && errno == EINTR);
  ::close(error_pipe[0]);
  if (n == static_cast<ssize_t>(sizeof failure)) {
    while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
    }
    return Error{"SpawnFailed", describe(failure, spec)};
  }
  return pid;
}

}  // namespace

}  // namespace amlnode::executors::shim
