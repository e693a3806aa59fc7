#include "agent/daemon/footprint.h"

#include <malloc.h>
#include <sys/mman.h>

#include <fstream>
#include <sstream>
#include <string>

namespace amlnode::agent {

namespace {

constexpr int kArenas = 2;
constexpr int kMmapThreshold = 256 * 1024;
constexpr int kTrimThreshold = 256 * 1024;

struct Mapping {
  unsigned long start = 0;
  unsigned long end = 0;
  std::string perms;
  bool file_backed = false;
  unsigned long private_dirty_kb = 0;
  unsigned long anonymous_kb = 0;
};

// A mapping that only ever holds clean pages of a file: read-only, never written (no dirty or
// copied-on-write pages, as relocated RELRO pages would be). Dropping its pages loses nothing;
// a page needed again is mapped again from the page cache.
bool droppable(const Mapping& m) {
  return m.file_backed && (m.perms == "r-xp" || m.perms == "r--p") && m.private_dirty_kb == 0 &&
         m.anonymous_kb == 0;
}

void drop(const Mapping& m) {
  if (droppable(m)) ::madvise(reinterpret_cast<void*>(m.start), m.end - m.start, MADV_DONTNEED);
}

}  // namespace

void tune_allocator_for_daemon() {
  ::mallopt(M_ARENA_MAX, kArenas);
  ::mallopt(M_MMAP_THRESHOLD, kMmapThreshold);
  ::mallopt(M_TRIM_THRESHOLD, kTrimThreshold);
}

void release_free_memory() {
  ::malloc_trim(0);
  std::ifstream smaps("/proc/self/smaps");
  Mapping current;
  bool have = false;
  for (std::string line; std::getline(smaps, line);) {
    std::istringstream fields(line);
    std::string first;
    fields >> first;
    if (first.find('-') != std::string::npos && first.back() != ':') {
      if (have) drop(current);
      current = Mapping{};
      have = true;
      current.start = std::stoul(first.substr(0, first.find('-')), nullptr, 16);
      current.end = std::stoul(first.substr(first.find('-') + 1), nullptr, 16);
      std::string offset, device, inode, path;
      fields >> current.perms >> offset >> device >> inode >> path;
      current.file_backed = inode != "0" && !path.empty() && path[0] == '/';
    } else if (first == "Private_Dirty:") {
      fields >> current.private_dirty_kb;
    } else if (first == "Anonymous:") {
      fields >> current.anonymous_kb;
    }
  }
  if (have) drop(current);
}

}  // namespace amlnode::agent
