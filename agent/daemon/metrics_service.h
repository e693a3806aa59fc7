#pragma once

// The daemon's metrics (docs/metrics.md): every `interval` it samples the node, its GPUs (NVML,
// when it loads) and each run whose process is live; it appends each run's sample as one JSON
// line to the run's system_logs/resources.jsonl, which the log shipper delivers to the control
// plane by offset like any log (and so does the script's own system_logs/metrics.jsonl); and it
// serves the latest samples on `/metrics` when a listen address is configured.
//
// Threads: everything here runs on the daemon's io_context thread. A sample costs well under a
// millisecond of CPU (bench/metrics_cost.py), so it is not worth a trip to the pool.
//
// Bounds: one sampler per held run (run_concurrency); resources.jsonl stops growing at 16 MiB
// (about 60 days of samples at 10 s), its last line saying so.

#include <sys/types.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "agent/daemon/settings.h"
#include "common/clock.h"
#include "metrics/http_endpoint.h"
#include "metrics/node_sampler.h"
#include "metrics/nvml.h"
#include "metrics/run_sampler.h"

namespace amlnode::agent {

inline constexpr std::uint64_t kMaxResourcesFileBytes = 16u << 20;

// A run whose process is live, as the daemon knows it: the root of its process tree is its shim,
// or for a Docker run the container's first process (docker-init), which counts as the run's.
struct SampledRun {
  std::string run_id;
  std::filesystem::path run_dir;
  metrics::RunRoot root;
};

// One resource sample as a line of resources.jsonl (and as `amlnode status` shows it).
std::string resource_sample_json(const metrics::RunSample& sample);

// What to append to a resources.jsonl of `size` bytes: the sample's line while the file stays
// 256 bytes under kMaxResourcesFileBytes; then one marker line padded to fill the file to the
// limit exactly, so nothing is appended after it, even across restarts; then nothing.
std::string resources_line(std::uint64_t size, const metrics::RunSample& sample);

class MetricsService {
 public:
  using HeldRuns = std::function<std::vector<SampledRun>()>;

  MetricsService(boost::asio::io_context& io, MetricsSettings settings,
                 std::filesystem::path state_dir, std::shared_ptr<Clock> clock, HeldRuns held);
  ~MetricsService();

  // Samples at once, then every interval; starts the endpoint when one is configured. A listen
  // failure is logged and the rest goes on (the node must not stop running jobs over a port).
  void start();
  void stop();
  void sample_now();
  // The endpoint's port, 0 when it is off or failed to start.
  std::uint16_t port() const;

 private:
  void schedule();
  void sample_runs(std::int64_t now_ms);
  void append_sample(const SampledRun& run, const metrics::RunSample& sample);
  void render(std::string& out) const;

  boost::asio::io_context& io_;
  MetricsSettings settings_;
  std::filesystem::path state_dir_;
  std::shared_ptr<Clock> clock_;
  HeldRuns held_;
  boost::asio::steady_timer timer_;
  metrics::NodeSampler node_sampler_;
  std::unique_ptr<metrics::GpuSource> gpu_;
  std::unique_ptr<metrics::MetricsEndpoint> endpoint_;
  metrics::NodeSample node_;
  bool sampled_ = false;
  std::vector<metrics::GpuSample> gpus_;
  std::vector<metrics::GpuProcess> gpu_processes_;
  std::map<std::string, metrics::RunSampler> runs_;
  std::vector<metrics::RunSample> run_samples_;
  bool stopped_ = false;
};

}  // namespace amlnode::agent
