#pragma once

// `amlnode env list` and `amlnode env prune`: what the shared environment cache holds, and
// cleaning it.

#include <cstdint>
#include <optional>

#include "agent/config.h"

namespace amlnode::agent {

struct EnvCommandOptions {
  std::filesystem::path state_dir;
  NodeConfig config;
  bool json = false;
  bool dry_run = false;                      // prune: report only
  std::optional<std::uint64_t> budget_bytes;  // prune: down to this size; 0: all not in use
};

int env_list(const EnvCommandOptions& options);
int env_prune(const EnvCommandOptions& options);

}  // namespace amlnode::agent
