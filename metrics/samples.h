#pragma once

// What one sample of the node, its GPUs and its runs holds. Counters are cumulative since boot
// (node) or since the run's start (runs), as Prometheus expects; gauges are the value at the
// sample's time. Samples are plain data, reused from one sample to the next so that sampling
// allocates nothing once the vectors have their size.

#include <cstdint>
#include <string>
#include <vector>

namespace amlnode::metrics {

// Time a CPU (or all of them) spent in each mode, in clock ticks (USER_HZ, see ticks_per_second).
struct CpuTicks {
  std::uint64_t user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0,
                steal = 0;
};

struct NetDevice {
  char name[16] = {};  // IFNAMSIZ
  std::uint64_t rx_bytes = 0, rx_packets = 0, rx_errors = 0, rx_dropped = 0;
  std::uint64_t tx_bytes = 0, tx_packets = 0, tx_errors = 0, tx_dropped = 0;
};

struct NodeSample {
  std::int64_t time_ms = 0;  // Unix epoch milliseconds
  CpuTicks cpu;              // all CPUs together
  std::vector<CpuTicks> cores;
  std::uint64_t memory_total = 0, memory_free = 0, memory_available = 0, memory_buffers = 0,
                memory_cached = 0, swap_total = 0, swap_free = 0;  // bytes
  double load1 = 0, load5 = 0, load15 = 0;
  std::uint64_t processes = 0;      // live processes (numeric entries of /proc)
  std::uint64_t procs_running = 0;  // runnable tasks
  std::uint64_t procs_blocked = 0;  // tasks waiting for I/O
  std::uint64_t forks = 0;          // processes created since boot
  std::uint64_t context_switches = 0;
  // The state dir's filesystem.
  std::uint64_t fs_size = 0, fs_free = 0, fs_available = 0;  // bytes
  std::uint64_t fs_files = 0, fs_files_free = 0;             // inodes
  // The block device under it, when one was found (see NodeSampler).
  bool disk_found = false;
  char disk_name[32] = {};
  std::uint64_t disk_reads = 0, disk_read_bytes = 0, disk_writes = 0, disk_written_bytes = 0,
                disk_io_ms = 0;
  std::vector<NetDevice> net;
};

// One GPU, read through NVML. Fields NVML does not support on a device are left at `unknown`.
struct GpuSample {
  static constexpr std::uint64_t unknown = ~0ull;
  unsigned index = 0;
  std::string uuid;
  std::string name;
  std::uint64_t utilization_percent = unknown;
  std::uint64_t memory_utilization_percent = unknown;
  std::uint64_t memory_total = unknown, memory_used = unknown;  // bytes
  std::uint64_t temperature_celsius = unknown;
  std::uint64_t power_milliwatts = unknown;
  std::uint64_t ecc_corrected = unknown, ecc_uncorrected = unknown;  // volatile counts
  std::uint64_t retired_pages_pending = unknown;  // 1: pages wait for a reset to be retired
  std::uint64_t xid_errors = 0;  // XID critical errors seen since the agent started
  std::uint64_t last_xid = 0;    // the last one's code (0: none yet)
};

// A process using GPU memory, as NVML lists it.
struct GpuProcess {
  unsigned pid = 0;
  unsigned gpu = 0;
  std::uint64_t memory_bytes = 0;
};

struct RunSample {
  std::string run_id;
  std::int64_t time_ms = 0;
  double cpu_seconds = 0;          // user + system of every process of the run, the dead included
  std::uint64_t memory_bytes = 0;  // resident now
  std::uint64_t memory_peak_bytes = 0;
  std::uint64_t io_read_bytes = 0, io_write_bytes = 0;  // storage I/O
  std::uint64_t processes = 0;
  std::uint64_t gpu_memory_bytes = 0;
  bool from_cgroup = false;  // CPU, memory and I/O came from the run's cgroup
};

// The last value a run's script logged under one name (amlnode_run.log), read from its
// metrics.jsonl (metrics/script_metrics.h).
struct ScriptMetric {
  std::string name;
  double value = 0;
};

}  // namespace amlnode::metrics
