// A v1 .runconfig as RunConfiguration.save() writes it.

#include <filesystem>

#include "tests/spec/spec_test_support.h"

using namespace amlnode::spec;
using namespace amlnode::spec::testing;
namespace fs = std::filesystem;

namespace {

const fs::path kFixtureProject =
    fs::path(AMLNODE_SOURCE_DIR) / "tests" / "spec" / "fixtures" / "sklearn-project";

}  // namespace

TEST_CASE("a runconfig as RunConfiguration.save() writes it loads", "[spec][runconfig]") {
  auto result = load_job_file(kFixtureProject / ".azureml" / "train.runconfig");
  Job job = require_job(result);

  CHECK(job.shape == SourceShape::RunConfig);
  CHECK(job.source_directory == kFixtureProject);
  CHECK(job.experiment_name == "sklearn-project");
  CHECK(job.entry_script == "train.py");
  CHECK(job.arguments ==
        std::vector<std::string>{"--data-folder", "data/iris", "--regularization", "0.5"});
  CHECK(job.compute_target == "local");
  CHECK(job.framework == Framework::Python);
  CHECK(job.distributed.communicator == Communicator::None);
  CHECK(job.node_count == 1);
  CHECK(job.max_run_duration_seconds == 3600);
  CHECK(job.environment_variables ==
        EnvVars{{"EXAMPLE_ENV_VAR", "EXAMPLE_VALUE"}, {"OMP_NUM_THREADS", "4"}});

  const Environment& environment = job.environment;
  CHECK(environment.name == "sklearn-env");
  CHECK(environment.version == "3");
  CHECK_FALSE(environment.python.user_managed_dependencies);
  CHECK(environment.python.interpreter_path == "python");
  CHECK(environment.python.conda_env_name == "project_environment");
  CHECK(environment.python.conda_packages ==
        std::vector<std::string>{"python=3.8.10", "scikit-learn=1.0.2"});
  CHECK(environment.python.pip_packages == std::vector<std::string>{"azureml-defaults"});
  CHECK(environment.python.pip_options ==
        std::vector<std::string>{"--extra-index-url https://pypi.example.org/simple"});
  CHECK(environment.python.channels == std::vector<std::string>{"anaconda", "conda-forge"});
  CHECK_FALSE(environment.python.conda_dependencies_file);

  // docker.useDocker turns Docker on; its shmSize wins over environment.docker.shmSize.
  CHECK(environment.docker.enabled);
  CHECK(environment.docker.base_image ==
        "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04:20220516.v1");
  CHECK_FALSE(environment.docker.base_dockerfile);
  CHECK_FALSE(environment.docker.base_image_registry);
  CHECK(environment.docker.shm_size == "4g");
  CHECK(environment.docker.shm_size_bytes == 4ull << 30);
  CHECK(environment.docker.shared_volumes);
  CHECK_FALSE(job.use_gpu);

  REQUIRE(job.inputs.size() == 1);
  CHECK(job.inputs[0].name == "iris");
  CHECK(job.inputs[0].path == (kFixtureProject / "data" / "iris").string());
  CHECK(job.inputs[0].mode == InputMode::Download);
  CHECK(job.inputs[0].path_on_compute == "inputs/iris");

  // The only warning: the two shm sizes disagree.
  INFO(listing(result.warnings));
  REQUIRE(result.warnings.size() == 1);
  CHECK(result.warnings[0].path == "environment.docker.shmSize");
  CHECK(result.warnings[0].message == "ignored because docker.shmSize is given");
}

TEST_CASE("unused runconfig sections are kept verbatim", "[spec][runconfig]") {
  Job job = require_job(load_job_file(kFixtureProject / ".azureml" / "train.runconfig"));
  const nlohmann::json& unused = job.unused_runconfig_sections;
  for (const char* key :
       {"priority", "history", "paralleltask", "sourceDirectoryDataStore", "amlcompute",
        "credentialPassthrough", "environment.databricks", "environment.r",
        "environment.inferencingStackVersion", "environment.docker.platform",
        "environment.python.baseCondaEnvironment"}) {
    INFO(key);
    CHECK(unused.contains(key));
  }
  CHECK(unused["history"]["directoriesToWatch"] == nlohmann::json{"logs"});
  // spark, hdi and environment.spark are read: they say how a PySpark run is submitted.
  CHECK_FALSE(unused.contains("spark"));
  CHECK_FALSE(unused.contains("hdi"));
  CHECK_FALSE(unused.contains("environment.spark"));
  CHECK(job.spark.yarn_deploy_mode == "cluster");
  CHECK(job.spark.configuration ==
        std::vector<std::pair<std::string, std::string>>{{"spark.app.name", "Azure ML Experiment"},
                                                         {"spark.yarn.maxAppAttempts", "1"}});
  CHECK(job.environment.spark.packages.empty());
  CHECK(job.environment.spark.precache_packages);
  CHECK(unused["sourceDirectoryDataStore"].is_null());
  CHECK(unused["credentialPassthrough"] == false);
  CHECK(unused["environment.docker.platform"]["os"] == "Linux");
  // What the model reads is not duplicated there.
  CHECK_FALSE(unused.contains("script"));
  CHECK_FALSE(unused.contains("environment"));
  CHECK_FALSE(unused.contains("mpi"));
  CHECK_FALSE(unused.contains("data"));  // the datasets it consumes: read (none here)
}

TEST_CASE("a minimal runconfig gets RunConfiguration's defaults", "[spec][runconfig]") {
  Project project;
  auto result = project.load("local.runconfig", "script: train.py\n");
  Job job = require_job(result);
  CHECK(result.warnings.empty());
  CHECK(job.shape == SourceShape::RunConfig);
  CHECK(job.source_directory == project.root());
  CHECK(job.compute_target == "local");
  CHECK(job.framework == Framework::Python);
  CHECK(job.distributed.communicator == Communicator::None);
  CHECK(job.node_count == 1);
  CHECK_FALSE(job.environment.docker.enabled);
  CHECK(job.environment.docker.base_image == kDefaultCpuImage);
  CHECK(job.environment.docker.shm_size == "2g");
  CHECK_FALSE(job.environment.python.user_managed_dependencies);
  CHECK(job.environment.python.interpreter_path == "python");
  CHECK_FALSE(job.max_run_duration_seconds);
  CHECK(job.unused_runconfig_sections.empty());
}

TEST_CASE("a runconfig's source directory is its project folder", "[spec][runconfig]") {
  Project project;
  project.write("configs/train.py", "");
  struct Case {
    std::string file;
    std::string source_dir;  // relative to the project root
  };
  auto c = GENERATE(values<Case>({
      {".azureml/train.runconfig", ""},
      {"aml_config/train.runconfig", ""},
      {"configs/train.runconfig", "configs"},
      {"train.runconfig", ""},
  }));
  Job job = require_job(project.load(c.file, "script: train.py\n"));
  INFO(c.file);
  CHECK(job.source_directory ==
        (c.source_dir.empty() ? project.root() : project.root() / c.source_dir));
}

TEST_CASE("the source directory of a runconfig can be overridden with --source-dir",
          "[spec][runconfig]") {
  Project project;
  LoadOptions options;
  options.source_dir_override = project.root() / "src";
  Job job = require_job(project.load(".azureml/train.runconfig", "script: train.py\n", options));
  CHECK(job.source_directory == project.root() / "src");
  CHECK(job.experiment_name == "src");
}

TEST_CASE("a runconfig is recognised by its content too", "[spec][runconfig]") {
  Project project;
  SECTION("YAML with another extension") {
    Job job = require_job(project.load(
        "job.yml",
        "script: train.py\nenvironment:\n  python:\n    userManagedDependencies: true\n"));
    CHECK(job.shape == SourceShape::RunConfig);
    CHECK(job.environment.python.user_managed_dependencies);
  }
  SECTION("JSON") {
    Job job = require_job(project.load(
        "job.json", R"({"script": "train.py", "framework": "Python", "nodeCount": 1})"));
    CHECK(job.shape == SourceShape::RunConfig);
  }
  SECTION("keys both shapes share decide nothing") {
    Job job = require_job(project.load("job.yml", "command: [python, train.py]\n"));
    CHECK(job.shape == SourceShape::Native);
  }
  SECTION("a file mixing both shapes is native, and the runconfig keys are unknown there") {
    auto result = project.load("job.yml", "entry_script: train.py\nnodeCount: 2\n");
    CHECK(find(result.errors, "nodeCount", "unknown field; did you mean \"node_count\"?"));
  }
}

TEST_CASE("runconfig fields with wrong values name the field in camelCase", "[spec][runconfig]") {
  struct Case {
    std::string yaml;
    std::string path;
    std::string message;
  };
  auto c = GENERATE(values<Case>({
      {"environment:\n  docker:\n    shmSize: lots", "environment.docker.shmSize",
       "expected a size like 2g, 512m or 1073741824, got \"lots\""},
      {"docker:\n  shmSize: 12q", "docker.shmSize", "got \"12q\""},
      {"mpi:\n  processCountPerNode: 0", "mpi.processCountPerNode",
       "expected an integer >= 1, got 0"},
      {"framework: Keras", "framework",
       "expected Python, PySpark, CNTK, TensorFlow or PyTorch, got \"Keras\""},
      {"communicator: Horovod", "communicator",
       "expected None, ParameterServer, OpenMpi, IntelMpi, Mpi, Gloo, Nccl or ParallelTask, got "
       "\"Horovod\""},
      {"nodeCount: two", "nodeCount", "expected an integer >= 1, got \"two\""},
      {"maxRunDurationSeconds: -5", "maxRunDurationSeconds",
       "expected an integer > 0 (seconds), got -5"},
      {"environment:\n  docker:\n    baseImage: a:1\n    baseDockerfile: FROM b:1",
       "environment.docker.baseDockerfile", "cannot be combined with environment.docker.baseImage"},
      {"environment:\n  docker:\n    buildContext: ./docker", "environment.docker.buildContext",
       "not supported by amlnode; use baseImage or baseDockerfile"},
      {"environment:\n  environmentVariables:\n    1X: a", "environment.environmentVariables.1X",
       "expected a variable name"},
      {"environment:\n  python:\n    userManagedDependencies: maybe",
       "environment.python.userManagedDependencies", "expected true or false"},
      {"environment:\n  python:\n    condaDependenciesFile: missing.yml",
       "environment.python.condaDependenciesFile", "\"missing.yml\" not found"},
      {"environment:\n  docker:\n    baseImageRegistry:\n      username: me\n      password: pw",
       "environment.docker.baseImageRegistry.address", "expected the registry's address"},
      {"dataReferences:\n  d:\n    pathOnDataStore: data\n    mode: stream",
       "dataReferences.d.mode", "expected mount, download or upload, got \"stream\""},
      {"dataReferences:\n  d:\n    dataStoreName: workspaceblobstore",
       "dataReferences.d.pathOnDataStore", "expected the input's local path, got nothing"},
      {"dataReferences:\n  d:\n    pathOnDataStore: data\n    pathOnCompute: /abs",
       "dataReferences.d.pathOnCompute", "or an absolute path below /tmp"},
      {"dataReferences:\n  d: data", "dataReferences.d", "expected a mapping, got \"data\""},
      {"communicator: Nccl\nnodeCount: 2\npyTorch:\n  processCount: 3", "pyTorch.processCount",
       "expected a multiple of the node count (2), got 3"},
      {"pytorch:\n  communicationBackend: mpi", "pytorch.communicationBackend",
       "expected nccl or gloo, got \"mpi\""},
      {"tensorflow:\n  workerCount: 0", "tensorflow.workerCount", "expected an integer >= 1"},
      {"command: [python, train.py]", "command", "cannot be combined with script"},
      {"arguments: --fast", "arguments", "expected a list of strings, got \"--fast\""},
      {"environment: python", "environment", "expected a mapping, got \"python\""},
  }));
  Project project;
  project.write("data/x.csv", "x\n");
  auto result = project.load("job.runconfig", "script: train.py\n" + c.yaml + "\n");
  INFO(c.yaml << "\n" << listing(result.errors));
  CHECK_FALSE(result.ok());
  CHECK(find(result.errors, c.path, c.message));
}

TEST_CASE("runconfig script errors name `script`", "[spec][runconfig]") {
  Project project;
  auto outside = project.load("job.runconfig", "script: ../train.py\n");
  CHECK(find(outside.errors, "script", "points outside the source directory"));
  auto neither = project.load("job.runconfig", "script:\ncommand: ''\narguments: []\n");
  CHECK(find(neither.errors, "script", "expected the script to run (or a command), got neither"));
  auto command_and_arguments =
      project.load("job.runconfig", "command: python train.py\narguments: [--x]\n");
  CHECK(find(command_and_arguments.errors, "arguments", "cannot be combined with command"));
}

TEST_CASE("framework and communicator choose the distributed settings", "[spec][runconfig]") {
  struct Case {
    std::string yaml;
    Framework framework;
    Communicator communicator;
    std::string backend;
    int per_node;
    int workers;
    int parameter_servers;
  };
  // save() writes every section with its defaults; only the communicator's own one applies.
  const std::string sections =
      "tensorflow: {workerCount: 3, parameterServerCount: 2}\n"
      "mpi: {processCountPerNode: 4}\n"
      "pyTorch: {communicationBackend: nccl, processCount: 8}\n";
  auto c = GENERATE(values<Case>({
      {"framework: python\ncommunicator: intelmpi", Framework::Python, Communicator::IntelMpi, "",
       4, 1, 0},
      {"communicator: OPENMPI", Framework::Python, Communicator::OpenMpi, "", 4, 1, 0},
      {"communicator: Mpi", Framework::Python, Communicator::Mpi, "", 4, 1, 0},
      {"framework: PyTorch\ncommunicator: Nccl", Framework::PyTorch, Communicator::Nccl, "nccl", 4,
       1, 0},
      {"framework: TensorFlow\ncommunicator: ParameterServer", Framework::TensorFlow,
       Communicator::ParameterServer, "", 1, 3, 2},
      {"framework: PySpark\ncommunicator: ParallelTask", Framework::PySpark,
       Communicator::ParallelTask, "", 1, 1, 0},
  }));
  Project project;
  Job job = require_job(
      project.load("job.runconfig", "script: train.py\nnodeCount: 2\n" + sections + c.yaml + "\n"));
  INFO(c.yaml);
  CHECK(job.framework == c.framework);
  CHECK(job.distributed.communicator == c.communicator);
  CHECK(job.distributed.communication_backend == c.backend);
  CHECK(job.distributed.process_count_per_node == c.per_node);
  CHECK(job.distributed.worker_count == c.workers);
  CHECK(job.distributed.parameter_server_count == c.parameter_servers);
}

TEST_CASE("the communicator decides PyTorch's backend", "[spec][runconfig]") {
  Project project;
  auto result = project.load("job.runconfig",
                             "script: train.py\nframework: PyTorch\ncommunicator: Gloo\npyTorch: "
                             "{communicationBackend: nccl}\n");
  Job job = require_job(result);
  CHECK(job.distributed.communication_backend == "gloo");
  CHECK(find(result.warnings, "pyTorch.communicationBackend", "communicator Gloo decides"));
}

TEST_CASE("runconfig empty values mean unset", "[spec][runconfig]") {
  Project project;
  Job job = require_job(project.load("job.runconfig", R"(script: train.py
arguments:
target:
framework:
communicator:
maxRunDurationSeconds:
nodeCount:
command: ''
environment:
  name:
  python:
    interpreterPath:
    condaDependencies:
    condaDependenciesFile:
  docker:
    enabled:
    baseImage:
    baseDockerfile:
    shmSize:
    baseImageRegistry: {address: , username: , password: }
docker:
  useDocker:
  shmSize: ''
mpi: {processCountPerNode: }
dataReferences: {}
)"));
  CHECK(job.arguments.empty());
  CHECK(job.compute_target == "local");
  CHECK(job.framework == Framework::Python);
  CHECK_FALSE(job.max_run_duration_seconds);
  CHECK(job.node_count == 1);
  CHECK_FALSE(job.shell_command);
  CHECK(job.environment.python.interpreter_path == "python");
  CHECK_FALSE(job.environment.docker.enabled);
  CHECK(job.environment.docker.base_image == kDefaultCpuImage);
  CHECK_FALSE(job.environment.docker.base_image_registry);
  CHECK(job.environment.docker.shm_size == "2g");
}

TEST_CASE("runconfig docker: enabled, GPU and DockerConfiguration precedence",
          "[spec][runconfig]") {
  Project project;
  SECTION("environment.docker.enabled alone turns Docker on; gpuSupport picks the GPU image") {
    Job job = require_job(project.load(
        "job.runconfig",
        "script: train.py\nenvironment:\n  docker: {enabled: true, gpuSupport: true}\n"));
    CHECK(job.environment.docker.enabled);
    CHECK(job.use_gpu);
    CHECK(job.environment.docker.base_image == kDefaultGpuImage);
  }
  SECTION("DockerConfiguration's values win") {
    auto result = project.load("job.runconfig", R"(script: train.py
environment:
  docker: {enabled: false, shmSize: 1g, arguments: [--a], sharedVolumes: true}
docker: {useDocker: true, shmSize: 3g, arguments: [--b], sharedVolumes: false}
)");
    Job job = require_job(result);
    CHECK(job.environment.docker.enabled);
    CHECK(job.environment.docker.shm_size == "3g");
    CHECK(job.environment.docker.arguments == std::vector<std::string>{"--b"});
    CHECK_FALSE(job.environment.docker.shared_volumes);
    CHECK(find(result.warnings, "environment.docker.shmSize", "ignored because docker.shmSize"));
    CHECK(
        find(result.warnings, "environment.docker.arguments", "ignored because docker.arguments"));
  }
  SECTION("a registry and a Dockerfile") {
    project.write("Dockerfile", "FROM ubuntu:22.04\n");
    Job job = require_job(project.load("job.runconfig", R"(script: train.py
environment:
  docker:
    baseDockerfile: Dockerfile
    baseImageRegistry: {address: r.io, username: me, password: pw}
)"));
    CHECK(job.environment.docker.base_dockerfile == "FROM ubuntu:22.04\n");
    CHECK(job.environment.docker.base_image.empty());
    REQUIRE(job.environment.docker.base_image_registry);
    CHECK(job.environment.docker.base_image_registry->address == "r.io");
  }
}

TEST_CASE("a user-managed runconfig environment drops the conda specification with a warning",
          "[spec][runconfig]") {
  Project project;
  auto result = project.load("job.runconfig", R"(script: train.py
environment:
  python:
    userManagedDependencies: true
    interpreterPath: /usr/bin/python3
    condaDependencies:
      dependencies: [python=3.6.2, {pip: [azureml-defaults]}]
)");
  Job job = require_job(result);
  CHECK(job.environment.python.user_managed_dependencies);
  CHECK(job.environment.python.interpreter_path == "/usr/bin/python3");
  CHECK(job.environment.python.conda_packages.empty());
  CHECK(job.environment.python.pip_packages.empty());
  CHECK(find(result.warnings, "environment.python.condaDependencies",
             "ignored because environment.python.userManagedDependencies is true"));
}

TEST_CASE("unknown keys inside runconfig sections are kept with a warning", "[spec][runconfig]") {
  Project project;
  auto result = project.load("job.runconfig", R"(script: train.py
environment:
  docker:
    shmsize: 8g
mpi:
  processCount: 2
brandNewSection: {x: 1}
)");
  Job job = require_job(result);
  CHECK(find(result.warnings, "environment.docker.shmsize", "did you mean \"shmSize\"?"));
  CHECK(find(result.warnings, "mpi.processCount", "kept but unused"));
  CHECK_FALSE(find(result.warnings, "brandNewSection"));
  CHECK(job.unused_runconfig_sections["environment.docker.shmsize"] == "8g");
  CHECK(job.unused_runconfig_sections["brandNewSection"] == nlohmann::json{{"x", 1}});
  CHECK(job.environment.docker.shm_size == "2g");
}

TEST_CASE("runconfig commands", "[spec][runconfig]") {
  Project project;
  Job list =
      require_job(project.load("job.runconfig", "command: [python, train.py, --epochs, 2]\n"));
  CHECK(list.shell_command == "python train.py --epochs 2");
  Job shell =
      require_job(project.load("job.runconfig", "script:\ncommand: python train.py | tee out\n"));
  CHECK(shell.shell_command == "python train.py | tee out");
}

TEST_CASE("a runconfig's datasets are read, and outputs it would register are refused",
          "[spec][runconfig]") {
  Project project;
  Job job = require_job(project.load("job.runconfig", R"(
script: train.py
data:
  mnist:
    dataLocation: {dataset: {id: ed4b, name: mnist-digits}, datapath: null}
    mechanism: download
    environmentVariableName: MNIST
    pathOnCompute: /tmp/mnist-here
)"));
  REQUIRE(job.inputs.size() == 1);
  const Input& input = job.inputs[0];
  CHECK(input.dataset);
  CHECK(input.dataset_id == "ed4b");
  CHECK(input.dataset_name == "mnist-digits");
  CHECK(input.mode == InputMode::Download);
  CHECK(input.environment_variable_name == "MNIST");
  CHECK(input.path_on_compute == "/tmp/mnist-here");
  CHECK(input.path.empty());  // the node resolves it

  auto outputs =
      project.load("job.runconfig", "script: train.py\noutputData:\n  out: {outputLocation: {}}\n");
  CHECK(find(outputs.errors, "outputData", "registering outputs as workspace datasets"));
}

TEST_CASE("a runconfig's hdi, spark and environment.spark are read, and refused by field",
          "[spec][runconfig]") {
  Project project;
  auto load = [&](const std::string& text) {
    return project.load("job.runconfig", "script: train.py\nframework: PySpark\n" + text);
  };
  auto job =
      require_job(load("hdi: {yarnDeployMode: client}\n"
                       "spark: {configuration: {spark.executor.cores: 4}}\n"
                       "environment:\n  spark:\n    repositories: ['https://repo.example/maven']\n"
                       "    packages: [{group: g, artifact: a, version: '1.0'}, 'x:y:2']\n"));
  CHECK(job.framework == Framework::PySpark);
  CHECK(job.spark.yarn_deploy_mode == "client");
  CHECK(job.spark.configuration ==
        std::vector<std::pair<std::string, std::string>>{{"spark.executor.cores", "4"}});
  CHECK(job.environment.spark.repositories ==
        std::vector<std::string>{"https://repo.example/maven"});
  CHECK(job.environment.spark.packages == std::vector<std::string>{"g:a:1.0", "x:y:2"});
  auto mode = load("hdi: {yarnDeployMode: local}\n");
  REQUIRE_FALSE(mode.ok());
  CHECK(mode.errors[0].path == "hdi.yarnDeployMode");
  auto package = load("environment:\n  spark:\n    packages: [{group: g, artifact: a}]\n");
  REQUIRE_FALSE(package.ok());
  CHECK(package.errors[0].path == "environment.spark.packages[0]");
  CHECK_THAT(package.errors[0].message, Catch::Contains("group, artifact and version"));
}
