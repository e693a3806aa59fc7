#include "spec/shapes.h"

#include <algorithm>
#include <array>

#include "spec/paths.h"

namespace amlnode::spec::detail {
namespace fs = std::filesystem;
namespace {

// Keys only RunConfiguration writes at its top level.
constexpr auto kRunConfigKeys = std::to_array<std::string_view>({"script",
                                                                 "target",
                                                                 "framework",
                                                                 "communicator",
                                                                 "nodeCount",
                                                                 "maxRunDurationSeconds",
                                                                 "environment",
                                                                 "history",
                                                                 "spark",
                                                                 "hdi",
                                                                 "tensorflow",
                                                                 "mpi",
                                                                 "pyTorch",
                                                                 "pytorch",
                                                                 "docker",
                                                                 "dataReferences",
                                                                 "data",
                                                                 "outputData",
                                                                 "amlcompute",
                                                                 "sourceDirectoryDataStore",
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
                                                              "parallel_run"});

template <std::size_t N>
bool contains(const std::array<std::string_view, N>& keys, std::string_view key) {
  return std::find(keys.begin(), keys.end(), key) != keys.end();
}

}  // namespace

bool looks_like_runconfig(const Node& root) {
  bool runconfig_key = false;
  for (const auto& [key, _] : root.entries) {
    if (contains(kNativeKeys, key)) return false;
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

void read_entry_script(const Field& field, const ShapeContext& context, Job& job) {
  auto value = context.reader().text(field);
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
    if (auto argv = reader.text_list(field)) job.command_argv = *argv;
  } else if (field.node->is_scalar()) {
    job.shell_command = field.node->text;
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
