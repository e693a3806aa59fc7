#include "metrics/python_module.h"

#include <cstdlib>

namespace amlnode::metrics {

namespace fs = std::filesystem;

std::optional<fs::path> python_module_dir() {
  std::error_code ec;
  if (const char* dir = std::getenv("AMLNODE_PYTHON_DIR"); dir && *dir) {
    if (fs::is_directory(fs::path(dir) / "amlnode_run", ec)) return fs::path(dir);
    return std::nullopt;
  }
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (ec) return std::nullopt;
  fs::path dir = exe.parent_path().parent_path() / "share" / "amlnode" / "python";
  if (!fs::is_directory(dir / "amlnode_run", ec)) return std::nullopt;
  return dir;
}

fs::path run_metrics_file(const fs::path& run_dir) {
  return run_dir / "system_logs" / "metrics.jsonl";
}

fs::path run_resources_file(const fs::path& run_dir) {
  return run_dir / "system_logs" / "resources.jsonl";
}

}  // namespace amlnode::metrics
