// The native job file: the Estimator / ScriptRunConfig parameters in snake_case, read with the
// Estimator's defaults and rules.

#include <algorithm>
#include <charconv>
#include <set>

#include "common/format.h"
#include "spec/batch_step.h"
#include "spec/paths.h"
#include "spec/shapes.h"
#include "spec/values.h"

namespace amlnode::spec::detail {
namespace fs = std::filesystem;
namespace {

// Flat environment parameters that environment_definition replaces; giving both is an error.
constexpr auto kFlatEnvironmentFields = std::to_array<std::string_view>(
    {"custom_docker_image", "custom_docker_base_image", "image_registry_details", "user_managed",
     "conda_packages", "pip_packages", "conda_dependencies_file", "conda_dependencies_file_path",
     "pip_requirements_file", "pip_requirements_file_path"});

// Parameters that ask for packages, which a user-managed environment never installs.
constexpr auto kPackageFields = std::to_array<std::string_view>(
    {"conda_packages", "pip_packages", "conda_dependencies_file", "conda_dependencies_file_path",
     "pip_requirements_file", "pip_requirements_file_path"});

// The two SDK classes a native file can stand for. Their own parameters cannot be mixed in one
// file (the Estimator is deprecated in favour of ScriptRunConfig, which spells the same things
// differently); the rest (source_directory, arguments, command, compute_target,
// max_run_duration_seconds, node_count, inputs, environment_variables, ...) belongs to both.
constexpr auto kEstimatorOnlyFields =
    std::to_array<std::string_view>({"entry_script",
                                     "script_params",
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
                                     "environment_definition",
                                     "distributed_training",
                                     "distributed_backend",
                                     "process_count_per_node",
                                     "shm_size",
                                     "framework",
                                     "framework_version"});
constexpr auto kScriptRunConfigOnlyFields = std::to_array<std::string_view>(
    {"script", "environment", "distributed_job_config", "docker_runtime_config"});

// The framework estimators (PyTorch, TensorFlow, SKLearn, Chainer) ran in Azure ML's curated
// environments; here each maps to the node's named environment of that name.
std::optional<std::string> curated_environment(const std::string& framework,
                                               const std::string& version, bool gpu) {
  std::string device = gpu ? "GPU" : "CPU";
  if (framework == "pytorch") return "AzureML-PyTorch-" + version + "-" + device;
  if (framework == "tensorflow") return "AzureML-TensorFlow-" + version + "-" + device;
  if (framework == "chainer") return "AzureML-Chainer-" + version + "-" + device;
  if (framework == "sklearn") return "AzureML-Scikit-learn-" + version;
  return std::nullopt;
}

constexpr std::string_view kStepNameExpected =
    "a step name of 3-32 lowercase letters, digits and dashes, starting with a letter";

// A distributed backend as distributed_training (or distributed_backend) chose it.
struct Backend {
  std::string path;
  Framework framework = Framework::Python;
  Communicator communicator = Communicator::None;
  std::string communication_backend;
  std::optional<int> process_count_per_node;  // Mpi(process_count_per_node=N)
  std::optional<int> process_count;           // PyTorchConfiguration(process_count=N)
  int worker_count = 1;
  int parameter_server_count = 1;
  std::optional<int> node_count;  // distributed_job_config: MpiConfiguration(node_count=N), ...
};

Backend make_backend(const std::string& path, Framework framework, Communicator communicator) {
  Backend backend;
  backend.path = path;
  backend.framework = framework;
  backend.communicator = communicator;
  return backend;
}

Backend mpi_backend(const std::string& path) {
  return make_backend(path, Framework::Python, Communicator::IntelMpi);
}

Backend pytorch_backend(const std::string& path, const std::string& communication_backend) {
  Backend backend =
      make_backend(path, Framework::PyTorch,
                   communication_backend == "gloo" ? Communicator::Gloo : Communicator::Nccl);
  backend.communication_backend = communication_backend;
  return backend;
}

Backend tensorflow_backend(const std::string& path) {
  return make_backend(path, Framework::TensorFlow, Communicator::ParameterServer);
}

// What the user gave, typed and checked field by field, before the rules that combine fields.
struct NativeFields {
  std::set<std::string, std::less<>> given;  // top-level fields with a value, valid or not
  std::vector<std::string> script_params;
  std::vector<std::string> arguments;
  std::optional<int> node_count;
  std::optional<int> process_count_per_node;
  std::optional<int> parallel_node_count;  // parallel_run.node_count (ParallelRunConfig's)
  std::optional<Backend> distributed_training;
  std::optional<Backend> distributed_backend;
  std::optional<bool> use_gpu;
  std::optional<bool> use_docker;
  std::optional<bool> user_managed;
  std::optional<std::string> custom_docker_image;
  std::optional<std::string> custom_docker_base_image;
  std::optional<RegistryDetails> image_registry_details;
  std::vector<std::string> conda_packages;
  std::vector<std::string> pip_packages;
  std::optional<fs::path> conda_dependencies_file;
  std::optional<fs::path> conda_dependencies_file_path;
  std::optional<fs::path> pip_requirements_file;
  std::optional<fs::path> pip_requirements_file_path;
  std::optional<EnvironmentFields> environment_definition;
  std::optional<Size> shm_size;
  // ScriptRunConfig
  std::optional<EnvironmentFields> environment;  // inline
  std::optional<std::string> environment_name;   // or by name
  std::optional<Backend> distributed_job_config;
  std::optional<DockerRuntime> docker_runtime_config;
  // The framework estimators
  std::optional<std::string> framework;
  std::optional<std::string> framework_version;
};

class NativeReader {
 public:
  NativeReader(const Node& root, const LoadContext& context, Reader& reader)
      : root_{&root, ""},
        context_(context),
        reader_(reader),
        shape_(SourceShape::Native, reader),
        job_dir_(context.job_file.parent_path()) {}

  Job read() {
    job_.shape = SourceShape::Native;
    job_.job_file = context_.job_file;
    settle_source_directory();
    fields().walk_strict(root_, reader_.diagnostics());
    if (given("azure_batch_step")) return read_batch_job();
    check_one_class();
    check_framework_fields();
    prefer_new_parameters();
    build_what_to_run();
    build_distribution();
    if (fields_.environment_definition) {
      build_environment_from_definition(*fields_.environment_definition, "environment_definition");
    } else if (fields_.environment) {
      build_environment_from_definition(*fields_.environment, "environment");
    } else if (fields_.environment_name || fields_.framework) {
      build_named_environment();
    } else if (script_run_config()) {
      job_.node_default_environment = true;
    } else {
      build_environment_from_parameters();
    }
    job_.docker_runtime = fields_.docker_runtime_config;
    apply_docker_runtime(job_);
    check_inputs();
    apply_defaults(job_);
    return std::move(job_);
  }

 private:
  Diagnostics& diagnostics() { return reader_.diagnostics(); }
  bool given(std::string_view key) const { return fields_.given.contains(key); }

  // An AzureBatchStep: its own parameters and the few job fields a Batch task has.
  Job read_batch_job() {
    if (context_.options.script_override)
      diagnostics().error("azure_batch_step",
                          "a Batch task runs its executable; give no script on the command line");
    check_batch_job(fields_.given, job_, diagnostics());
    apply_defaults(job_);
    return std::move(job_);
  }

  // The source directory is needed while reading other fields (the entry script and files are
  // checked against it), so it is settled before the walk.
  void settle_source_directory() {
    Field field = root_["source_directory"];
    // AzureBatchStep(source_directory=...) says it inside the step; once is enough.
    if (Field step = root_["azure_batch_step"]["source_directory"]; step.is_set()) {
      if (field.is_set())
        diagnostics().error(step.path, "conflicts with source_directory; give it once");
      field = step;
    }
    fs::path dir = job_dir_;
    if (field.is_set()) {
      auto value = reader_.text(field);
      if (!value && !context_.options.source_dir_override) return;
      if (value) dir = clean_absolute(fs::path(*value), job_dir_);
    }
    auto settled = settle_source_dir(dir, field.is_set() ? field.path : "source_directory",
                                     context_.options, diagnostics());
    if (!settled) return;
    job_.source_directory = *settled;
    shape_.set_source_dir(*settled);
  }

  MappingWalker fields() {
    MappingWalker walker;
    auto on = [&](std::string key, auto handler) {
      walker.on(key, [this, key, handler](const Field& field) {
        fields_.given.insert(key);
        handler(field);
      });
    };
    on("source_directory", [](const Field&) {});
    on("experiment_name", [this](const Field& f) { set_text(f, job_.experiment_name); });
    on("compute_target", [this](const Field& f) { set_text(f, job_.compute_target); });
    on("vm_size", [this](const Field& f) { reader_.text(f); });
    on("vm_priority", [this](const Field& f) { reader_.text(f); });
    on("source_directory_data_store", [](const Field&) {});
    on("entry_script", [this](const Field& f) { read_entry_script(f, shape_, job_); });
    on("script_params", [this](const Field& f) { read_script_params(f); });
    on("arguments", [this](const Field& f) { set_list(f, fields_.arguments); });
    on("command", [this](const Field& f) { read_command(f, reader_, job_); });
    on("node_count", [this](const Field& f) { fields_.node_count = reader_.count(f); });
    on("process_count_per_node",
       [this](const Field& f) { fields_.process_count_per_node = reader_.count(f); });
    on("distributed_training",
       [this](const Field& f) { fields_.distributed_training = read_distributed_training(f); });
    on("distributed_backend",
       [this](const Field& f) { fields_.distributed_backend = read_distributed_backend(f); });
    on("use_gpu", [this](const Field& f) { fields_.use_gpu = reader_.boolean(f); });
    on("use_docker", [this](const Field& f) { fields_.use_docker = reader_.boolean(f); });
    on("user_managed", [this](const Field& f) { fields_.user_managed = reader_.boolean(f); });
    on("custom_docker_image",
       [this](const Field& f) { fields_.custom_docker_image = reader_.text(f); });
    on("custom_docker_base_image",
       [this](const Field& f) { fields_.custom_docker_base_image = reader_.text(f); });
    on("image_registry_details",
       [this](const Field& f) { fields_.image_registry_details = read_registry(f, shape_); });
    on("conda_packages", [this](const Field& f) { set_list(f, fields_.conda_packages); });
    on("pip_packages", [this](const Field& f) { set_list(f, fields_.pip_packages); });
    on("conda_dependencies_file",
       [this](const Field& f) { fields_.conda_dependencies_file = read_source_file(f); });
    on("conda_dependencies_file_path",
       [this](const Field& f) { fields_.conda_dependencies_file_path = read_source_file(f); });
    on("pip_requirements_file",
       [this](const Field& f) { fields_.pip_requirements_file = read_source_file(f); });
    on("pip_requirements_file_path",
       [this](const Field& f) { fields_.pip_requirements_file_path = read_source_file(f); });
    on("environment_variables", [this](const Field& f) {
      if (auto variables = read_variables(f, reader_)) job_.environment_variables = *variables;
    });
    on("environment_definition",
       [this](const Field& f) { fields_.environment_definition = read_environment(f, shape_); });
    on("inputs", [this](const Field& f) { read_inputs(f); });
    on("shm_size", [this](const Field& f) { fields_.shm_size = read_size(f, reader_); });
    on("resume_from", [this](const Field& f) { read_resume_from(f); });
    on("max_run_duration_seconds", [this](const Field& f) {
      job_.max_run_duration_seconds = reader_.integer(f, 1, "an integer > 0 (seconds)");
    });
    on("parallel_run", [this](const Field& f) { read_parallel_run(f); });
    on("azure_batch_step",
       [this](const Field& f) { job_.batch_task = read_batch_step(f, reader_); });
    on("script", [this](const Field& f) { read_entry_script(f, shape_, job_); });
    on("environment", [this](const Field& f) { read_script_run_environment(f); });
    on("distributed_job_config", [this](const Field& f) {
      if (!f.node->is_mapping())
        return reader_.wrong(f, "a mapping with a type: mpi, pytorch or tensorflow");
      fields_.distributed_job_config = read_backend_object(f);
    });
    on("docker_runtime_config", [this](const Field& f) { read_docker_runtime(f); });
    on("framework", [this](const Field& f) { read_framework(f); });
    on("framework_version",
       [this](const Field& f) { fields_.framework_version = reader_.text(f); });
    on("models", [this](const Field& f) { read_models(f); });
    on("hdi", [this](const Field& f) { read_hdi(f, shape_, job_.spark); });
    on("spark", [this](const Field& f) { read_spark_run(f, shape_, job_.spark); });
    return walker;
  }

  void check_framework_fields() {
    if (given("framework_version") && !given("framework"))
      diagnostics().error("framework_version",
                          "given without framework, which it is the version of");
    if (given("framework") && given("environment_definition"))
      diagnostics().error("framework",
                          "cannot be combined with environment_definition: the "
                          "framework picks its named environment");
  }

  bool script_run_config() const {
    return std::any_of(kScriptRunConfigOnlyFields.begin(), kScriptRunConfigOnlyFields.end(),
                       [this](std::string_view key) { return given(key); });
  }

  // Estimator-only and ScriptRunConfig-only parameters in one file: each of the latter is named
  // with the first of the former.
  void check_one_class() {
    auto estimator = std::find_if(kEstimatorOnlyFields.begin(), kEstimatorOnlyFields.end(),
                                  [this](std::string_view key) { return given(key); });
    if (estimator == kEstimatorOnlyFields.end()) return;
    for (std::string_view key : kScriptRunConfigOnlyFields) {
      if (!given(key)) continue;
      diagnostics().error(std::string(key),
                          "a ScriptRunConfig parameter, which cannot be mixed with the "
                          "Estimator's " +
                              std::string(*estimator) +
                              " in one file; write the job in one of the two shapes");
    }
  }

  // ScriptRunConfig(environment=...): an inline definition, or a name the node resolves. A
  // definition holding only a name (and version) is a name too.
  void read_script_run_environment(const Field& field) {
    if (field.node->is_scalar()) {
      auto name = reader_.text(field);
      if (name && name->empty()) return reader_.wrong(field, "an environment name or definition");
      fields_.environment_name = name;
      return;
    }
    if (!reader_.mapping(field)) return;
    bool only_named = field["name"].is_set();
    for (const auto& [key, value] : field.node->entries)
      only_named = only_named && (key == "name" || key == "version");
    if (only_named) {
      fields_.environment_name = reader_.text(field["name"]);
      return;
    }
    fields_.environment = read_environment(field, shape_);
  }

  // DockerConfiguration(use_docker, shared_volumes, arguments, shm_size).
  void read_docker_runtime(const Field& field) {
    if (!reader_.mapping(field)) return;
    DockerRuntime runtime;
    MappingWalker walker;
    walker.on("use_docker", [&](const Field& f) { runtime.use_docker = reader_.boolean(f); })
        .on("shared_volumes", [&](const Field& f) { runtime.shared_volumes = reader_.boolean(f); })
        .on("arguments", [&](const Field& f) { runtime.arguments = reader_.text_list(f); })
        .on("shm_size", [&](const Field& f) {
          if (auto size = read_size(f, reader_)) {
            runtime.shm_size = size->text;
            runtime.shm_size_bytes = size->bytes;
          }
        });
    walker.walk_strict(field, diagnostics());
    fields_.docker_runtime_config = runtime;
  }

  void read_framework(const Field& field) {
    auto text = reader_.text(field);
    if (!text) return;
    std::string name = lower(*text);
    if (name == "pytorch" || name == "tensorflow" || name == "sklearn" || name == "chainer") {
      fields_.framework = name;
    } else {
      reader_.wrong(field, "pytorch, tensorflow, sklearn or chainer (a framework estimator)");
    }
  }

  static bool is_model_name(const std::string& name) {
    if (name.empty() || name.size() > 255 || !std::isalnum(static_cast<unsigned char>(name[0])))
      return false;
    return std::all_of(name.begin(), name.end(), [](char c) {
      return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
    });
  }

  // models: {name: path} or {name: {path, version}}, for Model.get_model_path(name).
  void read_models(const Field& field) {
    if (!reader_.mapping(field)) return;
    for (const auto& [name, value] : field.node->entries) {
      Field model{&value, join_path(field.path, name)};
      // Azure ML's rule for model names; the name is also a folder of the run (models/<name>/).
      if (!is_model_name(name)) {
        diagnostics().error(model.path,
                            "a model name is 1-255 letters, digits, '-', '_' or '.', starting "
                            "with a letter or digit; got \"" +
                                printable(name, 60) + "\"");
        continue;
      }
      ModelRef ref;
      ref.name = name;
      std::optional<std::string> path;
      if (value.is_scalar()) {
        path = reader_.text(model);
      } else if (reader_.mapping(model)) {
        MappingWalker walker;
        walker.on("path", [&](const Field& f) { path = reader_.text(f); })
            .on("version", [&](const Field& f) {
              if (auto version = reader_.integer(f, 1, "a version number >= 1"))
                ref.version = static_cast<int>(*version);
            });
        walker.walk_strict(model, diagnostics());
        if (!model["path"].is_set()) reader_.wrong(model["path"], "the model's local path");
      }
      if (!path) continue;
      auto resolved = resolve_existing_path(*path, job_dir_);
      if (!resolved.ok()) {
        diagnostics().error(value.is_scalar() ? model.path : join_path(model.path, "path"),
                            resolved.error().message);
        continue;
      }
      ref.path = resolved.value().string();
      job_.models.push_back(std::move(ref));
    }
  }

  void set_text(const Field& field, std::string& target) {
    if (auto value = reader_.text(field)) target = *value;
  }

  void set_list(const Field& field, std::vector<std::string>& target) {
    if (auto values = reader_.text_list(field)) target = *values;
  }

  // script_params: `key value` pairs in file order; true is a bare flag, false leaves the key out,
  // and null or "" give the bare key.
  void read_script_params(const Field& field) {
    if (!reader_.mapping(field)) return;
    for (const auto& [key, value] : field.node->entries) {
      Field param{&value, join_path(field.path, key)};
      if (value.is_null() || (value.is_scalar() && value.text.empty())) {
        fields_.script_params.push_back(key);
        continue;
      }
      auto flag = value.quoted ? std::nullopt : core_bool(value.text);
      if (flag) {
        if (*flag) fields_.script_params.push_back(key);
        continue;
      }
      if (auto text = reader_.argument(param, "a string, number or boolean")) {
        fields_.script_params.push_back(key);
        fields_.script_params.push_back(*text);
      }
    }
  }

  std::optional<fs::path> read_source_file(const Field& field) {
    auto value = reader_.text(field);
    if (!value || !shape_.source_dir()) return std::nullopt;
    auto file = resolve_existing_file(*value, *shape_.source_dir());
    if (file.ok()) return file.value();
    diagnostics().error(field.path, file.error().message);
    return std::nullopt;
  }

  std::optional<Backend> read_distributed_training(const Field& field) {
    if (field.node->is_mapping()) return read_backend_object(field);
    auto text = reader_.argument(field, "mpi, pytorch, tensorflow, gloo, nccl or a mapping");
    if (!text) return std::nullopt;
    std::string name = lower(*text);
    if (name == "mpi") return mpi_backend(field.path);
    if (name == "pytorch" || name == "nccl") return pytorch_backend(field.path, "nccl");
    if (name == "gloo") return pytorch_backend(field.path, "gloo");
    if (name == "tensorflow") return tensorflow_backend(field.path);
    reader_.wrong(field, "mpi, pytorch, tensorflow, gloo, nccl or a mapping with a type");
    return std::nullopt;
  }

  // {type: mpi, process_count_per_node: N}, {type: pytorch, communication_backend: nccl,
  // process_count: N} or {type: tensorflow, worker_count: N, parameter_server_count: M}.
  std::optional<Backend> read_backend_object(const Field& field) {
    Field type = field["type"];
    auto name = type.is_set() ? reader_.text(type) : std::nullopt;
    std::string kind = name ? lower(*name) : "";
    if (kind != "mpi" && kind != "pytorch" && kind != "tensorflow") {
      if (!type.is_set() || name) reader_.wrong(type, "mpi, pytorch or tensorflow");
      return std::nullopt;
    }
    Backend backend = kind == "mpi"       ? mpi_backend(field.path)
                      : kind == "pytorch" ? pytorch_backend(field.path, "nccl")
                                          : tensorflow_backend(field.path);
    std::size_t errors_before = diagnostics().error_count();
    MappingWalker walker;
    walker.on("type", [](const Field&) {});
    if (field.path == "distributed_job_config")
      walker.on("node_count", [&](const Field& f) { backend.node_count = reader_.count(f); });
    if (kind == "mpi") {
      walker.on("process_count_per_node",
                [&](const Field& f) { backend.process_count_per_node = reader_.count(f); });
    } else if (kind == "pytorch") {
      walker.on("communication_backend", [&](const Field& f) { set_backend(f, backend); });
      walker.on("process_count", [&](const Field& f) { backend.process_count = reader_.count(f); });
    } else {
      walker.on("worker_count",
                [&](const Field& f) { backend.worker_count = reader_.count(f).value_or(1); });
      walker.on("parameter_server_count", [&](const Field& f) {
        backend.parameter_server_count = reader_.count(f, 0).value_or(1);
      });
    }
    walker.walk_strict(field, diagnostics());
    if (diagnostics().error_count() != errors_before) return std::nullopt;
    return backend;
  }

  void set_backend(const Field& field, Backend& backend) {
    auto text = reader_.text(field);
    if (!text) return;
    std::string name = lower(*text);
    if (name == "nccl" || name == "gloo") {
      Backend chosen = pytorch_backend(backend.path, name);
      backend.communicator = chosen.communicator;
      backend.communication_backend = chosen.communication_backend;
    } else {
      reader_.wrong(field, "nccl or gloo");
    }
  }

  std::optional<Backend> read_distributed_backend(const Field& field) {
    auto text = reader_.text(field);
    if (!text) return std::nullopt;
    if (lower(*text) == "mpi") return mpi_backend(field.path);
    reader_.wrong(field, "\"mpi\" (use distributed_training for other backends)");
    return std::nullopt;
  }

  void read_inputs(const Field& field) {
    if (!field.node->is_mapping()) {
      return reader_.wrong(field, "a mapping of input names to local paths");
    }
    for (const auto& [name, value] : field.node->entries) {
      Field input{&value, join_path(field.path, name)};
      if (!input.is_set()) {
        reader_.wrong(input, "a local path or {path, mode, path_on_compute, overwrite}");
      } else if (auto read = read_input(name, input, shape_, job_dir_)) {
        job_.inputs.push_back(*read);
      }
    }
  }

  void read_resume_from(const Field& field) {
    auto value = reader_.text(field);
    if (!value) return;
    auto path = resolve_existing_path(*value, job_dir_);
    if (path.ok()) {
      job_.resume_from = path.value().string();
    } else {
      diagnostics().error(field.path, path.error().message);
    }
  }

  // ParallelRunConfig's and ParallelRunStep's parameters, each checked; an unknown one is an
  // error, so nothing the user wrote is dropped.
  void read_parallel_run(const Field& field) {
    if (!reader_.mapping(field)) return;
    ParallelRun run;
    std::size_t errors_before = diagnostics().error_count();
    MappingWalker walker;
    walker.on("name", [&](const Field& f) {
      auto text = reader_.text(f);
      if (text && !is_step_name(*text)) return reader_.wrong(f, kStepNameExpected);
      if (text) run.name = *text;
    });
    walker.on("entry_script", [&](const Field& f) {
      auto text = reader_.text(f);
      if (!text) return;
      fs::path script = fs::path(*text).lexically_normal();
      if (script.empty() || script.is_absolute() || *script.begin() == "..")
        return reader_.wrong(f, "a script path inside the source directory");
      run.entry_script = script.string();
    });
    walker.on("mini_batch_size", [&](const Field& f) { run.mini_batch_size = reader_.text(f); });
    walker.on("partition_keys", [&](const Field& f) {
      if (auto keys = reader_.text_list(f)) run.partition_keys = *keys;
    });
    walker.on("partition_format", [&](const Field& f) {
      auto text = reader_.text(f);
      // A path pattern: bounded, as it becomes a regular expression on the node.
      if (text && text->size() > 1024)
        return reader_.wrong(f, "a path pattern of at most 1024 characters");
      if (text) run.partition_format = *text;
    });
    walker.on("error_threshold", [&](const Field& f) {
      if (auto v = reader_.integer(f, -1, "an integer >= -1 (-1: no limit)"))
        run.error_threshold = *v;
    });
    walker.on("allowed_failed_count", [&](const Field& f) {
      if (auto v = reader_.integer(f, -1, "an integer >= -1 (-1: no limit)"))
        run.allowed_failed_count = *v;
    });
    walker.on("allowed_failed_percent",
              [&](const Field& f) { read_percent(f, run.allowed_failed_percent); });
    walker.on("output_action", [&](const Field& f) {
      auto text = reader_.text(f);
      if (text == "append_row")
        run.output_action = OutputAction::AppendRow;
      else if (text == "summary_only")
        run.output_action = OutputAction::SummaryOnly;
      else if (text)
        reader_.wrong(f, "append_row or summary_only");
    });
    walker.on("append_row_file_name", [&](const Field& f) {
      auto text = reader_.text(f);
      if (text &&
          (text->empty() || text->find('/') != std::string::npos || *text == "." || *text == ".."))
        return reader_.wrong(f, "a file name (no folders)");
      if (text) run.append_row_file_name = *text;
    });
    walker.on("run_invocation_timeout", [&](const Field& f) {
      if (auto v = reader_.integer(f, 1, "an integer from 1 to 604800 (seconds)", 604800))
        run.run_invocation_timeout = *v;
    });
    walker.on("run_max_try", [&](const Field& f) {
      if (auto v = reader_.count(f)) run.run_max_try = *v;
    });
    walker.on("logging_level", [&](const Field& f) {
      auto text = reader_.text(f);
      if (!text) return;
      for (const char* level : {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"})
        if (*text == level) return void(run.logging_level = *text);
      reader_.wrong(f, "DEBUG, INFO, WARNING, ERROR or CRITICAL");
    });
    walker.on("process_count_per_node", [&](const Field& f) {
      if (auto v = reader_.integer(f, 1, "an integer from 1 to 1024", 1024))
        run.process_count_per_node = static_cast<int>(*v);
    });
    walker.on("node_count",
              [&](const Field& f) { fields_.parallel_node_count = reader_.count(f); });
    walker.on("side_inputs", [&](const Field& f) {
      if (auto names = reader_.text_list(f)) run.side_inputs = *names;
    });
    walker.on("allow_reuse", [&](const Field& f) {
      if (auto v = reader_.boolean(f)) run.allow_reuse = *v;
    });
    walker.walk_strict(field, diagnostics());
    for (const char* required : {"error_threshold", "output_action"}) {
      if (!field[required].is_set())
        diagnostics().error(field.path + "." + required,
                            "required (ParallelRunConfig has no default for it)");
    }
    if (run.mini_batch_size && !run.partition_keys.empty())
      diagnostics().error(field.path + ".partition_keys",
                          "conflicts with mini_batch_size: a mini-batch is either a size or one "
                          "value of the partition keys; give one of them");
    if (run.allowed_failed_percent > 100)
      diagnostics().error(field.path + ".allowed_failed_percent", "expected 0 to 100, or -1");
    if (diagnostics().error_count() == errors_before) job_.parallel_run = std::move(run);
  }

  void read_percent(const Field& field, double& out) {
    const Node& node = *field.node;
    double value = 0;
    if (node.is_scalar() && !node.quoted && !node.text.empty()) {
      auto [end, error] =
          std::from_chars(node.text.data(), node.text.data() + node.text.size(), value);
      if (error == std::errc() && end == node.text.data() + node.text.size() &&
          (value == -1 || (value >= 0 && value <= 100)))
        return void(out = value);
    }
    reader_.wrong(field, "a percentage from 0 to 100, or -1 for no limit");
  }

  // Deprecated parameters still work, with a warning; when the new one is given too it wins.
  template <class T>
  void prefer_new(std::string_view new_key, std::string_view old_key, T& new_value, T& old_value) {
    if (!given(old_key)) return;
    std::string old_name(old_key);
    if (given(new_key)) {
      diagnostics().warning(
          old_name, "deprecated, and ignored because " + std::string(new_key) + " is given");
      return;
    }
    diagnostics().warning(old_name, "deprecated; use " + std::string(new_key) + " instead");
    new_value = std::move(old_value);
  }

  void prefer_new_parameters() {
    prefer_new("distributed_training", "distributed_backend", fields_.distributed_training,
               fields_.distributed_backend);
    prefer_new("custom_docker_image", "custom_docker_base_image", fields_.custom_docker_image,
               fields_.custom_docker_base_image);
    prefer_new("conda_dependencies_file", "conda_dependencies_file_path",
               fields_.conda_dependencies_file, fields_.conda_dependencies_file_path);
    prefer_new("pip_requirements_file", "pip_requirements_file_path", fields_.pip_requirements_file,
               fields_.pip_requirements_file_path);
  }

  void build_what_to_run() {
    job_.arguments = fields_.script_params;
    job_.arguments.insert(job_.arguments.end(), fields_.arguments.begin(), fields_.arguments.end());
    WhatToRun what;
    what.script_key = given("script") ? "script" : "entry_script";
    what.command_key = "command";
    // A ParallelRunStep names its entry script inside parallel_run.
    what.script_given = given("entry_script") || given("script") || given("parallel_run");
    what.command_given = given("command");
    for (std::string_view key : {"script_params", "arguments"}) {
      if (given(key)) what.argument_fields.emplace_back(key);
    }
    // A script given on the command line replaces whatever the file says to run.
    if (!context_.options.script_override) check_what_to_run(what, diagnostics());
  }

  void build_distribution() {
    for (const char* key : {"node_count", "process_count_per_node", "distributed_backend",
                            "distributed_training", "distributed_job_config"}) {
      if (given(key)) job_.distributed_field = key;
    }
    job_.node_count = fields_.node_count.value_or(1);
    if (fields_.parallel_node_count) {
      if (given("node_count") && job_.node_count != *fields_.parallel_node_count) {
        diagnostics().error("node_count", "conflicts with parallel_run.node_count (" +
                                              std::to_string(*fields_.parallel_node_count) +
                                              "); give it once");
      }
      job_.node_count = *fields_.parallel_node_count;
    }
    int per_node = fields_.process_count_per_node.value_or(1);
    job_.distributed.process_count_per_node = per_node;
    if (!fields_.distributed_training && fields_.distributed_job_config) {
      fields_.distributed_training = fields_.distributed_job_config;
      if (auto nodes = fields_.distributed_job_config->node_count) {
        if (given("node_count") && job_.node_count != *nodes) {
          diagnostics().error("node_count", "conflicts with distributed_job_config.node_count (" +
                                                std::to_string(*nodes) + "); give it once");
        }
        job_.node_count = *nodes;
      }
    }
    if (!fields_.distributed_training) {
      // A backend that was given but is invalid has been reported already.
      if (!given("distributed_training") && !given("distributed_backend") &&
          !given("distributed_job_config")) {
        require_backend_for(per_node);
      }
      return;
    }
    const Backend& backend = *fields_.distributed_training;
    job_.framework = backend.framework;
    Distributed& distributed = job_.distributed;
    distributed.communicator = backend.communicator;
    distributed.communication_backend = backend.communication_backend;
    if (backend.communicator == Communicator::ParameterServer) {
      distributed.worker_count = backend.worker_count;
      distributed.parameter_server_count = backend.parameter_server_count;
    }
    std::string from_backend;
    if (backend.process_count_per_node) {
      distributed.process_count_per_node = *backend.process_count_per_node;
      from_backend = join_path(backend.path, "process_count_per_node");
    } else if (backend.process_count) {
      distributed.pytorch_process_count = backend.process_count;
      from_backend = join_path(backend.path, "process_count");
      split_process_count(job_, from_backend, diagnostics());
    }
    if (!from_backend.empty() && given("process_count_per_node") &&
        distributed.process_count_per_node != per_node) {
      diagnostics().error("process_count_per_node",
                          "conflicts with " + from_backend + ", which gives " +
                              std::to_string(distributed.process_count_per_node) +
                              " processes per node; give the count once");
    }
  }

  // The SDK runs several processes on a node only through a distributed backend. Several nodes
  // without one are valid (the script runs once on each, and launches what it needs); a node that
  // cannot run them refuses them when it plans the run.
  void require_backend_for(int per_node) {
    const std::string hint =
        "; set distributed_training (mpi, pytorch or tensorflow) to run more than one";
    if (per_node > 1) {
      diagnostics().error(
          "process_count_per_node",
          "expected 1 without a distributed backend, got " + std::to_string(per_node) + hint);
    }
  }

  void build_environment_from_parameters() {
    PythonSection& python = job_.environment.python;
    python.user_managed_dependencies = fields_.user_managed.value_or(false);
    python.conda_packages = fields_.conda_packages;
    add_pip_entries(python, fields_.pip_packages);
    python.conda_dependencies_file = fields_.conda_dependencies_file;
    python.pip_requirements_file = fields_.pip_requirements_file;
    if (python.user_managed_dependencies) {
      for (std::string_view key : kPackageFields) {
        if (!given(key)) continue;
        diagnostics().error(std::string(key),
                            "cannot be combined with user_managed: true; nothing installs "
                            "packages into an environment you manage yourself");
      }
    }
    DockerSection& docker = job_.environment.docker;
    docker.enabled = fields_.use_docker.value_or(true);
    job_.use_gpu = fields_.use_gpu.value_or(false);
    if (fields_.custom_docker_image) docker.base_image = *fields_.custom_docker_image;
    docker.base_image_registry = fields_.image_registry_details;
    apply_shm_size();
  }

  // environment_definition (or ScriptRunConfig's inline environment) defines the whole
  // environment: none of the flat environment parameters can be given alongside it, use_docker and
  // use_gpu included (the SDK reports such combinations as errors).
  void build_environment_from_definition(const EnvironmentFields& definition,
                                         const std::string& key_of_definition) {
    if (definition.environment.name.size() > 0 && key_of_definition == "environment_definition") {
      // {name: AzureML-...} and nothing else names a (curated) environment rather than define one.
      Field field = root_["environment_definition"];
      bool only_named = true;
      for (const auto& [key, value] : field.node->entries)
        only_named = only_named && (key == "name" || key == "version");
      if (only_named) {
        fields_.environment_name = definition.environment.name;
        return build_named_environment("environment_definition.name");
      }
    }
    for (std::string_view key : kFlatEnvironmentFields) {
      if (!given(key)) continue;
      diagnostics().error(std::string(key), "cannot be combined with " + key_of_definition +
                                                ", which defines the whole environment; set it "
                                                "inside " +
                                                key_of_definition + " instead");
    }
    reject_overridden("use_docker", key_of_definition + ".docker.enabled");
    reject_overridden("use_gpu", key_of_definition + ".docker.gpu_support");
    job_.environment = definition.environment;
    job_.use_gpu = definition.gpu_support.value_or(false);
    DockerSection& docker = job_.environment.docker;
    docker.enabled = definition.docker_enabled.value_or(false);
    if (!definition.user_managed_path.empty() && !definition.conda_path.empty()) {
      diagnostics().error(definition.conda_path,
                          "cannot be combined with " + definition.user_managed_path +
                              ": true; nothing installs packages into an environment you "
                              "manage yourself");
    }
    if (!docker.enabled && !definition.image_path.empty()) {
      diagnostics().warning(definition.image_path,
                            "unused: environment_definition.docker.enabled is not true, so the "
                            "job runs without Docker");
    }
    if (!definition.shm_size_path.empty()) {
      if (given("shm_size")) {
        diagnostics().warning("shm_size",
                              "ignored because " + definition.shm_size_path + " is given");
      }
      return;
    }
    apply_shm_size();
  }

  void reject_overridden(std::string_view key, const std::string& decided_by) {
    if (!given(key)) return;
    diagnostics().error(std::string(key),
                        "cannot be combined with a whole environment definition; " + decided_by +
                            " decides it there");
  }

  // A named environment (ScriptRunConfig's environment: NAME, a definition holding only a name, or
  // a framework estimator's curated one): resolved by the node before the run starts.
  void build_named_environment(const std::string& named_by = "") {
    if (fields_.framework) {
      for (std::string_view key : kFlatEnvironmentFields) {
        if (!given(key)) continue;
        diagnostics().error(std::string(key),
                            "cannot be combined with framework, whose named environment defines "
                            "the packages and image; put them in the node's named environment");
      }
      // The framework estimators' use_docker chooses a container or not, over the named
      // environment's own docker.enabled, as it did in the SDK.
      if (fields_.use_docker) {
        if (!fields_.docker_runtime_config) fields_.docker_runtime_config = DockerRuntime{};
        auto& runtime = *fields_.docker_runtime_config;
        if (!runtime.use_docker) runtime.use_docker = fields_.use_docker;
      }
      if (!fields_.framework_version) {
        return diagnostics().error("framework_version",
                                   "required with framework: the version picks the framework's "
                                   "environment (e.g. 1.13)");
      }
      job_.use_gpu = fields_.use_gpu.value_or(false);
      job_.environment_name =
          curated_environment(*fields_.framework, *fields_.framework_version, job_.use_gpu);
      job_.environment_name_path = "framework";
      if (*fields_.framework == "pytorch") job_.framework = Framework::PyTorch;
      if (*fields_.framework == "tensorflow") job_.framework = Framework::TensorFlow;
      return;
    }
    if (!fields_.environment_name) return;
    job_.environment_name = *fields_.environment_name;
    job_.environment_name_path = named_by.empty() ? "environment" : named_by;
    for (std::string_view key : kFlatEnvironmentFields) {
      if (!given(key)) continue;
      diagnostics().error(std::string(key), "cannot be combined with " +
                                                job_.environment_name_path +
                                                ", which names a whole environment");
    }
    reject_overridden("use_docker", "the named environment");
    reject_overridden("use_gpu", "the named environment");
  }

  void apply_shm_size() {
    if (!fields_.shm_size) return;
    job_.environment.docker.shm_size = fields_.shm_size->text;
    job_.environment.docker.shm_size_bytes = fields_.shm_size->bytes;
  }

  // resume_from becomes the input MODEL_LOCATION when the run is planned, so no input may take
  // that name.
  void check_inputs() {
    if (!job_.resume_from) return;
    for (const Input& input : job_.inputs) {
      if (input.name != "MODEL_LOCATION") continue;
      diagnostics().error("inputs.MODEL_LOCATION",
                          "the name MODEL_LOCATION is taken by resume_from; rename this input");
    }
  }

  Field root_;
  const LoadContext& context_;
  Reader& reader_;
  ShapeContext shape_;
  fs::path job_dir_;
  NativeFields fields_;
  Job job_;
};

}  // namespace

Job read_native(const Node& root, const LoadContext& context, Reader& reader) {
  return NativeReader(root, context, reader).read();
}

}  // namespace amlnode::spec::detail
