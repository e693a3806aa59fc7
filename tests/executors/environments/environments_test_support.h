#pragma once

// Shared pieces of the environment tests: a cache configured inside a temporary folder, the conda
// stand-in (fake-micromamba) linked under the name a test wants, a locally built wheel, a runner
// that counts installer invocations, and a clock the test sets.

#include <atomic>
#include <chrono>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/clock.h"
#include "executors/environments/cache.h"
#include "executors/environments/config.h"
#include "executors/environments/installer.h"
#include "executors/environments/spec.h"
#include "spec/job.h"
#include "tests/support/temp_dir.h"

namespace amlnode::test {

namespace envs = executors::environments;

// The folder with fake-micromamba and make_wheel.py.
std::filesystem::path env_test_data();

// Links the stand-in into dir/bin under `name` (micromamba, mamba or conda); returns the link.
std::filesystem::path install_fake_conda(const TempDir& dir, const std::string& name);

// Builds NAME-VERSION-py3-none-any.whl into `wheel_dir` with the system Python.
void make_wheel(const std::filesystem::path& wheel_dir, const std::string& name,
                const std::string& version);

// A config whose cache lives in dir/state/envs, using the stand-in as micromamba and logging its
// invocations to fake_conda_log(dir). pip never reads the machine's pip config.
envs::EnvironmentConfig test_config(const TempDir& dir);
std::filesystem::path fake_conda_log(const TempDir& dir);
// Lines of the stand-in's log (one per micromamba / conda / pip invocation).
std::vector<std::string> fake_conda_calls(const TempDir& dir);
// How many of them created an environment.
int fake_conda_creates(const TempDir& dir);

// Jobs with just an environment.
spec::Job conda_job(std::vector<std::string> channels, std::vector<std::string> conda_packages,
                    std::vector<std::string> pip_packages = {});
spec::Job conda_file_job(const std::filesystem::path& file);
spec::Job pip_job(std::vector<std::string> pip_packages);

envs::EnvironmentSpec spec_of(const spec::Job& job,
                              const envs::SpecOptions& options = envs::SpecOptions{});

class ManualClock final : public Clock {
 public:
  explicit ManualClock(std::chrono::system_clock::time_point start) : now_(start) {}
  std::chrono::system_clock::time_point now() const override {
    std::lock_guard<std::mutex> lock(mutex_);
    return now_;
  }
  void advance(std::chrono::seconds by) {
    std::lock_guard<std::mutex> lock(mutex_);
    now_ += by;
  }

 private:
  mutable std::mutex mutex_;
  std::chrono::system_clock::time_point now_;
};

// Wraps the real process runner and counts what it is asked to run.
class CountingRunner final : public envs::InstallerRunner {
 public:
  CountingRunner() : real_(envs::make_process_runner()) {}
  Result<envs::InstallerOutcome> run(const envs::InstallerCommand& command,
                                     envs::BuildLog& log) override {
    ++calls;
    return real_->run(command, log);
  }
  std::atomic<int> calls{0};

 private:
  std::shared_ptr<envs::InstallerRunner> real_;
};

// Whether `pid` is gone (or a zombie nobody has reaped yet: it runs no more code either).
bool process_gone(pid_t pid);

}  // namespace amlnode::test
