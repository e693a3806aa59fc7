#include "agent/container_run.h"

#include <fcntl.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <cmath>
#include <cstdio>
#include <regex>

#include "common/clock.h"
#include "common/fs.h"
#include "executors/run_folder.h"
#include "executors/shim/launcher.h"

namespace amlnode::agent {

namespace {

using executors::ExitReason;
using executors::ExitRecord;

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

ContainerWatch::ContainerWatch(boost::asio::any_io_executor loop, Blocking blocking,
                               std::shared_ptr<docker::ContainerRuntime> runtime, std::string id,
                               Settings settings)
    : loop_(loop),
      blocking_(std::move(blocking)),
      runtime_(std::move(runtime)),
      id_(std::move(id)),
      settings_(settings),
      deadline_timer_(loop),
      retry_timer_(loop) {}

// Runs `work` through `blocking_` and `then` with its result on the loop, unless the watch was
// abandoned or destroyed meanwhile.
template <class Work, class Then>
void ContainerWatch::off_loop(Work work, Then then) {
  std::weak_ptr<ContainerWatch> self = weak_from_this();
  blocking_([self, loop = loop_, runtime = runtime_, id = id_, work = std::move(work),
             then = std::move(then)]() mutable {
    auto result = work(*runtime, id);
    boost::asio::post(loop, [self, then = std::move(then), result = std::move(result)]() mutable {
      if (auto watch = self.lock(); watch && !watch->finished_) then(*watch, std::move(result));
    });
  });
}

void ContainerWatch::start(Done done) {
  done_ = std::move(done);
  record_.started_at_ms = settings_.started_at_ms ? settings_.started_at_ms
                                                  : unix_millis(std::chrono::system_clock::now());
  if (settings_.deadline) {
    if (settings_.deadline->count() <= 0) {
      stop(ExitReason::Timeout);
    } else {
      deadline_timer_.expires_after(*settings_.deadline);
      std::weak_ptr<ContainerWatch> self = weak_from_this();
      deadline_timer_.async_wait([self](const boost::system::error_code& ec) {
        if (auto watch = self.lock(); watch && !ec) watch->stop(ExitReason::Timeout);
      });
    }
  }
  wait_slice();
}

void ContainerWatch::wait_slice() {
  off_loop(
      [slice = settings_.wait_slice](docker::ContainerRuntime& runtime, const std::string& id) {
        return runtime.wait_container_for(id, slice);
      },
      [](ContainerWatch& watch, Result<std::optional<docker::ContainerExit>> waited) {
        watch.on_waited(waited);
      });
}

void ContainerWatch::on_waited(const Result<std::optional<docker::ContainerExit>>& waited) {
  if (waited.ok() && *waited) return finish(**waited);
  if (waited.ok()) return wait_slice();
  if (waited.error().code != docker::kDockerUnavailable || !settings_.retry_when_unreachable)
    return finish_lost(waited.error());
  // Docker is down or restarting: the container is looked at again once it answers.
  retry_timer_.expires_after(settings_.unreachable_retry);
  std::weak_ptr<ContainerWatch> self = weak_from_this();
  retry_timer_.async_wait([self](const boost::system::error_code& ec) {
    if (auto watch = self.lock(); watch && !ec && !watch->finished_) watch->wait_slice();
  });
}

void ContainerWatch::stop(ExitReason reason) {
  if (stopping_ || finished_) return;
  stopping_ = true;
  record_.reason = reason;
  send_stop();
}

// If the graceful stop fails (the daemon refused or dropped the call), the container is killed
// outright; if Docker cannot be reached at all, the stop is tried again while the watch waits.
void ContainerWatch::send_stop() {
  off_loop(
      [grace = settings_.grace](docker::ContainerRuntime& runtime, const std::string& id) {
        if (runtime.stop_container(id, grace).ok()) return true;
        return runtime.kill_container(id, "SIGKILL").ok();
      },
      [](ContainerWatch& watch, bool stopped) { watch.on_stop_sent(stopped); });
}

void ContainerWatch::on_stop_sent(bool stopped) {
  if (stopped || !settings_.retry_when_unreachable) return;
  auto timer = std::make_shared<boost::asio::steady_timer>(loop_, settings_.unreachable_retry);
  std::weak_ptr<ContainerWatch> self = weak_from_this();
  timer->async_wait([self, timer](const boost::system::error_code& ec) {
    if (auto watch = self.lock(); watch && !ec && !watch->finished_) watch->send_stop();
  });
}

void ContainerWatch::finish(const docker::ContainerExit& exit) {
  record_.exit_code = exit.exit_code;
  if (!stopping_) record_.reason = ExitReason::Exited;
  // docker-init reports death by a signal as 128 + the signal, like a shell does.
  if (exit.exit_code > 128) record_.signal = exit.exit_code - 128;
  if (exit.oom_killed) {
    if (!stopping_) record_.reason = ExitReason::Signaled;
    record_.signal = SIGKILL;
    record_.error = "the kernel's OOM killer ended it: the container ran out of memory";
  }
  finish_lost({});
}

// Ends the watch; with an error, the container was lost while waiting for it.
void ContainerWatch::finish_lost(const Error& error) {
  if (!error.code.empty()) {
    record_.reason = ExitReason::SpawnFailed;
    record_.error = "lost the container while waiting for it: " + error.message;
  }
  finished_ = true;
  deadline_timer_.cancel();
  retry_timer_.cancel();
  record_.ended_at_ms = unix_millis(std::chrono::system_clock::now());
  if (done_) done_(record_);
}

void ContainerWatch::abandon() {
  finished_ = true;
  deadline_timer_.cancel();
  retry_timer_.cancel();
  done_ = nullptr;
}

namespace {

void append_progress(const std::filesystem::path& file, std::string_view text) {
  if (FILE* f = std::fopen(file.c_str(), "a")) {
    std::fwrite(text.data(), 1, text.size(), f);
    if (text.empty() || text.back() != '\n') std::fputc('\n', f);
    std::fclose(f);
  }
}

}  // namespace

Result<void> write_container_launch(const docker::ContainerSpec& spec) {
  if (!spec.launch_spec) return ok();
  return write_file_atomically(spec.launch_file, *spec.launch_spec);
}

ExitRecord container_exit_record(const executors::Plan& plan, const ExitRecord& watched) {
  if (plan.launcher != executors::RankLauncher::Processes) return watched;
  executors::RunFolder folder{plan.run_dir};
  auto file = folder.open(executors::RunFolder::kRanksExit, O_RDONLY | O_NONBLOCK);
  if (!file.ok()) return watched;  // the shim did not get to write it: the container's record
  std::string text(1 << 20, '\0');
  ssize_t n = ::read(file->get(), text.data(), text.size());
  text.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
  auto ranks = executors::exit_record_from_json(text);
  if (!ranks.ok()) return watched;
  ExitRecord record = *ranks;
  // A deadline or a cancel stopped the container, and with it the shim, which took the stop for
  // a cancel of its own.
  if (watched.reason == ExitReason::Timeout || watched.reason == ExitReason::Canceled)
    record.reason = watched.reason;
  return record;
}

Result<docker::ContainerSpec> prepare_run_container(docker::ContainerRuntime& runtime,
                                                    const docker::DockerRuntimeConfig& docker,
                                                    const NodeConfig& config,
                                                    const executors::Plan& plan,
                                                    const spec::Job& job, const SystemLog& log,
                                                    std::function<void(std::string_view)> progress,
                                                    std::function<bool()> canceled) {
  auto build_log = plan.system_logs / "image_build.txt";
  auto request = docker::image_request_for(job, plan);
  request.canceled = std::move(canceled);
  auto image = runtime.ensure_image(request, [&](std::string_view text) {
    append_progress(build_log, text);
    if (progress) progress(text);
  });
  if (!image.ok()) return image.error();
  log.line("image " + image->image + " (" + docker::to_string(image->source) + ")");
  if (auto budget = docker_disk_budget(config);
      budget && image->source == docker::ImageSource::Built) {
    auto pruned = runtime.prune_images(*budget);
    if (pruned.ok()) {
      for (const auto& old : pruned->removed)
        log.line("evicted image " + old.id + " (over docker.disk_budget_bytes)");
    }
  }
  docker::ContainerOptions options;
  options.node.gpu_count = node_gpu_count(config);
  options.default_gpu_image = docker.builder.default_gpu_image;
  options.shim_binary = executors::default_shim_binary();
  return docker::container_spec_for(plan, job, image->image, options);
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

Result<bool> docker_enabled(const NodeConfig& config) {
  auto it = config.docker.find("enabled");
  if (it == config.docker.end() || it->is_null()) return !config.docker.empty();
  if (!it->is_boolean()) return Error{"InvalidConfig", "docker.enabled: expected true or false"};
  return it->get<bool>();
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

std::string run_container_label(const std::string& run_id) {
  return std::string(docker::kRunIdLabel) + "=" + run_id;
}

ContainerWatch::Settings container_watch_settings(const executors::Plan& plan,
                                                  const docker::ContainerInfo& container,
                                                  const Clock& clock, bool retry_when_unreachable) {
  ContainerWatch::Settings settings;
  settings.grace = std::chrono::seconds(static_cast<long long>(std::ceil(plan.kill_grace_seconds)));
  settings.retry_when_unreachable = retry_when_unreachable;
  auto started_at = container.started_at.value_or(clock.now());
  settings.started_at_ms = unix_millis(started_at);
  if (plan.deadline_seconds) {
    auto limit = std::chrono::seconds(*plan.deadline_seconds);
    auto end = container.running ? clock.now() : container.finished_at.value_or(started_at);
    settings.deadline =
        std::chrono::duration_cast<std::chrono::milliseconds>(limit - (end - started_at));
  }
  return settings;
}

namespace {

// How much of a container's own stdout/stderr is kept in system_logs/container.txt.
constexpr std::size_t kRuntimeOutputLimit = 64u << 10;

}  // namespace

void remove_run_containers(docker::ContainerRuntime& runtime, const executors::Plan& plan,
                           const SystemLog& log) {
  auto containers = runtime.list_containers(
      run_container_label(plan.container_key.empty() ? plan.run_id : plan.container_key));
  if (!containers.ok()) {
    log.line("container not removed: " + containers.error().message);
    return;
  }
  for (const auto& container : *containers) {
    auto output = runtime.container_output(container.id, kRuntimeOutputLimit);
    if (output.ok() && !output->empty()) {
      (void)executors::RunFolder{plan.run_dir}.write(executors::RunFolder::kContainerLog, *output);
    }
    auto removed = runtime.remove_container(container.id);
    log.line(removed.ok() ? "container " + container.id + " removed"
                          : "container not removed: " + removed.error().message);
  }
}

}  // namespace amlnode::agent
