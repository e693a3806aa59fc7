#include "executors/environments/layout.h"

#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <set>
#include <utility>

#include "common/fs.h"
#include "common/json.h"
#include "executors/environments/file_lock.h"

namespace amlnode::executors::environments {
namespace {

namespace fs = std::filesystem;

constexpr std::size_t kHashLength = 32;
// Markers are a few kilobytes (the identity is the largest part).
constexpr std::size_t kMaxMarkerBytes = 1 << 20;

std::chrono::system_clock::time_point to_time_point(const timespec& ts) {
  return std::chrono::system_clock::time_point(
      std::chrono::duration_cast<std::chrono::system_clock::duration>(
          std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec)));
}

}  // namespace

EnvPaths env_paths(const fs::path& envs_dir, const std::string& hash) {
  return EnvPaths{envs_dir / hash, envs_dir / hash / kMarkerName, envs_dir / (hash + ".lock"),
                  envs_dir / (hash + ".inuse"), envs_dir / (".build-" + hash + ".yml")};
}

bool is_hash_name(std::string_view name) {
  return name.size() == kHashLength &&
         name.find_first_not_of("0123456789abcdef") == std::string_view::npos;
}

void discard(const fs::path& envs_dir, const fs::path& dir) {
  static std::atomic<unsigned> counter{0};
  fs::path trash = envs_dir / (".trash-" + dir.filename().string() + "-" +
                               std::to_string(::getpid()) + "-" + std::to_string(counter++));
  std::error_code ec;
  fs::rename(dir, trash, ec);
  if (ec) {
    if (ec == std::errc::no_such_file_or_directory) return;
    trash = dir;  // cannot move it aside (another file system?): delete it where it is
  }
  fs::remove_all(trash, ec);
}

std::optional<nlohmann::json> read_marker(const fs::path& marker) {
  auto text = read_file(marker, kMaxMarkerBytes);
  if (!text) return std::nullopt;
  auto json = parse_untrusted_json(*text);
  if (json.is_discarded() || !json.is_object()) return std::nullopt;
  return json;
}

std::optional<std::chrono::system_clock::time_point> last_used_time(const fs::path& marker) {
  struct stat st {};
  if (::stat(marker.c_str(), &st) != 0) return std::nullopt;
  return to_time_point(st.st_mtim);
}

bool lock_is_held(const fs::path& path) {
  auto lock = FileLock::try_acquire(path, LockMode::Exclusive, false);
  if (!lock) return false;
  if (lock->has_value()) return false;
  std::error_code ec;
  return fs::exists(path, ec);
}

std::uint64_t disk_usage(const fs::path& dir) {
  std::uint64_t total = 0;
  std::set<std::pair<dev_t, ino_t>> linked;
  std::error_code ec;
  auto add = [&](const fs::path& path) {
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0) return;
    if (!S_ISDIR(st.st_mode) && st.st_nlink > 1 && !linked.insert({st.st_dev, st.st_ino}).second) {
      return;
    }
    total += static_cast<std::uint64_t>(st.st_blocks) * 512;
  };
  add(dir);
  for (fs::recursive_directory_iterator it(dir, fs::directory_options::skip_permission_denied, ec),
       end;
       it != end; it.increment(ec)) {
    if (ec) break;
    add(it->path());
  }
  return total;
}

}  // namespace amlnode::executors::environments
