// A v1 .runconfig as RunConfiguration.save() writes it: camelCase keys, every unset field
// written as null, and many sections that do not matter to a run here (kept, not errors).

#include "spec/paths.h"
#include "spec/shapes.h"
#include "spec/values.h"

namespace amlnode::spec::detail {
namespace fs = std::filesystem;
namespace {

// The DockerConfiguration section (`docker:` at the top level), which in newer SDKs takes over
// from environment.docker for how the container runs.
struct DockerConfiguration {
  std::optional<bool> use_docker;
  std::optional<bool> shared_volumes;
  std::optional<Size> shm_size;
  std::optional<std::vector<std::string>> arguments;
  std::string shm_size_path;
  std::string arguments_path;
};

struct RunConfigFields {
  bool script_given = false;
  bool command_given = false;
  bool arguments_given = false;
  std::optional<Framework> framework;
  std::optional<Communicator> communicator;
  std::optional<int> node_count;
  bool environment_given = false;
  EnvironmentFields environment;
  DockerConfiguration docker;
  std::optional<int> mpi_process_count_per_node;
  std::optional<std::string> pytorch_backend;
  std::string pytorch_backend_path;
  std::optional<int> pytorch_process_count;
  std::string pytorch_process_count_path;
  std::optional<int> tensorflow_worker_count;
  std::optional<int> tensorflow_parameter_server_count;
};

class RunConfigReader {
 public:
  RunConfigReader(const Node& root, const LoadContext& context, Reader& reader)
      : root_{&root, ""},
        context_(context),
        reader_(reader),
        shape_(SourceShape::RunConfig, reader),
        project_dir_(runconfig_project_dir(context.job_file)) {}

  Job read() {
    job_.shape = SourceShape::RunConfig;
    job_.job_file = context_.job_file;
    shape_.keep_unused_in(&job_.unused_runconfig_sections);
    if (auto dir = settle_source_dir(project_dir_, "", context_.options, diagnostics())) {
      job_.source_directory = *dir;
      shape_.set_source_dir(*dir);
    }
    shape_.set_files_dir(project_dir_);
    // Top-level keys amlnode does not read are kept silently: which sections save() writes
    // changes from one SDK version to the next.
    fields().walk(root_, [this](const std::string&, const Field& f) { shape_.keep(f); });
    build_what_to_run();
    build_distribution();
    build_environment();
    // RunConfiguration() without an environment gets the SDK's default one; here, the node's.
    if (!fields_.environment_given) job_.node_default_environment = true;
    apply_defaults(job_);
    return std::move(job_);
  }

 private:
  Diagnostics& diagnostics() { return reader_.diagnostics(); }

  MappingWalker fields() {
    MappingWalker walker;
    walker.on("script", [this](const Field& f) {
      fields_.script_given = true;
      read_entry_script(f, shape_, job_);
    });
    walker.on("command", [this](const Field& f) {
      fields_.command_given = true;
      read_command(f, reader_, job_);
    });
    walker.on("arguments", [this](const Field& f) {
      fields_.arguments_given = true;
      if (auto arguments = reader_.text_list(f)) job_.arguments = *arguments;
    });
    walker.on("target", [this](const Field& f) {
      if (auto target = reader_.text(f)) job_.compute_target = *target;
    });
    walker.on("framework", [this](const Field& f) { read_framework(f); });
    walker.on("communicator", [this](const Field& f) { read_communicator(f); });
    walker.on("maxRunDurationSeconds", [this](const Field& f) {
      job_.max_run_duration_seconds = reader_.integer(f, 1, "an integer > 0 (seconds)");
    });
    walker.on("nodeCount", [this](const Field& f) { fields_.node_count = reader_.count(f); });
    walker.on("environment", [this](const Field& f) {
      fields_.environment_given = true;
      fields_.environment = read_environment(f, shape_);
    });
    walker.on("docker", [this](const Field& f) { read_docker_configuration(f); });
    walker.on("mpi", [this](const Field& f) { read_mpi(f); });
    walker.on("hdi", [this](const Field& f) { read_hdi(f, shape_, job_.spark); });
    walker.on("spark", [this](const Field& f) { read_spark_run(f, shape_, job_.spark); });
    walker.on("pyTorch", [this](const Field& f) { read_pytorch(f); });
    walker.on("pytorch", [this](const Field& f) { read_pytorch(f); });
    walker.on("tensorflow", [this](const Field& f) { read_tensorflow(f); });
    walker.on("dataReferences", [this](const Field& f) { read_data_references(f); });
    walker.on("data", [this](const Field& f) { read_data(f); });
    walker.on("outputData", [this](const Field& f) {
      // Outputs registered as datasets in a workspace: nothing on a node can do that, and
      // accepting the section would drop what it asks for.
      if (f.node->is_mapping() && !f.node->entries.empty()) {
        reader_.wrong(f,
                      "no entries: registering outputs as workspace datasets is not possible "
                      "on this node; write them to ./outputs, which is kept with the run");
      } else {
        shape_.keep(f);
      }
    });
    return walker;
  }

  void read_framework(const Field& field) {
    auto text = reader_.text(field);
    if (!text) return;
    fields_.framework = parse_framework(*text);
    if (!fields_.framework) reader_.wrong(field, framework_names());
  }

  void read_communicator(const Field& field) {
    auto text = reader_.text(field);
    if (!text) return;
    fields_.communicator = parse_communicator(*text);
    if (!fields_.communicator) reader_.wrong(field, communicator_names());
  }

  void read_docker_configuration(const Field& field) {
    if (!reader_.mapping(field)) return;
    DockerConfiguration& docker = fields_.docker;
    MappingWalker walker;
    walker.on("useDocker", [&](const Field& f) { docker.use_docker = reader_.boolean(f); });
    walker.on("sharedVolumes", [&](const Field& f) { docker.shared_volumes = reader_.boolean(f); });
    walker.on("shmSize", [&](const Field& f) {
      docker.shm_size_path = f.path;
      docker.shm_size = read_size(f, reader_);
    });
    walker.on("arguments", [&](const Field& f) {
      docker.arguments_path = f.path;
      docker.arguments = reader_.text_list(f);
    });
    shape_.walk(walker, field);
  }

  void read_mpi(const Field& field) {
    if (!reader_.mapping(field)) return;
    MappingWalker walker;
    walker.on("processCountPerNode",
              [&](const Field& f) { fields_.mpi_process_count_per_node = reader_.count(f); });
    shape_.walk(walker, field);
  }

  void read_pytorch(const Field& field) {
    if (!reader_.mapping(field)) return;
    MappingWalker walker;
    walker.on("communicationBackend", [&](const Field& f) {
      auto text = reader_.text(f);
      if (!text) return;
      fields_.pytorch_backend_path = f.path;
      fields_.pytorch_backend = lower(*text);
      if (*fields_.pytorch_backend != "nccl" && *fields_.pytorch_backend != "gloo") {
        reader_.wrong(f, "nccl or gloo");
      }
    });
    walker.on("processCount", [&](const Field& f) {
      fields_.pytorch_process_count_path = f.path;
      fields_.pytorch_process_count = reader_.count(f);
    });
    shape_.walk(walker, field);
  }

  void read_tensorflow(const Field& field) {
    if (!reader_.mapping(field)) return;
    MappingWalker walker;
    walker.on("workerCount",
              [&](const Field& f) { fields_.tensorflow_worker_count = reader_.count(f); });
    walker.on("parameterServerCount", [&](const Field& f) {
      fields_.tensorflow_parameter_server_count = reader_.count(f, 0);
    });
    shape_.walk(walker, field);
  }

  // Data references point at datastores in Azure; here pathOnDataStore is a local path, relative
  // to the project folder.
  void read_data_references(const Field& field) {
    if (!reader_.mapping(field)) return;
    for (const auto& [name, value] : field.node->entries) {
      Field reference{&value, join_path(field.path, name)};
      if (!reference.is_set()) {
        reader_.wrong(reference, "a data reference {dataStoreName, mode, pathOnDataStore, ...}");
      } else if (auto input = read_input(name, reference, shape_, project_dir_)) {
        job_.inputs.push_back(*input);
      }
    }
  }

  // data: {name: {dataLocation: {dataset: {id, name, version}, datapath}, mechanism,
  // environmentVariableName, pathOnCompute, overwrite, createOutputDirectories}}: the datasets a
  // run consumes (DatasetConsumptionConfig), registered in the workspace. The node resolves each
  // by id or name through its datasets registry before the run starts.
  void read_data(const Field& field) {
    if (field.node->is_null()) return;
    if (!reader_.mapping(field)) return;
    for (const auto& [name, value] : field.node->entries) {
      Field entry{&value, join_path(field.path, name)};
      if (!reader_.mapping(entry)) continue;
      Input input;
      input.name = name;
      input.dataset = true;
      input.field_path = entry.path;
      MappingWalker walker;
      walker
          .on("dataLocation",
              [&](const Field& location) {
                if (!reader_.mapping(location)) return;
                MappingWalker where;
                where
                    .on("dataset",
                        [&](const Field& dataset) {
                          if (dataset.node->is_null() || !reader_.mapping(dataset)) return;
                          MappingWalker ids;
                          ids.on("id", [&](const Field& f) { set_text(f, input.dataset_id); })
                              .on("name", [&](const Field& f) { set_text(f, input.dataset_name); })
                              .on("version", [&](const Field&) {});
                          shape_.walk(ids, dataset);
                        })
                    .on("datapath", [&](const Field& datapath) {
                      if (datapath.node->is_null()) return;
                      reader_.wrong(datapath,
                                    "nothing: a datastore path cannot be reached from "
                                    "this node (register the data as a dataset)");
                    });
                shape_.walk(where, location);
              })
          .on("mechanism",
              [&](const Field& f) {
                auto text = reader_.text(f);
                if (!text) return;
                if (auto mode = parse_input_mode(*text)) {
                  input.mode = *mode;
                } else if (lower(*text) != "direct") {
                  reader_.wrong(f, "mount, download or direct");
                }
              })
          .on("environmentVariableName",
              [&](const Field& f) {
                if (f.node->is_null()) return;
                set_text(f, input.environment_variable_name);
                if (!input.environment_variable_name.empty() &&
                    !is_variable_name(input.environment_variable_name))
                  reader_.wrong(f, "a variable name");
              })
          .on("pathOnCompute",
              [&](const Field& f) {
                if (f.node->is_null()) return;
                auto text = reader_.text(f);
                if (!text || text->empty()) return;
                if (auto where = path_on_compute(*text)) {
                  input.path_on_compute = *where;
                } else {
                  reader_.wrong(f,
                                "a relative path inside the run's inputs folder, or an absolute "
                                "path below /tmp");
                }
              })
          .on("overwrite",
              [&](const Field& f) {
                if (auto overwrite = reader_.boolean(f)) input.overwrite = *overwrite;
              })
          .on("createOutputDirectories", [&](const Field& f) { reader_.boolean(f); });
      shape_.walk(walker, entry);
      if (input.dataset_name.empty()) input.dataset_name = name;
      job_.inputs.push_back(std::move(input));
    }
  }

  void set_text(const Field& field, std::string& target) {
    if (field.node->is_null()) return;
    if (auto text = reader_.text(field)) target = *text;
  }

  void build_what_to_run() {
    WhatToRun what;
    what.script_key = "script";
    what.command_key = "command";
    what.script_given = fields_.script_given;
    what.command_given = fields_.command_given;
    if (fields_.arguments_given) what.argument_fields.push_back("arguments");
    // A script given on the command line replaces whatever the file says to run.
    if (!context_.options.script_override) check_what_to_run(what, diagnostics());
  }

  // The communicator decides which of the mpi, pyTorch and tensorflow sections applies; save()
  // writes all three with their defaults whatever the communicator, so the others are ignored.
  void build_distribution() {
    job_.framework = fields_.framework.value_or(Framework::Python);
    job_.node_count = fields_.node_count.value_or(1);
    if (fields_.node_count) job_.distributed_field = "nodeCount";
    if (fields_.communicator && *fields_.communicator != Communicator::None)
      job_.distributed_field = "communicator";
    Distributed& distributed = job_.distributed;
    distributed.communicator = fields_.communicator.value_or(Communicator::None);
    switch (distributed.communicator) {
      case Communicator::IntelMpi:
      case Communicator::OpenMpi:
      case Communicator::Mpi:
        distributed.process_count_per_node = fields_.mpi_process_count_per_node.value_or(1);
        break;
      case Communicator::Nccl:
      case Communicator::Gloo:
        apply_pytorch();
        break;
      case Communicator::ParameterServer:
        distributed.worker_count = fields_.tensorflow_worker_count.value_or(1);
        distributed.parameter_server_count = fields_.tensorflow_parameter_server_count.value_or(1);
        break;
      case Communicator::None:
        // Valid for the SDK (the script runs once on each node, and launches what it needs); a
        // node that cannot run it refuses it when it plans the run.
        break;
      case Communicator::ParallelTask:
        break;
    }
  }

  void apply_pytorch() {
    Distributed& distributed = job_.distributed;
    distributed.communication_backend = lower(to_string(distributed.communicator));
    if (fields_.pytorch_backend && *fields_.pytorch_backend != distributed.communication_backend) {
      diagnostics().warning(
          fields_.pytorch_backend_path,
          "ignored: communicator " + to_string(distributed.communicator) + " decides the backend");
    }
    distributed.pytorch_process_count = fields_.pytorch_process_count;
    split_process_count(job_, fields_.pytorch_process_count_path, diagnostics());
  }

  void build_environment() {
    EnvironmentFields& environment = fields_.environment;
    job_.environment = std::move(environment.environment);
    // RunConfiguration.environment_variables is environment.environmentVariables: they are the
    // run's own variables, so they go where the native environment_variables go.
    job_.environment_variables = std::move(job_.environment.environment_variables);
    job_.environment.environment_variables.clear();
    job_.use_gpu = environment.gpu_support.value_or(false);
    apply_docker_configuration();
    ignore_packages_if_user_managed();
  }

  // DockerConfiguration (top-level `docker`) is the newer home of these settings; where both it
  // and environment.docker give one, the top-level value wins.
  void apply_docker_configuration() {
    const DockerConfiguration& configuration = fields_.docker;
    const EnvironmentFields& environment = fields_.environment;
    DockerSection& docker = job_.environment.docker;
    docker.enabled = docker.enabled || configuration.use_docker.value_or(false);
    if (configuration.shared_volumes) docker.shared_volumes = *configuration.shared_volumes;
    if (configuration.shm_size) {
      if (!environment.shm_size_path.empty() && docker.shm_size != configuration.shm_size->text) {
        diagnostics().warning(environment.shm_size_path,
                              "ignored because " + configuration.shm_size_path + " is given");
      }
      docker.shm_size = configuration.shm_size->text;
      docker.shm_size_bytes = configuration.shm_size->bytes;
    }
    if (configuration.arguments) {
      if (!environment.arguments_path.empty() && docker.arguments != *configuration.arguments) {
        diagnostics().warning(environment.arguments_path,
                              "ignored because " + configuration.arguments_path + " is given");
      }
      docker.arguments = *configuration.arguments;
    }
  }

  // save() writes a conda specification even for user-managed environments, so here (unlike in
  // the native shape) it is a warning, and the specification is dropped.
  void ignore_packages_if_user_managed() {
    const EnvironmentFields& environment = fields_.environment;
    if (environment.user_managed_path.empty() || environment.conda_path.empty()) return;
    diagnostics().warning(environment.conda_path,
                          "ignored because " + environment.user_managed_path +
                              " is true: a user-managed environment is used as it is");
    PythonSection& python = job_.environment.python;
    PythonSection cleared;
    cleared.user_managed_dependencies = true;
    cleared.interpreter_path = python.interpreter_path;
    python = cleared;
  }

  Field root_;
  const LoadContext& context_;
  Reader& reader_;
  ShapeContext shape_;
  fs::path project_dir_;
  RunConfigFields fields_;
  Job job_;
};

}  // namespace

Job read_runconfig(const Node& root, const LoadContext& context, Reader& reader) {
  return RunConfigReader(root, context, reader).read();
}

}  // namespace amlnode::spec::detail
