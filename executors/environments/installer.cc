#include "executors/environments/installer.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string_view>

#include "common/fs.h"

extern char** environ;

namespace amlnode::executors::environments {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view kDefaultPath = "/usr/local/bin:/usr/bin:/bin";
// How often the output loop looks at whether the installer has exited, when it prints nothing.
constexpr int kPollIntervalMs = 100;
// One read's worth of output; it goes straight to the log, so this is the only buffer it needs.
constexpr std::size_t kReadChunkBytes = 16384;
// /proc/<pid>/environ is bounded by the kernel's argument limit; this is comfortably above it.
constexpr std::size_t kMaxEnvironBytes = 8 << 20;

std::vector<std::string> merged_environment(const spec::EnvVars& overrides) {
  std::vector<std::string> out;
  for (char** entry = environ; entry && *entry; ++entry) {
    std::string_view text(*entry);
    auto name = text.substr(0, text.find('='));
    bool overridden = false;
    for (const auto& [key, value] : overrides) overridden = overridden || key == name;
    if (!overridden) out.emplace_back(text);
  }
  for (const auto& [key, value] : overrides) out.push_back(key + "=" + value);
  return out;
}

std::string_view path_of(const std::vector<std::string>& env) {
  for (const auto& entry : env) {
    if (entry.starts_with("PATH=")) return std::string_view(entry).substr(5);
  }
  return kDefaultPath;
}

// The executable `program` names, resolved before fork (the child must not allocate).
std::optional<std::string> resolve_program(const std::string& program, std::string_view path) {
  if (program.find('/') != std::string::npos) return program;
  while (true) {
    auto colon = path.find(':');
    auto dir = path.substr(0, colon);
    std::string candidate = (dir.empty() ? std::string(".") : std::string(dir)) + "/" + program;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    if (colon == std::string_view::npos) return std::nullopt;
    path.remove_prefix(colon + 1);
  }
}

std::vector<char*> c_strings(const std::vector<std::string>& strings) {
  std::vector<char*> out;
  out.reserve(strings.size() + 1);
  for (const auto& s : strings) out.push_back(const_cast<char*>(s.c_str()));
  out.push_back(nullptr);
  return out;
}

// Runs in the forked child: async-signal-safe calls only, and no allocation.
[[noreturn]] void exec_child(pid_t parent, int null_fd, int out_fd, const char* program,
                             char* const* argv, char* const* envp) {
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig != SIGKILL && sig != SIGSTOP) ::sigaction(sig, &dfl, nullptr);
  }
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  ::setpgid(0, 0);
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  // The parent may have died before the line above took effect; then nobody would kill us.
  if (::getppid() != parent) ::_exit(127);
  if (::dup2(null_fd, STDIN_FILENO) < 0 || ::dup2(out_fd, STDOUT_FILENO) < 0 ||
      ::dup2(out_fd, STDERR_FILENO) < 0) {
    ::_exit(127);
  }
  ::close_range(3, ~0U, 0);
  ::execve(program, argv, envp);
  static constexpr char kMessage[] = "amlnode: cannot execute the installer\n";
  ssize_t ignored = ::write(STDERR_FILENO, kMessage, sizeof kMessage - 1);
  (void)ignored;
  ::_exit(127);
}

// Reads whatever is available now; returns false at end of file.
bool drain(int fd, BuildLog& log) {
  char buffer[kReadChunkBytes];
  while (true) {
    ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n > 0) {
      log.output(std::string_view(buffer, static_cast<std::size_t>(n)));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    return n < 0;  // EAGAIN: more may come; 0: end of file
  }
}

bool has_exited(pid_t pid) {
  siginfo_t info{};
  // WNOWAIT leaves the child unreaped, so its pid (and process group id) cannot be reused while we
  // still signal the group.
  if (::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) != 0) {
    return errno != EINTR;
  }
  return info.si_pid == pid;
}

// Passes the child's output to the log until it has exited (or the deadline passes, or the command
// is canceled), then kills
// whatever is left of its process group and reaps it.
InstallerOutcome supervise(pid_t pid, int out_fd, BuildLog& log, const InstallerCommand& command) {
  auto deadline = command.timeout
                      ? std::optional(std::chrono::steady_clock::now() + *command.timeout)
                      : std::nullopt;
  InstallerOutcome outcome;
  bool reading = true;
  int idle_ms = 1;
  while (true) {
    if (reading) {
      pollfd fds{out_fd, POLLIN, 0};
      ::poll(&fds, 1, kPollIntervalMs);
      reading = drain(out_fd, log);
    } else {
      // Output has ended but the process has not yet been seen to exit: usually a matter of
      // microseconds, so back off from a short sleep instead of waiting a whole interval.
      ::usleep(static_cast<useconds_t>(idle_ms) * 1000);
      idle_ms = std::min(idle_ms * 2, kPollIntervalMs);
    }
    if (has_exited(pid)) break;
    if (deadline && std::chrono::steady_clock::now() > *deadline) {
      outcome.timed_out = true;
      break;
    }
    if (command.canceled && command.canceled()) {
      outcome.canceled = true;
      break;
    }
  }
  if (reading) drain(out_fd, log);
  log.end_output();
  ::kill(-pid, SIGKILL);
  int status = 0;
  pid_t reaped;
  do {
    reaped = ::waitpid(pid, &status, 0);
  } while (reaped < 0 && errno == EINTR);
  if (reaped != pid) {
    outcome.exit_code = -1;  // reaped by someone else (SIGCHLD ignored?): the status is lost
  } else if (WIFEXITED(status)) {
    outcome.exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    outcome.signal = WTERMSIG(status);
  }
  return outcome;
}

class ProcessRunner final : public InstallerRunner {
 public:
  Result<InstallerOutcome> run(const InstallerCommand& command, BuildLog& log) override {
    auto env = merged_environment(command.env);
    auto program = resolve_program(command.argv.at(0), path_of(env));
    if (!program) {
      return Error{"EnvironmentBuildFailed", "cannot find " + command.argv[0] + " on PATH (" +
                                                 std::string(path_of(env)) + ")"};
    }
    int pipe_fds[2];
    if (::pipe2(pipe_fds, O_CLOEXEC) != 0) {
      return Error{"EnvironmentBuildFailed",
                   std::string("cannot create a pipe: ") + std::strerror(errno)};
    }
    int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    auto argv = c_strings(command.argv);
    auto envp = c_strings(env);
    // Signals stay blocked across fork so that no handler of ours runs in the child.
    sigset_t all, previous;
    sigfillset(&all);
    ::pthread_sigmask(SIG_SETMASK, &all, &previous);
    pid_t parent = ::getpid();
    pid_t pid = ::fork();
    if (pid == 0)
      exec_child(parent, null_fd, pipe_fds[1], program->c_str(), argv.data(), envp.data());
    int fork_errno = errno;
    ::pthread_sigmask(SIG_SETMASK, &previous, nullptr);
    ::close(pipe_fds[1]);
    if (null_fd >= 0) ::close(null_fd);
    if (pid < 0) {
      ::close(pipe_fds[0]);
      return Error{"EnvironmentBuildFailed",
                   "cannot start " + *program + ": " + std::strerror(fork_errno)};
    }
    // Also from this side, so that the group exists before we might signal it.
    ::setpgid(pid, pid);
    ::fcntl(pipe_fds[0], F_SETFL, O_NONBLOCK);
    auto outcome = supervise(pid, pipe_fds[0], log, command);
    ::close(pipe_fds[0]);
    return outcome;
  }
};

bool environ_has(std::string_view environ_text, std::string_view entry) {
  while (!environ_text.empty()) {
    auto end = environ_text.find('\0');
    if (environ_text.substr(0, end) == entry) return true;
    if (end == std::string_view::npos) break;
    environ_text.remove_prefix(end + 1);
  }
  return false;
}

}  // namespace

std::string InstallerOutcome::describe(const InstallerCommand& command) const {
  if (canceled) return "canceled";
  if (timed_out) {
    return "timed out after " + std::to_string(command.timeout ? command.timeout->count() : 0) +
           " s";
  }
  if (signal != 0) {
    return "killed by signal " + std::to_string(signal) + " (" + ::strsignal(signal) + ")";
  }
  return "exit status " + std::to_string(exit_code);
}

std::shared_ptr<InstallerRunner> make_process_runner() {
  return std::make_shared<ProcessRunner>();
}

int kill_tagged_processes(const std::string& tag) {
  const std::string entry = std::string(kBuildTagVariable) + "=" + tag;
  const pid_t self = ::getpid();
  int killed = 0;
  std::error_code ec;
  for (const auto& proc : fs::directory_iterator("/proc", ec)) {
    const std::string name = proc.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    pid_t pid = static_cast<pid_t>(std::stol(name));
    if (pid == self) continue;
    auto text = read_file(proc.path() / "environ", kMaxEnvironBytes);
    if (!text || !environ_has(*text, entry)) continue;
    if (::kill(pid, SIGKILL) == 0) ++killed;
  }
  return killed;
}

}  // namespace amlnode::executors::environments
