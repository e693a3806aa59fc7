#pragma once

// The node's cache of conda / pip environments: each built once per content hash into
// <state_dir>/envs/<hash> (see layout.h), reused by every later run without invoking a solver or
// installer, and evicted least-recently-used under a disk budget, never while a run uses it.
//
// Concurrency: runs that need the same new environment wait for a single build (an exclusive flock
// per hash); a run holds a shared flock per hash, its lease, for as long as it uses the
// environment, and eviction only deletes an environment it can lock exclusively. Locks are flocks,
// which the kernel releases when their holder dies, so a crashed build or run never leaves a lock
// behind; a killed build leaves at most an incomplete prefix without its marker, which never counts
// and is cleared by the next build.
//
// Speed: on a hit, prepare() takes the lease, sets the marker's time (which also proves the
// environment complete) and returns: a handful of system calls, no process and no directory walk.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/result.h"
#include "executors/environments/build_log.h"
#include "executors/environments/config.h"
#include "executors/environments/file_lock.h"
#include "executors/environments/installer.h"
#include "executors/environments/spec.h"

namespace amlnode::executors::environments {

// A run's claim on an environment: while it is held the environment is not evicted. It is a shared
// flock, so it ends when released, when destroyed, or when the holding process dies. A process
// that must keep the claim after the agent itself is gone (a detached shim, say) can inherit a
// dup() of fd() with close-on-exec cleared: the lock lasts while any descriptor of it is open.
class EnvironmentLease {
 public:
  EnvironmentLease() = default;
  explicit EnvironmentLease(FileLock lock) : lock_(std::move(lock)) {}

  bool held() const { return lock_ && lock_->held(); }
  int fd() const { return lock_ ? lock_->fd() : -1; }
  void release() { lock_.reset(); }

 private:
  std::optional<FileLock> lock_;
};

// What a run needs from a prepared environment. Keep it (its lease) alive while the run uses it.
struct PreparedEnvironment {
  std::string hash;
  EnvironmentKind kind = EnvironmentKind::Pip;
  std::filesystem::path prefix;
  std::filesystem::path python;  // PREFIX/bin/python: the run's interpreter
  // Set over the run's inherited environment: PATH with PREFIX/bin first, and CONDA_PREFIX and
  // CONDA_DEFAULT_ENV for conda, VIRTUAL_ENV for a venv. Conda activation scripts are not run.
  spec::EnvVars env;
  bool built = false;  // false when an existing environment was reused
  EnvironmentLease lease;
};

// Where a build reports. Nothing is written on a hit.
struct BuildOutput {
  std::filesystem::path log_file;  // the run's system_logs/environment.txt; empty: no file
  ProgressCallback progress;       // each line of installer output, and amlnode's own notes
  // Polled while an installer runs: true stops the build, which then fails "Canceled" and leaves
  // nothing behind. A build this call only waits for (another run's) is not stopped.
  std::function<bool()> canceled;
};

enum class CacheEntryState { Ready, Building };

// One environment of the cache, as `amlnode env list` shows it.
struct CachedEnvironment {
  std::string hash;
  std::string kind;  // "conda" or "pip"
  std::filesystem::path path;
  std::uint64_t size_bytes = 0;  // measured when it was built; 0 while building
  std::chrono::system_clock::time_point created;
  std::chrono::system_clock::time_point last_used;
  bool in_use = false;  // a run holds a lease on it
  CacheEntryState state = CacheEntryState::Ready;
  std::string tool;  // what built it: the conda tool or the system python
};

nlohmann::json to_json(const CachedEnvironment& entry);

struct PruneOptions {
  // Evict least-recently-used environments until the ready ones total at most this many bytes;
  // 0 evicts every environment not in use. nullopt: the configured disk budget, and when none is
  // configured only leftovers of interrupted builds are cleared.
  std::optional<std::uint64_t> budget_bytes;
  bool dry_run = false;  // report what would be evicted, change nothing
};

struct PruneReport {
  std::vector<CachedEnvironment> evicted;      // (dry run: would be) evicted, oldest first
  std::vector<CachedEnvironment> kept_in_use;  // over budget but in use or being built
  std::uint64_t freed_bytes = 0;
  std::uint64_t remaining_bytes = 0;  // total size of the ready environments left
  std::size_t leftovers_removed = 0;  // incomplete prefixes, trash and stale lock files
};

nlohmann::json to_json(const PruneReport& report);

class EnvironmentCache {
 public:
  explicit EnvironmentCache(EnvironmentConfig config,
                            std::shared_ptr<Clock> clock = make_system_clock(),
                            std::shared_ptr<InstallerRunner> runner = make_process_runner());

  const EnvironmentConfig& config() const { return config_; }
  // The options environment_spec() needs to compute hashes that match this cache.
  SpecOptions spec_options() const { return SpecOptions{config_.system_python}; }

  // Returns the environment for `spec`, building it first when the cache does not have it, or
  // waiting for the run that is building it. A failed build returns "EnvironmentBuildFailed" with
  // the installer's exit status and the last lines of its output, and leaves nothing behind that a
  // later run would use. After a build, environments beyond the disk budget are evicted.
  // Safe to call from several threads and processes at once.
  Result<PreparedEnvironment> prepare(const EnvironmentSpec& spec, const BuildOutput& output) const;

  // The cache's environments, most recently used first (ready ones and those being built).
  Result<std::vector<CachedEnvironment>> list() const;

  // Clears leftovers of interrupted builds and evicts least-recently-used environments that are not
  // in use until the budget is met.
  Result<PruneReport> prune(const PruneOptions& options) const;

 private:
  Result<bool> build(const EnvironmentSpec& spec, BuildLog& log,
                     const std::function<bool()>& canceled) const;
  Result<void> run_build(const EnvironmentSpec& spec, BuildLog& log,
                         const std::function<bool()>& canceled) const;
  Result<void> finish_build(const EnvironmentSpec& spec, const std::string& tool,
                            BuildLog& log) const;
  bool mark_used(const std::filesystem::path& marker) const;
  void evict_over_budget(BuildLog& log) const;

  EnvironmentConfig config_;
  std::shared_ptr<Clock> clock_;
  std::shared_ptr<InstallerRunner> runner_;
};

}  // namespace amlnode::executors::environments
