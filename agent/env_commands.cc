#include "agent/env_commands.h"

#include <cstdio>

#include "common/clock.h"
#include "executors/environments/cache.h"
#include "executors/environments/config.h"

namespace amlnode::agent {

namespace environments = executors::environments;

namespace {

constexpr int kExitFailure = 1;

std::optional<environments::EnvironmentCache> open_cache(const EnvCommandOptions& options) {
  auto config = environments::environment_config_from_json(options.config.environments, options.state_dir);
  if (!config.ok()) {
    std::fprintf(stderr, "amlnode: %s\n", config.error().message.c_str());
    return std::nullopt;
  }
  return environments::EnvironmentCache(*config);
}

std::string megabytes(std::uint64_t bytes) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1f MB", static_cast<double>(bytes) / (1 << 20));
  return text;
}

void print_entry(const environments::CachedEnvironment& entry) {
  std::printf("%-32s  %-5s  %10s  %-24s  %-6s  %s\n", entry.hash.c_str(), entry.kind.c_str(),
              megabytes(entry.size_bytes).c_str(), format_utc(entry.last_used).c_str(),
              entry.in_use ? "in use" : "-", entry.path.c_str());
}

}  // namespace

int env_list(const EnvCommandOptions& options) {
  auto cache = open_cache(options);
  if (!cache) return kExitFailure;
  auto entries = cache->list();
  if (!entries.ok()) {
    std::fprintf(stderr, "amlnode: %s\n", entries.error().message.c_str());
    return kExitFailure;
  }
  if (options.json) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& entry : *entries) out.push_back(environments::to_json(entry));
    std::printf("%s\n", out.dump(2).c_str());
    return 0;
  }
  std::printf("%-32s  %-5s  %10s  %-24s  %-6s  %s\n", "HASH", "KIND", "SIZE", "LAST USED", "IN USE", "PATH");
  for (const auto& entry : *entries) print_entry(entry);
  return 0;
}

int env_prune(const EnvCommandOptions& options) {
  auto cache = open_cache(options);
  if (!cache) return kExitFailure;
  auto report = cache->prune({options.budget_bytes, options.dry_run});
  if (!report.ok()) {
    std::fprintf(stderr, "amlnode: %s\n", report.error().message.c_str());
    return kExitFailure;
  }
  if (options.json) {
    std::printf("%s\n", environments::to_json(*report).dump(2).c_str());
    return 0;
  }
  const char* verb = options.dry_run ? "would evict" : "evicted";
  for (const auto& entry : report->evicted) std::printf("%s %s (%s)\n", verb, entry.hash.c_str(), megabytes(entry.size_bytes).c_str());
  for (const auto& entry : report->kept_in_use) std::printf("kept %s: in use\n", entry.hash.c_str());
  std::printf("freed %s, %s left, %zu leftovers of interrupted builds removed\n",
              megabytes(report->freed_bytes).c_str(), megabytes(report->remaining_bytes).c_str(),
              report->leftovers_removed);
  return 0;
}

}  // namespace amlnode::agent
