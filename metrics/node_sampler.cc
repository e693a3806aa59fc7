#include "metrics/node_sampler.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

namespace amlnode::metrics {

namespace fs = std::filesystem;

namespace {

// /proc/stat on a large machine has a long `intr` line between the CPU lines and the counters
// after them; this holds all of it on any machine we know of.
constexpr std::size_t kStatBufferSize = 256 * 1024;

std::string slurp(const char* path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// mountinfo writes spaces and other bytes in paths as \ooo.
std::string unescape_mount_path(std::string_view text) {
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\\' && i + 3 < text.size()) {
      int value = 0;
      bool octal = true;
      for (std::size_t k = 1; k <= 3 && octal; ++k) {
        char c = text[i + k];
        octal = c >= '0' && c <= '7';
        value = value * 8 + (c - '0');
      }
      if (octal) {
        out.push_back(static_cast<char>(value));
        i += 3;
        continue;
      }
    }
    out.push_back(text[i]);
  }
  return out;
}

bool is_under(const std::string& path, const std::string& mount_point) {
  if (mount_point == "/") return true;
  return path.compare(0, mount_point.size(), mount_point) == 0 &&
         (path.size() == mount_point.size() || path[mount_point.size()] == '/');
}

struct MountEntry {
  unsigned major = 0, minor = 0;
  std::string source;
};

// The mount that holds `path`: the longest mount point above it (the later of equal ones, since a
// later mount hides an earlier one at the same place).
MountEntry mount_of(const std::string& path) {
  std::string text = slurp("/proc/self/mountinfo");
  MountEntry best;
  std::size_t best_length = 0;
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    std::istringstream fields(line);
    std::string id, parent, device, root, mount_point, word;
    fields >> id >> parent >> device >> root >> mount_point;
    std::string point = unescape_mount_path(mount_point);
    if (!is_under(path, point) || point.size() < best_length) continue;
    while (fields >> word && word != "-") {
    }
    std::string fstype, source;
    fields >> fstype >> source;
    best_length = point.size();
    best = MountEntry{};
    std::sscanf(device.c_str(), "%u:%u", &best.major, &best.minor);
    best.source = source;
  }
  return best;
}

}  // namespace

double ticks_per_second() {
  static const double ticks = [] {
    long value = ::sysconf(_SC_CLK_TCK);
    return value > 0 ? static_cast<double>(value) : 100.0;
  }();
  return ticks;
}

std::string block_device_of(const fs::path& path) {
  std::error_code ec;
  auto canonical = fs::weakly_canonical(path, ec);
  MountEntry mount = mount_of(ec ? path.string() : canonical.string());
  std::string source_name;
  if (mount.source.rfind("/dev/", 0) == 0) source_name = fs::path(mount.source).filename();
  std::istringstream lines(slurp("/proc/diskstats"));
  std::string line;
  while (std::getline(lines, line)) {
    unsigned major = 0, minor = 0;
    char name[64] = {};
    if (std::sscanf(line.c_str(), "%u %u %63s", &major, &minor, name) != 3) continue;
    bool same_number = mount.major != 0 && major == mount.major && minor == mount.minor;
    if (same_number || (!source_name.empty() && source_name == name)) return name;
  }
  return {};
}

NodeSampler::NodeSampler(fs::path state_dir)
    : state_dir_(std::move(state_dir)),
      disk_(block_device_of(state_dir_)),
      buffer_(new char[kStatBufferSize]),
      stat_("/proc/stat"),
      meminfo_("/proc/meminfo"),
      loadavg_("/proc/loadavg"),
      diskstats_("/proc/diskstats"),
      net_dev_("/proc/net/dev"),
      proc_dir_(::open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC)) {}

NodeSampler::~NodeSampler() {
  if (proc_dir_ >= 0) ::close(proc_dir_);
}

void NodeSampler::sample(NodeSample& out, std::int64_t now_ms) {
  out.time_ms = now_ms;
  read_stat(out);
  read_meminfo(out);
  read_loadavg(out);
  read_filesystem(out);
  read_diskstats(out);
  read_net(out);
  count_processes(out);
}

namespace {

void parse_cpu_line(Scanner& scan, CpuTicks& ticks) {
  ticks.user = scan.number();
  ticks.nice = scan.number();
  ticks.system = scan.number();
  ticks.idle = scan.number();
  ticks.iowait = scan.number();
  ticks.irq = scan.number();
  ticks.softirq = scan.number();
  ticks.steal = scan.number();
}

}  // namespace

void NodeSampler::read_stat(NodeSample& out) {
  Scanner scan(stat_.read(buffer_.get(), kStatBufferSize));
  std::size_t cores = 0;
  while (!scan.done()) {
    if (scan.consume("cpu ")) {
      parse_cpu_line(scan, out.cpu);
    } else if (scan.consume("cpu")) {
      scan.number();  // the CPU's number; lines come in order, offline CPUs are left out
      if (out.cores.size() <= cores) out.cores.resize(cores + 1);
      parse_cpu_line(scan, out.cores[cores++]);
    } else if (scan.consume("ctxt ")) {
      out.context_switches = scan.number();
    } else if (scan.consume("processes ")) {
      out.forks = scan.number();
    } else if (scan.consume("procs_running ")) {
      out.procs_running = scan.number();
    } else if (scan.consume("procs_blocked ")) {
      out.procs_blocked = scan.number();
    }
    scan.next_line();
  }
  out.cores.resize(cores);
}

void NodeSampler::read_meminfo(NodeSample& out) {
  auto text = meminfo_.read(buffer_.get(), kProcBufferSize);
  out.memory_total = value_after(text, "MemTotal:") * 1024;
  out.memory_free = value_after(text, "MemFree:") * 1024;
  out.memory_available = value_after(text, "MemAvailable:") * 1024;
  out.memory_buffers = value_after(text, "Buffers:") * 1024;
  out.memory_cached = value_after(text, "Cached:") * 1024;
  out.swap_total = value_after(text, "SwapTotal:") * 1024;
  out.swap_free = value_after(text, "SwapFree:") * 1024;
}

void NodeSampler::read_loadavg(NodeSample& out) {
  Scanner scan(loadavg_.read(buffer_.get(), kProcBufferSize));
  out.load1 = scan.decimal();
  out.load5 = scan.decimal();
  out.load15 = scan.decimal();
}

void NodeSampler::read_filesystem(NodeSample& out) {
  struct statvfs info {};
  if (::statvfs(state_dir_.c_str(), &info) != 0) return;
  out.fs_size = static_cast<std::uint64_t>(info.f_blocks) * info.f_frsize;
  out.fs_free = static_cast<std::uint64_t>(info.f_bfree) * info.f_frsize;
  out.fs_available = static_cast<std::uint64_t>(info.f_bavail) * info.f_frsize;
  out.fs_files = info.f_files;
  out.fs_files_free = info.f_ffree;
}

void NodeSampler::read_diskstats(NodeSample& out) {
  out.disk_found = false;
  if (disk_.empty()) return;
  Scanner scan(diskstats_.read(buffer_.get(), kProcBufferSize));
  while (!scan.done()) {
    scan.number();
    scan.number();
    if (scan.word() == disk_) {
      out.disk_found = true;
      std::snprintf(out.disk_name, sizeof out.disk_name, "%s", disk_.c_str());
      out.disk_reads = scan.number();
      scan.number();  // merged
      out.disk_read_bytes = scan.number() * 512;
      scan.number();  // ms reading
      out.disk_writes = scan.number();
      scan.number();  // merged
      out.disk_written_bytes = scan.number() * 512;
      scan.number();  // ms writing
      scan.number();  // in progress
      out.disk_io_ms = scan.number();
      return;
    }
    scan.next_line();
  }
}

void NodeSampler::read_net(NodeSample& out) {
  Scanner scan(net_dev_.read(buffer_.get(), kProcBufferSize));
  scan.next_line();  // two header lines
  scan.next_line();
  std::size_t count = 0;
  while (!scan.done() && count < kMaxNetDevices) {
    scan.skip_spaces();
    auto line = scan.rest_of_line();
    auto colon = line.find(':');
    if (colon == std::string_view::npos) break;
    if (out.net.size() <= count) out.net.resize(count + 1);
    NetDevice& dev = out.net[count++];
    std::size_t length = std::min(colon, sizeof dev.name - 1);
    std::memcpy(dev.name, line.data(), length);
    dev.name[length] = '\0';
    scan.seek(line.data() + colon + 1);
    dev.rx_bytes = scan.number();
    dev.rx_packets = scan.number();
    dev.rx_errors = scan.number();
    dev.rx_dropped = scan.number();
    for (int skip = 0; skip < 4; ++skip) scan.number();  // fifo frame compressed multicast
    dev.tx_bytes = scan.number();
    dev.tx_packets = scan.number();
    dev.tx_errors = scan.number();
    dev.tx_dropped = scan.number();
    scan.next_line();
  }
  out.net.resize(count);
}

void NodeSampler::count_processes(NodeSample& out) {
  out.processes = 0;
  if (proc_dir_ < 0 || ::lseek(proc_dir_, 0, SEEK_SET) != 0) return;
  char* buf = buffer_.get();
  for (;;) {
    long n = ::syscall(SYS_getdents64, proc_dir_, buf, kProcBufferSize);
    if (n <= 0) break;
    for (long at = 0; at < n;) {
      // struct linux_dirent64: ino (8), off (8), reclen (2), type (1), name.
      unsigned short reclen;
      std::memcpy(&reclen, buf + at + 16, sizeof reclen);
      const char* name = buf + at + 19;
      if (name[0] >= '1' && name[0] <= '9') ++out.processes;
      at += reclen;
    }
  }
}

}  // namespace amlnode::metrics
