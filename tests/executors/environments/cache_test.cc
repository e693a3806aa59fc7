// The cache against real processes: the venv path installs a wheel built here; the conda path runs
// the stand-in (fake-micromamba), which records every invocation.

#include "executors/environments/cache.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <thread>

#include "tests/executors/environments/environments_test_support.h"
#include "tests/support/process.h"

namespace amlnode::test {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

std::string value_of(const spec::EnvVars& env, const std::string& name) {
  for (const auto& [key, value] : env) {
    if (key == name) return value;
  }
  return "(unset)";
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

template <class Duration>
double millis(Duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

envs::BuildOutput output_to(const fs::path& log, std::vector<std::string>* lines = nullptr) {
  envs::BuildOutput output;
  output.log_file = log;
  if (lines) output.progress = [lines](std::string_view line) { lines->emplace_back(line); };
  return output;
}

TEST_CASE("venv: a pip-only spec really installs a local wheel, and a hit runs nothing") {
  TempDir dir;
  make_wheel(dir / "wheels", "amlnode_tiny", "1.0");
  auto config = test_config(dir);
  config.pip_args = {"--no-index", "--find-links", (dir / "wheels").string()};
  auto runner = std::make_shared<CountingRunner>();
  envs::EnvironmentCache cache(config, make_system_clock(), runner);
  auto spec = spec_of(pip_job({"amlnode_tiny==1.0"}), cache.spec_options());

  std::vector<std::string> progress;
  auto first = cache.prepare(spec, output_to(dir / "run1" / "environment.txt", &progress));
  REQUIRE(first);
  CHECK(first->built);
  CHECK(first->kind == executors::EnvironmentKind::Pip);
  CHECK(first->prefix == config.envs_dir / spec.hash);
  CHECK(runner->calls == 2);  // venv, then pip
  auto log = slurp(dir / "run1" / "environment.txt");
  CHECK(contains(log, "-m venv " + first->prefix.string()));
  CHECK(contains(log, "Successfully installed amlnode_tiny-1.0"));
  CHECK(std::find(progress.begin(), progress.end(), "Successfully installed amlnode_tiny-1.0") !=
        progress.end());
  CHECK(value_of(first->env, "VIRTUAL_ENV") == first->prefix.string());
  CHECK(value_of(first->env, "PATH").starts_with((first->prefix / "bin").string() + ":"));

  auto imported =
      run_command({first->python.string(), "-c",
                   "import amlnode_tiny, sys; print(amlnode_tiny.VERSION, sys.prefix)"});
  CHECK(imported.exit_code == 0);
  CHECK(imported.out == "1.0 " + first->prefix.string() + "\n");

  auto started = std::chrono::steady_clock::now();
  auto second = cache.prepare(spec, output_to(dir / "run2" / "environment.txt"));
  auto elapsed = std::chrono::steady_clock::now() - started;
  REQUIRE(second);
  CHECK_FALSE(second->built);
  CHECK(second->prefix == first->prefix);
  CHECK(runner->calls == 2);
  CHECK_FALSE(fs::exists(dir / "run2" / "environment.txt"));
  WARN("cache hit (pip env) took " << millis(elapsed) << " ms");
  CHECK(elapsed < 50ms);
}

TEST_CASE("conda stand-in: channels and packages go to micromamba create, pip runs after") {
  TempDir dir;
  auto config = test_config(dir);
  envs::EnvironmentCache cache(config);
  auto spec = spec_of(
      conda_job({"conda-forge", "bioconda"}, {"python=3.10", "numpy=1.26"}, {"requests==2.31.0"}));

  auto first = cache.prepare(spec, output_to(dir / "environment.txt"));
  REQUIRE(first);
  CHECK(first->built);
  auto prefix = first->prefix.string();
  CHECK(fake_conda_calls(dir) ==
        std::vector<std::string>{"micromamba create -y -p " + prefix +
                                     " -c conda-forge -c bioconda numpy=1.26 python=3.10",
                                 "python -m pip install requests==2.31.0"});
  CHECK(slurp(first->prefix / "conda-meta" / "channels") == "conda-forge\nbioconda\n");
  CHECK(value_of(first->env, "CONDA_PREFIX") == prefix);
  CHECK(first->python == first->prefix / "bin" / "python");
  auto version = run_command({first->python.string(), "-c", "print('ok')"});
  CHECK(version.out == "ok\n");

  auto started = std::chrono::steady_clock::now();
  auto second = cache.prepare(spec, output_to(dir / "again.txt"));
  auto elapsed = std::chrono::steady_clock::now() - started;
  REQUIRE(second);
  CHECK_FALSE(second->built);
  CHECK(fake_conda_calls(dir).size() == 2);  // no solver, no installer
  CHECK_FALSE(fs::exists(dir / "again.txt"));
  WARN("cache hit (conda env) took " << millis(elapsed) << " ms");
  CHECK(elapsed < 50ms);
}

TEST_CASE("conda stand-in: a dependencies file is built with conda env create -f") {
  TempDir dir;
  auto config = test_config(dir);
  config.conda_tool = install_fake_conda(dir, "conda").string();
  envs::EnvironmentCache cache(config);
  auto file = dir.write("project/conda_dependencies.yml", R"(name: project_environment
channels:
  - conda-forge
dependencies:
  - python=3.10
  - pip
  - pip:
      - requests==2.31.0
)");
  auto spec = spec_of(conda_file_job(file));

  auto env = cache.prepare(spec, output_to(dir / "environment.txt"));
  REQUIRE(env);
  auto calls = fake_conda_calls(dir);
  REQUIRE(calls.size() == 2);
  auto env_file = config.envs_dir / (".build-" + spec.hash + ".yml");
  CHECK(calls[0] == "conda env create -p " + env->prefix.string() + " -f " + env_file.string());
  CHECK(calls[1] == "python -m pip install requests==2.31.0");
  auto written = slurp(env->prefix / "conda-meta" / "environment.yml");
  CHECK(contains(written, "conda-forge"));
  CHECK(contains(written, "python=3.10"));
  CHECK_FALSE(contains(written, "requests"));
  CHECK_FALSE(fs::exists(env_file));  // the build's own file is gone once it is done
  CHECK(contains(slurp(dir / "environment.txt"), "Environment file " + env_file.string()));

  // A later run: reading and hashing the file plus the cache lookup, as `amlnode run` does them.
  env->lease.release();
  auto started = std::chrono::steady_clock::now();
  auto again = cache.prepare(spec_of(conda_file_job(file)), envs::BuildOutput{});
  auto elapsed = std::chrono::steady_clock::now() - started;
  REQUIRE(again);
  CHECK_FALSE(again->built);
  CHECK(fake_conda_calls(dir).size() == 2);
  WARN("spec + cache hit (conda file) took " << millis(elapsed) << " ms");
  CHECK(elapsed < 50ms);
}

TEST_CASE("two threads racing for the same new environment build it once (conda stand-in)") {
  TempDir dir;
  auto config = test_config(dir);
  config.installer_env.emplace_back("FAKE_CONDA_SLEEP", "1");
  envs::EnvironmentCache cache(config);
  auto spec = spec_of(conda_job({}, {"python=3.10"}));

  std::optional<Result<envs::PreparedEnvironment>> results[2];
  std::vector<std::string> waits[2];
  std::thread threads[2];
  for (int i = 0; i < 2; ++i) {
    threads[i] = std::thread([&, i] {
      results[i].emplace(
          cache.prepare(spec, output_to(dir / ("run" + std::to_string(i)), &waits[i])));
    });
  }
  for (auto& thread : threads) thread.join();
  REQUIRE(*results[0]);
  REQUIRE(*results[1]);
  CHECK(fake_conda_creates(dir) == 1);
  CHECK(results[0]->value().built != results[1]->value().built);
  CHECK(results[0]->value().prefix == results[1]->value().prefix);
  auto& waiter = results[0]->value().built ? waits[1] : waits[0];
  CHECK(std::any_of(waiter.begin(), waiter.end(), [](const std::string& line) {
    return contains(line, "Waiting for another run that is building environment");
  }));
}

TEST_CASE("two processes racing for the same new environment build it once (conda stand-in)") {
  TempDir dir;
  auto config = test_config(dir);
  config.installer_env.emplace_back("FAKE_CONDA_SLEEP", "1");
  auto spec = spec_of(conda_job({}, {"python=3.11"}));

  pid_t children[2];
  for (auto& child : children) {
    child = ::fork();
    if (child == 0) {
      envs::EnvironmentCache cache(config);
      auto env = cache.prepare(spec, envs::BuildOutput{});
      ::_exit(env ? 0 : 1);
    }
  }
  for (auto child : children) {
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
  }
  CHECK(fake_conda_creates(dir) == 1);
}

TEST_CASE(
    "a failed build (conda stand-in) reports exit status and output tail, leaves nothing usable") {
  TempDir dir;
  auto config = test_config(dir);
  config.installer_env.emplace_back("FAKE_CONDA_FAIL", "1");
  auto spec = spec_of(conda_job({"conda-forge"}, {"python=3.10"}));

  auto failed = envs::EnvironmentCache(config).prepare(spec, output_to(dir / "environment.txt"));
  REQUIRE_FALSE(failed);
  CHECK(failed.error().code == "EnvironmentBuildFailed");
  const auto& message = failed.error().message;
  CHECK(contains(message, "micromamba ended with exit status 3"));
  CHECK(contains(message, "error: the stand-in was told to fail"));
  CHECK(contains(message, "solver output line 30"));
  CHECK(contains(message, "solver output line 12"));  // 19 lines of stdout + 1 of stderr = 20
  CHECK_FALSE(contains(message, "solver output line 11\n"));
  CHECK(contains(slurp(dir / "environment.txt"), "solver output line 1\n"));
  CHECK_FALSE(fs::exists(config.envs_dir / spec.hash));
  auto listed = envs::EnvironmentCache(config).list();
  REQUIRE(listed);
  CHECK(listed->empty());

  config.installer_env.pop_back();
  auto retried = envs::EnvironmentCache(config).prepare(spec, envs::BuildOutput{});
  REQUIRE(retried);
  CHECK(retried->built);
  CHECK(fake_conda_creates(dir) == 2);
}

TEST_CASE("a build (conda stand-in) killed mid-way leaves nothing usable and no stuck lock") {
  TempDir dir;
  auto config = test_config(dir);
  auto slow = config;
  auto pid_file = dir / "installer.pids";
  slow.installer_env.emplace_back("FAKE_CONDA_SLEEP", "60");
  slow.installer_env.emplace_back("FAKE_CONDA_PIDFILE", pid_file.string());
  auto spec = spec_of(conda_job({}, {"python=3.12"}));

  pid_t builder = ::fork();
  if (builder == 0) {
    auto env = envs::EnvironmentCache(slow).prepare(spec, envs::BuildOutput{});
    ::_exit(env ? 0 : 1);
  }
  REQUIRE(eventually([&] { return fs::exists(pid_file) && fs::file_size(pid_file) > 0; }, 10s));
  pid_t installer = 0, sleeper = 0;
  std::ifstream(pid_file) >> installer >> sleeper;
  REQUIRE(fs::exists(config.envs_dir / spec.hash));  // the installer has started writing
  ::kill(builder, SIGKILL);
  ::waitpid(builder, nullptr, 0);
  // The installer dies with the builder (PR_SET_PDEATHSIG); its own child is an orphan now.
  CHECK(eventually([&] { return process_gone(installer); }, 5s));

  envs::EnvironmentCache cache(config);
  auto listed = cache.list();
  REQUIRE(listed);
  CHECK(listed->empty());  // the incomplete prefix is not an environment

  auto started = std::chrono::steady_clock::now();
  std::vector<std::string> progress;
  auto env = cache.prepare(spec, output_to(dir / "environment.txt", &progress));
  REQUIRE(env);
  CHECK(env->built);
  CHECK(std::chrono::steady_clock::now() - started < 10s);
  CHECK(fake_conda_creates(dir) == 2);
  CHECK(eventually([&] { return process_gone(sleeper); }, 5s));  // found by its build tag
  CHECK(contains(slurp(dir / "environment.txt"), "left over from an interrupted build"));
  CHECK(fs::exists(env->prefix / "amlnode-env.json"));
}

TEST_CASE("an installer (conda stand-in) that runs past the build timeout is killed") {
  TempDir dir;
  auto config = test_config(dir);
  config.installer_env.emplace_back("FAKE_CONDA_SLEEP", "30");
  config.build_timeout = std::chrono::seconds(1);
  auto spec = spec_of(conda_job({}, {"python=3.9"}));
  auto started = std::chrono::steady_clock::now();
  auto env = envs::EnvironmentCache(config).prepare(spec, envs::BuildOutput{});
  REQUIRE_FALSE(env);
  CHECK(std::chrono::steady_clock::now() - started < 10s);
  CHECK(env.error().code == "EnvironmentBuildFailed");
  CHECK(contains(env.error().message, "timed out after 1 s"));
  CHECK_FALSE(fs::exists(config.envs_dir / spec.hash));
}

TEST_CASE("a canceled build (conda stand-in) stops its installers and leaves nothing behind") {
  TempDir dir;
  auto config = test_config(dir);
  auto pid_file = dir / "installer.pids";
  config.installer_env.emplace_back("FAKE_CONDA_SLEEP", "300");
  config.installer_env.emplace_back("FAKE_CONDA_PIDFILE", pid_file.string());
  auto spec = spec_of(conda_job({}, {"python=3.8"}));
  std::atomic<bool> canceled{false};
  auto output = output_to(dir / "environment.txt");
  output.canceled = [&] { return canceled.load(); };

  std::optional<Result<envs::PreparedEnvironment>> result;
  std::thread builder(
      [&] { result.emplace(envs::EnvironmentCache(config).prepare(spec, output)); });
  bool installing =
      eventually([&] { return fs::exists(pid_file) && fs::file_size(pid_file) > 0; }, 10s);
  auto asked = std::chrono::steady_clock::now();
  canceled = true;
  builder.join();
  REQUIRE(installing);
  CHECK(std::chrono::steady_clock::now() - asked < 5s);
  REQUIRE_FALSE(*result);
  CHECK(result->error().code == "Canceled");
  CHECK(contains(result->error().message, "was canceled"));
  pid_t installer = 0, sleeper = 0;
  std::ifstream(pid_file) >> installer >> sleeper;
  // The installer and its child share the build's process group, which is killed as a whole.
  CHECK(eventually([&] { return process_gone(installer) && process_gone(sleeper); }, 5s));
  CHECK_FALSE(fs::exists(config.envs_dir / spec.hash));
  CHECK(contains(slurp(dir / "environment.txt"), "The build was canceled"));
  auto listed = envs::EnvironmentCache(config).list();
  REQUIRE(listed);
  CHECK(listed->empty());
}

TEST_CASE("a conda spec on a node without conda fails clearly and leaves nothing") {
  TempDir dir;
  auto config = test_config(dir);
  config.conda_tool.clear();
  config.tool_search_path = (dir / "empty").string();
  auto spec = spec_of(conda_job({}, {"python=3.10"}));
  auto env = envs::EnvironmentCache(config).prepare(spec, envs::BuildOutput{});
  REQUIRE_FALSE(env);
  CHECK(env.error().code == "CondaNotFound");
  CHECK_FALSE(fs::exists(config.envs_dir / spec.hash));
}

}  // namespace
}  // namespace amlnode::test
