#include "agent/spark_submit.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <regex>

namespace amlnode::agent {
namespace {

constexpr std::size_t kMaxLine = 64 << 10;  // longer lines are passed on, not searched

// Starts `argv` with stdout and stderr into one pipe; returns the pid and the pipe's read end.
bool spawn(const std::vector<std::string>& argv, const sigset_t& blocked, pid_t& pid, int& out) {
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) return false;
  pid = ::fork();
  if (pid == 0) {
    ::sigprocmask(SIG_UNBLOCK, &blocked, nullptr);
    ::dup2(pipe_fds[1], 1);
    ::dup2(pipe_fds[1], 2);
    std::vector<char*> args;
    for (const auto& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
    args.push_back(nullptr);
    ::execvp(args[0], args.data());
    std::fprintf(stderr, "amlnode spark-submit: cannot run %s: %s\n", args[0],
                 std::strerror(errno));
    ::_exit(127);
  }
  ::close(pipe_fds[1]);
  if (pid < 0) {
    ::close(pipe_fds[0]);
    return false;
  }
  out = pipe_fds[0];
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

// Runs a yarn command to its end, its output passed on; returns its exit code.
int run_yarn(const std::vector<std::string>& argv, const sigset_t& blocked) {
  pid_t pid = -1;
  int out = -1;
  if (!spawn(argv, blocked, pid, out)) return -1;
  char buffer[8192];
  for (;;) {
    ssize_t n = ::read(out, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    write_all(1, buffer, static_cast<std::size_t>(n));
  }
  ::close(out);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::string deploy_mode(const std::vector<std::string>& args) {
  for (std::size_t i = 0; i + 1 < args.size(); ++i)
    if (args[i] == "--deploy-mode") return args[i + 1];
  return "client";
}

}  // namespace

int run_spark_submit(const std::vector<std::string>& args) {
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
  std::vector<std::string> argv = {"spark-submit"};
  argv.insert(argv.end(), args.begin(), args.end());
  pid_t pid = -1;
  int out = -1;
  if (signals < 0 || !spawn(argv, stops, pid, out)) {
    std::fprintf(stderr, "amlnode spark-submit: cannot start spark-submit: %s\n",
                 std::strerror(errno));
    return 127;
  }
  static const std::regex kApplication("application_[0-9]+_[0-9]+");
  std::string application, line;
  bool stopped = false;
  char buffer[8192];
  for (bool open = true; open;) {
    pollfd fds[2] = {{out, POLLIN, 0}, {signals, POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (fds[1].revents & POLLIN) {
      signalfd_siginfo info{};
      if (::read(signals, &info, sizeof info) == sizeof info && !stopped) {
        stopped = true;
        // The application first: spark-submit's end does not end it in cluster mode.
        if (!application.empty()) run_yarn({"yarn", "application", "-kill", application}, stops);
        ::kill(pid, SIGTERM);
      }
    }
    if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t n = ::read(out, buffer, sizeof buffer);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        open = false;
        continue;
      }
      write_all(1, buffer, static_cast<std::size_t>(n));
      for (ssize_t i = 0; i < n; ++i) {
        if (buffer[i] != '\n') {
          if (line.size() < kMaxLine) line.push_back(buffer[i]);
          continue;
        }
        std::smatch found;
        if (application.empty() && line.find("Submitted application") != std::string::npos &&
            std::regex_search(line, found, kApplication))
          application = found.str();
        line.clear();
      }
    }
  }
  ::close(out);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!application.empty() && deploy_mode(args) == "cluster") {
    std::printf("amlnode spark-submit: the driver's log of %s (yarn logs):\n", application.c_str());
    std::fflush(stdout);
    run_yarn({"yarn", "logs", "-applicationId", application}, stops);
  }
  if (stopped) return 128 + SIGTERM;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace amlnode::agent
