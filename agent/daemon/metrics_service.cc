#include "agent/daemon/metrics_service.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "metrics/exposition.h"
#include "metrics/python_module.h"

namespace amlnode::agent {

namespace fs = std::filesystem;

std::string resource_sample_json(const metrics::RunSample& s) {
  nlohmann::json line = {
      {"time",
       format_utc(std::chrono::system_clock::time_point(std::chrono::milliseconds(s.time_ms)))},
      {"cpu_seconds", s.cpu_seconds},
      {"memory_bytes", s.memory_bytes},
      {"memory_peak_bytes", s.memory_peak_bytes},
      {"io_read_bytes", s.io_read_bytes},
      {"io_write_bytes", s.io_write_bytes},
      {"processes", s.processes},
      {"gpu_memory_bytes", s.gpu_memory_bytes},
      {"source", s.from_cgroup ? "cgroup" : "process_tree"}};
  return line.dump();
}

MetricsService::MetricsService(boost::asio::io_context& io, MetricsSettings settings,
                               fs::path state_dir, std::shared_ptr<Clock> clock, HeldRuns held)
    : io_(io),
      settings_(std::move(settings)),
      state_dir_(std::move(state_dir)),
      clock_(std::move(clock)),
      held_(std::move(held)),
      timer_(io),
      node_sampler_(state_dir_) {}

MetricsService::~MetricsService() {
  stop();
}

void MetricsService::start() {
  std::string why;
  gpu_ = metrics::load_nvml(metrics::nvml_library_name(), &why);
  if (gpu_) {
    spdlog::info("metrics: {} GPU(s) through NVML", gpu_->device_count());
  } else {
    spdlog::debug("metrics: no GPUs ({})", why);
  }
  if (settings_.listen) {
    endpoint_ = std::make_unique<metrics::MetricsEndpoint>(
        io_, *settings_.listen, [this](std::string& out) { render(out); });
    if (auto started = endpoint_->start(); !started.ok()) {
      spdlog::error("metrics: {}; /metrics is off, sampling goes on", started.error().message);
      endpoint_.reset();
    } else {
      const std::string& host = settings_.listen->host;
      // An IPv6 address is bracketed, so the line is a URL one can paste.
      spdlog::info("metrics: serving http://{}:{}/metrics",
                   host.find(':') == std::string::npos ? host : "[" + host + "]", port());
    }
  }
  sample_now();
  schedule();
}

void MetricsService::stop() {
  if (stopped_) return;
  stopped_ = true;
  timer_.cancel();
  if (endpoint_) endpoint_->stop();
}

std::uint16_t MetricsService::port() const {
  return endpoint_ ? endpoint_->port() : 0;
}

void MetricsService::schedule() {
  timer_.expires_after(settings_.interval);
  timer_.async_wait([this](const boost::system::error_code& ec) {
    if (ec || stopped_) return;
    sample_now();
    schedule();
  });
}

void MetricsService::sample_now() {
  std::int64_t now_ms = unix_millis(clock_->now());
  node_sampler_.sample(node_, now_ms);
  sampled_ = true;
  if (gpu_) gpu_->sample(gpus_, gpu_processes_);
  sample_runs(now_ms);
}

void MetricsService::sample_runs(std::int64_t now_ms) {
  auto held = held_();
  // Runs no longer live are forgotten (their last sample is in their resources.jsonl).
  for (auto it = runs_.begin(); it != runs_.end();) {
    bool still = false;
    for (const auto& run : held) still = still || run.run_id == it->first;
    it = still ? std::next(it) : runs_.erase(it);
  }
  run_samples_.clear();
  for (const auto& run : held) {
    auto found = runs_.find(run.run_id);
    if (found == runs_.end() || found->second.root().pid != run.root.pid) {
      runs_.erase(run.run_id);
      found = runs_
                  .emplace(run.run_id, metrics::RunSampler(run.run_id, run.root,
                                                           metrics::own_cgroup_of(run.root.pid)))
                  .first;
    }
    const auto& sample = found->second.sample(now_ms, gpu_processes_);
    // A root that ended (the run is being finalized, which can take long: outputs are retried
    // while the control plane is away) would give the same counters again with nothing in use:
    // the last live sample stays the run's last line, and /metrics drops the run.
    if (!found->second.root_alive()) continue;
    run_samples_.push_back(sample);
    append_sample(run, sample);
  }
}

std::string resources_line(std::uint64_t size, const metrics::RunSample& sample) {
  if (size >= kMaxResourcesFileBytes) return {};
  std::string line = resource_sample_json(sample) + "\n";
  if (size + line.size() <= kMaxResourcesFileBytes - 256) return line;
  std::string marker =
      "{\"truncated\":\"resources.jsonl reached its limit; later samples are not kept\"";
  std::size_t room = static_cast<std::size_t>(kMaxResourcesFileBytes - size);
  marker.append(room > marker.size() + 2 ? room - marker.size() - 2 : 0, ' ');
  return marker + "}\n";
}

void MetricsService::append_sample(const SampledRun& run, const metrics::RunSample& sample) {
  fs::path file = metrics::run_resources_file(run.run_dir);
  int fd = ::open(file.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return;  // the run folder is gone: the run is being forgotten
  off_t size = ::lseek(fd, 0, SEEK_END);
  std::string line =
      size < 0 ? std::string() : resources_line(static_cast<std::uint64_t>(size), sample);
  if (!line.empty() && ::write(fd, line.data(), line.size()) < 0)
    spdlog::warn("run {}: cannot append to {}", run.run_id, file.string());
  ::close(fd);
}

void MetricsService::render(std::string& out) const {
  std::string state_dir = state_dir_.string();
  metrics::render_exposition(out, {sampled_ ? &node_ : nullptr, state_dir, gpus_, run_samples_});
}

}  // namespace amlnode::agent
