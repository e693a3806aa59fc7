#pragma once

// `amlnode env list|prune` and `amlnode image list|prune`: what the shared environment cache and
// the Docker images this tool built hold, and cleaning them.

#include <cstdint>
#include <optional>

#include "agent/config.h"

namespace amlnode::agent {

struct EnvCommandOptions {
  std::filesystem::path state_dir;
  NodeConfig config;
  bool json = false;
  bool dry_run = false;                       // prune: report only
  std::optional<std::uint64_t> budget_bytes;  // prune: down to this size; 0: all not in use
};

int env_list(const EnvCommandOptions& options);
int env_prune(const EnvCommandOptions& options);

// `amlnode image list` / `amlnode image prune`: the Docker images this tool built.
int image_list(const EnvCommandOptions& options);
int image_prune(const EnvCommandOptions& options);

}  // namespace amlnode::agent
