#include "executors/run_cgroup.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "common/fs.h"
#include "common/hash.h"

namespace amlnode::executors {

namespace fs = std::filesystem;

namespace {

constexpr auto kEmptyWait = std::chrono::seconds(5);

// The mount point of the cgroup2 hierarchy, from /proc/self/mountinfo ("" when there is none).
std::string v2_mount_point() {
  std::ifstream in("/proc/self/mountinfo");
  std::string best;
  for (std::string line; std::getline(in, line);) {
    auto dash = line.find(" - ");
    if (dash == std::string::npos || line.compare(dash + 3, 8, "cgroup2 ") != 0) continue;
    std::istringstream fields(line);
    std::string id, parent, dev, root, mount;
    fields >> id >> parent >> dev >> root >> mount;
    // /sys/fs/cgroup (pure v2) wins over another mount of the same hierarchy.
    if (best.empty() || mount == "/sys/fs/cgroup") best = mount;
  }
  return best;
}

// This process's cgroup in the v2 hierarchy ("0::/path" in /proc/self/cgroup).
std::string own_v2_cgroup() {
  std::ifstream in("/proc/self/cgroup");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("0::", 0) == 0) return line.substr(3);
  return "";
}

Result<void> write_text(const fs::path& file, const std::string& text) {
  int fd = ::open(file.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return Error{"CgroupError", errno_message("open", file, errno)};
  auto written = write_all_to(fd, text, file);
  ::close(fd);
  return written;
}

std::size_t count_processes(const fs::path& cgroup) {
  std::ifstream in(cgroup / "cgroup.procs");
  std::size_t count = 0;
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) ++count;
  return count;
}

bool populated(const fs::path& cgroup) {
  std::ifstream in(cgroup / "cgroup.events");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("populated ", 0) == 0) return line != "populated 0";
  return false;
}

CgroupSupport detect() {
  CgroupSupport support;
  if (const char* off = std::getenv("AMLNODE_RUN_CGROUPS"); off && std::string(off) == "0") {
    support.why_not = "turned off ($AMLNODE_RUN_CGROUPS=0)";
    return support;
  }
  std::string mount = v2_mount_point();
  if (mount.empty()) {
    support.why_not = "no cgroup v2 hierarchy is mounted";
    return support;
  }
  std::string own = own_v2_cgroup();
  support.base = fs::path(mount) / fs::path(own).relative_path() / "amlnode-runs";
  std::error_code ec;
  fs::create_directories(support.base, ec);
  if (ec) {
    support.why_not = "cannot make " + support.base.string() + ": " + ec.message() +
                      " (the service needs Delegate=yes, or root)";
    return support;
  }
  // A probe: a child can be made here, and the kernel has cgroup.kill (Linux 5.14).
  fs::path probe = support.base / ("probe-" + std::to_string(::getpid()));
  fs::create_directory(probe, ec);
  bool killable = !ec && fs::exists(probe / "cgroup.kill");
  ::rmdir(probe.c_str());
  if (ec || !killable) {
    support.why_not = ec ? "cannot make a cgroup in " + support.base.string() + ": " + ec.message()
                         : "the kernel has no cgroup.kill (Linux 5.14 or later is needed)";
    return support;
  }
  support.available = true;
  return support;
}

}  // namespace

const CgroupSupport& run_cgroup_support() {
  static const CgroupSupport support = detect();
  return support;
}

std::optional<fs::path> run_cgroup_path(const fs::path& run_dir) {
  const auto& support = run_cgroup_support();
  if (!support.available) return std::nullopt;
  return support.base /
         ("run-" + sha256_hex(fs::absolute(run_dir).lexically_normal().string()).substr(0, 24));
}

Result<void> create_run_cgroup(const fs::path& cgroup) {
  if (auto ended = end_run_cgroup(cgroup); !ended) return ended.error();
  if (::mkdir(cgroup.c_str(), 0755) != 0)
    return Error{"CgroupError", errno_message("mkdir", cgroup, errno)};
  return ok();
}

Result<std::size_t> end_run_cgroup(const fs::path& cgroup) {
  std::error_code ec;
  if (!fs::exists(cgroup / "cgroup.procs", ec)) return std::size_t{0};
  std::size_t held = count_processes(cgroup);
  if (held > 0) {
    // The kernel tells a change of cgroup.events as a modification of the file: the wait ends
    // the moment the last process is gone.
    UniqueFd events(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
    if (events) ::inotify_add_watch(events.get(), (cgroup / "cgroup.events").c_str(), IN_MODIFY);
    if (auto killed = write_text(cgroup / "cgroup.kill", "1"); !killed) return killed.error();
    auto deadline = std::chrono::steady_clock::now() + kEmptyWait;
    while (populated(cgroup)) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) break;
      pollfd ready{events.get(), POLLIN, 0};
      // Without inotify, a short poll of nothing stands in for the event.
      if (!events) ready.fd = -1;
      ::poll(&ready, 1, events ? static_cast<int>(left.count()) : 10);
      char drained[4096];
      while (events && ::read(events.get(), drained, sizeof drained) > 0) {
      }
    }
  }
  if (::rmdir(cgroup.c_str()) != 0 && errno != ENOENT)
    return Error{"CgroupError", errno_message("rmdir", cgroup, errno)};
  return held;
}

}  // namespace amlnode::executors
