// Listing and eviction: the EnvironmentCache functions behind `amlnode env list` and
// `amlnode env prune`, and the cleanup of what interrupted builds leave behind.

#include <unistd.h>

#include <algorithm>
#include <atomic>

#include "common/clock.h"
#include "executors/environments/cache.h"
#include "executors/environments/layout.h"

namespace amlnode::executors::environments {
namespace {

namespace fs = std::filesystem;

std::chrono::system_clock::time_point from_millis(long long ms) {
  return std::chrono::system_clock::time_point(std::chrono::milliseconds(ms));
}

CachedEnvironment ready_entry(const std::string& hash, const EnvPaths& paths,
                              const nlohmann::json& marker) {
  CachedEnvironment entry;
  entry.hash = hash;
  entry.path = paths.prefix;
  entry.kind = marker.value("kind", std::string("unknown"));
  entry.tool = marker.value("tool", std::string());
  entry.size_bytes = marker.value("size_bytes", std::uint64_t{0});
  entry.created = from_millis(marker.value("created_ms", 0LL));
  entry.last_used = last_used_time(paths.marker).value_or(entry.created);
  entry.in_use = lock_is_held(paths.lease_lock);
  entry.state = CacheEntryState::Ready;
  return entry;
}

CachedEnvironment building_entry(const std::string& hash, const EnvPaths& paths) {
  CachedEnvironment entry;
  entry.hash = hash;
  entry.path = paths.prefix;
  entry.kind = "unknown";
  entry.in_use = true;
  entry.state = CacheEntryState::Building;
  return entry;
}

// Removes an incomplete prefix (no marker) nobody is building: what a killed build left.
bool clear_incomplete(const fs::path& envs_dir, const std::string& hash) {
  auto paths = env_paths(envs_dir, hash);
  auto lock = FileLock::try_acquire(paths.build_lock, LockMode::Exclusive, true);
  std::error_code ec;
  if (!lock || !lock->has_value() || fs::exists(paths.marker, ec)) return false;
  kill_tagged_processes(paths.prefix.string());
  discard(envs_dir, paths.prefix);
  fs::remove(paths.environment_file, ec);
  (*lock)->remove_file();
  return true;
}

// Deletes the lock files of a hash that has no prefix, when nobody holds them. They are deleted
// while held exclusively, as file_lock.h requires.
bool clear_stale_locks(const fs::path& envs_dir, const std::string& hash) {
  auto paths = env_paths(envs_dir, hash);
  auto build = FileLock::try_acquire(paths.build_lock, LockMode::Exclusive, false);
  auto lease = FileLock::try_acquire(paths.lease_lock, LockMode::Exclusive, false);
  std::error_code ec;
  if (!build || !lease || fs::exists(paths.prefix, ec)) return false;
  bool removed = false;
  for (auto* lock : {&*build, &*lease}) {
    if (lock->has_value()) {
      (*lock)->remove_file();
      removed = true;
    }
  }
  return removed;
}

std::string hash_of_lock_file(const std::string& name) {
  for (const char* suffix : {".lock", ".inuse"}) {
    std::string_view text(name);
    if (text.ends_with(suffix)) {
      auto stem = text.substr(0, text.size() - std::string_view(suffix).size());
      if (is_hash_name(stem)) return std::string(stem);
    }
  }
  return {};
}

}  // namespace

std::size_t sweep_leftovers(const fs::path& envs_dir) {
  std::size_t removed = 0;
  std::error_code ec;
  std::vector<fs::path> entries;
  for (const auto& entry : fs::directory_iterator(envs_dir, ec)) entries.push_back(entry.path());
  for (const auto& path : entries) {
    const std::string name = path.filename().string();
    if (name.starts_with(".trash-")) {
      fs::remove_all(path, ec);
      ++removed;
    } else if (is_hash_name(name) && fs::is_directory(path, ec)) {
      if (!fs::exists(path / kMarkerName, ec) && clear_incomplete(envs_dir, name)) ++removed;
    } else if (auto hash = hash_of_lock_file(name); !hash.empty()) {
      if (clear_stale_locks(envs_dir, hash)) ++removed;
    }
  }
  return removed;
}

namespace {

// Deletes one environment if nobody uses or builds it. The prefix is renamed away while both of
// its locks are held exclusively, so a run either got its lease before (and the environment is
// kept) or finds it gone afterwards (and builds it again).
bool evict(const fs::path& envs_dir, const std::string& hash) {
  auto paths = env_paths(envs_dir, hash);
  auto build = FileLock::try_acquire(paths.build_lock, LockMode::Exclusive, true);
  if (!build || !build->has_value()) return false;
  auto lease = FileLock::try_acquire(paths.lease_lock, LockMode::Exclusive, true);
  if (!lease || !lease->has_value()) return false;
  std::error_code ec;
  if (!fs::exists(paths.marker, ec)) return false;  // another prune got there first
  static std::atomic<unsigned> counter{0};
  fs::path trash = envs_dir / (".trash-" + hash + "-" + std::to_string(::getpid()) + "-" +
                               std::to_string(counter++));
  fs::rename(paths.prefix, trash, ec);
  if (ec) return false;
  (*lease)->remove_file();
  (*build)->remove_file();
  lease->reset();
  build->reset();
  fs::remove_all(trash, ec);
  return true;
}

}  // namespace

nlohmann::json to_json(const CachedEnvironment& entry) {
  return {{"hash", entry.hash},
          {"kind", entry.kind},
          {"path", entry.path.string()},
          {"size_bytes", entry.size_bytes},
          {"created", format_utc(entry.created)},
          {"last_used", format_utc(entry.last_used)},
          {"in_use", entry.in_use},
          {"state", entry.state == CacheEntryState::Ready ? "ready" : "building"},
          {"tool", entry.tool}};
}

nlohmann::json to_json(const PruneReport& report) {
  nlohmann::json evicted = nlohmann::json::array();
  for (const auto& entry : report.evicted) evicted.push_back(to_json(entry));
  nlohmann::json kept = nlohmann::json::array();
  for (const auto& entry : report.kept_in_use) kept.push_back(to_json(entry));
  return {{"evicted", evicted},
          {"kept_in_use", kept},
          {"freed_bytes", report.freed_bytes},
          {"remaining_bytes", report.remaining_bytes},
          {"leftovers_removed", report.leftovers_removed}};
}

Result<std::vector<CachedEnvironment>> EnvironmentCache::list() const {
  std::vector<CachedEnvironment> out;
  std::error_code ec;
  if (!fs::exists(config_.envs_dir, ec)) return out;
  fs::directory_iterator it(config_.envs_dir, ec);
  if (ec) {
    return Error{"IoError", "cannot list " + config_.envs_dir.string() + ": " + ec.message()};
  }
  for (const auto& dir : it) {
    const std::string name = dir.path().filename().string();
    if (!is_hash_name(name) || !dir.is_directory(ec)) continue;
    auto paths = env_paths(config_.envs_dir, name);
    if (auto marker = read_marker(paths.marker)) {
      out.push_back(ready_entry(name, paths, *marker));
    } else if (lock_is_held(paths.build_lock)) {
      out.push_back(building_entry(name, paths));
    }
  }
  std::sort(out.begin(), out.end(),
            [](const auto& a, const auto& b) { return a.last_used > b.last_used; });
  return out;
}

Result<PruneReport> EnvironmentCache::prune(const PruneOptions& options) const {
  PruneReport report;
  std::error_code ec;
  if (!fs::exists(config_.envs_dir, ec)) return report;
  if (!options.dry_run) report.leftovers_removed = sweep_leftovers(config_.envs_dir);
  auto entries = list();
  if (!entries) return entries.error();
  std::vector<CachedEnvironment> ready;
  for (auto& entry : *entries) {
    if (entry.state == CacheEntryState::Ready) ready.push_back(std::move(entry));
  }
  std::sort(ready.begin(), ready.end(),
            [](const auto& a, const auto& b) { return a.last_used < b.last_used; });
  for (const auto& entry : ready) report.remaining_bytes += entry.size_bytes;
  auto budget = options.budget_bytes ? options.budget_bytes : config_.disk_budget_bytes;
  if (!budget) return report;
  for (const auto& entry : ready) {
    if (report.remaining_bytes <= *budget) break;
    bool evicted = !entry.in_use && (options.dry_run || evict(config_.envs_dir, entry.hash));
    if (!evicted) {
      report.kept_in_use.push_back(entry);
      continue;
    }
    report.evicted.push_back(entry);
    report.freed_bytes += entry.size_bytes;
    report.remaining_bytes -= entry.size_bytes;
  }
  return report;
}

}  // namespace amlnode::executors::environments
