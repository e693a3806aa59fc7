#pragma once

// The on-disk layout of the environment cache, shared by building (cache.cc) and by listing and
// eviction (inventory.cc). Under <state_dir>/envs:
//
//   <hash>/                    the environment's prefix; conda and venv write their absolute prefix
//                              into scripts and binaries, so it is built where it will be used
//   <hash>/amlnode-env.json    the marker, written last: only a prefix with it is an environment;
//                              its modification time is the last-used time
//   <hash>.lock                flock held exclusively while <hash> is built or evicted
//   <hash>.inuse               flock held shared by every run using <hash> (its lease), and
//                              exclusively by eviction
//   .build-<hash>.yml          the environment file of a conda build from a dependencies file
//   .trash-<hash>-<pid>-<n>    a prefix being deleted; renamed here first so that deletion, however
//                              far it gets, never leaves a half-deleted <hash>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

namespace amlnode::executors::environments {

inline constexpr const char* kMarkerName = "amlnode-env.json";
inline constexpr int kMarkerSchema = 1;

struct EnvPaths {
  std::filesystem::path prefix;
  std::filesystem::path marker;
  std::filesystem::path build_lock;
  std::filesystem::path lease_lock;
  std::filesystem::path environment_file;
};

EnvPaths env_paths(const std::filesystem::path& envs_dir, const std::string& hash);

// Whether `name` is a cache entry's name: 32 lower-case hex digits (see environment_spec).
bool is_hash_name(std::string_view name);

// Renames `dir` to a .trash- name beside it, then deletes it. Failures are ignored: a later sweep
// deletes what is left of any .trash- folder.
void discard(const std::filesystem::path& envs_dir, const std::filesystem::path& dir);

// The marker's content, or nullopt when there is none (or it cannot be read).
std::optional<nlohmann::json> read_marker(const std::filesystem::path& marker);

// The marker's modification time: when the environment was last used.
std::optional<std::chrono::system_clock::time_point> last_used_time(
    const std::filesystem::path& marker);

// Whether somebody holds a lock on `path` (a non-blocking exclusive attempt fails). A missing file
// is not held.
bool lock_is_held(const std::filesystem::path& path);

// Clears everything interrupted builds and evictions can leave in the cache folder: .trash-
// folders, incomplete prefixes nobody is building (killing their leftover installers), and lock
// files of hashes without a prefix that nobody holds. Returns how many were removed.
std::size_t sweep_leftovers(const std::filesystem::path& envs_dir);

// What a prefix occupies on disk (allocated blocks; files hard-linked within it counted once,
// which takes one set entry per multiply-linked file while it runs).
std::uint64_t disk_usage(const std::filesystem::path& dir);

}  // namespace amlnode::executors::environments
