#pragma once

// The normalised job model. Both accepted shapes (the native job file, whose fields are the
// Estimator / ScriptRunConfig parameters in snake_case, and a v1 .runconfig as
// RunConfiguration.save() writes it) load into this one struct, with the SDK's defaults applied
// and its rules checked. Everything downstream (plan, executors, agent, control plane) reads only
// this model, never the raw files.

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace amlnode::spec {

// The SDK's framework and communicator lists (matched case-insensitively when parsed).
enum class Framework { Python, PySpark, CNTK, TensorFlow, PyTorch };
enum class Communicator { None, ParameterServer, OpenMpi, IntelMpi, Mpi, Gloo, Nccl, ParallelTask };

// Data reference modes. Locally, `download` copies the path into the run and `mount` links it.
enum class InputMode { Mount, Download, Upload };

// Which of the two accepted shapes a job was loaded from.
enum class SourceShape { Native, RunConfig };

inline constexpr const char* kDefaultShmSize = "2g";
inline constexpr const char* kDefaultInterpreter = "python";
inline constexpr const char* kDefaultCpuImage =
    "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04";
inline constexpr const char* kDefaultGpuImage =
    "mcr.microsoft.com/azureml/openmpi4.1.0-cuda11.3-cudnn8-ubuntu20.04";

using EnvVars = std::vector<std::pair<std::string, std::string>>;  // ordered, names unique

// What a script gets for an input through run.input_datasets (the SDK stand-in): a file dataset's
// path, or a tabular dataset it can turn into a DataFrame.
enum class DatasetKind { File, Tabular };
enum class TabularFormat { Delimited, JsonLines, Parquet };

// What a ParallelRunStep does with run()'s results: append_row writes them to one file,
// summary_only keeps none.
enum class OutputAction { AppendRow, SummaryOnly };

// A ParallelRunStep: ParallelRunConfig's and ParallelRunStep's parameters (native `parallel_run`,
// docs/job-spec.md), with the SDK's defaults. What mini_batch_size means depends on the inputs'
// kind, so it is kept as written and read against them (parallel/mini_batches.h).
struct ParallelRun {
  std::string name;
  std::string entry_script;  // relative to the source directory; the job's script when not given
  std::optional<std::string> mini_batch_size;
  std::vector<std::string> partition_keys;
  // The partitioned input's layout, as Dataset.File.from_files(partition_format=...) gives it
  // ("data/{user}/{season}/{genres}.wav"): where partition_keys' values are read from.
  std::string partition_format;
  std::int64_t error_threshold = -1;  // -1: no limit
  OutputAction output_action = OutputAction::AppendRow;
  std::string append_row_file_name = "parallel_run_step.txt";
  std::int64_t allowed_failed_count = -1;
  double allowed_failed_percent = -1;
  std::int64_t run_invocation_timeout = 60;  // seconds
  int run_max_try = 3;
  std::string logging_level = "INFO";
  // Worker processes per node; unset: the node's GPU count, else its CPU count.
  std::optional<int> process_count_per_node;
  std::vector<std::string> side_inputs;  // names of the job's inputs staged but not split
  bool allow_reuse = true;               // a pipeline's step reuse; a run here always runs
};

// An AzureBatchStep's task (native `azure_batch_step`, docs/batch.md): AzureBatchStep's
// parameters that mean something on a pool this node belongs to. The executable runs from the
// task's working directory with its arguments, not under a shell, as Azure Batch runs it.
struct BatchTask {
  std::string name;        // the step's name, which is the Batch task's id
  std::string executable;  // a file of the source directory, a program on PATH, or a path
  std::vector<std::string> arguments;
  std::vector<std::string> inputs;   // names of the job's inputs the task is given
  std::vector<std::string> outputs;  // folders the task writes, made as wd/outputs/<name>
  std::string pool_id;               // "": the pool of the compute it runs on
  bool run_task_as_admin = false;
  bool is_positive_exit_code_failure = true;
  bool delete_batch_job_after_finish = true;
  bool allow_reuse = true;  // a pipeline's step reuse; a run here always runs
};

// A Batch task id: 1-64 letters, digits, hyphens and underscores (Azure Batch's rule).
bool is_batch_task_id(std::string_view id);

struct Input {
  std::string name;  // becomes AZUREML_DATAREFERENCE_<name>
  std::string path;  // local path (absolute after normalisation); "" until a dataset id
                     // is resolved by the node (dataset_id)
  InputMode mode = InputMode::Mount;
  // Optional. Relative: below the run's inputs folder. Absolute (as the SDK writes /tmp/<uuid>):
  // made by the agent there and removed when the run is released.
  std::string path_on_compute;
  bool overwrite = false;
  // Declared as a dataset (DatasetConsumptionConfig), not a plain data reference.
  bool dataset = false;
  DatasetKind kind = DatasetKind::File;
  TabularFormat format = TabularFormat::Delimited;
  std::string separator = ",";  // delimited tables
  bool header = true;           // delimited tables
  // A registered dataset (a .runconfig's data: section names it by id or name), resolved to a
  // local path through the node's datasets registry before the run starts.
  std::string dataset_id;
  std::string dataset_name;
  std::string field_path;  // where the job declared it, for errors
  // A .runconfig's environmentVariableName: the run also gets the staged path under this name.
  std::string environment_variable_name;
};

// A model the job declares, for Model.get_model_path(name) in the script.
struct ModelRef {
  std::string name;
  std::string path;  // local path (absolute after normalisation): a file or a folder
  int version = 1;
};

// Registry credentials. `password` is a secret: it is never printed, logged or written to
// run.json; serialisers in this project redact it.
struct RegistryDetails {
  std::string address;
  std::string username;
  std::string password;
};

struct PythonSection {
  bool user_managed_dependencies = false;
  std::string interpreter_path = kDefaultInterpreter;
  // The conda specification, merged from conda_packages / pip_packages / inline condaDependencies.
  std::string conda_env_name;  // "name:" of the conda spec, if any
  std::vector<std::string> channels;
  std::vector<std::string> conda_packages;  // e.g. "python=3.8", "numpy"
  std::vector<std::string> pip_packages;    // e.g. "scikit-learn==1.2"
  std::vector<std::string> pip_options;     // --index-url and friends from a conda spec's pip list
  std::optional<std::filesystem::path> conda_dependencies_file;  // absolute
  std::optional<std::filesystem::path> pip_requirements_file;    // absolute
};

struct DockerSection {
  bool enabled = false;
  std::string base_image;                      // empty when base_dockerfile is set
  std::optional<std::string> base_dockerfile;  // Dockerfile text (inline or read from a file)
  std::optional<RegistryDetails> base_image_registry;
  std::string shm_size = kDefaultShmSize;  // as written, e.g. "2g"
  std::uint64_t shm_size_bytes = 2ull << 30;
  std::vector<std::string> arguments;  // extra `docker run` arguments
  bool gpu_support = false;            // deprecated no-op in the SDK; kept for the record
  bool shared_volumes = true;
};

// environment.spark (EnvironmentDefinition.spark): the Maven packages and repositories spark-submit
// fetches for a PySpark run.
struct SparkSection {
  std::vector<std::string> repositories;
  std::vector<std::string> packages;  // group:artifact:version
  bool precache_packages = true;
};

struct Environment {
  std::string name;
  std::optional<std::string> version;
  PythonSection python;
  DockerSection docker;
  SparkSection spark;
  EnvVars environment_variables;  // the environment definition's own variables
};

struct Distributed {
  Communicator communicator = Communicator::None;
  int process_count_per_node = 1;
  std::optional<int> pytorch_process_count;  // PyTorchConfiguration.process_count
  std::string communication_backend;         // "nccl", "gloo" (lower-case)
  int worker_count = 1;                      // TensorFlow
  int parameter_server_count = 0;            // TensorFlow
};

// ScriptRunConfig's docker_runtime_config (DockerConfiguration): what is given is laid over the
// job's environment, named or inline, once it is known (apply_docker_runtime).
struct DockerRuntime {
  std::optional<bool> use_docker;
  std::optional<std::string> shm_size;
  std::uint64_t shm_size_bytes = 0;
  std::optional<std::vector<std::string>> arguments;
  std::optional<bool> shared_volumes;
};

struct Job {
  SourceShape shape = SourceShape::Native;
  std::filesystem::path job_file;          // absolute path of the file it was loaded from
  std::filesystem::path source_directory;  // absolute
  std::string experiment_name;             // from the job, else the source folder's name
  std::string compute_target = "local";

  // What to run: exactly one of entry_script or a command.
  std::optional<std::string> entry_script;  // relative to source_directory, stays inside it
  // A command, run by /bin/sh -c as one line; a command given as a list is joined with spaces into
  // that line, as the SDK joins it (["python train.py --epochs 30"] works).
  std::optional<std::string> shell_command;
  std::vector<std::string> arguments;  // script_params (flattened) then arguments

  Framework framework = Framework::Python;
  Distributed distributed;
  // The field that asked for distribution (distributed_job_config, distributed_training,
  // communicator, ...), for messages about it; "" when none did.
  std::string distributed_field;
  int node_count = 1;
  bool use_gpu = false;

  Environment environment;
  // An environment named rather than defined (ScriptRunConfig's environment="NAME", a curated
  // name, or a framework estimator's): resolved into `environment` through the node's named
  // environments before the run starts; an unknown name is an error naming it.
  std::optional<std::string> environment_name;
  std::string environment_name_path;  // the field that named it, for errors
  // A ScriptRunConfig that names no environment gets the node's default one when the node has one
  // (named environment "default"), else the SDK's default: no Docker, a Python environment with
  // nothing installed.
  bool node_default_environment = false;
  std::optional<DockerRuntime> docker_runtime;
  EnvVars environment_variables;  // the job's own; applied last, over everything else
  std::vector<ModelRef> models;

  std::vector<Input> inputs;
  std::optional<std::string> resume_from;  // a local path; becomes input MODEL_LOCATION
  std::optional<std::int64_t> max_run_duration_seconds;

  // A ParallelRunStep (native `parallel_run`).
  std::optional<ParallelRun> parallel_run;
  // An AzureBatchStep (native `azure_batch_step`).
  std::optional<BatchTask> batch_task;
  // RunConfiguration's hdi and spark sections: how a PySpark run is submitted (the SDK writes
  // them for every run; they matter to framework PySpark only, as in Azure ML).
  struct SparkRun {
    std::string yarn_deploy_mode = "cluster";  // hdi.yarnDeployMode: cluster or client
    std::vector<std::pair<std::string, std::string>> configuration;  // spark.configuration
  } spark;
  // Keys of a .runconfig this project does not use (spark, hdi, databricks, amlcompute, ...),
  // kept verbatim so nothing the user wrote is lost.
  nlohmann::json unused_runconfig_sections = nlohmann::json::object();
};

// Lays docker_runtime_config over the job's environment (once a named one is resolved).
void apply_docker_runtime(Job& job);

std::string to_string(Framework);
std::string to_string(Communicator);
std::string to_string(InputMode);
std::string to_string(DatasetKind);
std::string to_string(TabularFormat);

}  // namespace amlnode::spec
