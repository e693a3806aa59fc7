#include "tests/executors/environments/environments_test_support.h"

#include <signal.h>

#include <fstream>
#include <stdexcept>

#include "tests/support/process.h"

namespace amlnode::test {

namespace fs = std::filesystem;

fs::path env_test_data() {
  return AMLNODE_ENV_TEST_DATA;
}

fs::path install_fake_conda(const TempDir& dir, const std::string& name) {
  fs::path bin = dir / "bin";
  fs::create_directories(bin);
  fs::path link = bin / name;
  if (!fs::exists(link)) fs::create_symlink(env_test_data() / "fake-micromamba", link);
  return link;
}

void make_wheel(const fs::path& wheel_dir, const std::string& name, const std::string& version) {
  auto result = run_command({"/usr/bin/python3", (env_test_data() / "make_wheel.py").string(),
                             wheel_dir.string(), name, version});
  if (result.exit_code != 0) throw std::runtime_error("make_wheel.py failed: " + result.err);
}

fs::path fake_conda_log(const TempDir& dir) {
  return dir / "fake-conda.log";
}

envs::EnvironmentConfig test_config(const TempDir& dir) {
  envs::EnvironmentConfig config;
  config.envs_dir = dir / "state" / "envs";
  config.conda_tool = install_fake_conda(dir, "micromamba").string();
  config.system_python = "/usr/bin/python3";
  config.installer_env = {{"FAKE_CONDA_LOG", fake_conda_log(dir).string()},
                          {"PIP_CONFIG_FILE", "/dev/null"}};
  return config;
}

std::vector<std::string> fake_conda_calls(const TempDir& dir) {
  std::vector<std::string> lines;
  std::ifstream in(fake_conda_log(dir));
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

int fake_conda_creates(const TempDir& dir) {
  int count = 0;
  for (const auto& line : fake_conda_calls(dir)) {
    if (line.find(" create ") != std::string::npos) ++count;
  }
  return count;
}

spec::Job conda_job(std::vector<std::string> channels, std::vector<std::string> conda_packages,
                    std::vector<std::string> pip_packages) {
  spec::Job job;
  job.source_directory = "/nonexistent-source";
  auto& python = job.environment.python;
  python.channels = std::move(channels);
  python.conda_packages = std::move(conda_packages);
  python.pip_packages = std::move(pip_packages);
  return job;
}

spec::Job conda_file_job(const fs::path& file) {
  spec::Job job;
  job.source_directory = file.parent_path();
  job.environment.python.conda_dependencies_file = file;
  return job;
}

spec::Job pip_job(std::vector<std::string> pip_packages) {
  spec::Job job;
  job.source_directory = "/nonexistent-source";
  job.environment.python.pip_packages = std::move(pip_packages);
  return job;
}

envs::EnvironmentSpec spec_of(const spec::Job& job, const envs::SpecOptions& options) {
  auto spec = envs::environment_spec(job, options);
  if (!spec) throw std::runtime_error("environment_spec failed: " + spec.error().message);
  return std::move(spec.value());
}

bool process_gone(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text;
  if (!std::getline(stat, text)) return true;
  auto close = text.rfind(')');
  return close != std::string::npos && close + 2 < text.size() && text[close + 2] == 'Z';
}

}  // namespace amlnode::test
