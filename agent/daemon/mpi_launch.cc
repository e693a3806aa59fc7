#include "agent/daemon/mpi_launch.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <optional>
#include <thread>

#include "agent/daemon/control_plane_client.h"
#include "agent/daemon/launch_env.h"
#include "common/error_codes.h"
#include "common/hash.h"

namespace amlnode::agent {
namespace {

// How long one long poll waits before it is made again.
constexpr std::chrono::seconds kLaunchPoll{20};
// How long the control plane may stay unreachable before a launch gives up.
constexpr std::chrono::seconds kUnreachableLimit{120};
constexpr int kRshFailed = 255;

using LaunchEnv = ShareLaunchEnv;

std::optional<LaunchEnv> read_launch_env(const char* command) {
  auto env = read_share_launch_env();
  if (!env.ok() || !*env) {
    std::fprintf(stderr,
                 "amlnode %s: only a share of an MPI run across nodes runs this (it needs "
                 "AMLNODE_LAUNCH_URL, AMLNODE_LAUNCH_TOKEN, AMLNODE_NODE_RANK and "
                 "AZUREML_RUN_ID, which the agent sets)\n",
                 command);
    return std::nullopt;
  }
  return **env;
}

Result<std::unique_ptr<LaunchClient>> launch_client(const LaunchEnv& env) {
  auto endpoint = parse_http_url(env.url);
  if (!endpoint.ok()) return endpoint.error();
  HttpTlsOptions tls;
  if (!env.ca_file.empty()) tls.ca_file = env.ca_file;
  return make_http_launch_client(make_http_client(*endpoint, tls, 1), env.run_id, env.token);
}

// Makes `call` until it answers, retrying while the control plane is unreachable (a restart),
// for at most kUnreachableLimit.
template <class T>
Result<T> with_retries(const std::function<Result<T>()>& call) {
  auto give_up = std::chrono::steady_clock::now() + kUnreachableLimit;
  auto delay = std::chrono::milliseconds(100);
  for (;;) {
    auto result = call();
    if (result.ok() || result.error().code != errors::kUnreachable ||
        std::chrono::steady_clock::now() > give_up)
      return result;
    std::this_thread::sleep_for(delay);
    delay = std::min(delay * 2, std::chrono::milliseconds(2000));
  }
}

// ssh's options that take a value, as Open MPI's plm_rsh_args may pass some before the host.
bool takes_value(const std::string& option) {
  return option.size() == 2 &&
         std::string_view("BbcDEeFIiJLlmOopQRSWw").find(option[1]) != std::string_view::npos;
}

volatile sig_atomic_t g_child = 0;
volatile sig_atomic_t g_reaped = 0;

// A stop of the share reaches the daemon it runs; before there is one, it ends this process.
// Once the daemon has ended, the stop waits for its end to be reported (then this exits anyway).
void forward_signal(int signal) {
  if (g_child > 0) {
    ::kill(g_child, signal);
  } else if (!g_reaped) {
    ::_exit(128 + signal);
  }
}

constexpr int kForwarded[] = {SIGTERM, SIGINT, SIGHUP};

sigset_t forwarded_signals() {
  sigset_t set;
  sigemptyset(&set);
  for (int signal : kForwarded) sigaddset(&set, signal);
  return set;
}

// A name for one launch, so that asking again after a lost answer adds no second one. The pid
// and the time keep it apart from others' should the random bytes be unavailable.
std::string random_key() {
  return std::to_string(::getpid()) + "-" +
         std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()) + "-" +
         random_hex(8);
}

// Where the launched daemon's ranks keep Open MPI's shared-memory segments. Their names hold the
// host name and a local rank, so two nodes of one run on one host (agents on one machine) would
// share them; a folder per share keeps them apart.
std::filesystem::path shared_memory_dir(const LaunchEnv& env) {
  std::filesystem::path base = std::filesystem::is_directory("/dev/shm")
                                   ? std::filesystem::path("/dev/shm")
                                   : std::filesystem::temp_directory_path();
  return base / ("amlnode-" + env.run_id + "-node" + std::to_string(env.node_rank));
}

int exit_code_of(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

// Runs one launch's command under this process and returns its exit code; `started` is called
// once it runs.
int run_launch(const LaunchEnv& env, const TakenLaunch& launch,
               const std::function<void()>& started) {
  auto shm = shared_memory_dir(env);
  std::error_code ec;
  std::filesystem::create_directories(shm, ec);
  std::printf("amlnode mpi-host: node rank %d starts launch %d for mpirun\n", env.node_rank,
              launch.id);
  std::fflush(stdout);
  // The stop signals wait until the child's pid is known, so none falls between the fork and
  // g_child (where it would end this process and leave the daemon running).
  sigset_t blocked = forwarded_signals();
  sigset_t before;
  ::sigprocmask(SIG_BLOCK, &blocked, &before);
  pid_t pid = ::fork();
  if (pid == 0) {
    for (int signal : kForwarded) ::signal(signal, SIG_DFL);
    ::sigprocmask(SIG_SETMASK, &before, nullptr);
    ::setenv("OMPI_MCA_btl_vader_backing_directory", shm.c_str(), 1);
    ::execl("/bin/sh", "sh", "-c", launch.command.c_str(), static_cast<char*>(nullptr));
    std::perror("amlnode mpi-host: /bin/sh");
    ::_exit(127);
  }
  if (pid < 0) {
    ::sigprocmask(SIG_SETMASK, &before, nullptr);
    std::perror("amlnode mpi-host: fork");
    return 1;
  }
  g_child = pid;
  ::sigprocmask(SIG_SETMASK, &before, nullptr);
  started();
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  g_reaped = 1;
  g_child = 0;
  std::filesystem::remove_all(shm, ec);
  int code = exit_code_of(status);
  std::printf("amlnode mpi-host: launch %d exited with %d\n", launch.id, code);
  std::fflush(stdout);
  return code;
}

}  // namespace

int run_mpi_rsh(const std::vector<std::string>& args) {
  std::size_t at = 0;
  while (at < args.size() && args[at].size() > 1 && args[at][0] == '-')
    at += takes_value(args[at]) ? 2 : 1;
  if (at + 1 >= args.size()) {
    std::fprintf(stderr, "amlnode mpi-rsh: usage: amlnode mpi-rsh [options] HOST COMMAND...\n");
    return kRshFailed;
  }
  const std::string host = args[at];
  std::string command;
  for (std::size_t i = at + 1; i < args.size(); ++i)
    command += (command.empty() ? "" : " ") + args[i];
  auto env = read_launch_env("mpi-rsh");
  if (!env) return kRshFailed;
  auto client = launch_client(*env);
  if (!client.ok()) {
    std::fprintf(stderr, "amlnode mpi-rsh: %s\n", client.error().message.c_str());
    return kRshFailed;
  }
  LaunchClient& launches = **client;
  const std::string key = random_key();
  auto id = with_retries<int>([&] { return launches.add_launch(host, command, key); });
  if (!id.ok()) {
    std::fprintf(stderr, "amlnode mpi-rsh: cannot start a daemon on %s: %s\n", host.c_str(),
                 id.error().message.c_str());
    return kRshFailed;
  }
  for (;;) {
    auto exited = with_retries<std::optional<int>>(
        [&] { return launches.wait_for_launch(*id, kLaunchPoll); });
    if (!exited.ok()) {
      std::fprintf(stderr, "amlnode mpi-rsh: the daemon on %s: %s\n", host.c_str(),
                   exited.error().message.c_str());
      return kRshFailed;
    }
    if (*exited) return std::clamp(**exited, 0, 255);
  }
}

int run_mpi_host() {
  auto env = read_launch_env("mpi-host");
  if (!env) return 1;
  auto client = launch_client(*env);
  if (!client.ok()) {
    std::fprintf(stderr, "amlnode mpi-host: %s\n", client.error().message.c_str());
    return 1;
  }
  struct sigaction action {};
  action.sa_handler = forward_signal;
  for (int signal : kForwarded) ::sigaction(signal, &action, nullptr);
  LaunchClient& launches = **client;
  for (;;) {
    auto taken = with_retries<std::optional<TakenLaunch>>(
        [&] { return launches.take_launch(env->node_rank, kLaunchPoll); });
    if (!taken.ok()) {
      std::fprintf(stderr, "amlnode mpi-host: no daemon was started on node rank %d: %s\n",
                   env->node_rank, taken.error().message.c_str());
      return 1;
    }
    if (!*taken) continue;
    const int id = (*taken)->id;
    // Reported running, so that no later take hands it out again.
    int code = run_launch(*env, **taken, [&] {
      auto acknowledged = with_retries<void>(
          [&] { return launches.report_launch(id, wire::LaunchState::Running, std::nullopt); });
      if (!acknowledged.ok())
        std::fprintf(stderr, "amlnode mpi-host: launch %d was not reported running: %s\n", id,
                     acknowledged.error().message.c_str());
    });
    auto reported = with_retries<void>(
        [&] { return launches.report_launch((*taken)->id, wire::LaunchState::Exited, code); });
    if (!reported.ok())
      std::fprintf(stderr, "amlnode mpi-host: the end of launch %d was not reported: %s\n",
                   (*taken)->id, reported.error().message.c_str());
    return code;
  }
}

}  // namespace amlnode::agent
