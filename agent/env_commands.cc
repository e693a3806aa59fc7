#include "agent/env_commands.h"

#include <cstdio>

#include "agent/container_run.h"
#include "common/clock.h"
#include "executors/environments/cache.h"
#include "executors/environments/config.h"

namespace amlnode::agent {

namespace environments = executors::environments;

namespace {

constexpr int kExitFailure = 1;

std::optional<environments::EnvironmentCache> open_cache(const EnvCommandOptions& options) {
  auto config =
      environments::environment_config_from_json(options.config.environments, options.state_dir);
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
  std::printf("%-32s  %-5s  %10s  %-24s  %-6s  %s\n", "HASH", "KIND", "SIZE", "LAST USED", "IN USE",
              "PATH");
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
  for (const auto& entry : report->evicted)
    std::printf("%s %s (%s)\n", verb, entry.hash.c_str(), megabytes(entry.size_bytes).c_str());
  for (const auto& entry : report->kept_in_use)
    std::printf("kept %s: in use\n", entry.hash.c_str());
  std::printf("freed %s, %s left, %zu leftovers of interrupted builds removed\n",
              megabytes(report->freed_bytes).c_str(), megabytes(report->remaining_bytes).c_str(),
              report->leftovers_removed);
  return 0;
}

namespace {

std::unique_ptr<docker::ContainerRuntime> open_runtime(const EnvCommandOptions& options) {
  auto config = docker_runtime_config(options.config, options.state_dir);
  if (!config.ok()) {
    std::fprintf(stderr, "amlnode: %s\n", config.error().message.c_str());
    return nullptr;
  }
  auto runtime = docker::make_docker_runtime(*config);
  if (!runtime.ok()) {
    std::fprintf(stderr, "amlnode: %s\n", runtime.error().message.c_str());
    return nullptr;
  }
  return std::move(runtime.value());
}

nlohmann::json image_json(const docker::ManagedImage& image) {
  return {{"id", image.id},
          {"tags", image.tags},
          {"size_bytes", image.size_bytes},
          {"last_used", format_utc(image.last_used)},
          {"in_use", image.in_use}};
}

}  // namespace

int image_list(const EnvCommandOptions& options) {
  auto runtime = open_runtime(options);
  if (!runtime) return kExitFailure;
  auto images = runtime->list_managed_images();
  if (!images.ok()) {
    std::fprintf(stderr, "amlnode: %s\n", images.error().message.c_str());
    return kExitFailure;
  }
  if (options.json) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& image : *images) out.push_back(image_json(image));
    std::printf("%s\n", out.dump(2).c_str());
    return 0;
  }
  std::printf("%-40s  %10s  %-24s  %s\n", "TAG", "SIZE", "LAST USED", "IN USE");
  for (const auto& image : *images) {
    std::printf("%-40s  %10s  %-24s  %s\n",
                image.tags.empty() ? image.id.c_str() : image.tags.front().c_str(),
                megabytes(image.size_bytes).c_str(), format_utc(image.last_used).c_str(),
                image.in_use ? "in use" : "-");
  }
  return 0;
}

int image_prune(const EnvCommandOptions& options) {
  auto runtime = open_runtime(options);
  if (!runtime) return kExitFailure;
  auto report = runtime->prune_images(options.budget_bytes.value_or(0));
  if (!report.ok()) {
    std::fprintf(stderr, "amlnode: %s\n", report.error().message.c_str());
    return kExitFailure;
  }
  if (options.json) {
    nlohmann::json removed = nlohmann::json::array();
    for (const auto& image : report->removed) removed.push_back(image_json(image));
    std::printf("%s\n", nlohmann::json{{"removed", removed},
                                       {"bytes_before", report->bytes_before},
                                       {"bytes_after", report->bytes_after}}
                            .dump(2)
                            .c_str());
    return 0;
  }
  for (const auto& image : report->removed) {
    std::printf("removed %s (%s)\n",
                image.tags.empty() ? image.id.c_str() : image.tags.front().c_str(),
                megabytes(image.size_bytes).c_str());
  }
  std::printf("%s before, %s after\n", megabytes(report->bytes_before).c_str(),
              megabytes(report->bytes_after).c_str());
  return 0;
}

}  // namespace amlnode::agent
