#include "agent/spark_submit.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <optional>
#include <regex>

namespace amlnode::agent {
namespace {

using Clock = std::chrono::steady_clock;
constexpr std::size_t kMaxLine = 64 << 10;  // longer lines are passed on, not searched
// yarn starts a JVM and waits for the ResourceManager; past these it is killed.
constexpr std::chrono::seconds kKillTimeout{45};
constexpr std::chrono::seconds kLogsTimeout{60};
// Output spark-submit's children may still write after it ended is read this long at most.
constexpr std::chrono::seconds kDrainAfterExit{2};

struct Child {
  pid_t pid = -1;
  int out = -1;    // stdout and stderr together
  int pidfd = -1;  // readable once it ended; -1 where the kernel has none
};

// Starts `argv` with stdout and stderr into one pipe, with the signals this process blocks
// unblocked for it.
bool spawn(const std::vector<std::string>& argv, const sigset_t& blocked, Child& child) {
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) return false;
  child.pid = ::fork();
  if (child.pid == 0) {
    ::sigprocmask(SIG_UNBLOCK, &blocked, nullptr);
    ::dup2(pipe_fds[1], 1);
    ::dup2(pipe_fds[1], 2);
    std::vector<char*> args;
    for (const auto& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    std::fprintf(stderr, "amlnode spark-submit: cannot run %s: %s\n", args[0],
                 std::strerror(errno));
    ::_exit(127);
  }
  ::close(pipe_fds[1]);
  if (child.pid < 0) {
    ::close(pipe_fds[0]);
    return false;
  }
  child.out = pipe_fds[0];
  child.pidfd = static_cast<int>(::syscall(SYS_pidfd_open, child.pid, 0));
  return true;
}

void write_all(int fd, const char* data, std::size_t size) {
  while (size > 0) {
    ssize_t n = ::write(fd, data, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    data += n;
    size -= static_cast<std::size_t>(n);
  }
}

int exit_code_of(pid_t pid) {
  int status = 0;
  pid_t done;
  while ((done = ::waitpid(pid, &status, 0)) < 0 && errno == EINTR) {
  }
  if (done < 0) return 1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// Runs a yarn command, its output passed on, killed past `timeout`; returns its exit code.
int run_yarn(const std::vector<std::string>& argv, const sigset_t& blocked,
             std::chrono::seconds timeout) {
  Child child;
  if (!spawn(argv, blocked, child)) return -1;
  auto deadline = Clock::now() + timeout;
  char buffer[8192];
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    pollfd wait{child.out, POLLIN, 0};
    if (left.count() <= 0 || ::poll(&wait, 1, static_cast<int>(left.count())) == 0) {
      ::kill(child.pid, SIGKILL);
      std::printf("amlnode spark-submit: %s %s did not finish within %lld s; killed\n",
                  argv[0].c_str(), argv[1].c_str(), static_cast<long long>(timeout.count()));
      break;
    }
    ssize_t n = ::read(child.out, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    write_all(1, buffer, static_cast<std::size_t>(n));
  }
  ::close(child.out);
  if (child.pidfd >= 0) ::close(child.pidfd);
  int code = exit_code_of(child.pid);
  std::fflush(stdout);
  return code;
}

std::string deploy_mode(const std::vector<std::string>& args) {
  for (std::size_t i = 0; i + 1 < args.size(); ++i)
    if (args[i] == "--deploy-mode") return args[i + 1];
  return "client";
}

// spark-submit's output, passed on, watched for the application's id.
class Watch {
 public:
  void take(const char* data, std::size_t size) {
    write_all(1, data, size);
    for (std::size_t i = 0; i < size; ++i) {
      if (data[i] != '\n') {
        if (line_.size() < kMaxLine) line_.push_back(data[i]);
        continue;
      }
      // "Submitting application X to ResourceManager", then "Submitted application X".
      static const std::regex kApplication("application_[0-9]+_[0-9]+");
      std::smatch found;
      if (application_.empty() && line_.find("ubmitt") != std::string::npos &&
          std::regex_search(line_, found, kApplication))
        application_ = found.str();
      line_.clear();
    }
  }
  // Reads what is there now, without waiting; false at the pipe's end.
  bool drain(int fd) {
    char buffer[8192];
    for (;;) {
      ssize_t n = ::read(fd, buffer, sizeof buffer);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return errno == EAGAIN;
      if (n == 0) return false;
      take(buffer, static_cast<std::size_t>(n));
    }
  }
  const std::string& application() const { return application_; }

 private:
  std::string line_;
  std::string application_;
};

}  // namespace

int run_spark_submit(const std::vector<std::string>& given) {
  std::string spark_submit = "spark-submit", yarn = "yarn";
  std::vector<std::string> args = given;
  while (args.size() >= 2 && (args[0] == "--spark-submit" || args[0] == "--yarn")) {
    (args[0] == "--yarn" ? yarn : spark_submit) = args[1];
    args.erase(args.begin(), args.begin() + 2);
  }
  if (!args.empty() && args.front() == "--") args.erase(args.begin());
  if (args.empty()) {
    std::fprintf(stderr,
                 "amlnode spark-submit: nothing to submit (only a PySpark run runs this)\n");
    return 2;
  }
  sigset_t stops;
  sigemptyset(&stops);
  sigaddset(&stops, SIGTERM);
  sigaddset(&stops, SIGINT);
  ::sigprocmask(SIG_BLOCK, &stops, nullptr);
  int signals = ::signalfd(-1, &stops, SFD_CLOEXEC);
  std::vector<std::string> argv = {spark_submit};
  argv.insert(argv.end(), args.begin(), args.end());
  Child child;
  if (signals < 0 || !spawn(argv, stops, child)) {
    std::fprintf(stderr, "amlnode spark-submit: cannot start %s: %s\n", spark_submit.c_str(),
                 std::strerror(errno));
    return 127;
  }
  ::fcntl(child.out, F_SETFL, ::fcntl(child.out, F_GETFL) | O_NONBLOCK);
  Watch watch;
  int stopped_by = 0;
  bool killed = false;
  // The application goes first: in cluster mode spark-submit's end does not end it. The id may
  // arrive only after the stop (the shim signals every process of the run at once).
  auto kill_application = [&] {
    if (killed || watch.application().empty()) return;
    killed = true;
    run_yarn({yarn, "application", "-kill", watch.application()}, stops, kKillTimeout);
  };
  bool open = true, ended = false;
  std::optional<Clock::time_point> drain_until;
  while (open) {
    pollfd fds[3] = {{child.out, POLLIN, 0}, {signals, POLLIN, 0}, {child.pidfd, POLLIN, 0}};
    int timeout = drain_until ? static_cast<int>(std::max<long long>(
                                    0, std::chrono::duration_cast<std::chrono::milliseconds>(
                                           *drain_until - Clock::now())
                                           .count()))
                              : -1;
    int ready = ::poll(fds, child.pidfd >= 0 && !ended ? 3 : 2, timeout);
    if (ready < 0 && errno != EINTR) break;
    // Output first: a stop and the application's id may come in the same wake.
    if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) open = watch.drain(child.out);
    if (fds[1].revents & POLLIN) {
      signalfd_siginfo info{};
      if (::read(signals, &info, sizeof info) == sizeof info && !stopped_by) {
        stopped_by = static_cast<int>(info.ssi_signo);
        open = open && watch.drain(child.out);
        kill_application();
        ::kill(child.pid, SIGTERM);
      }
    }
    if (stopped_by) kill_application();
    // spark-submit ended: what its children still write is read a little longer, not forever.
    if (child.pidfd >= 0 && !ended && (fds[2].revents & POLLIN)) {
      ended = true;
      drain_until = Clock::now() + kDrainAfterExit;
    }
    if (drain_until && Clock::now() >= *drain_until) break;
  }
  open = open && watch.drain(child.out);
  ::close(child.out);
  if (child.pidfd >= 0) ::close(child.pidfd);
  int code = exit_code_of(child.pid);
  if (stopped_by) {
    kill_application();
    return 128 + stopped_by;
  }
  if (!watch.application().empty() && deploy_mode(args) == "cluster") {
    std::printf("amlnode spark-submit: the driver's log of %s (yarn logs -am 1):\n",
                watch.application().c_str());
    std::fflush(stdout);
    run_yarn({yarn, "logs", "-applicationId", watch.application(), "-am", "1"}, stops,
             kLogsTimeout);
  }
  return code;
}

}  // namespace amlnode::agent
