#include "agent/config.h"

#include <utility>

#include "common/fs.h"
#include "spec/tree.h"

namespace amlnode::agent {

namespace {

Result<nlohmann::json> parse_structured(const std::filesystem::path& file) {
  auto text = read_file(file, 1 << 20);
  if (!text.ok()) return text.error();
  auto parsed = file.extension() == ".json" ? spec::detail::parse_json(*text)
                                            : spec::detail::parse_yaml(*text);
  if (!parsed.root) {
    std::string message = file.string() + ": ";
    for (const auto& error : parsed.errors) message += error.to_string() + "; ";
    return Error{"InvalidConfig", message.substr(0, message.size() - 2)};
  }
  auto json = spec::detail::to_json(*parsed.root);
  if (json.is_null()) json = nlohmann::json::object();
  if (!json.is_object())
    return Error{"InvalidConfig", file.string() + ": expected a mapping at the top"};
  return json;
}

Result<std::optional<std::string>> optional_string(const nlohmann::json& parent, const char* key,
                                                   const std::string& where) {
  auto it = parent.find(key);
  if (it == parent.end() || it->is_null()) return std::optional<std::string>();
  if (!it->is_string()) return Error{"InvalidConfig", where + key + ": expected a string"};
  return std::optional<std::string>(it->get<std::string>());
}

Result<nlohmann::json> section(const nlohmann::json& root, const char* key,
                               const std::string& file) {
  auto it = root.find(key);
  if (it == root.end() || it->is_null()) return nlohmann::json::object();
  if (!it->is_object()) return Error{"InvalidConfig", file + ": " + key + ": expected a mapping"};
  return *it;
}

}  // namespace

Result<NodeConfig> load_node_config(const std::filesystem::path& file) {
  auto root = parse_structured(file);
  if (!root.ok()) return root.error();
  NodeConfig config;
  config.file = file;
  const std::string where = file.string() + ": ";
  auto state_dir = optional_string(*root, "state_dir", where);
  if (!state_dir.ok()) return state_dir.error();
  if (*state_dir) config.state_dir = **state_dir;
  auto images = section(*root, "images", file.string());
  if (!images.ok()) return images.error();
  auto cpu = optional_string(*images, "cpu", where + "images.");
  auto gpu = optional_string(*images, "gpu", where + "images.");
  if (!cpu.ok()) return cpu.error();
  if (!gpu.ok()) return gpu.error();
  config.cpu_image = *cpu;
  config.gpu_image = *gpu;
  for (auto [key, target] : {std::pair{"environments", &config.environments},
                             {"docker", &config.docker},
                             {"control_plane", &config.control_plane},
                             {"node", &config.node},
                             {"log", &config.log},
                             {"metrics", &config.metrics},
                             {"named_environments", &config.named_environments},
                             {"datasets", &config.datasets},
                             {"sdk", &config.sdk}}) {
    auto read = section(*root, key, file.string());
    if (!read.ok()) return read.error();
    *target = std::move(*read);
  }
  auto batch = section(*root, "batch", file.string());
  if (!batch.ok()) return batch.error();
  for (const auto& [key, value] : batch->items()) {
    if (key != "root_dir")
      return Error{"InvalidConfig", where + "batch." + key + ": unknown setting (root_dir)"};
    if (!value.is_string() || !std::filesystem::path(value.get<std::string>()).is_absolute())
      return Error{"InvalidConfig",
                   where + "batch.root_dir: expected an absolute path, got " + value.dump()};
    config.batch_root_dir = value.get<std::string>();
  }
  // The sdk switches are read where runs are planned; a wrong one is refused here, at start.
  for (const auto& [key, value] : config.sdk.items()) {
    if (key != "stand_in" && key != "install_azureml_packages")
      return Error{"InvalidConfig", file.string() + ": sdk." + key +
                                        ": unknown setting (stand_in, install_azureml_packages)"};
    if (!value.is_boolean())
      return Error{"InvalidConfig", file.string() + ": sdk." + key +
                                        ": expected true or false, got " + value.dump()};
  }
  return config;
}

std::optional<std::filesystem::path> config_path(const std::optional<std::string>& flag) {
  if (flag) return std::filesystem::path(*flag);
  if (const char* env = std::getenv("AMLNODE_CONFIG"); env && *env)
    return std::filesystem::path(env);
  std::filesystem::path system_file = "/etc/amlnode/config.yml";
  std::error_code ec;
  if (std::filesystem::exists(system_file, ec)) return system_file;
  return std::nullopt;
}

}  // namespace amlnode::agent
