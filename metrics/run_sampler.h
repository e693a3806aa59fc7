#pragma once

// Samples one run's resource use: CPU time, memory (now and peak), storage I/O, process count and
// GPU memory of the run's processes.
//
// Where from: the run's process tree, always (found from its root through
// /proc/<pid>/task/<tid>/children, so it costs a few reads per process of the run, not per process
// of the node); and, when the run has a cgroup v2 of its own, that cgroup's cpu.stat,
// memory.current, memory.peak, io.stat and cgroup.procs, which then win over the tree's sums for
// what they hold (they are exact: they count shared pages once, and processes that escaped the
// tree).
//
// The tree's sums, and why they are right:
// - CPU: user + system time of every live process below the root, plus the root's `cutime` and
//   `cstime` (what the processes it reaped had used: the shim is a subreaper, so every process of
//   the run that ended was reaped by it or by a live process of the run, whose own cutime holds
//   it).
// - I/O: read_bytes / write_bytes of /proc/<pid>/io, the root's included (a process's io counts
//   the children it reaped, like cutime; the shim's own writes are a few hundred bytes).
// - Memory: the sum of resident set sizes (shared pages count once per process, so a forked
//   worker pool reads high); the peak is the largest of that sum over the samples and of the
//   largest single process's own peak (VmHWM): both are lower bounds of the true peak.
// Counters never go backwards between samples (a process exiting between two reads could
// otherwise make one dip).
//
// Bounds: at most 4096 processes per run are walked; a larger tree is cut there.

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "metrics/samples.h"

namespace amlnode::metrics {

inline constexpr std::size_t kMaxRunProcesses = 4096;

struct RunRoot {
  pid_t pid = 0;
  // The root's start time (/proc/<pid>/stat field 22), so a reused pid is never sampled as the
  // run; 0 skips the check.
  std::uint64_t start_time = 0;
  // The root is the run's supervisor (the shim): only its descendants count as the run, plus what
  // it reaped. Otherwise the root is the run's own first process and counts too.
  bool supervisor = true;
};

// The cgroup v2 folder of `pid` when it differs from this process's own (the run was given a
// cgroup of its own); nullopt otherwise, or without a cgroup v2 hierarchy.
std::optional<std::filesystem::path> own_cgroup_of(pid_t pid);

class RunSampler {
 public:
  RunSampler(std::string run_id, RunRoot root,
             std::optional<std::filesystem::path> cgroup = std::nullopt);

  // Samples the run now. `gpu_processes`: what NVML lists (empty without GPUs); the memory of
  // those that belong to the run is summed.
  const RunSample& sample(std::int64_t now_ms, std::span<const GpuProcess> gpu_processes = {});

  const RunSample& last() const { return sample_; }
  // Whether the last sample found the root (a zombie root counts: its counters are still there).
  // Once it is gone the sample only repeats the counters with nothing in use, so the daemon stops
  // reporting the run instead of appending such lines while the run is finalized.
  bool root_alive() const { return root_alive_; }
  const std::string& run_id() const { return sample_.run_id; }
  const RunRoot& root() const { return root_; }

 private:
  struct Totals {
    double cpu_seconds = 0;
    std::uint64_t memory = 0, largest_peak = 0, read = 0, written = 0, processes = 0;
  };
  bool walk_tree(Totals& totals);
  void add_process(pid_t pid, bool is_root, Totals& totals);
  void add_children(pid_t pid, std::uint64_t threads);
  bool read_cgroup(Totals& totals);

  RunRoot root_;
  std::optional<std::filesystem::path> cgroup_;
  RunSample sample_;
  bool root_alive_ = false;
  std::vector<pid_t> pids_;  // the processes found by the last walk, root first
  char buffer_[16384];       // /proc/<pid>/status is ~1.5 KiB; a children list ~7 bytes a pid
};

}  // namespace amlnode::metrics
