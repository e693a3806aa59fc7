#include "controlplane/scale_hook.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

extern char** environ;

namespace amlnode::controlplane {

namespace {

constexpr std::size_t kMaxStderr = 64 * 1024;

std::string last_line(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  auto start = text.rfind('\n');
  text = text.substr(start == std::string::npos ? 0 : start + 1);
  if (text.size() > 300) text.resize(300);
  return text;
}

}  // namespace

ScaleHookOutcome run_scale_hook(const std::string& command, const nlohmann::json& request,
                                std::chrono::seconds timeout) {
  int in[2], err[2];
  if (::pipe2(in, O_CLOEXEC) != 0) return {false, std::string("pipe: ") + std::strerror(errno)};
  if (::pipe2(err, O_CLOEXEC) != 0) {
    ::close(in[0]);
    ::close(in[1]);
    return {false, std::string("pipe: ") + std::strerror(errno)};
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, in[0], STDIN_FILENO);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, err[1], STDERR_FILENO);
  // Nothing of the server's (its listening socket, clients' connections) goes to the hook or to
  // what it leaves running.
  posix_spawn_file_actions_addclosefrom_np(&actions, 3);
  posix_spawnattr_t attributes;
  posix_spawnattr_init(&attributes);
  // Its own process group, so a timeout ends whatever it started too.
  // The server ignores SIGPIPE; the hook starts with every signal at its default.
  posix_spawnattr_setflags(&attributes,
                           POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  posix_spawnattr_setpgroup(&attributes, 0);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attributes, &none);
  posix_spawnattr_setsigdefault(&attributes, &all);
  const char* argv[] = {"/bin/sh", "-c", command.c_str(), nullptr};
  pid_t pid = 0;
  int spawned = ::posix_spawn(&pid, "/bin/sh", &actions, &attributes,
                              const_cast<char* const*>(argv), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attributes);
  ::close(in[0]);
  ::close(err[1]);
  if (spawned != 0) {
    ::close(in[1]);
    ::close(err[0]);
    return {false, std::string("cannot start the scale hook: ") + std::strerror(spawned)};
  }
  // The input goes in as the hook reads it, and its stderr comes out meanwhile, all within the
  // timeout: a hook that reads nothing cannot hold the control plane's thread. SIGPIPE is ignored
  // by the server, so a hook that exits without reading makes the write fail with EPIPE.
  ::fcntl(in[1], F_SETFL, O_NONBLOCK);
  std::string input = request.dump() + "\n";
  std::size_t written = 0;
  std::string stderr_text;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  bool timed_out = false;
  bool exited = false;
  int status = 0;
  int out = err[0];  // the hook's stderr, while it is open
  while (!exited || out >= 0) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    deadline - std::chrono::steady_clock::now())
                    .count();
    if (left <= 0) {
      timed_out = !exited;
      break;
    }
    // The hook's end, not its stderr's: what it started in the background may keep that open.
    if (!exited && ::waitpid(pid, &status, WNOHANG) == pid) exited = true;
    pollfd fds[2] = {{out, POLLIN, 0}, {in[1], POLLOUT, 0}};
    int wait = exited ? 0 : static_cast<int>(std::min<long long>(left, 100));
    int ready = ::poll(fds, 2, wait);
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) {
      if (exited) break;  // ended, and nothing more to read now
      continue;
    }
    if (in[1] >= 0 && fds[1].revents) {
      ssize_t n = ::write(in[1], input.data() + written, input.size() - written);
      if (n > 0) written += static_cast<std::size_t>(n);
      if ((n < 0 && errno != EAGAIN && errno != EINTR) || written == input.size()) {
        ::close(in[1]);
        in[1] = -1;
      }
    }
    if (out < 0 || !fds[0].revents) continue;
    char buffer[4096];
    ssize_t n = ::read(out, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ::close(out);
      out = -1;
      continue;
    }
    stderr_text.append(buffer, static_cast<std::size_t>(n));
    if (stderr_text.size() > kMaxStderr) stderr_text.erase(0, stderr_text.size() - kMaxStderr);
  }
  if (out >= 0) ::close(out);
  if (in[1] >= 0) ::close(in[1]);
  if (timed_out) ::kill(-pid, SIGKILL);
  while (!exited && ::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (timed_out)
    return {false,
            "the scale hook ran past " + std::to_string(timeout.count()) + " s and was killed"};
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return {true, ""};
  std::string how = WIFEXITED(status) ? "exited with " + std::to_string(WEXITSTATUS(status))
                                      : "was killed by signal " + std::to_string(WTERMSIG(status));
  std::string said = last_line(stderr_text);
  return {false, "the scale hook " + how + (said.empty() ? "" : ": " + said)};
}

}  // namespace amlnode::controlplane
