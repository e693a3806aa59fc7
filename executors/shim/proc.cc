#include "executors/shim/proc.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

namespace amlnode::executors::proc {
namespace {

// Reads a small /proc file into `buf` and returns its length, or -1. /proc/<pid>/stat is a few
// hundred bytes (the command name is at most 64), so one read into a fixed buffer is enough and
// costs no allocation.
ssize_t read_small(const char* path, char* buf, std::size_t size) {
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n;
  do {
    n = ::read(fd, buf, size - 1);
  } while (n < 0 && errno == EINTR);
  ::close(fd);
  if (n >= 0) buf[n] = '\0';
  return n;
}

// Parses a decimal number at `p`, advancing it; false if there is none.
bool parse_number(const char*& p, const char* end, unsigned long long& out) {
  if (p >= end || *p < '0' || *p > '9') return false;
  unsigned long long value = 0;
  while (p < end && *p >= '0' && *p <= '9') value = value * 10 + static_cast<unsigned>(*p++ - '0');
  out = value;
  return true;
}

bool parse_pid_name(const char* name, pid_t& pid) {
  unsigned long long value = 0;
  const char* p = name;
  const char* end = name + std::strlen(name);
  if (!parse_number(p, end, value) || p != end || value == 0) return false;
  pid = static_cast<pid_t>(value);
  return true;
}

int pidfd_send_signal(int pidfd, int sig) {
#ifdef SYS_pidfd_send_signal
  return static_cast<int>(::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0));
#else
  errno = ENOSYS;
  return -1;
#endif
}

// Every process on the machine (pid, ppid, state, start time).
std::vector<Stat> list_processes() {
  std::vector<Stat> all;
  DIR* dir = ::opendir("/proc");
  if (!dir) return all;
  all.reserve(512);
  while (struct dirent* entry = ::readdir(dir)) {
    pid_t pid = 0;
    if (!parse_pid_name(entry->d_name, pid)) continue;
    // A process can exit between readdir and read_stat; it is then simply not listed.
    if (auto stat = read_stat(pid)) all.push_back(*stat);
  }
  ::closedir(dir);
  return all;
}

}  // namespace

std::optional<Stat> parse_stat(const char* text, std::size_t length) {
  const char* end = text + length;
  const char* close = nullptr;
  for (const char* p = text; p < end; ++p) {
    if (*p == ')') close = p;
  }
  if (!close) return std::nullopt;
  Stat stat;
  unsigned long long pid = 0;
  const char* p = text;
  if (!parse_number(p, end, pid)) return std::nullopt;
  stat.pid = static_cast<pid_t>(pid);
  // After ") " come field 3 (state), field 4 (ppid), ... field 22 (starttime).
  p = close + 1;
  for (int field = 3; field <= 22; ++field) {
    while (p < end && *p == ' ') ++p;
    if (p >= end) return std::nullopt;
    if (field == 3) {
      stat.state = *p;
    } else if (field == 4 || field == 22) {
      // ppid is 0 for processes started by the kernel; negative values never occur.
      unsigned long long value = 0;
      if (!parse_number(p, end, value)) return std::nullopt;
      if (field == 4) stat.ppid = static_cast<pid_t>(value);
      if (field == 22) stat.start_time = value;
    }
    while (p < end && *p != ' ') ++p;
  }
  return stat;
}

std::optional<Stat> read_stat(pid_t pid) {
  char path[40];
  if (pid == 0) {
    std::snprintf(path, sizeof path, "/proc/self/stat");
  } else {
    std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
  }
  char buf[1024];
  ssize_t n = read_small(path, buf, sizeof buf);
  if (n <= 0) return std::nullopt;
  return parse_stat(buf, static_cast<std::size_t>(n));
}

std::vector<Stat> list_descendants(pid_t root) {
  std::vector<Stat> all = list_processes();
  // Sorted by parent, the children of any process are one equal_range, so the walk stays
  // O(n log n) even for a run with thousands of processes (a fork bomb, a big data loader pool).
  auto by_parent = [](const Stat& a, const Stat& b) { return a.ppid < b.ppid; };
  std::sort(all.begin(), all.end(), by_parent);
  // Breadth-first over the ppid links; `found` doubles as the queue. Each process has one parent,
  // so nothing is visited twice.
  std::vector<Stat> found;
  Stat key;
  key.ppid = root;
  for (std::size_t next = 0;; ++next) {
    auto [first, last] = std::equal_range(all.begin(), all.end(), key, by_parent);
    found.insert(found.end(), first, last);
    if (next == found.size()) break;
    key.ppid = found[next].pid;
  }
  return found;
}

int pidfd_open(pid_t pid) {
#ifdef SYS_pidfd_open
  return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
#else
  errno = ENOSYS;
  return -1;
#endif
}

bool signal_exact(const Stat& target, int sig) {
  int fd = pidfd_open(target.pid);
  if (fd < 0) {
    if (errno == ESRCH) return false;
    // No pidfds (kernel before 5.3): check and signal by pid, which leaves a window of
    // microseconds in which the pid could be reused.
    auto now = read_stat(target.pid);
    return now && now->start_time == target.start_time && ::kill(target.pid, sig) == 0;
  }
  // The pidfd pins one process. If it is the one we listed (same start time), the signal cannot
  // reach anyone else, even if the pid is reused right after.
  auto now = read_stat(target.pid);
  bool same = now && now->start_time == target.start_time;
  bool sent = same && pidfd_send_signal(fd, sig) == 0;
  ::close(fd);
  return sent;
}

int signal_descendants(pid_t root, int sig) {
  int count = 0;
  for (const Stat& stat : list_descendants(root)) {
    if (stat.state == 'Z' || stat.state == 'X') continue;
    if (signal_exact(stat, sig)) ++count;
  }
  return count;
}

}  // namespace amlnode::executors::proc
