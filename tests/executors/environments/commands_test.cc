#include "executors/environments/commands.h"

#include <yaml-cpp/yaml.h>

#include <catch2/catch.hpp>

#include "tests/executors/environments/environments_test_support.h"

namespace amlnode::test {
namespace {

namespace fs = std::filesystem;
using Argv = std::vector<std::string>;

const fs::path kPrefix = "/state/envs/0123456789abcdef0123456789abcdef";
const fs::path kEnvFile = "/state/envs/.build-0123456789abcdef0123456789abcdef.yml";

envs::EnvironmentConfig plain_config() {
  envs::EnvironmentConfig config;
  config.envs_dir = "/state/envs";
  return config;
}

std::string env_value(const envs::InstallerCommand& command, const std::string& name) {
  for (const auto& [key, value] : command.env) {
    if (key == name) return value;
  }
  return "(unset)";
}

TEST_CASE("conda inline: micromamba create with channels and packages, then pip in the prefix") {
  auto spec = spec_of(conda_job({"conda-forge"}, {"python=3.10", "numpy"}, {"requests==2.31.0"}));
  envs::CondaTool tool{"/opt/bin/micromamba", envs::CondaFlavor::Micromamba};
  auto plan = envs::plan_build(spec, plain_config(), tool, kPrefix, kEnvFile);
  CHECK_FALSE(plan.environment_yaml);
  REQUIRE(plan.steps.size() == 2);
  CHECK(plan.steps[0].argv == Argv{"/opt/bin/micromamba", "create", "-y", "-p", kPrefix.string(),
                                   "-c", "conda-forge", "numpy", "python=3.10"});
  CHECK(plan.steps[1].argv ==
        Argv{(kPrefix / "bin/python").string(), "-m", "pip", "install", "requests==2.31.0"});
  for (const auto& step : plan.steps) {
    CHECK(env_value(step, envs::kBuildTagVariable) == kPrefix.string());
    CHECK(env_value(step, "PIP_NO_INPUT") == "1");
  }
}

TEST_CASE("conda file: conda env create -f with a file written from the canonical spec") {
  TempDir dir;
  auto file = dir.write("conda_dependencies.yml", R"(name: x
channels: [conda-forge]
dependencies:
  - python=3.10
  - pip
  - pip: [requests==2.31.0, -r extra.txt]
variables: {MY_FLAG: "1"}
)");
  dir.write("extra.txt", "tqdm==4.66.1\n");
  auto spec = spec_of(conda_file_job(file));
  envs::CondaTool tool{"/usr/bin/conda", envs::CondaFlavor::Conda};
  auto plan = envs::plan_build(spec, plain_config(), tool, kPrefix, kEnvFile);
  REQUIRE(plan.steps.size() == 2);
  CHECK(plan.steps[0].argv ==
        Argv{"/usr/bin/conda", "env", "create", "-p", kPrefix.string(), "-f", kEnvFile.string()});
  CHECK(plan.steps[1].argv == Argv{(kPrefix / "bin/python").string(), "-m", "pip", "install", "-r",
                                   (dir / "extra.txt").string(), "requests==2.31.0"});
  REQUIRE(plan.environment_yaml);
  auto yaml = YAML::Load(*plan.environment_yaml);
  CHECK(yaml["channels"][0].as<std::string>() == "conda-forge");
  CHECK(yaml["dependencies"].size() == 2);  // python and pip; the pip section is installed after
  CHECK(yaml["variables"]["MY_FLAG"].as<std::string>() == "1");
  CHECK_FALSE(yaml["name"]);

  envs::CondaTool micromamba{"/opt/micromamba", envs::CondaFlavor::Micromamba};
  auto with_micromamba = envs::plan_build(spec, plain_config(), micromamba, kPrefix, kEnvFile);
  CHECK(with_micromamba.steps[0].argv ==
        Argv{"/opt/micromamba", "create", "-y", "-p", kPrefix.string(), "-f", kEnvFile.string()});
}

TEST_CASE("air-gapped config: channel override, conda arguments and pip arguments apply") {
  auto config = plain_config();
  config.conda_channels = {"file:///srv/conda-mirror"};
  config.conda_args = {"--offline"};
  config.pip_args = {"--no-index", "--find-links", "/srv/wheels"};
  config.installer_env = {{"CONDA_PKGS_DIRS", "/srv/pkgs"}};
  config.build_timeout = std::chrono::seconds(600);
  auto spec = spec_of(conda_job({"conda-forge"}, {"python=3.10"}, {"requests"}));
  envs::CondaTool tool{"/opt/mamba", envs::CondaFlavor::Mamba};
  auto plan = envs::plan_build(spec, config, tool, kPrefix, kEnvFile);
  REQUIRE(plan.steps.size() == 2);
  CHECK(plan.steps[0].argv == Argv{"/opt/mamba", "create", "-y", "-p", kPrefix.string(),
                                   "--override-channels", "-c", "file:///srv/conda-mirror",
                                   "--offline", "python=3.10"});
  CHECK(plan.steps[1].argv == Argv{(kPrefix / "bin/python").string(), "-m", "pip", "install",
                                   "--no-index", "--find-links", "/srv/wheels", "requests"});
  CHECK(env_value(plan.steps[0], "CONDA_PKGS_DIRS") == "/srv/pkgs");
  CHECK(plan.steps[0].timeout == std::chrono::seconds(600));

  TempDir dir;
  auto file_spec = spec_of(conda_file_job(
      dir.write("env.yml", "channels: [conda-forge]\ndependencies: [python=3.10]\n")));
  auto file_plan = envs::plan_build(file_spec, config, tool, kPrefix, kEnvFile);
  auto yaml = YAML::Load(*file_plan.environment_yaml);
  CHECK(yaml["channels"].size() == 2);
  CHECK(yaml["channels"][0].as<std::string>() == "file:///srv/conda-mirror");
  CHECK(yaml["channels"][1].as<std::string>() == "nodefaults");
}

TEST_CASE("pip only: a venv from the system python, then pip with split options") {
  auto job = pip_job({"requests==2.31.0"});
  job.environment.python.pip_options = {"--index-url https://mirror.example/simple"};
  auto spec = spec_of(job);
  auto plan = envs::plan_build(spec, plain_config(), std::nullopt, kPrefix, kEnvFile);
  REQUIRE(plan.steps.size() == 2);
  CHECK(plan.steps[0].argv == Argv{spec.base_python.string(), "-m", "venv", kPrefix.string()});
  CHECK(plan.steps[1].argv == Argv{(kPrefix / "bin/python").string(), "-m", "pip", "install",
                                   "--index-url", "https://mirror.example/simple",
                                   "requests==2.31.0"});

  auto bare =
      envs::plan_build(spec_of(pip_job({})), plain_config(), std::nullopt, kPrefix, kEnvFile);
  CHECK(bare.steps.size() == 1);
}

TEST_CASE("the conda tool: configured, else the first of micromamba, mamba, conda on PATH") {
  TempDir dir;
  install_fake_conda(dir, "conda");
  install_fake_conda(dir, "mamba");
  auto config = plain_config();
  config.tool_search_path = "/nonexistent:" + (dir / "bin").string();

  auto found = envs::find_conda_tool(config);
  REQUIRE(found);
  CHECK(found->path == dir / "bin" / "mamba");
  CHECK(found->flavor == envs::CondaFlavor::Mamba);

  install_fake_conda(dir, "micromamba");
  CHECK(envs::find_conda_tool(config)->flavor == envs::CondaFlavor::Micromamba);

  config.conda_tool = "conda";
  CHECK(envs::find_conda_tool(config)->path == dir / "bin" / "conda");

  config.conda_tool = "/nonexistent/conda";
  CHECK(envs::find_conda_tool(config).error().code == "CondaNotFound");

  config.conda_tool.clear();
  config.tool_search_path = "/nonexistent";
  auto none = envs::find_conda_tool(config);
  REQUIRE_FALSE(none);
  CHECK(none.error().code == "CondaNotFound");
}

TEST_CASE("the environments section of the agent config") {
  auto config =
      envs::environment_config_from_json(nlohmann::json::parse(R"({"conda_tool": "micromamba",
                                "pip_args": ["--no-index", "--find-links", "/srv/wheels"],
                                "conda_channels": ["file:///srv/conda"],
                                "installer_env": {"CONDA_PKGS_DIRS": "/srv/pkgs"},
                                "disk_budget_bytes": 1000, "build_timeout_seconds": 60})"),
                                         "/var/lib/amlnode");
  REQUIRE(config);
  CHECK(config->envs_dir == "/var/lib/amlnode/envs");
  CHECK(config->conda_tool == "micromamba");
  CHECK(config->pip_args.size() == 3);
  CHECK(config->conda_channels == std::vector<std::string>{"file:///srv/conda"});
  CHECK(config->installer_env == spec::EnvVars{{"CONDA_PKGS_DIRS", "/srv/pkgs"}});
  CHECK(config->disk_budget_bytes == 1000u);
  CHECK(config->build_timeout == std::chrono::seconds(60));
  CHECK(config->system_python == "/usr/bin/python3");

  auto wrong = envs::environment_config_from_json({{"pip_args", "--no-index"}}, "/s");
  REQUIRE_FALSE(wrong);
  CHECK(wrong.error().code == "InvalidConfig");
}

}  // namespace
}  // namespace amlnode::test
