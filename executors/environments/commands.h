#pragma once

// The command lines a build runs, as a pure function of the spec and the node's config, so that
// they can be checked without running anything.
//
//   conda, inline packages:  TOOL create -y -p PREFIX [--override-channels] -c CH ... ARGS PKG ...
//   conda, dependencies file: micromamba create -y -p PREFIX -f FILE ARGS
//                             conda|mamba env create -p PREFIX -f FILE ARGS
//   pip only:                SYSTEM_PYTHON -m venv PREFIX
//   then, when there is anything to pip install:
//                            PREFIX/bin/python -m pip install PIP_ARGS OPTIONS -r FILE ... PKG ...
//
// For a dependencies file, FILE is one amlnode writes from the canonical spec: the user's channels
// (or the configured override) and conda packages, and any other keys the file had, but not its
// pip section, which amlnode installs itself afterwards so that the configured pip arguments (e.g.
// --no-index --find-links for an air-gapped site) apply to it as they do to every other pip step.

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "executors/environments/config.h"
#include "executors/environments/installer.h"
#include "executors/environments/spec.h"

namespace amlnode::executors::environments {

enum class CondaFlavor { Micromamba, Mamba, Conda };

struct CondaTool {
  std::filesystem::path path;
  CondaFlavor flavor = CondaFlavor::Conda;
};

// The configured tool, or the first of micromamba, mamba and conda on the search path. Fails with
// "CondaNotFound" when there is none. Only called when a conda environment has to be built.
Result<CondaTool> find_conda_tool(const EnvironmentConfig& config);

struct BuildPlan {
  // Written to `environment_file` before the first step (a conda build from a dependencies file).
  std::optional<std::string> environment_yaml;
  std::vector<InstallerCommand> steps;
};

// `tool` is needed for conda specs only. `environment_file` is where a dependencies-file build
// writes its YAML; `prefix` is where the environment is built.
BuildPlan plan_build(const EnvironmentSpec& spec, const EnvironmentConfig& config,
                     const std::optional<CondaTool>& tool, const std::filesystem::path& prefix,
                     const std::filesystem::path& environment_file);

// The environment file for `conda env create`: channels, dependencies and the extra keys.
std::string conda_environment_yaml(const CondaSpec& conda,
                                   const std::vector<std::string>& channels);

}  // namespace amlnode::executors::environments
