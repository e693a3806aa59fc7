#pragma once

// The daemon's metrics (docs/metrics.md): every `interval` it samples the node, its GPUs (NVML,
// when it loads) and each run whose process is live; it appends each run's sample as one JSON
// line to the run's system_logs/resources.jsonl, which the log shipper delivers to the control
// plane by offset like any log (and so does the script's own system_logs/metrics.jsonl); it reads
// what each live run's script appended to its metrics.jsonl since the last sample, keeping the
// last value of each scalar; and it serves the latest samples and those values on `/metrics` when
// a listen address is configured. A SIGHUP reload hands it a new `metrics` section (reconfigure).
//
// Threads: everything here runs on the daemon's io_context thread. A sample costs well under a
// millisecond of CPU (bench/metrics_cost.py), plus parsing what scripts appended since the last
// one: usually a few KiB; at most 1 MiB a run, about 20 ms (some 10,000 records). Not worth a trip
// to the pool.
//
// Bounds: one sampler and one script metrics reader per held run (run_concurrency); 100 script
// metric names a run (metrics/script_metrics.h); resources.jsonl stops growing at 16 MiB (about
// 60 days of samples at 10 s), its last line saying so.

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
#include <set>
#include <string>
#include <vector>

#include "agent/daemon/settings.h"
#include "common/clock.h"
#include "metrics/exposition.h"
#include "metrics/http_endpoint.h"
#include "metrics/node_sampler.h"
#include "metrics/nvml.h"
#include "metrics/run_sampler.h"
#include "metrics/script_metrics.h"

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
  // The GPUs' last sample; nullptr on a node where NVML did not load. `gpu_samples()` counts the
  // samples taken, so a reader can tell a new one.
  const std::vector<metrics::GpuSample>* gpus() const { return gpu_ ? &gpus_ : nullptr; }
  std::uint64_t gpu_samples() const { return gpu_samples_; }
  // A SIGHUP reload's `metrics` section (read_agent_settings has checked it: an invalid one failed
  // the reload before it got here). A new interval counts from the last sample; a new listen
  // address closes the endpoint and opens the new one (a failure to bind is logged, and sampling
  // goes on without it, as at start); an endpoint that failed to start is tried again. Logs one
  // line saying what changed.
  void reconfigure(const MetricsSettings& next);
  // The endpoint's port, 0 when it is off or failed to start.
  std::uint16_t port() const;

 private:
  // One run's metrics.jsonl as read so far.
  struct ScriptRun {
    metrics::ScriptMetricsReader reader;
    bool warned = false;  // that names past the bound are left out, once a run
  };

  void open_endpoint();
  void close_endpoint();
  void schedule();
  void sample_runs(std::int64_t now_ms);
  void forget_runs_not_in(const std::vector<SampledRun>& held);
  metrics::RunSampler& sampler_for(const SampledRun& run);
  void read_script_metrics(const SampledRun& run);
  void append_sample(const SampledRun& run, const metrics::RunSample& sample);
  void render(std::string& out) const;

  boost::asio::io_context& io_;
  MetricsSettings settings_;
  std::filesystem::path state_dir_;
  std::shared_ptr<Clock> clock_;
  HeldRuns held_;
  boost::asio::steady_timer timer_;
  std::chrono::steady_clock::time_point last_sample_;
  // Each wait carries the generation it was armed in: a wait already completing when a reload
  // re-arms the timer (so cancel() comes too late for it) finds a newer one and does nothing.
  std::uint64_t generation_ = 0;
  metrics::NodeSampler node_sampler_;
  std::unique_ptr<metrics::GpuSource> gpu_;
  std::unique_ptr<metrics::MetricsEndpoint> endpoint_;
  metrics::NodeSample node_;
  bool sampled_ = false;
  std::vector<metrics::GpuSample> gpus_;
  std::uint64_t gpu_samples_ = 0;
  std::vector<metrics::GpuProcess> gpu_processes_;
  std::map<std::string, metrics::RunSampler> runs_;
  std::vector<metrics::RunSample> run_samples_;
  std::map<std::string, ScriptRun> scripts_;
  // Runs whose resources.jsonl was a link (not followed), said once each.
  std::set<std::string> refused_links_;
  // Views into scripts_ (the map's keys, the readers' values) for the runs sampled live. Both
  // change only in sample_runs, which rebuilds these after them, so a render between two samples
  // sees valid views.
  std::vector<metrics::RunScriptMetrics> script_metrics_;
  bool stopped_ = false;
};

}  // namespace amlnode::agent
