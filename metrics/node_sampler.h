#pragma once

// Samples the node from /proc and statfs: CPU (all and per core), memory, load, processes, the
// state dir's filesystem and block device, and network devices.
//
// Cost: the /proc files stay open and each is re-read with one pread into one fixed 64 KiB buffer
// (allocated once); parsing walks that buffer in place. A sample allocates nothing once its
// vectors have their size. bench/metrics_cost.py measures it (target < 1 ms of CPU).
//
// Bounds: a /proc file larger than 64 KiB is read to its first 64 KiB (the per-CPU lines of
// /proc/stat come first, so a node would need about 700 CPUs to lose one); at most 64 network
// devices are reported (the rest are left out).

#include <filesystem>
#include <memory>
#include <string>

#include "metrics/proc_text.h"
#include "metrics/samples.h"

namespace amlnode::metrics {

inline constexpr std::size_t kProcBufferSize = 64 * 1024;
inline constexpr std::size_t kMaxNetDevices = 64;

// Clock ticks per second of the CPU times in /proc (sysconf(_SC_CLK_TCK), 100 on Linux).
double ticks_per_second();

// The block device holding `path`: the mount containing it in /proc/self/mountinfo, matched to
// /proc/diskstats by device number, else by its source's name (btrfs and others report an
// anonymous device number). Empty when there is none (tmpfs, overlay, NFS).
std::string block_device_of(const std::filesystem::path& path);

class NodeSampler {
 public:
  // `state_dir`: whose filesystem and block device are reported.
  explicit NodeSampler(std::filesystem::path state_dir);
  ~NodeSampler();
  NodeSampler(const NodeSampler&) = delete;
  NodeSampler& operator=(const NodeSampler&) = delete;

  // Fills `out` (reusing its storage); `now_ms` is the sample's time.
  void sample(NodeSample& out, std::int64_t now_ms);

  const std::string& disk() const { return disk_; }

 private:
  void read_stat(NodeSample& out);
  void read_meminfo(NodeSample& out);
  void read_loadavg(NodeSample& out);
  void read_filesystem(NodeSample& out);
  void read_diskstats(NodeSample& out);
  void read_net(NodeSample& out);
  void count_processes(NodeSample& out);

  std::filesystem::path state_dir_;
  std::string disk_;
  std::unique_ptr<char[]> buffer_;
  ProcFile stat_, meminfo_, loadavg_, diskstats_, net_dev_;
  int proc_dir_ = -1;
};

}  // namespace amlnode::metrics
