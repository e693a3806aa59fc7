#include "metrics/run_sampler.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "metrics/node_sampler.h"
#include "metrics/proc_text.h"

namespace amlnode::metrics {

namespace fs = std::filesystem;

namespace {

struct ProcStat {
  std::uint64_t utime = 0, stime = 0, cutime = 0, cstime = 0, threads = 1, start_time = 0,
                rss_pages = 0;
};

// Parses /proc/<pid>/stat; the command name (field 2) may hold spaces and parentheses, so fields
// are counted from the last ')'.
bool parse_stat(std::string_view text, ProcStat& out) {
  auto close = text.rfind(')');
  if (close == std::string_view::npos) return false;
  Scanner scan(text.substr(close + 1));
  scan.word();  // 3: state
  for (int field = 4; field <= 13; ++field) scan.word();
  out.utime = scan.number();       // 14
  out.stime = scan.number();       // 15
  out.cutime = scan.number();      // 16
  out.cstime = scan.number();      // 17
  scan.word();                     // 18 priority
  scan.word();                     // 19 nice (may be negative)
  out.threads = scan.number();     // 20
  scan.word();                     // 21
  out.start_time = scan.number();  // 22
  scan.word();                     // 23 vsize
  out.rss_pages = scan.number();   // 24
  return true;
}

std::uint64_t page_size() {
  static const std::uint64_t size = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
  return size;
}

std::string cgroup_v2_line(const std::string& proc_file) {
  std::ifstream in(proc_file);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("0::", 0) == 0) return line.substr(3);
  }
  return {};
}

// Where the cgroup v2 hierarchy is mounted (/sys/fs/cgroup, or /sys/fs/cgroup/unified on hybrid
// systems); empty when there is none.
fs::path cgroup2_mount() {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    auto dash = line.find(" - cgroup2 ");
    if (dash == std::string::npos) continue;
    std::istringstream fields(line);
    std::string id, parent, device, root, mount_point;
    fields >> id >> parent >> device >> root >> mount_point;
    return mount_point;
  }
  return {};
}

}  // namespace

std::optional<fs::path> own_cgroup_of(pid_t pid) {
  std::string theirs = cgroup_v2_line("/proc/" + std::to_string(pid) + "/cgroup");
  std::string ours = cgroup_v2_line("/proc/self/cgroup");
  if (theirs.empty() || theirs == ours) return std::nullopt;
  fs::path mount = cgroup2_mount();
  if (mount.empty()) return std::nullopt;
  fs::path dir = mount / fs::path(theirs).relative_path();
  std::error_code ec;
  if (!fs::exists(dir / "cgroup.procs", ec)) return std::nullopt;
  return dir;
}

RunSampler::RunSampler(std::string run_id, RunRoot root, std::optional<fs::path> cgroup)
    : root_(root), cgroup_(std::move(cgroup)) {
  sample_.run_id = std::move(run_id);
  pids_.reserve(64);
}

const RunSample& RunSampler::sample(std::int64_t now_ms, std::span<const GpuProcess> gpu) {
  Totals totals;
  bool alive = walk_tree(totals);
  root_alive_ = alive;
  bool from_cgroup = cgroup_ && read_cgroup(totals);
  RunSample& s = sample_;
  s.time_ms = now_ms;
  s.from_cgroup = from_cgroup;
  if (!alive && !from_cgroup) {
    s.memory_bytes = 0;
    s.processes = 0;
    s.gpu_memory_bytes = 0;
    return s;
  }
  s.cpu_seconds = std::max(s.cpu_seconds, totals.cpu_seconds);
  s.io_read_bytes = std::max(s.io_read_bytes, totals.read);
  s.io_write_bytes = std::max(s.io_write_bytes, totals.written);
  s.memory_bytes = totals.memory;
  s.memory_peak_bytes = std::max({s.memory_peak_bytes, totals.memory, totals.largest_peak});
  s.processes = totals.processes;
  s.gpu_memory_bytes = 0;
  for (const auto& process : gpu) {
    if (std::find(pids_.begin(), pids_.end(), static_cast<pid_t>(process.pid)) != pids_.end())
      s.gpu_memory_bytes += process.memory_bytes;
  }
  return s;
}

bool RunSampler::walk_tree(Totals& totals) {
  pids_.clear();
  pids_.push_back(root_.pid);
  for (std::size_t next = 0; next < pids_.size(); ++next)
    add_process(pids_[next], next == 0, totals);
  return !pids_.empty();
}

void RunSampler::add_process(pid_t pid, bool is_root, Totals& totals) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/stat", pid);
  ProcStat stat;
  if (!parse_stat(read_once(path, buffer_, sizeof buffer_), stat)) {
    if (is_root) pids_.clear();
    return;
  }
  if (is_root && root_.start_time != 0 && stat.start_time != root_.start_time) {
    pids_.clear();  // the pid now names another process: the run's root is gone
    return;
  }
  const double ticks = ticks_per_second();
  bool counts_itself = !is_root || !root_.supervisor;
  if (counts_itself) {
    totals.cpu_seconds += static_cast<double>(stat.utime + stat.stime) / ticks;
    totals.memory += stat.rss_pages * page_size();
    ++totals.processes;
    std::snprintf(path, sizeof path, "/proc/%d/status", pid);
    totals.largest_peak =
        std::max(totals.largest_peak,
                 value_after(read_once(path, buffer_, sizeof buffer_), "VmHWM:") * 1024);
  }
  totals.cpu_seconds += static_cast<double>(stat.cutime + stat.cstime) / ticks;
  std::snprintf(path, sizeof path, "/proc/%d/io", pid);
  auto io = read_once(path, buffer_, sizeof buffer_);
  totals.read += value_after(io, "read_bytes:");
  totals.written += value_after(io, "write_bytes:");
  add_children(pid, stat.threads);
}

void RunSampler::add_children(pid_t pid, std::uint64_t threads) {
  char path[96];
  auto add_from = [&](const char* file) {
    Scanner scan(read_once(file, buffer_, sizeof buffer_));
    while (pids_.size() < kMaxRunProcesses) {
      auto child = scan.number();
      if (child == 0) break;
      pids_.push_back(static_cast<pid_t>(child));
    }
  };
  if (threads <= 1) {
    std::snprintf(path, sizeof path, "/proc/%d/task/%d/children", pid, pid);
    add_from(path);
    return;
  }
  // A child belongs to the thread that forked it, so every thread's list is read.
  std::snprintf(path, sizeof path, "/proc/%d/task", pid);
  std::error_code ec;
  for (fs::directory_iterator it(path, ec), end; !ec && it != end; it.increment(ec)) {
    std::snprintf(path, sizeof path, "/proc/%d/task/%s/children", pid,
                  it->path().filename().c_str());
    add_from(path);
  }
}

bool RunSampler::read_cgroup(Totals& totals) {
  const fs::path& dir = *cgroup_;
  auto read = [&](const char* name) {
    return read_once((dir / name).c_str(), buffer_, sizeof buffer_);
  };
  auto cpu = read("cpu.stat");
  if (cpu.empty()) return false;  // the cgroup is gone
  totals.cpu_seconds = static_cast<double>(value_after(cpu, "usage_usec ")) / 1e6;
  if (auto current = read("memory.current"); !current.empty()) {
    totals.memory = Scanner(current).number();
    if (auto peak = read("memory.peak"); !peak.empty())
      totals.largest_peak = std::max(totals.largest_peak, Scanner(peak).number());
  }
  if (auto io = read("io.stat"); !io.empty()) {
    totals.read = totals.written = 0;
    Scanner lines(io);
    while (!lines.done()) {
      Scanner words(lines.rest_of_line());  // "8:0 rbytes=1 wbytes=2 rios=3 wios=4 ..."
      for (auto word = words.word(); !word.empty(); word = words.word()) {
        if (word.rfind("rbytes=", 0) == 0) totals.read += Scanner(word.substr(7)).number();
        if (word.rfind("wbytes=", 0) == 0) totals.written += Scanner(word.substr(7)).number();
      }
      lines.next_line();
    }
  }
  auto procs = read("cgroup.procs");
  totals.processes = static_cast<std::uint64_t>(std::count(procs.begin(), procs.end(), '\n'));
  return true;
}

}  // namespace amlnode::metrics
