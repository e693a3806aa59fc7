#pragma once

// The node's settings for building conda / pip environments on the host. Air-gapped sites point
// the installers at local mirrors here (pip --no-index --find-links DIR, a conda channel URL); the
// agent reads this from its config file (see environment_config_from_json).

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "spec/job.h"

namespace amlnode::executors::environments {

struct EnvironmentConfig {
  // Where environments live: <state_dir>/envs.
  std::filesystem::path envs_dir;
  // micromamba, mamba, conda, or a path to one of them. Empty: the first of micromamba, mamba and
  // conda found on tool_search_path.
  std::string conda_tool;
  // Where tools named without a slash are looked up. Empty: this process's PATH.
  std::string tool_search_path;
  // The interpreter pip-only environments are made from (`python3 -m venv`). Debian's, not
  // whatever python3 comes first on PATH (often a pyenv shim that changes under our feet).
  std::filesystem::path system_python = "/usr/bin/python3";
  // When set, replace every environment's conda channels (e.g. with a local mirror's URL); conda
  // is then told --override-channels so that nothing from its own config is reached either.
  std::vector<std::string> conda_channels;
  // Extra arguments for every conda create / env create, after amlnode's own.
  std::vector<std::string> conda_args;
  // Extra arguments for every pip install, before the packages, e.g. --no-index --find-links DIR.
  std::vector<std::string> pip_args;
  // Variables set for every installer process over the agent's own environment, e.g.
  // CONDA_PKGS_DIRS or PIP_CERT.
  spec::EnvVars installer_env;
  // Least-recently-used environments not in use are evicted once the cache grows beyond this.
  std::optional<std::uint64_t> disk_budget_bytes;
  // An installer still running after this long is killed and the build fails.
  std::optional<std::chrono::seconds> build_timeout;
  // How many of the installer's last output lines a failed build's error message carries.
  std::size_t failure_tail_lines = 20;
};

// Reads the `environments` section of the agent config:
//   {"conda_tool": "micromamba", "system_python": "/usr/bin/python3",
//    "conda_channels": ["file:///srv/conda-mirror"], "conda_args": [],
//    "pip_args": ["--no-index", "--find-links", "/srv/wheels"],
//    "installer_env": {"CONDA_PKGS_DIRS": "/var/cache/conda"},
//    "disk_budget_bytes": 50000000000, "build_timeout_seconds": 3600}
// Every key is optional. envs_dir is <state_dir>/envs.
Result<EnvironmentConfig> environment_config_from_json(const nlohmann::json& section,
                                                       const std::filesystem::path& state_dir);

}  // namespace amlnode::executors::environments
