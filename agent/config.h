#pragma once

// The node's configuration file (YAML or JSON), shared by `amlnode run` and the daemon. Every key
// is optional; sections belong to the subsystem that reads them:
//
//   state_dir: /var/lib/amlnode
//   images: {cpu: mirror.local/azureml/openmpi4.1.0-ubuntu20.04, gpu: ...}
//   environments: {conda_tool: micromamba, pip_args: [--no-index, --find-links, /srv/wheels], ...}
//   docker: {socket: /var/run/docker.sock, ...}
//   control_plane: {url: https://cp.example:8631, registration_token_file: /etc/amlnode/token, ...}
//   node: {labels: {compute_name: cpu-cluster, ...}, ssh_port: 22, run_concurrency: 1}
//   log: {level: info, format: text}
//   metrics: {interval_seconds: 10, listen: 127.0.0.1:9108, allow_public: false}
//   named_environments: {AzureML-sklearn-0.24-ubuntu18.04-py37-cpu: {python: {...}}, default: ...}
//   datasets: {<name or id>: {path: /data/mnist, kind: file|tabular, format: delimited, ...}}
//   sdk: {stand_in: true, install_azureml_packages: false}

#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "common/result.h"

namespace amlnode::agent {

struct NodeConfig {
  std::filesystem::path file;  // where it was read from; empty when defaults are used
  std::optional<std::filesystem::path> state_dir;
  std::optional<std::string> cpu_image;
  std::optional<std::string> gpu_image;
  nlohmann::json environments = nlohmann::json::object();
  nlohmann::json docker = nlohmann::json::object();
  // Read by the daemon (agent/daemon/settings.h).
  nlohmann::json control_plane = nlohmann::json::object();
  nlohmann::json node = nlohmann::json::object();
  // The daemon's own log: {level, format} (agent/daemon/log_setup.h).
  nlohmann::json log = nlohmann::json::object();
  // The daemon's sampling and /metrics endpoint (agent/daemon/settings.h, MetricsSettings).
  nlohmann::json metrics = nlohmann::json::object();
  // Environments jobs name rather than define (ScriptRunConfig's environment="NAME", curated
  // names, framework estimators; "default" for a ScriptRunConfig that names none): each in the
  // shape of a job's environment_definition (docs/sdk-compat.md).
  nlohmann::json named_environments = nlohmann::json::object();
  // Registered datasets a .runconfig's data: section names by id or name, with their local path.
  nlohmann::json datasets = nlohmann::json::object();
  // The SDK stand-in in runs: {stand_in: true, install_azureml_packages: false}
  // (docs/sdk-compat.md, "azureml packages in a job's environment").
  nlohmann::json sdk = nlohmann::json::object();
  // batch.root_dir: AZ_BATCH_NODE_ROOT_DIR, where AzureBatchStep tasks' folders are made
  // (docs/batch.md); unset: <state_dir>/batch. Absolute.
  std::optional<std::filesystem::path> batch_root_dir;
};

// Reads a config file; errors name the file and the key.
Result<NodeConfig> load_node_config(const std::filesystem::path& file);

// --config, else $AMLNODE_CONFIG, else /etc/amlnode/config.yml when it exists; nullopt: defaults.
std::optional<std::filesystem::path> config_path(const std::optional<std::string>& flag);

}  // namespace amlnode::agent
