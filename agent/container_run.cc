#include "agent/container_run.h"

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <regex>
#include <thread>

#include "common/clock.h"

namespace amlnode::agent {

namespace {

using executors::ExitReason;
using executors::ExitRecord;

// Owns the container while it runs: one Asio loop decides, blocking Engine API calls (wait, stop)
// run on threads of their own and post their results back.
class ContainerSupervisor {
 public:
  ContainerSupervisor(docker::ContainerRuntime& runtime, std::string id, std::chrono::seconds grace,
                      const ContainerRunHooks& hooks)
      : runtime_(runtime),
        id_(std::move(id)),
        grace_(grace),
        hooks_(hooks),
        signals_(loop_, SIGINT, SIGTERM),
        deadline_timer_(loop_) {}

  ExitRecord run(std::optional<std::chrono::milliseconds> deadline) {
    record_.started_at_ms = unix_millis(std::chrono::system_clock::now());
    watch_signals();
    if (deadline) {
      deadline_timer_.expires_after(*deadline);
      deadline_timer_.async_wait([this](const boost::system::error_code& ec) {
        if (!ec) stop(ExitReason::Timeout);
      });
    }
    waiter_ = std::thread([this] {
      auto exit = runtime_.wait_container(id_);
      boost::asio::post(loop_, [this, exit] { on_exit(exit); });
    });
    loop_.run();
    waiter_.join();
    if (stopper_.joinable()) stopper_.join();
    record_.ended_at_ms = unix_millis(std::chrono::system_clock::now());
    return record_;
  }

 private:
  void watch_signals() {
    signals_.async_wait([this](const boost::system::error_code& ec, int) {
      if (ec) return;
      if (!stopping_ && hooks_.on_cancel_requested) hooks_.on_cancel_requested();
      stop(ExitReason::Canceled);
      watch_signals();
    });
  }

  void stop(ExitReason reason) {
    if (stopping_) return;
    stopping_ = true;
    record_.reason = reason;
    // If the graceful stop fails (the daemon refused or dropped the call), kill outright:
    // the waiter only returns once the container is no longer running.
    stopper_ = std::thread([this] {
      if (!runtime_.stop_container(id_, grace_).ok()) (void)runtime_.kill_container(id_, "SIGKILL");
    });
  }

  void on_exit(const Result<docker::ContainerExit>& exit) {
    deadline_timer_.cancel();
    signals_.cancel();
    if (!exit.ok()) {
      record_.reason = ExitReason::SpawnFailed;
      record_.error = "lost the container while waiting for it: " + exit.error().message;
    } else {
      record_.exit_code = exit->exit_code;
      if (!stopping_) record_.reason = ExitReason::Exited;
      // docker-init reports death by a signal as 128 + the signal, like a shell does.
      if (exit->exit_code > 128) record_.signal = exit->exit_code - 128;
      if (exit->oom_killed) {
        if (!stopping_) record_.reason = ExitReason::Signaled;
        record_.signal = SIGKILL;
        record_.error = "the kernel's OOM killer ended it: the container ran out of memory";
      }
    }
    loop_.stop();
  }

  docker::ContainerRuntime& runtime_;
  std::string id_;
  std::chrono::seconds grace_;
  const ContainerRunHooks& hooks_;
  boost::asio::io_context loop_;
  boost::asio::signal_set signals_;
  boost::asio::steady_timer deadline_timer_;
  std::thread waiter_;
  std::thread stopper_;
  bool stopping_ = false;
  ExitRecord record_;
};

Result<std::vector<std::string>> string_list(const nlohmann::json& section, const char* key) {
  std::vector<std::string> out;
  auto it = section.find(key);
  if (it == section.end() || it->is_null()) return out;
  if (!it->is_array())
    return Error{"InvalidConfig", std::string("docker.") + key + ": expected a list of strings"};
  for (const auto& item : *it) {
    if (!item.is_string())
      return Error{"InvalidConfig", std::string("docker.") + key + ": expected a list of strings"};
    out.push_back(item.get<std::string>());
  }
  return out;
}

Result<void> read_string(const nlohmann::json& section, const char* key, std::string& target) {
  auto it = section.find(key);
  if (it == section.end() || it->is_null()) return ok();
  if (!it->is_string())
    return Error{"InvalidConfig", std::string("docker.") + key + ": expected a string"};
  target = it->get<std::string>();
  return ok();
}

}  // namespace

Result<ExitRecord> run_container_to_end(docker::ContainerRuntime& runtime,
                                        const docker::ContainerSpec& spec,
                                        std::optional<std::chrono::milliseconds> deadline,
                                        std::chrono::seconds grace,
                                        const ContainerRunHooks& hooks) {
  auto id = runtime.create_container(spec);
  if (!id.ok()) return id.error();
  auto started = runtime.start_container(*id);
  if (!started.ok()) {
    (void)runtime.remove_container(*id);
    return started.error();
  }
  if (hooks.on_running) hooks.on_running(*id);
  ContainerSupervisor supervisor(runtime, *id, grace, hooks);
  auto record = supervisor.run(deadline);
  (void)runtime.remove_container(*id);
  return record;
}

Result<docker::DockerRuntimeConfig> docker_runtime_config(const NodeConfig& config,
                                                          const std::filesystem::path& state_dir) {
  docker::DockerRuntimeConfig out;
  const auto& section = config.docker;
  for (auto [key, target] : {std::pair{"host", &out.engine.docker_host},
                             std::pair{"image_repository", &out.builder.image_repository},
                             std::pair{"conda_tool", &out.builder.conda_tool},
                             std::pair{"python", &out.builder.python}}) {
    auto read = read_string(section, key, *target);
    if (!read.ok()) return read.error();
  }
  auto options = string_list(section, "pip_install_options");
  if (!options.ok()) return options.error();
  out.builder.pip_install_options = *options;
  std::string wheels;
  auto read = read_string(section, "local_wheel_dir", wheels);
  if (!read.ok()) return read.error();
  if (!wheels.empty()) out.builder.local_wheel_dir = wheels;
  if (config.cpu_image) out.builder.default_cpu_image = *config.cpu_image;
  if (config.gpu_image) out.builder.default_gpu_image = *config.gpu_image;
  out.builder.state_dir = state_dir / "images";
  return out;
}

std::optional<std::uint64_t> docker_disk_budget(const NodeConfig& config) {
  auto it = config.docker.find("disk_budget_bytes");
  if (it == config.docker.end() || !it->is_number_unsigned()) return std::nullopt;
  return it->get<std::uint64_t>();
}

int node_gpu_count(const NodeConfig& config) {
  if (auto it = config.docker.find("gpus"); it != config.docker.end() && it->is_number_integer()) {
    return it->get<int>();
  }
  int count = 0;
  std::error_code ec;
  static const std::regex kGpuDevice("nvidia[0-9]+");
  for (const auto& entry : std::filesystem::directory_iterator("/dev", ec)) {
    if (std::regex_match(entry.path().filename().string(), kGpuDevice)) ++count;
  }
  return count;
}

}  // namespace amlnode::agent
