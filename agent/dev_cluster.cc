#include "agent/dev_cluster.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>
#include <vector>

#include "agent/config.h"
#include "agent/user_client.h"
#include "common/format.h"
#include "common/fs.h"
#include "common/json.h"
#include "spec/run_status.h"

namespace amlnode::agent {

namespace fs = std::filesystem;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;
constexpr int kExitInterrupted = 130;
constexpr int kMaxNodes = 64;
// Leftover processes are looked for this many times at the end (each round kills what is left,
// whose own children then become this process's).
constexpr int kSweepRounds = 50;

// How long each step of start-up and shut-down may take before it is given up or forced.
constexpr auto kControlPlaneStart = std::chrono::seconds(30);
constexpr auto kRegistration = std::chrono::seconds(60);
constexpr auto kRunsCanceled = std::chrono::seconds(30);
constexpr auto kAgentDrain = std::chrono::seconds(10);
constexpr auto kAgentStop = std::chrono::seconds(5);
constexpr auto kControlPlaneStop = std::chrono::seconds(10);
// How often the nodes list is read while they register, and afterwards to show their changes.
constexpr auto kRegistrationPoll = std::chrono::milliseconds(100);
constexpr auto kNodeWatchPoll = std::chrono::milliseconds(500);

void say(const char* format, auto... args) {
  std::printf("amlnode dev: ");
  std::printf(format, args...);
  std::printf("\n");
  std::fflush(stdout);
}

// A child of this process: the control plane or one agent.
struct Child {
  std::string name;  // "control plane", "node-1", ...
  fs::path log;
  pid_t pid = -1;
  std::optional<int> exit_code;  // once reaped (128 + signal when killed)
};

// The signals the main thread waits for. They are blocked in every thread (the mask is set before
// any thread starts, and threads inherit it), so they only ever arrive through sigtimedwait.
sigset_t watched_signals() {
  sigset_t set;
  sigemptyset(&set);
  for (int number : {SIGINT, SIGTERM, SIGCHLD, SIGUSR1}) sigaddset(&set, number);
  return set;
}

// Starts `argv` as a child in a process group of its own (so the terminal's Ctrl-C reaches only
// this process, which then stops the children in order), with stdout and stderr going to `out`
// and `err`. The child gets SIGTERM if this process dies, so nothing outlives a killed `dev`.
Result<pid_t> spawn(const std::vector<std::string>& argv, int out, int err) {
  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) return Error{"SpawnFailed", std::string("fork: ") + std::strerror(errno)};
  if (pid == 0) {
    ::setpgid(0, 0);
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) ::_exit(127);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::dup2(out, STDOUT_FILENO);
    ::dup2(err, STDERR_FILENO);
    int null = ::open("/dev/null", O_RDONLY);
    if (null >= 0) ::dup2(null, STDIN_FILENO);
    std::vector<char*> args;
    for (const auto& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    std::fprintf(stderr, "cannot start %s: %s\n", args[0], std::strerror(errno));
    ::_exit(127);
  }
  return pid;
}

int open_log(const fs::path& path) {
  return ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
}

// The last lines of a child's log, for an error message.
std::string log_tail(const fs::path& log) {
  auto text = read_file(log, 16 << 20);
  if (!text.ok() || text->empty()) return "(its log is empty)";
  std::string tail = text->substr(text->size() > 2000 ? text->size() - 2000 : 0);
  return tail;
}

// The node config every agent is given: the base config's sections, then the cluster's own keys.
json agent_config(const NodeConfig& base, const fs::path& state_dir, const std::string& url,
                  const std::string& registration_token, const std::string& compute) {
  json config = json::object();
  json images = json::object();
  if (base.cpu_image) images["cpu"] = *base.cpu_image;
  if (base.gpu_image) images["gpu"] = *base.gpu_image;
  if (!images.empty()) config["images"] = images;
  for (const auto& [key, section] : {std::pair{"environments", &base.environments},
                                     {"docker", &base.docker},
                                     {"log", &base.log}}) {
    if (!section->empty()) config[key] = *section;
  }
  config["state_dir"] = state_dir.string();
  config["control_plane"] = {{"url", url}, {"registration_token", registration_token}};
  json node = base.node.is_object() ? base.node : json::object();
  if (!node["labels"].is_object()) node["labels"] = json::object();
  node["labels"]["compute_name"] = compute;
  config["node"] = node;
  json metrics = base.metrics.is_object() ? base.metrics : json::object();
  // Port 0: each agent serves /metrics on a free port of its own.
  metrics["listen"] = "127.0.0.1:0";
  config["metrics"] = metrics;
  return config;
}

// The live children of this process that are not among `known`. This process is a child
// subreaper, so a run's processes that outlived their shim and agent are reparented here.
std::vector<pid_t> orphaned_children(const std::set<pid_t>& known) {
  std::vector<pid_t> found;
  std::error_code ec;
  const std::string self = std::to_string(::getpid());
  for (const auto& entry : fs::directory_iterator("/proc", ec)) {
    auto name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    auto status = read_file(entry.path() / "status", 64 << 10);
    if (!status.ok()) continue;
    auto at = status->find("\nPPid:\t");
    if (at == std::string::npos) continue;
    auto ppid = status->substr(at + 7, status->find('\n', at + 7) - at - 7);
    pid_t pid = std::stoi(name);
    if (ppid == self && !known.count(pid)) found.push_back(pid);
  }
  return found;
}

class DevCluster {
 public:
  explicit DevCluster(const DevClusterOptions& options) : options_(options) {}

  int run() {
    if (auto prepared = prepare(); !prepared) return fail(prepared.error(), kExitUsage);
    say("a local cluster for trying and developing amlnode; not for production");
    say("state in %s (kept on exit)", dir_.c_str());
    if (auto started = start_control_plane(); !started) return fail(started.error());
    if (auto started = start_agents(); !started) return fail(started.error());
    worker_ = std::thread([this] { watch(); });
    int code = supervise();
    shut_down();
    return code;
  }

 private:
  Result<void> prepare() {
    if (options_.nodes < 1 || options_.nodes > kMaxNodes)
      return Error{"Usage", "--nodes: expected 1 to " + std::to_string(kMaxNodes)};
    if (options_.node_config) {
      auto loaded = load_node_config(*options_.node_config);
      if (!loaded.ok()) return loaded.error();
      base_ = std::move(*loaded);
    }
    if (options_.data_dir) {
      dir_ = fs::absolute(*options_.data_dir);
      std::error_code ec;
      fs::create_directories(dir_, ec);
      if (ec) return Error{"Usage", errno_message("cannot make", dir_, ec.value())};
    } else {
      const char* tmp = std::getenv("TMPDIR");
      std::string pattern = std::string(tmp && *tmp ? tmp : "/tmp") + "/amlnode-dev-XXXXXX";
      if (!::mkdtemp(pattern.data()))
        return Error{"Usage", errno_message("cannot make", pattern, errno)};
      dir_ = pattern;
    }
    ::chmod(dir_.c_str(), 0700);
    self_ = fs::read_symlink("/proc/self/exe");
    return {};
  }

  int fail(const Error& error, int code = kExitFailed) {
    std::fprintf(stderr, "amlnode dev: %s\n", error.message.c_str());
    if (!children_.empty()) shut_down();
    return code;
  }

  Result<void> start_control_plane() {
    fs::path cp_dir = dir_ / "controlplane";
    fs::create_directories(cp_dir);
    Child child{"control plane", cp_dir / "controlplane.log", -1, std::nullopt};
    int pipe_fds[2];
    if (::pipe2(pipe_fds, O_CLOEXEC) != 0)
      return Error{"SpawnFailed", std::string("pipe: ") + std::strerror(errno)};
    int log = open_log(child.log);
    auto pid = spawn({(self_.parent_path() / "amlnode-controlplane").string(), "--listen",
                      options_.listen, "--data-dir", cp_dir.string()},
                     pipe_fds[1], log);
    ::close(pipe_fds[1]);
    if (log >= 0) ::close(log);
    if (!pid.ok()) {
      ::close(pipe_fds[0]);
      return pid.error();
    }
    child.pid = *pid;
    children_.push_back(child);
    auto url = read_listening_url(pipe_fds[0]);
    ::close(pipe_fds[0]);
    if (!url.ok()) return Error{url.error().code, url.error().message + "\n" + log_tail(child.log)};
    url_ = *url;
    auto token = read_file(cp_dir / "user_token", 4096);
    if (!token.ok()) return token.error();
    user_token_ = *token;
    while (!user_token_.empty() && std::isspace(static_cast<unsigned char>(user_token_.back())))
      user_token_.pop_back();
    say("control plane listening on %s", url_.c_str());
    return {};
  }

  // The control plane prints "amlnode controlplane listening on URL" once it accepts connections.
  Result<std::string> read_listening_url(int fd) {
    static const std::string kMarker = "listening on ";
    std::string seen;
    auto deadline = Clock::now() + kControlPlaneStart;
    while (Clock::now() < deadline) {
      pollfd p{fd, POLLIN, 0};
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (::poll(&p, 1, static_cast<int>(left.count()) + 1) <= 0) continue;
      char buffer[512];
      ssize_t n = ::read(fd, buffer, sizeof buffer);
      if (n <= 0) return Error{"StartFailed", "the control plane exited before it listened"};
      seen.append(buffer, static_cast<std::size_t>(n));
      auto at = seen.find(kMarker);
      auto end = at == std::string::npos ? at : seen.find('\n', at);
      if (end != std::string::npos)
        return seen.substr(at + kMarker.size(), end - at - kMarker.size());
    }
    return Error{"StartFailed", "the control plane did not listen within 30 s"};
  }

  Result<void> start_agents() {
    auto client = make_user_client(UserAccess{url_, user_token_, "", ""});
    if (!client.ok()) return client.error();
    for (int i = 1; i <= options_.nodes; ++i) {
      std::string name = "node-" + std::to_string(i);
      auto made = client->call("POST", "/v1/registration-tokens",
                               json{{"compute_name", options_.compute}}.dump());
      if (!made.ok() || made->status != 201)
        return Error{"StartFailed", "cannot make a registration token for " + name};
      std::string token = parse_untrusted_json(made->body).value("token", "");
      fs::path node_dir = dir_ / "nodes" / name;
      fs::create_directories(node_dir);
      fs::path config_file = node_dir / "config.json";
      json config = agent_config(base_, node_dir, url_, token, options_.compute);
      if (auto written = write_file_atomically(config_file, config.dump(2) + "\n", true, 0600);
          !written)
        return written.error();
      Child child{name, node_dir / "agent.log", -1, std::nullopt};
      int log = open_log(child.log);
      auto pid = spawn({self_.string(), "agent", "--config", config_file.string()}, log, log);
      if (log >= 0) ::close(log);
      if (!pid.ok()) return pid.error();
      child.pid = *pid;
      children_.push_back(child);
    }
    std::string env = "export AMLNODE_CONTROL_PLANE=" + url_ +
                      "\nexport AMLNODE_USER_TOKEN=" + user_token_ + "\n";
    return write_file_atomically(dir_ / "env", env, true, 0600);
  }

  // The worker thread: shows the nodes as they register, then submits and follows the job when
  // one was given, then shows the nodes' changes until the cluster stops.
  void watch() {
    auto client = make_user_client(UserAccess{url_, user_token_, "", ""});
    if (!client.ok()) return finish_worker(kExitFailed);
    {
      // Under the lock shut_down() takes to cancel this client's calls, so a stop that began
      // before the client existed is seen here.
      std::lock_guard lock(worker_mutex_);
      if (stopping_) return;
      worker_client_ = std::make_shared<UserClient>(std::move(*client));
    }
    UserClient& c = *worker_client_;
    if (!wait_for_nodes(c)) return finish_worker(kExitFailed);
    std::printf(
        "\nThe user commands read these two variables (also in %s/env):\n"
        "  export AMLNODE_CONTROL_PLANE=%s\n  export AMLNODE_USER_TOKEN=%s\n"
        "Next, in another shell:\n  amlnode submit --compute %s examples/hello/job.yml\n"
        "Ctrl-C stops the cluster and its runs.\n\n",
        dir_.c_str(), url_.c_str(), user_token_.c_str(), options_.compute.c_str());
    std::fflush(stdout);
    if (options_.submit_job) {
      int code = submit_and_follow(c);
      if (!options_.stay) return finish_worker(code);
    }
    show_node_changes(c);
  }

  void finish_worker(int code) {
    worker_code_ = code;
    if (!stopping_) ::kill(::getpid(), SIGUSR1);
  }

  // The exit code after a Ctrl-C: 0 for a cluster that was only serving; 130 (interrupted) while
  // the job given with --submit was still being followed.
  int interrupted_code() const {
    int code = worker_code_;
    if (code >= 0) return code;
    return options_.submit_job ? kExitInterrupted : 0;
  }

  bool wait_for_nodes(UserClient& client) {
    std::set<std::string> seen;
    auto deadline = Clock::now() + kRegistration;
    while (!stopping_ && Clock::now() < deadline) {
      for (const auto& node : compute_nodes(client)) {
        std::string id = node.value("nodeId", "");
        if (!seen.insert(id).second) continue;
        say("node %s registered (%zu/%d)", id.c_str(), seen.size(), options_.nodes);
      }
      if (static_cast<int>(seen.size()) >= options_.nodes) {
        say("%d node%s ready on compute \"%s\"", options_.nodes, options_.nodes == 1 ? "" : "s",
            options_.compute.c_str());
        return true;
      }
      std::this_thread::sleep_for(kRegistrationPoll);
    }
    if (!stopping_) say("the nodes did not all register within 60 s; see their agent.log");
    return false;
  }

  // The nodes of this cluster's compute, as the control plane lists them.
  std::vector<json> compute_nodes(UserClient& client) {
    std::vector<json> nodes;
    auto listed = client.call("GET", "/v1/nodes");
    if (!listed.ok() || listed->status != 200) return nodes;
    auto body = parse_untrusted_json(listed->body);
    if (!body.is_array()) return nodes;
    for (auto& node : body)
      if (node.value("computeName", "") == options_.compute) nodes.push_back(node);
    return nodes;
  }

  int submit_and_follow(UserClient& client) {
    SubmitRequest request;
    request.job_file = *options_.submit_job;
    request.compute = options_.compute;
    request.experiment = options_.experiment;
    auto id = submit_job(client, request);
    if (!id) return kExitFailed;
    say("submitted run %s; following its log (amlnode logs -f %s)", id->c_str(), id->c_str());
    if (print_log(client, LogRequest{*id, "", 0, true}) != 0) return kExitFailed;
    auto status = run_status(client, *id);
    if (!status.ok()) return kExitFailed;
    say("run %s: %s", id->c_str(), status->c_str());
    for (const auto& node : fs::directory_iterator(dir_ / "nodes")) {
      fs::path folder = node.path() / "runs" / *id;
      if (fs::exists(folder)) say("its folder: %s (outputs in wd/outputs)", folder.c_str());
    }
    return *status == spec::to_string(spec::RunStatus::Completed) ? 0 : kExitFailed;
  }

  void show_node_changes(UserClient& client) {
    std::map<std::string, std::string> last;
    while (!stopping_) {
      for (const auto& node : compute_nodes(client)) {
        std::string id = node.value("nodeId", "");
        std::string state = node.value("nodeState", "");
        if (node.contains("runId") && node["runId"].is_string())
          state += " (run " + node["runId"].get<std::string>() + ")";
        auto [it, added] = last.emplace(id, state);
        if (!added && it->second != state) say("node %s: %s", id.c_str(), state.c_str());
        it->second = state;
      }
      std::this_thread::sleep_for(kNodeWatchPoll);
    }
  }

  // The main thread: waits for Ctrl-C, a child's exit or the worker's end.
  int supervise() {
    sigset_t set = watched_signals();
    for (;;) {
      siginfo_t info;
      int number = ::sigwaitinfo(&set, &info);
      if (number == SIGINT || number == SIGTERM) {
        std::printf("\n");
        say("stopping (signal %d)", number);
        return interrupted_code();
      }
      if (number == SIGUSR1 && worker_code_ >= 0) return worker_code_;
      if (number == SIGCHLD) {
        if (auto* died = reap()) {
          say("%s exited unexpectedly (%d); its log: %s\n%s", died->name.c_str(), *died->exit_code,
              died->log.c_str(), log_tail(died->log).c_str());
          return kExitFailed;
        }
      }
    }
  }

  // Reaps every child that ended; returns the first of them, if any.
  Child* reap() {
    Child* first = nullptr;
    for (;;) {
      int status = 0;
      pid_t pid = ::waitpid(-1, &status, WNOHANG);
      if (pid <= 0) return first;
      for (auto& child : children_) {
        if (child.pid != pid) continue;
        child.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        if (!first) first = &child;
      }
    }
  }

  // Waits until every child in `which` has exited or `limit` passed; a Ctrl-C meanwhile cuts the
  // wait short (the caller then forces what is left).
  void wait_for(const std::vector<Child*>& which, std::chrono::milliseconds limit) {
    sigset_t set = watched_signals();
    auto deadline = Clock::now() + limit;
    for (;;) {
      reap();
      bool all = true;
      for (auto* child : which) all = all && child->exit_code.has_value();
      if (all || Clock::now() >= deadline) return;
      auto left = std::chrono::duration_cast<std::chrono::nanoseconds>(deadline - Clock::now());
      timespec timeout{static_cast<time_t>(left.count() / 1000000000),
                       static_cast<long>(left.count() % 1000000000)};
      int number = ::sigtimedwait(&set, nullptr, &timeout);
      if (number == SIGINT || number == SIGTERM) {
        say("stopping at once");
        return;
      }
    }
  }

  void signal_all(const std::vector<Child*>& which, int number) {
    for (auto* child : which)
      if (!child->exit_code) ::kill(child->pid, number);
  }

  // Ends every live run of the cluster's compute and waits until the agents report them over.
  void cancel_runs() {
    if (url_.empty()) return;
    auto client = make_user_client(UserAccess{url_, user_token_, "", ""});
    if (!client.ok()) return;
    auto live = [&]() -> std::vector<std::string> {
      std::vector<std::string> ids;
      auto listed =
          client->call("GET", "/v1/runs?live=true&limit=1000&compute=" + options_.compute);
      if (!listed.ok() || listed->status != 200) return ids;
      auto body = parse_untrusted_json(listed->body);
      if (!body.is_object() || !body["runs"].is_array()) return ids;
      for (const auto& run : body["runs"]) ids.push_back(run.value("run_id", ""));
      return ids;
    };
    auto ids = live();
    if (ids.empty()) return;
    say("canceling %zu run%s", ids.size(), ids.size() == 1 ? "" : "s");
    // A cancel that does not go through leaves its run live: the wait below then runs out, and
    // the agents' stop and the sweep end its processes all the same.
    for (const auto& id : ids)
      (void)client->call("POST", "/v1/runs/" + url_path_escape(id) + "/cancel", "{}");
    auto deadline = Clock::now() + kRunsCanceled;
    while (!live().empty() && Clock::now() < deadline) {
      if (reap() && control_plane_gone()) return;
      std::this_thread::sleep_for(kRegistrationPoll);
    }
  }

  // Kills whatever a run left behind (nothing, when its agent stopped it), until nothing is left.
  void sweep_leftovers() {
    std::set<pid_t> known;
    for (const auto& child : children_) known.insert(child.pid);
    std::size_t killed = 0;
    for (int round = 0; round < kSweepRounds; ++round) {
      auto leftovers = orphaned_children(known);
      if (leftovers.empty()) break;
      for (pid_t pid : leftovers) ::kill(pid, SIGKILL);
      for (pid_t pid : leftovers) ::waitpid(pid, nullptr, 0);
      killed += leftovers.size();
    }
    if (killed > 0)
      say("killed %zu process%s the runs had left behind", killed, killed == 1 ? "" : "es");
  }

  bool control_plane_gone() const {
    return !children_.empty() && children_.front().exit_code.has_value();
  }

  void shut_down() {
    if (shut_down_) return;
    shut_down_ = true;
    stopping_ = true;
    {
      std::lock_guard lock(worker_mutex_);
      if (worker_client_) worker_client_->cancel_all();
    }
    if (worker_.joinable()) worker_.join();
    reap();
    if (!control_plane_gone()) cancel_runs();
    std::vector<Child*> agents, control_plane;
    for (auto& child : children_)
      (child.name == "control plane" ? control_plane : agents).push_back(&child);
    // The first SIGTERM drains an agent (it exits once it holds no run), the second stops it.
    signal_all(agents, SIGTERM);
    wait_for(agents, kAgentDrain);
    signal_all(agents, SIGTERM);
    wait_for(agents, kAgentStop);
    signal_all(agents, SIGKILL);
    wait_for(agents, std::chrono::seconds(5));
    signal_all(control_plane, SIGTERM);
    wait_for(control_plane, kControlPlaneStop);
    signal_all(control_plane, SIGKILL);
    wait_for(control_plane, std::chrono::seconds(5));
    sweep_leftovers();
    say("stopped; state kept in %s", dir_.c_str());
  }

  DevClusterOptions options_;
  NodeConfig base_;
  fs::path dir_;
  fs::path self_;
  std::string url_;
  std::string user_token_;
  std::vector<Child> children_;  // the control plane first, then the agents
  std::thread worker_;
  std::mutex worker_mutex_;
  std::shared_ptr<UserClient> worker_client_;
  std::atomic<bool> stopping_{false};
  std::atomic<int> worker_code_{-1};  // set by the worker before it raises SIGUSR1
  bool shut_down_ = false;
};

}  // namespace

int run_dev_cluster(const DevClusterOptions& options) {
  // Blocked before any thread or child starts: the main thread takes them with sigwaitinfo, the
  // worker thread inherits the mask, and each child clears it before exec.
  sigset_t set = watched_signals();
  ::pthread_sigmask(SIG_BLOCK, &set, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  // A run's processes that outlive their shim and agent become this process's children, so none
  // can escape the sweep at the end.
  ::prctl(PR_SET_CHILD_SUBREAPER, 1);
  DevCluster cluster(options);
  return cluster.run();
}

}  // namespace amlnode::agent
