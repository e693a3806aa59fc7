#include "executors/environments/commands.h"

#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <cstdlib>

#include "common/fs.h"

namespace amlnode::executors::environments {
namespace {

namespace fs = std::filesystem;

constexpr const char* kToolsInOrder[] = {"micromamba", "mamba", "conda"};

std::string search_path(const EnvironmentConfig& config) {
  if (!config.tool_search_path.empty()) return config.tool_search_path;
  const char* path = std::getenv("PATH");
  return path ? path : "/usr/local/bin:/usr/bin:/bin";
}

CondaFlavor flavor_of(const fs::path& tool) {
  std::string name = tool.filename().string();
  if (name.find("micromamba") != std::string::npos) return CondaFlavor::Micromamba;
  if (name.find("mamba") != std::string::npos) return CondaFlavor::Mamba;
  return CondaFlavor::Conda;
}

// The channels a conda build uses: the configured override, else the spec's own.
std::vector<std::string> channels_for(const CondaSpec& conda, const EnvironmentConfig& config) {
  return config.conda_channels.empty() ? conda.channels : config.conda_channels;
}

void append(std::vector<std::string>& to, const std::vector<std::string>& items) {
  to.insert(to.end(), items.begin(), items.end());
}

InstallerCommand conda_create(const CondaSpec& conda, const EnvironmentConfig& config,
                              const CondaTool& tool, const fs::path& prefix) {
  InstallerCommand command{{tool.path.string(), "create", "-y", "-p", prefix.string()}, {}, {}};
  if (!config.conda_channels.empty()) command.argv.push_back("--override-channels");
  for (const auto& channel : channels_for(conda, config)) {
    command.argv.push_back("-c");
    command.argv.push_back(channel);
  }
  append(command.argv, config.conda_args);
  append(command.argv, conda.packages);
  return command;
}

InstallerCommand conda_env_create(const EnvironmentConfig& config, const CondaTool& tool,
                                  const fs::path& prefix, const fs::path& file) {
  InstallerCommand command;
  // micromamba has no separate `env create`, and without -y it asks for confirmation; conda's
  // `env create` never asks (and older versions reject -y).
  if (tool.flavor == CondaFlavor::Micromamba) {
    command.argv = {tool.path.string(), "create", "-y", "-p", prefix.string(), "-f", file.string()};
  } else {
    command.argv = {tool.path.string(), "env", "create",     "-p",
                    prefix.string(),    "-f",  file.string()};
  }
  append(command.argv, config.conda_args);
  return command;
}

// pip options are written as one entry each ("--index-url URL"); on a command line the option and
// its value are separate arguments.
void append_option_tokens(std::vector<std::string>& argv, const std::string& option) {
  auto space = option.find(' ');
  argv.push_back(option.substr(0, space));
  if (space != std::string::npos) argv.push_back(option.substr(space + 1));
}

std::optional<InstallerCommand> pip_install(const PipSpec& pip, const EnvironmentConfig& config,
                                            const fs::path& prefix) {
  if (pip.packages.empty() && pip.requirement_files.empty()) return std::nullopt;
  InstallerCommand command{{(prefix / "bin" / "python").string(), "-m", "pip", "install"}, {}, {}};
  append(command.argv, config.pip_args);
  for (const auto& option : pip.options) append_option_tokens(command.argv, option);
  for (const auto& file : pip.requirement_files) {
    command.argv.push_back("-r");
    command.argv.push_back(file.string());
  }
  append(command.argv, pip.packages);
  return command;
}

// Variables every installer gets: no prompts, no version nagging, output as it happens, no user
// site-packages leaking into the environment; then the config's; then the build tag (see
// kBuildTagVariable), which nothing may override.
spec::EnvVars installer_env(const EnvironmentConfig& config, const fs::path& prefix) {
  spec::EnvVars env = {{"PIP_DISABLE_PIP_VERSION_CHECK", "1"},
                       {"PIP_NO_INPUT", "1"},
                       {"PYTHONUNBUFFERED", "1"},
                       {"PYTHONNOUSERSITE", "1"}};
  env.insert(env.end(), config.installer_env.begin(), config.installer_env.end());
  env.emplace_back(kBuildTagVariable, prefix.string());
  return env;
}

void emit_json(YAML::Emitter& out, const nlohmann::json& value) {
  if (value.is_object()) {
    out << YAML::BeginMap;
    for (const auto& [key, item] : value.items()) {
      out << YAML::Key << key << YAML::Value;
      emit_json(out, item);
    }
    out << YAML::EndMap;
  } else if (value.is_array()) {
    out << YAML::BeginSeq;
    for (const auto& item : value) emit_json(out, item);
    out << YAML::EndSeq;
  } else if (value.is_string()) {
    out << value.get<std::string>();
  } else if (value.is_null()) {
    out << YAML::Null;
  } else {
    out << value.dump();
  }
}

}  // namespace

Result<CondaTool> find_conda_tool(const EnvironmentConfig& config) {
  const std::string path = search_path(config);
  if (!config.conda_tool.empty()) {
    fs::path tool = config.conda_tool;
    if (config.conda_tool.find('/') == std::string::npos) {
      auto found = find_on_path(config.conda_tool, path);
      if (!found) {
        return Error{"CondaNotFound", "the configured conda tool '" + config.conda_tool +
                                          "' is not on PATH (" + path + ")"};
      }
      tool = *found;
    } else if (::access(tool.c_str(), X_OK) != 0) {
      return Error{"CondaNotFound",
                   "the configured conda tool " + tool.string() + " is not an executable file"};
    }
    return CondaTool{tool, flavor_of(tool)};
  }
  for (const char* name : kToolsInOrder) {
    if (auto found = find_on_path(name, path)) return CondaTool{*found, flavor_of(*found)};
  }
  return Error{"CondaNotFound",
               "this environment needs conda, but none of micromamba, mamba or conda is on PATH (" +
                   path + "); install one or set environments.conda_tool in the agent config"};
}

BuildPlan plan_build(const EnvironmentSpec& spec, const EnvironmentConfig& config,
                     const std::optional<CondaTool>& tool, const fs::path& prefix,
                     const fs::path& environment_file) {
  BuildPlan plan;
  if (spec.conda && tool) {
    if (spec.conda->from_file) {
      auto channels = channels_for(*spec.conda, config);
      // An environment file cannot say --override-channels; "nodefaults" is how it says the same.
      if (!config.conda_channels.empty()) channels.push_back("nodefaults");
      plan.environment_yaml = conda_environment_yaml(*spec.conda, channels);
      plan.steps.push_back(conda_env_create(config, *tool, prefix, environment_file));
    } else {
      plan.steps.push_back(conda_create(*spec.conda, config, *tool, prefix));
    }
  } else {
    plan.steps.push_back(
        InstallerCommand{{spec.base_python.string(), "-m", "venv", prefix.string()}, {}, {}});
  }
  if (auto pip = pip_install(spec.pip, config, prefix)) plan.steps.push_back(std::move(*pip));
  for (auto& step : plan.steps) {
    step.env = installer_env(config, prefix);
    step.timeout = config.build_timeout;
  }
  return plan;
}

std::string conda_environment_yaml(const CondaSpec& conda,
                                   const std::vector<std::string>& channels) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  out << YAML::Key << "channels" << YAML::Value << YAML::BeginSeq;
  for (const auto& channel : channels) out << channel;
  out << YAML::EndSeq;
  out << YAML::Key << "dependencies" << YAML::Value << YAML::BeginSeq;
  for (const auto& package : conda.packages) out << package;
  out << YAML::EndSeq;
  for (const auto& [key, value] : conda.extra.items()) {
    out << YAML::Key << key << YAML::Value;
    emit_json(out, value);
  }
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

}  // namespace amlnode::executors::environments
