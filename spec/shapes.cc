#include "spec/shapes.h"

#include <algorithm>
#include <array>

#include "spec/paths.h"
#include "spec/values.h"

namespace amlnode::spec::detail {
namespace fs = std::filesystem;
namespace {

// Keys only RunConfiguration writes at its top level.
constexpr auto kRunConfigKeys = std::to_array<std::string_view>(
    {"script", "target", "framework", "communicator", "nodeCount", "maxRunDurationSeconds",
     "environment", "history", "tensorflow", "mpi", "pyTorch", "pytorch", "docker",
     "dataReferences", "data", "outputData", "amlcompute", "sourceDirectoryDataStore",
     "credentialPassthrough"});

// Keys only the native shape has (everything it accepts except arguments and command).
constexpr auto kNativeKeys = std::to_array<std::string_view>({"source_directory",
                                                              "entry_script",
                                                              "script_params",
                                                              "node_count",
                                                              "process_count_per_node",
                                                              "distributed_training",
                                                              "distributed_backend",
                                                              "use_gpu",
                                                              "use_docker",
                                                              "custom_docker_image",
                                                              "custom_docker_base_image",
                                                              "image_registry_details",
                                                              "user_managed",
                                                              "conda_packages",
                                                              "pip_packages",
                                                              "conda_dependencies_file",
                                                              "conda_dependencies_file_path",
                                                              "pip_requirements_file",
                                                              "pip_requirements_file_path",
                                                              "environment_variables",
                                                              "environment_definition",
                                                              "inputs",
                                                              "shm_size",
                                                              "resume_from",
                                                              "max_run_duration_seconds",
                                                              "experiment_name",
                                                              "compute_target",
                                                              "vm_size",
                                                              "vm_priority",
                                                              "source_directory_data_store",
                                                              "parallel_run",
                                                              "distributed_job_config",
                                                              "docker_runtime_config",
                                                              "framework_version",
                                                              "models"});

template <std::size_t N>
bool contains(const std::array<std::string_view, N>& keys, std::string_view key) {
  return std::find(keys.begin(), keys.end(), key) != keys.end();
}

}  // namespace

// Whether a mapping (or one of the mappings in it) has a snake_case key: the native shape spells
// an environment's keys so (user_managed_dependencies), a .runconfig in camelCase.
bool has_snake_case_key(const Node& node, int depth) {
  if (!node.is_mapping() || depth < 0) return false;
  for (const auto& [key, value] : node.entries) {
    if (key.find('_') != std::string::npos || has_snake_case_key(value, depth - 1)) return true;
  }
  return false;
}

bool looks_like_runconfig(const Node& root) {
  bool runconfig_key = false;
  for (const auto& [key, value] : root.entries) {
    if (contains(kNativeKeys, key)) return false;
    // ScriptRunConfig's environment: a name, or a definition in snake_case; a .runconfig's is a
    // camelCase mapping.
    if (key == "environment" && (value.is_scalar() || has_snake_case_key(value, 2))) return false;
    runconfig_key = runconfig_key || contains(kRunConfigKeys, key);
  }
  return runconfig_key;
}

std::optional<fs::path> settle_source_dir(const fs::path& dir, const std::string& path,
                                          const LoadOptions& options, Diagnostics& diagnostics) {
  fs::path chosen = dir;
  std::string field = path;
  if (options.source_dir_override) {
    std::error_code ec;
    chosen = clean_absolute(*options.source_dir_override, fs::current_path(ec));
    field = "--source-dir";
  }
  auto checked = check_directory(chosen);
  if (checked.ok()) return chosen;
  diagnostics.error(field, "expected the source directory, but " + checked.error().message);
  return std::nullopt;
}

// Entry points this node cannot run as a script, and what would be needed instead.
std::optional<std::string> unrunnable_entry(std::string_view script) {
  auto dot = script.rfind('.');
  std::string extension = dot == std::string_view::npos ? "" : lower(script.substr(dot));
  if (extension == ".ipynb") {
    return "a Jupyter notebook cannot run as a script: export it first (jupyter nbconvert --to "
           "script " +
           std::string(script) + ") and give the .py it writes";
  }
  if (extension == ".cmd" || extension == ".bat" || extension == ".ps1" || extension == ".exe") {
    return "a Windows entry point (" + extension +
           ") needs a Windows compute; this node runs Linux (give a .py or .sh script)";
  }
  return std::nullopt;
}

void read_entry_script(const Field& field, const ShapeContext& context, Job& job) {
  auto value = context.reader().text(field);
  if (value) {
    if (auto why = unrunnable_entry(*value)) {
      context.diagnostics().error(field.path, *why);
      return;
    }
  }
  // Without a valid source directory (already reported) there is nothing to check against.
  if (!value || !context.source_dir()) return;
  auto script = resolve_entry_script(*value, *context.source_dir());
  if (script.ok()) {
    job.entry_script = script.value();
  } else {
    context.diagnostics().error(field.path, script.error().message);
  }
}

void read_command(const Field& field, Reader& reader, Job& job) {
  if (field.node->is_sequence()) {
    // The SDK joins the list into one line for the shell: ["python train.py --epochs 30"] and
    // [python, train.py, --epochs, 30] are the same command.
    auto parts = reader.text_list(field);
    if (!parts) return;
    std::string line;
    for (const auto& part : *parts) line += (line.empty() ? "" : " ") + part;
    job.shell_command = line;
  } else if (field.node->is_scalar()) {
    if (auto text = reader.argument(field, "a list of arguments or a command string"))
      job.shell_command = *text;
  } else {
    reader.wrong(field, "a list of arguments or a command string");
  }
}

void check_what_to_run(const WhatToRun& what, Diagnostics& diagnostics) {
  if (what.script_given && what.command_given) {
    diagnostics.error(what.command_key, "cannot be combined with " + what.script_key +
                                            "; give either a script or a command");
  }
  if (!what.script_given && !what.command_given) {
    diagnostics.error(what.script_key,
                      "expected the script to run (or a " + what.command_key + "), got neither");
  }
  if (what.command_given) {
    for (const std::string& arguments : what.argument_fields) {
      diagnostics.error(arguments,
                        "cannot be combined with " + what.command_key +
                            "; a command carries its own arguments, so write them into it");
    }
  }
}

void split_process_count(Job& job, const std::string& path, Diagnostics& diagnostics) {
  if (!job.distributed.pytorch_process_count) return;
  int total = *job.distributed.pytorch_process_count;
  if (total % job.node_count != 0) {
    diagnostics.error(path, "expected a multiple of the node count (" +
                                std::to_string(job.node_count) + "), got " + std::to_string(total));
    return;
  }
  job.distributed.process_count_per_node = total / job.node_count;
}

void apply_defaults(Job& job) {
  DockerSection& docker = job.environment.docker;
  if (docker.base_image.empty() && !docker.base_dockerfile) {
    docker.base_image = job.use_gpu ? kDefaultGpuImage : kDefaultCpuImage;
  }
  if (job.experiment_name.empty()) {
    job.experiment_name = job.source_directory.filename().string();
    if (job.experiment_name.empty()) job.experiment_name = "default";
  }
}

}  // namespace amlnode::spec::detail
