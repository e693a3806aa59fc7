#pragma once

// Where the `amlnode_run` Python module (python/amlnode_run) lies, so runs can import it: beside
// the binaries, in ../share/amlnode/python relative to the running executable. Installed, that is
// /usr/share/amlnode/python next to /usr/bin/amlnode; in a build tree, build/share/amlnode/python
// next to build/bin (the build copies it there).

#include <filesystem>
#include <optional>

namespace amlnode::metrics {

// The folder holding the module's package folder, or nullopt when it is not there (the run then
// gets no PYTHONPATH entry). $AMLNODE_PYTHON_DIR overrides the lookup.
std::optional<std::filesystem::path> python_module_dir();

// Where a run's script writes its metrics (AMLNODE_METRICS_FILE) and where the agent writes its
// resource samples, both under the run folder's system_logs/ so they are shipped like its logs.
std::filesystem::path run_metrics_file(const std::filesystem::path& run_dir);
std::filesystem::path run_resources_file(const std::filesystem::path& run_dir);

}  // namespace amlnode::metrics
