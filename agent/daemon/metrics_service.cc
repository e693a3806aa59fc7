#include "agent/daemon/metrics_service.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "executors/run_cgroup.h"
#include "executors/run_folder.h"
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
  open_endpoint();
  sample_now();
  schedule();
}

void MetricsService::stop() {
  if (stopped_) return;
  stopped_ = true;
  timer_.cancel();
  close_endpoint();
}

namespace {

// An IPv6 address is bracketed, so what is logged is a URL (or HOST:PORT) one can paste.
std::string url_host(const std::string& host) {
  return host.find(':') == std::string::npos ? host : "[" + host + "]";
}

std::string listen_text(const std::optional<metrics::ListenAddress>& listen) {
  if (!listen) return "off";
  return url_host(listen->host) + ":" + std::to_string(listen->port);
}

bool same_listen(const std::optional<metrics::ListenAddress>& a,
                 const std::optional<metrics::ListenAddress>& b) {
  if (!a || !b) return !a && !b;
  return a->host == b->host && a->port == b->port;
}

// "interval_seconds 10 -> 2, listen 127.0.0.1:9108 -> off"; empty when nothing changed.
std::string describe_changes(const MetricsSettings& now, const MetricsSettings& next) {
  std::string changes;
  if (next.interval != now.interval)
    changes = "interval_seconds " + std::to_string(now.interval.count()) + " -> " +
              std::to_string(next.interval.count());
  if (!same_listen(now.listen, next.listen)) {
    if (!changes.empty()) changes += ", ";
    changes += "listen " + listen_text(now.listen) + " -> " + listen_text(next.listen);
  }
  return changes;
}

}  // namespace

// A listen failure is logged and the rest goes on: the node must not stop running jobs over a
// port, at start or at a reload.
void MetricsService::open_endpoint() {
  if (!settings_.listen) return;
  endpoint_ = std::make_unique<metrics::MetricsEndpoint>(io_, *settings_.listen,
                                                         [this](std::string& out) { render(out); });
  if (auto started = endpoint_->start(); !started.ok()) {
    spdlog::error("metrics: {}; /metrics is off, sampling goes on", started.error().message);
    endpoint_.reset();
    return;
  }
  spdlog::info("metrics: serving http://{}:{}/metrics", url_host(settings_.listen->host), port());
}

void MetricsService::close_endpoint() {
  if (!endpoint_) return;
  endpoint_->stop();
  endpoint_.reset();
}

void MetricsService::reconfigure(const MetricsSettings& next) {
  if (stopped_) return;
  std::string changes = describe_changes(settings_, next);
  bool interval_changed = next.interval != settings_.interval;
  // An unchanged address whose endpoint is down failed to bind before: the reload may be the
  // operator saying the port is free now.
  bool reopen = !same_listen(settings_.listen, next.listen) || (next.listen && !endpoint_);
  settings_ = next;
  if (!changes.empty()) spdlog::info("metrics reloaded: {}", changes);
  if (reopen) {
    close_endpoint();
    open_endpoint();
  }
  if (interval_changed) schedule();
}

std::uint16_t MetricsService::port() const {
  return endpoint_ ? endpoint_->port() : 0;
}

// The next sample comes one interval after the last; re-armed by a reload, with a shorter
// interval already past, at once.
void MetricsService::schedule() {
  timer_.expires_at(last_sample_ + settings_.interval);
  timer_.async_wait([this, generation = ++generation_](const boost::system::error_code& ec) {
    if (ec || stopped_ || generation != generation_) return;
    sample_now();
    schedule();
  });
}

void MetricsService::sample_now() {
  last_sample_ = std::chrono::steady_clock::now();
  std::int64_t now_ms = unix_millis(clock_->now());
  node_sampler_.sample(node_, now_ms);
  sampled_ = true;
  if (gpu_) {
    gpu_->sample(gpus_, gpu_processes_);
    ++gpu_samples_;
  }
  sample_runs(now_ms);
}

void MetricsService::sample_runs(std::int64_t now_ms) {
  auto held = held_();
  forget_runs_not_in(held);
  run_samples_.clear();
  script_metrics_.clear();
  for (const auto& run : held) {
    auto& sampler = sampler_for(run);
    const auto& sample = sampler.sample(now_ms, gpu_processes_);
    // A root that ended (the run is being finalized, which can take long: outputs are retried
    // while the control plane is away) would give the same counters again with nothing in use:
    // the last live sample stays the run's last line, and /metrics drops the run and what its
    // script logged.
    if (!sampler.root_alive()) continue;
    run_samples_.push_back(sample);
    append_sample(run, sample);
    read_script_metrics(run);
  }
}

// Runs no longer held are forgotten (their last sample is in their resources.jsonl, and what
// their scripts logged went to the control plane with their logs).
void MetricsService::forget_runs_not_in(const std::vector<SampledRun>& held) {
  auto is_held = [&held](const std::string& id) {
    return std::any_of(held.begin(), held.end(),
                       [&id](const auto& run) { return run.run_id == id; });
  };
  std::erase_if(runs_, [&](const auto& entry) { return !is_held(entry.first); });
  std::erase_if(scripts_, [&](const auto& entry) { return !is_held(entry.first); });
  std::erase_if(refused_links_, [&](const auto& id) { return !is_held(id); });
}

// A run whose root is not the process sampled so far gets a fresh sampler: the old one's counters
// and peak belong to another process tree.
metrics::RunSampler& MetricsService::sampler_for(const SampledRun& run) {
  auto found = runs_.find(run.run_id);
  if (found != runs_.end() && found->second.root().pid == run.root.pid) return found->second;
  runs_.erase(run.run_id);
  return runs_
      .emplace(run.run_id,
               metrics::RunSampler(run.run_id, run.root, metrics::own_cgroup_of(run.root.pid)))
      .first->second;
}

// Reads what the script appended since the last sample (metrics/script_metrics.h: at most 1 MiB;
// the rest at the next sample) and offers the last values to /metrics.
void MetricsService::read_script_metrics(const SampledRun& run) {
  auto found = scripts_.find(run.run_id);
  if (found == scripts_.end())
    found = scripts_
                .emplace(run.run_id, ScriptRun{metrics::ScriptMetricsReader(
                                         metrics::run_metrics_file(run.run_dir),
                                         metrics::ScriptMetricsReader::kMaxReadBytes,
                                         metrics::ScriptMetricsReader::kMaxNames, run.run_dir)})
                .first;
  ScriptRun& script = found->second;
  script.reader.read();
  if (script.reader.dropped_records() > 0 && !script.warned) {
    script.warned = true;
    spdlog::warn(
        "run {}: its script logged more than {} metric names; /metrics shows the first {} "
        "(the control plane has them all)",
        run.run_id, metrics::ScriptMetricsReader::kMaxNames,
        metrics::ScriptMetricsReader::kMaxNames);
  }
  script_metrics_.push_back({found->first, script.reader.metrics()});
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
  // The job may have put a link where the file goes: it is not followed (the sample is dropped).
  auto file = executors::RunFolder{run.run_dir}.open(executors::RunFolder::kResources,
                                                     O_WRONLY | O_APPEND | O_CREAT);
  if (!file.ok()) {
    // A folder that is gone belongs to a run being forgotten; a link is said once per run.
    if (file.error().code == kLinkRefused && refused_links_.insert(run.run_id).second)
      spdlog::warn("run {}: {}", run.run_id, file.error().message);
    return;
  }
  off_t size = ::lseek(file->get(), 0, SEEK_END);
  std::string line =
      size < 0 ? std::string() : resources_line(static_cast<std::uint64_t>(size), sample);
  if (!line.empty() && ::write(file->get(), line.data(), line.size()) < 0)
    spdlog::warn("run {}: cannot append to its resources.jsonl", run.run_id);
}

void MetricsService::render(std::string& out) const {
  std::string state_dir = state_dir_.string();
  metrics::render_exposition(
      out, {sampled_ ? &node_ : nullptr, state_dir, gpus_, run_samples_, script_metrics_});
  out +=
      "# HELP amlnode_run_cgroups Whether each run's processes are held in a cgroup of their own "
      "(1), or by their supervisor alone (0).\n# TYPE amlnode_run_cgroups gauge\n"
      "amlnode_run_cgroups ";
  out += executors::run_cgroup_support().available ? "1\n" : "0\n";
}

}  // namespace amlnode::agent
