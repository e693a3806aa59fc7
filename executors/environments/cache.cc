#include "executors/environments/cache.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>

#include "common/error_codes.h"
#include "common/format.h"
#include "common/fs.h"
#include "executors/environments/commands.h"
#include "executors/environments/layout.h"

namespace amlnode::executors::environments {
namespace {

namespace fs = std::filesystem;

std::string quoted_command(const std::vector<std::string>& argv) {
  std::string out = "$";
  for (const auto& arg : argv) {
    bool plain =
        !arg.empty() && arg.find_first_of(" \t\n'\"\\$`*?[]{}()<>|&;#~") == std::string::npos;
    out += " ";
    if (plain) {
      out += arg;
    } else {
      out += "'";
      for (char c : arg) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
      out += "'";
    }
  }
  return out;
}

Result<FileLock> take_lease(const fs::path& envs_dir, const EnvPaths& paths) {
  auto lease = FileLock::acquire(paths.lease_lock, LockMode::Shared);
  if (lease) return lease;
  // The first environment of a fresh state folder: create the folder and try once more.
  std::error_code ec;
  fs::create_directories(envs_dir, ec);
  return FileLock::acquire(paths.lease_lock, LockMode::Shared);
}

Result<FileLock> take_build_lock(const EnvPaths& paths, const std::string& hash, BuildLog& log) {
  auto lock = FileLock::try_acquire(paths.build_lock, LockMode::Exclusive, true);
  if (!lock) return lock.error();
  if (lock->has_value()) return std::move(**lock);
  log.note("Waiting for another run that is building environment " + hash + " ...");
  return FileLock::acquire(paths.build_lock, LockMode::Exclusive);
}

// What an interrupted build of this prefix may have left: installer processes that outlived it,
// the incomplete prefix, the environment file. Called with the build lock held.
void clear_interrupted_build(const fs::path& envs_dir, const EnvPaths& paths, BuildLog& log) {
  if (int killed = kill_tagged_processes(paths.prefix.string()); killed > 0) {
    log.note("Killed " + std::to_string(killed) +
             " installer process(es) left over from an interrupted build");
  }
  std::error_code ec;
  if (fs::exists(paths.prefix, ec)) {
    log.note("Removing the incomplete environment left by an interrupted build");
    discard(envs_dir, paths.prefix);
  }
  fs::remove(paths.environment_file, ec);
}

std::string tool_of(const BuildPlan& plan) {
  return plan.steps.empty() ? std::string() : plan.steps.front().argv.front();
}

PreparedEnvironment prepared(const EnvironmentSpec& spec, const EnvPaths& paths, FileLock lease,
                             bool built) {
  PreparedEnvironment env;
  env.hash = spec.hash;
  env.kind = spec.kind;
  env.prefix = paths.prefix;
  env.python = paths.prefix / "bin" / "python";
  env.built = built;
  env.lease = EnvironmentLease(std::move(lease));
  const char* inherited = std::getenv("PATH");
  std::string path = (paths.prefix / "bin").string();
  path += ":";
  path += inherited ? inherited : "/usr/local/bin:/usr/bin:/bin";
  env.env.emplace_back("PATH", path);
  if (spec.kind == EnvironmentKind::Conda) {
    env.env.emplace_back("CONDA_PREFIX", paths.prefix.string());
    env.env.emplace_back("CONDA_DEFAULT_ENV", paths.prefix.string());
  } else {
    env.env.emplace_back("VIRTUAL_ENV", paths.prefix.string());
  }
  return env;
}

// Makes everything under `dir` durable before the marker says the environment is complete; the
// installers themselves do not fsync, and a marker over lost files after a power cut would be
// worse than no environment.
void sync_filesystem_of(const fs::path& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  ::syncfs(fd);
  ::close(fd);
}

}  // namespace

EnvironmentCache::EnvironmentCache(EnvironmentConfig config, std::shared_ptr<Clock> clock,
                                   std::shared_ptr<InstallerRunner> runner)
    : config_(std::move(config)), clock_(std::move(clock)), runner_(std::move(runner)) {}

Result<PreparedEnvironment> EnvironmentCache::prepare(const EnvironmentSpec& spec,
                                                      const BuildOutput& output) const {
  if ((spec.kind != EnvironmentKind::Conda && spec.kind != EnvironmentKind::Pip) ||
      !is_hash_name(spec.hash)) {
    return Error{"InvalidEnvironment",
                 "only conda and pip environments with a computed hash are cached here"};
  }
  auto paths = env_paths(config_.envs_dir, spec.hash);
  auto lease = take_lease(config_.envs_dir, paths);
  if (!lease) return lease.error();
  if (mark_used(paths.marker)) return prepared(spec, paths, std::move(*lease), false);

  auto log = BuildLog::open(output.log_file, output.progress, config_.failure_tail_lines);
  if (!log) return log.error();
  auto built = build(spec, *log, output.canceled);
  if (!built) return built.error();
  if (*built) evict_over_budget(*log);
  return prepared(spec, paths, std::move(*lease), *built);
}

bool EnvironmentCache::mark_used(const fs::path& marker) const {
  auto now = clock_->now().time_since_epoch();
  auto seconds = std::chrono::duration_cast<std::chrono::seconds>(now);
  auto nanos = std::chrono::duration_cast<std::chrono::nanoseconds>(now - seconds);
  timespec times[2] = {{seconds.count(), nanos.count()}, {seconds.count(), nanos.count()}};
  if (::utimensat(AT_FDCWD, marker.c_str(), times, 0) == 0) return true;
  // Not ours to touch (another user's cache, read-only): it still counts if it is there.
  return (errno == EACCES || errno == EPERM || errno == EROFS) &&
         ::access(marker.c_str(), F_OK) == 0;
}

// Builds the environment unless another run did while we waited for the lock. Returns whether
// this call built it.
Result<bool> EnvironmentCache::build(const EnvironmentSpec& spec, BuildLog& log,
                                     const std::function<bool()>& canceled) const {
  auto paths = env_paths(config_.envs_dir, spec.hash);
  auto lock = take_build_lock(paths, spec.hash, log);
  if (!lock) return lock.error();
  if (mark_used(paths.marker)) {
    log.note("Environment " + spec.hash + " was built by another run; reusing it");
    return false;
  }
  clear_interrupted_build(config_.envs_dir, paths, log);
  sweep_leftovers(config_.envs_dir);
  auto started = std::chrono::steady_clock::now();
  if (auto ran = run_build(spec, log, canceled); !ran) {
    discard(config_.envs_dir, paths.prefix);
    std::error_code ec;
    fs::remove(paths.environment_file, ec);
    return ran.error();
  }
  auto seconds =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - started);
  log.note("Environment " + spec.hash + " is ready (built in " + std::to_string(seconds.count()) +
           " s)");
  return true;
}

Result<void> EnvironmentCache::run_build(const EnvironmentSpec& spec, BuildLog& log,
                                         const std::function<bool()>& canceled) const {
  auto paths = env_paths(config_.envs_dir, spec.hash);
  std::optional<CondaTool> tool;
  if (spec.conda) {
    auto found = find_conda_tool(config_);
    if (!found) return found.error();
    tool = *found;
  }
  auto plan = plan_build(spec, config_, tool, paths.prefix, paths.environment_file);
  log.note("Building " + to_string(spec.kind) + " environment " + spec.hash + " in " +
           paths.prefix.string());
  if (plan.environment_yaml) {
    if (auto written = write_file_atomically(paths.environment_file, *plan.environment_yaml, false);
        !written) {
      return written.error();
    }
    log.note("Environment file " + paths.environment_file.string() + ":\n" +
             *plan.environment_yaml);
  }
  for (auto& step : plan.steps) {
    log.note(quoted_command(step.argv));
    log.clear_tail();
    step.canceled = canceled;
    auto outcome = runner_->run(step, log);
    if (!outcome) return outcome.error();
    if (outcome->canceled) {
      log.note("The build was canceled; removing what it had installed");
      return Error{errors::kCanceled, "the build of " + to_string(spec.kind) + " environment " +
                                          spec.hash + " was canceled"};
    }
    if (!outcome->succeeded()) {
      std::string tail = log.tail();
      return Error{"EnvironmentBuildFailed",
                   "building " + to_string(spec.kind) + " environment " + spec.hash +
                       " failed: " + fs::path(step.argv.front()).filename().string() +
                       " ended with " + outcome->describe(step) + ". Last lines of its output:\n" +
                       (tail.empty() ? std::string("(none)") : tail)};
    }
  }
  return finish_build(spec, tool_of(plan), log);
}

// Checks what the installers left, then writes the marker that makes it an environment.
Result<void> EnvironmentCache::finish_build(const EnvironmentSpec& spec, const std::string& tool,
                                            BuildLog& log) const {
  auto paths = env_paths(config_.envs_dir, spec.hash);
  std::error_code ec;
  fs::remove(paths.environment_file, ec);
  if (::access((paths.prefix / "bin" / "python").c_str(), X_OK) != 0) {
    return Error{"EnvironmentBuildFailed", "building " + to_string(spec.kind) + " environment " +
                                               spec.hash +
                                               " failed: the installers succeeded but left no " +
                                               (paths.prefix / "bin" / "python").string() +
                                               " (does the conda spec include python?)"};
  }
  std::uint64_t size = disk_usage(paths.prefix);
  sync_filesystem_of(paths.prefix);
  auto now = clock_->now();
  nlohmann::json marker = {{"schema", kMarkerSchema},
                           {"hash", spec.hash},
                           {"kind", to_string(spec.kind)},
                           {"prefix", paths.prefix.string()},
                           {"python", (paths.prefix / "bin" / "python").string()},
                           {"tool", tool},
                           {"created", format_utc(now)},
                           {"created_ms", unix_millis(now)},
                           {"size_bytes", size},
                           {"identity", spec.identity}};
  if (auto written = write_file_atomically(paths.marker, marker.dump(2) + "\n", true); !written) {
    return written.error();
  }
  mark_used(paths.marker);
  log.note("Environment size: " + human_bytes(size));
  return ok();
}

void EnvironmentCache::evict_over_budget(BuildLog& log) const {
  if (!config_.disk_budget_bytes) return;
  auto report = prune(PruneOptions{});
  if (!report) {
    log.note("Could not evict environments over the disk budget: " + report.error().message);
    return;
  }
  for (const auto& entry : report->evicted) {
    log.note("Evicted environment " + entry.hash + " (" + human_bytes(entry.size_bytes) +
             ", last used " + format_utc(entry.last_used) + ") to stay within the disk budget");
  }
  if (report->remaining_bytes > *config_.disk_budget_bytes) {
    log.note("The environment cache holds " + human_bytes(report->remaining_bytes) +
             ", over its budget of " + human_bytes(*config_.disk_budget_bytes) +
             ", because the rest is in use");
  }
}

}  // namespace amlnode::executors::environments
