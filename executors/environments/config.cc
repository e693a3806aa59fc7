#include "executors/environments/config.h"

namespace amlnode::executors::environments {
namespace {

Error config_error(const std::string& key, const std::string& expected) {
  return Error{"InvalidConfig", "environments." + key + ": expected " + expected};
}

Result<void> read_string(const nlohmann::json& section, const char* key, std::string& out) {
  if (!section.contains(key)) return ok();
  if (!section[key].is_string()) return config_error(key, "a string");
  out = section[key].get<std::string>();
  return ok();
}

Result<void> read_strings(const nlohmann::json& section, const char* key,
                          std::vector<std::string>& out) {
  if (!section.contains(key)) return ok();
  const auto& value = section[key];
  if (!value.is_array()) return config_error(key, "a list of strings");
  out.clear();
  for (const auto& item : value) {
    if (!item.is_string()) return config_error(key, "a list of strings");
    out.push_back(item.get<std::string>());
  }
  return ok();
}

Result<void> read_variables(const nlohmann::json& section, const char* key, spec::EnvVars& out) {
  if (!section.contains(key)) return ok();
  const auto& value = section[key];
  if (!value.is_object()) return config_error(key, "a mapping of variable names to strings");
  for (const auto& [name, text] : value.items()) {
    if (!text.is_string()) return config_error(key, "a mapping of variable names to strings");
    out.emplace_back(name, text.get<std::string>());
  }
  return ok();
}

Result<void> read_count(const nlohmann::json& section, const char* key,
                        std::optional<std::uint64_t>& out) {
  if (!section.contains(key)) return ok();
  if (!section[key].is_number_unsigned()) return config_error(key, "a non-negative whole number");
  out = section[key].get<std::uint64_t>();
  return ok();
}

}  // namespace

Result<EnvironmentConfig> environment_config_from_json(const nlohmann::json& section,
                                                       const std::filesystem::path& state_dir) {
  EnvironmentConfig config;
  config.envs_dir = state_dir / "envs";
  if (section.is_null()) return config;
  if (!section.is_object()) return Error{"InvalidConfig", "environments: expected a mapping"};
  std::string system_python = config.system_python.string();
  std::optional<std::uint64_t> timeout_seconds;
  std::optional<std::uint64_t> tail_lines;
  for (auto read : {read_string(section, "conda_tool", config.conda_tool),
                    read_string(section, "tool_search_path", config.tool_search_path),
                    read_string(section, "system_python", system_python),
                    read_strings(section, "conda_channels", config.conda_channels),
                    read_strings(section, "conda_args", config.conda_args),
                    read_strings(section, "pip_args", config.pip_args),
                    read_variables(section, "installer_env", config.installer_env),
                    read_count(section, "disk_budget_bytes", config.disk_budget_bytes),
                    read_count(section, "build_timeout_seconds", timeout_seconds),
                    read_count(section, "failure_tail_lines", tail_lines)}) {
    if (!read) return read.error();
  }
  config.system_python = system_python;
  if (timeout_seconds) config.build_timeout = std::chrono::seconds(*timeout_seconds);
  if (tail_lines) config.failure_tail_lines = static_cast<std::size_t>(*tail_lines);
  return config;
}

}  // namespace amlnode::executors::environments
