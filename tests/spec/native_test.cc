// The native job file: Estimator / ScriptRunConfig parameters in snake_case.

#include <filesystem>

#include "tests/spec/spec_test_support.h"

using namespace amlnode::spec;
using namespace amlnode::spec::testing;
namespace fs = std::filesystem;

TEST_CASE("a minimal native job gets the Estimator's defaults", "[spec][native]") {
  Project project;
  Job job = require_job(project.load("job.yml", "entry_script: train.py\n"));

  CHECK(job.shape == SourceShape::Native);
  CHECK(job.job_file == project.root() / "job.yml");
  CHECK(job.source_directory == project.root());
  CHECK(job.experiment_name == project.root().filename().string());
  CHECK(job.compute_target == "local");
  CHECK(job.entry_script == "train.py");
  CHECK_FALSE(job.shell_command);
  CHECK(job.arguments.empty());
  CHECK(job.framework == Framework::Python);
  CHECK(job.distributed.communicator == Communicator::None);
  CHECK(job.distributed.process_count_per_node == 1);
  CHECK(job.node_count == 1);
  CHECK_FALSE(job.use_gpu);
  CHECK(job.environment.docker.enabled);  // Estimator: use_docker=True
  CHECK(job.environment.docker.base_image == kDefaultCpuImage);
  CHECK(job.environment.docker.shm_size == "2g");
  CHECK(job.environment.docker.shm_size_bytes == (2ull << 30));
  CHECK_FALSE(job.environment.python.user_managed_dependencies);
  CHECK(job.environment.python.interpreter_path == "python");
  CHECK(job.environment.python.conda_packages.empty());
  CHECK_FALSE(job.max_run_duration_seconds);
  CHECK(job.inputs.empty());
  CHECK_FALSE(job.resume_from);
  CHECK_FALSE(job.parallel_run);
  CHECK(job.environment_variables.empty());
}

TEST_CASE("JSON job files load like YAML ones", "[spec][native]") {
  Project project;
  Job job = require_job(project.load(
      "job.json", R"({"entry_script": "train.py", "node_count": 2, "distributed_training": "mpi",
                      "script_params": {"--lr": 0.010, "--fast": true}, "use_gpu": true})"));
  CHECK(job.node_count == 2);
  CHECK(job.distributed.communicator == Communicator::IntelMpi);
  CHECK(job.arguments == std::vector<std::string>{"--lr", "0.010", "--fast"});
  CHECK(job.environment.docker.base_image == kDefaultGpuImage);
}

TEST_CASE("source_directory is relative to the job file's folder", "[spec][native]") {
  Project project;
  project.write("code/model/train.py", "");

  SECTION("relative, with ./ and a trailing slash, is made absolute and normal") {
    Job job = require_job(project.load(
        "jobs/job.yml", "source_directory: ./../code/model/\nentry_script: train.py\n"));
    CHECK(job.source_directory == project.root() / "code" / "model");
    CHECK(job.experiment_name == "model");
  }
  SECTION("absent, it is the job file's folder") {
    Job job = require_job(project.load("code/model/job.yml", "entry_script: train.py\n"));
    CHECK(job.source_directory == project.root() / "code" / "model");
  }
  SECTION("absolute paths are taken as they are") {
    Job job = require_job(project.load(
        "jobs/job.yml", "source_directory: " + (project.root() / "code/model").string() +
                            "\nentry_script: train.py\n"));
    CHECK(job.source_directory == project.root() / "code" / "model");
  }
  SECTION("--source-dir overrides it") {
    LoadOptions options;
    options.source_dir_override = project.root() / "code" / "model";
    Job job = require_job(
        project.load("job.yml", "source_directory: src\nentry_script: train.py\n", options));
    CHECK(job.source_directory == project.root() / "code" / "model");
  }
  SECTION("a missing --source-dir is reported under its own name") {
    LoadOptions options;
    options.source_dir_override = project.root() / "nowhere";
    auto result = project.load("job.yml", "entry_script: train.py\n", options);
    CHECK(find(result.errors, "--source-dir", "does not exist"));
  }
}

TEST_CASE("script_params flatten in file order before arguments", "[spec][native]") {
  Project project;
  Job job = require_job(project.load("job.yml", R"(entry_script: train.py
script_params:
  --data: /data/in
  --lr: 0.010
  --epochs: 10
  --verbose: true
  --quiet: false
  --flag:
  --empty: ""
  --quoted-true: "true"
arguments: [--seed, 42, 1e-3, ""]
)"));
  CHECK(job.arguments == std::vector<std::string>{"--data", "/data/in", "--lr", "0.010", "--epochs",
                                                  "10", "--verbose", "--flag", "--empty",
                                                  "--quoted-true", "true", "--seed", "42", "1e-3",
                                                  ""});
}

TEST_CASE("command is one shell line, a list joined as the SDK joins it", "[spec][native]") {
  Project project;
  SECTION("list") {
    Job job = require_job(project.load("job.yml", "command: [python, train.py, --lr, 0.5]\n"));
    CHECK(job.shell_command == "python train.py --lr 0.5");
    CHECK_FALSE(job.entry_script);
  }
  SECTION("a list of one line, as the pipelines samples write it") {
    Job job = require_job(project.load("job.yml", "command: [\"python train.py --epochs 30\"]\n"));
    CHECK(job.shell_command == "python train.py --epochs 30");
  }
  SECTION("string") {
    Job job = require_job(project.load("job.yml", "command: python train.py && echo done\n"));
    CHECK(job.shell_command == "python train.py && echo done");
  }
}

TEST_CASE("exactly one of entry_script and command", "[spec][native]") {
  struct Case {
    std::string yaml;
    std::string path;
    std::string fragment;
  };
  auto c = GENERATE(values<Case>({
      {"node_count: 1\n", "entry_script", "expected the script to run (or a command), got neither"},
      {"entry_script: train.py\ncommand: [python, x.py]\n", "command",
       "cannot be combined with entry_script"},
      {"command: python train.py\narguments: [--x]\n", "arguments",
       "cannot be combined with command"},
      {"command: [python, train.py]\nscript_params: {--x: 1}\n", "script_params",
       "cannot be combined with command"},
  }));
  Project project;
  auto result = project.load("job.yml", c.yaml);
  INFO(c.yaml << listing(result.errors));
  CHECK_FALSE(result.ok());
  CHECK(find(result.errors, c.path, c.fragment));
}

TEST_CASE("distributed_training maps to the SDK's framework and communicator", "[spec][native]") {
  struct Case {
    std::string yaml;
    Framework framework;
    Communicator communicator;
    std::string backend;
    int per_node;
    int workers;
    int parameter_servers;
  };
  auto c = GENERATE(values<Case>({
      {"distributed_training: mpi", Framework::Python, Communicator::IntelMpi, "", 1, 1, 0},
      {"distributed_training: MPI\nprocess_count_per_node: 4", Framework::Python,
       Communicator::IntelMpi, "", 4, 1, 0},
      {"distributed_training: {type: mpi, process_count_per_node: 3}", Framework::Python,
       Communicator::IntelMpi, "", 3, 1, 0},
      {"distributed_training: pytorch", Framework::PyTorch, Communicator::Nccl, "nccl", 1, 1, 0},
      {"distributed_training: gloo", Framework::PyTorch, Communicator::Gloo, "gloo", 1, 1, 0},
      {"distributed_training: nccl", Framework::PyTorch, Communicator::Nccl, "nccl", 1, 1, 0},
      {"distributed_training: {type: pytorch, communication_backend: Gloo, process_count: 4}",
       Framework::PyTorch, Communicator::Gloo, "gloo", 2, 1, 0},
      {"distributed_training: {type: PyTorch, process_count: 2}", Framework::PyTorch,
       Communicator::Nccl, "nccl", 1, 1, 0},
      {"distributed_training: tensorflow", Framework::TensorFlow, Communicator::ParameterServer, "",
       1, 1, 1},
      {"distributed_training: {type: tensorflow, worker_count: 4, parameter_server_count: 2}",
       Framework::TensorFlow, Communicator::ParameterServer, "", 1, 4, 2},
  }));
  Project project;
  // Two nodes: every backend must accept them, and PyTorch's process_count is split over them.
  Job job = require_job(
      project.load("job.yml", "entry_script: train.py\nnode_count: 2\n" + c.yaml + "\n"));
  INFO(c.yaml);
  CHECK(job.node_count == 2);
  CHECK(job.framework == c.framework);
  CHECK(job.distributed.communicator == c.communicator);
  CHECK(job.distributed.communication_backend == c.backend);
  CHECK(job.distributed.process_count_per_node == c.per_node);
  CHECK(job.distributed.worker_count == c.workers);
  CHECK(job.distributed.parameter_server_count == c.parameter_servers);
}

TEST_CASE("PyTorch's process_count is kept as given", "[spec][native]") {
  Project project;
  Job job = require_job(project.load("job.yml",
                                     "entry_script: train.py\nnode_count: 2\ndistributed_training: "
                                     "{type: pytorch, process_count: 8}\n"));
  CHECK(job.distributed.pytorch_process_count == 8);
  CHECK(job.distributed.process_count_per_node == 4);
}

TEST_CASE("native fields with wrong values name the field, the expectation and the value",
          "[spec][native]") {
  struct Case {
    std::string yaml;
    std::string path;
    std::string message;  // a fragment of the message
  };
  auto c = GENERATE(values<Case>({
      {"node_count: two", "node_count", "expected an integer >= 1, got \"two\""},
      {"node_count: 0", "node_count", "expected an integer >= 1, got 0"},
      {"node_count: \"2\"", "node_count", "expected an integer >= 1, got \"2\""},
      {"node_count: 1.5", "node_count", "expected an integer >= 1, got 1.5"},
      {"node_count: 99999999999999999999", "node_count", "expected an integer >= 1"},
      {"node_count: [1]", "node_count", "expected an integer >= 1, got a list"},
      {"process_count_per_node: -1", "process_count_per_node", "expected an integer >= 1, got -1"},
      {"max_run_duration_seconds: 0", "max_run_duration_seconds",
       "expected an integer > 0 (seconds), got 0"},
      {"max_run_duration_seconds: 1h", "max_run_duration_seconds", "got \"1h\""},
      {"shm_size: lots", "shm_size", "expected a size like 2g, 512m or 1073741824, got \"lots\""},
      {"shm_size: 2x", "shm_size", "got \"2x\""},
      {"shm_size: 0", "shm_size", "got 0"},
      {"shm_size: 1.5g", "shm_size", "got \"1.5g\""},
      {"shm_size: 99999999999999999g", "shm_size", "expected a size"},
      {"use_gpu: maybe", "use_gpu", "expected true or false, got \"maybe\""},
      {"use_docker: \"true\"", "use_docker", "expected true or false, got \"true\""},
      {"use_docker: 1", "use_docker", "expected true or false, got 1"},
      {"experiment_name: {a: 1}", "experiment_name", "expected a string, got a mapping"},
      {"custom_docker_image: [a, b]", "custom_docker_image", "expected a string, got a list"},
      {"conda_packages: numpy", "conda_packages", "expected a list of strings, got \"numpy\""},
      {"pip_packages: [numpy, [x]]", "pip_packages[1]", "expected a string, got a list"},
      {"arguments: [--x, null]", "arguments[1]", "expected a string, got null"},
      {"arguments: --x 1", "arguments", "expected a list of strings"},
      {"script_params: [--x, 1]", "script_params", "expected a mapping, got a list"},
      {"script_params: {--x: [1, 2]}", "script_params.--x",
       "expected a string, number or boolean, got a list"},
      {"environment_variables: {1BAD: x}", "environment_variables.1BAD",
       "expected a variable name of letters, digits and _"},
      {"environment_variables: {MY-VAR: x}", "environment_variables.MY-VAR", "got \"MY-VAR\""},
      {"environment_variables: {A: {b: 1}}", "environment_variables.A",
       "expected a string, number or boolean, got a mapping"},
      {"environment_variables: [A, B]", "environment_variables", "expected a mapping"},
      {"distributed_training: horovod", "distributed_training",
       "expected mpi, pytorch, tensorflow, gloo, nccl or a mapping with a type, got \"horovod\""},
      {"distributed_training: {process_count_per_node: 2}", "distributed_training.type",
       "expected mpi, pytorch or tensorflow, got nothing"},
      {"distributed_training: {type: mpi, worker_count: 2}", "distributed_training.worker_count",
       "unknown field"},
      {"distributed_training: {type: pytorch, communication_backend: mpi}",
       "distributed_training.communication_backend", "expected nccl or gloo, got \"mpi\""},
      {"distributed_training: {type: pytorch, process_count: 3}\nnode_count: 2",
       "distributed_training.process_count", "expected a multiple of the node count (2), got 3"},
      {"distributed_training: {type: mpi, process_count_per_node: 2}\nprocess_count_per_node: 3",
       "process_count_per_node", "conflicts with distributed_training.process_count_per_node"},
      {"distributed_backend: gloo", "distributed_backend", "expected \"mpi\""},
      {"process_count_per_node: 4", "process_count_per_node",
       "expected 1 without a distributed backend"},
      {"inputs: [data]", "inputs", "expected a mapping of input names to local paths, got a list"},
      {"inputs: {train: {path: data, mode: stream}}", "inputs.train.mode",
       "expected mount, download or upload, got \"stream\""},
      {"inputs: {my-data: data}", "inputs.my-data",
       "expected a name of letters, digits and _ (it becomes part of "
       "AZUREML_DATAREFERENCE_<name>), got \"my-data\""},
      {"inputs: {train: {mode: download}}", "inputs.train.path",
       "expected the input's local path, got nothing"},
      {"inputs: {train: nowhere}", "inputs.train", "\"nowhere\" not found"},
      {"inputs: {train: {path: nowhere}}", "inputs.train.path", "\"nowhere\" not found"},
      {"inputs: {train: {path: data, path_on_compute: ../x}}", "inputs.train.path_on_compute",
       "expected a relative path inside the run's inputs folder, or an absolute path below /tmp "
       "(as the SDK makes them), got \"../x\""},
      {"inputs: {train: {path: data, colour: red}}", "inputs.train.colour", "unknown field"},
      {"inputs: {train: {path: data, overwrite: yes please}}", "inputs.train.overwrite",
       "expected true or false"},
      {"inputs: {train: }", "inputs.train", "expected a local path"},
      {"resume_from: checkpoints/none", "resume_from", "\"checkpoints/none\" not found"},
      {"parallel_run: {name: Batch_Score, error_threshold: 1, output_action: append_row}",
       "parallel_run.name",
       "expected a step name of 3-32 lowercase letters, digits and dashes, starting with a "
       "letter, got \"Batch_Score\""},
      {"parallel_run: {name: ab}", "parallel_run.name", "got \"ab\""},
      {"parallel_run: {name: 1abc}", "parallel_run.name", "got \"1abc\""},
      {"parallel_run: {name: abcdefghijklmnopqrstuvwxyz0123456}", "parallel_run.name",
       "expected a step name"},
      {"parallel_run: batch", "parallel_run", "expected a mapping, got \"batch\""},
      {"conda_dependencies_file: env.yml", "conda_dependencies_file", "\"env.yml\" not found"},
      {"pip_requirements_file: data", "pip_requirements_file", "\"data\" is not a file"},
      {"command: {run: x}", "command", "expected a list of arguments or a command string"},
      {"image_registry_details: {username: me, password: pw}", "image_registry_details.address",
       "expected the registry's address"},
      {"image_registry_details: {address: r.io, username: me}", "image_registry_details.password",
       "expected a username and a password together, got only the username"},
      {"image_registry_details: {address: r.io, user: me}", "image_registry_details.user",
       "unknown field"},
      {"image_registry_details: r.io", "image_registry_details", "expected a mapping"},
  }));
  Project project;
  project.write("data/part-0.csv", "x\n1\n");
  // A valid entry script, so each case shows only its own problem.
  std::string yaml = c.yaml.find("command:") == std::string::npos ? "entry_script: train.py\n" : "";
  auto result = project.load("job.yml", yaml + c.yaml + "\n");
  INFO(c.yaml << "\n" << listing(result.errors));
  CHECK_FALSE(result.ok());
  CHECK_FALSE(result.job);
  const Diagnostic* error = find(result.errors, c.path, c.message);
  CHECK(error);
}

TEST_CASE("entry_script must stay inside the source directory", "[spec][native]") {
  Project project;
  project.write("outside/evil.py", "");
  project.write("src/lib/model.py", "");
  fs::create_symlink(project.root() / "outside" / "evil.py", project.root() / "src" / "evil.py");
  fs::create_symlink(project.root() / "src" / "lib" / "model.py",
                     project.root() / "src" / "model_link.py");
  fs::create_directory_symlink(project.root() / "outside", project.root() / "src" / "escape");

  struct Case {
    std::string script;
    std::string fragment;  // empty: the script is accepted
    std::string normalised;
  };
  auto c = GENERATE(values<Case>({
      {"train.py", "", "train.py"},
      {"./lib/../train.py", "", "train.py"},
      {"lib/model.py", "", "lib/model.py"},
      {"model_link.py", "", "model_link.py"},
      {"../outside/evil.py", "points outside the source directory", ""},
      {"lib/../../outside/evil.py", "points outside the source directory", ""},
      {"/etc/passwd", "expected a path relative to the source directory, got \"/etc/passwd\"", ""},
      {"evil.py", "resolves through a symbolic link", ""},
      {"escape/evil.py", "resolves through a symbolic link", ""},
      {"missing.py", "\"missing.py\" not found in the source directory", ""},
      {"lib", "\"lib\" is not a file", ""},
      {".", "points outside the source directory", ""},
  }));
  auto result =
      project.load("job.yml", "source_directory: src\nentry_script: \"" + c.script + "\"\n");
  INFO(c.script << "\n" << listing(result.errors));
  if (c.fragment.empty()) {
    REQUIRE(result.ok());
    CHECK(result.job->entry_script == c.normalised);
  } else {
    CHECK(find(result.errors, "entry_script", c.fragment));
  }
}

TEST_CASE("the source directory must be an existing directory", "[spec][native]") {
  Project project;
  auto missing = project.load("job.yml", "source_directory: nowhere\nentry_script: train.py\n");
  CHECK(find(missing.errors, "source_directory", "does not exist"));
  auto file = project.load("job.yml", "source_directory: train.py\nentry_script: train.py\n");
  CHECK(find(file.errors, "source_directory", "is not a directory"));
  auto wrong_type = project.load("job.yml", "source_directory: [a]\nentry_script: train.py\n");
  CHECK(find(wrong_type.errors, "source_directory", "expected a string, got a list"));
}

TEST_CASE("unknown native fields are errors with a did-you-mean hint", "[spec][native]") {
  struct Case {
    std::string key;
    std::string message;
  };
  auto c = GENERATE(values<Case>({
      {"entrypoint", "unknown field; did you mean \"entry_script\"?"},
      {"entry_scrpit", "unknown field; did you mean \"entry_script\"?"},
      {"nodeCount", "unknown field; did you mean \"node_count\"?"},
      {"use-gpu", "unknown field; did you mean \"use_gpu\"?"},
      {"environment_vars", "unknown field; did you mean \"environment_variables\"?"},
      {"max_run_duration", "unknown field; did you mean \"max_run_duration_seconds\"?"},
      {"colour", "unknown field"},
  }));
  Project project;
  auto result = project.load("job.yml", "entry_script: train.py\n" + c.key + ": 1\n");
  INFO(listing(result.errors));
  const Diagnostic* error = find(result.errors, c.key);
  REQUIRE(error);
  CHECK(error->message == c.message);
}

TEST_CASE("every problem is reported, in file order", "[spec][native]") {
  Project project;
  auto result = project.load("job.yml", R"(entry_script: missing.py
node_count: two
shm_size: lots
inputs:
  train: {path: nowhere, mode: stream}
environment_variables: {9LIVES: x}
colour: red
)");
  INFO(listing(result.errors));
  std::vector<std::string> paths;
  for (const auto& error : result.errors) paths.push_back(error.path);
  CHECK(paths == std::vector<std::string>{"entry_script", "node_count", "shm_size",
                                          "inputs.train.mode", "inputs.train.path",
                                          "environment_variables.9LIVES", "colour"});
}

TEST_CASE("empty values mean unset", "[spec][native]") {
  Project project;
  Job job = require_job(project.load("job.yml", R"(entry_script: train.py
node_count:
process_count_per_node: ~
max_run_duration_seconds: null
shm_size: ""
arguments: []
script_params: {}
environment_variables: {}
inputs:
custom_docker_image:
use_docker:
use_gpu:
distributed_training:
environment_definition:
resume_from: ""
command: ""
parallel_run: {}
)"));
  CHECK(job.node_count == 1);
  CHECK(job.distributed.process_count_per_node == 1);
  CHECK_FALSE(job.max_run_duration_seconds);
  CHECK(job.environment.docker.shm_size == "2g");
  CHECK(job.arguments.empty());
  CHECK(job.environment.docker.enabled);
  CHECK(job.environment.docker.base_image == kDefaultCpuImage);
  CHECK(job.distributed.communicator == Communicator::None);
  CHECK_FALSE(job.resume_from);
  CHECK_FALSE(job.shell_command);
  CHECK_FALSE(job.parallel_run);
}

TEST_CASE("environment variables keep their order and their values as written", "[spec][native]") {
  Project project;
  Job job = require_job(project.load("job.yml", R"(entry_script: train.py
environment_variables:
  ZED: last-alphabetically
  COUNT: 1
  ENABLED: true
  RATIO: 0.50
  EMPTY: ""
  UNSET:
  _PRIVATE: x
)"));
  CHECK(job.environment_variables == EnvVars{{"ZED", "last-alphabetically"},
                                             {"COUNT", "1"},
                                             {"ENABLED", "true"},
                                             {"RATIO", "0.50"},
                                             {"EMPTY", ""},
                                             {"_PRIVATE", "x"}});
}

TEST_CASE("the flat environment parameters build the environment", "[spec][native]") {
  Project project;
  project.write("env/conda.yml", "dependencies: [python=3.8]\n");
  project.write("env/requirements.txt", "numpy\n");
  Job job = require_job(project.load("job.yml", R"(entry_script: train.py
use_gpu: true
use_docker: false
custom_docker_image: myregistry.io/train:1
image_registry_details: {address: myregistry.io, username: me, password: s3cret}
conda_packages: [python=3.8, numpy]
pip_packages: [torch==1.12, --extra-index-url https://download.example.org/whl]
conda_dependencies_file: env/conda.yml
pip_requirements_file: env/requirements.txt
shm_size: 512M
)"));
  const Environment& environment = job.environment;
  CHECK(job.use_gpu);
  CHECK_FALSE(environment.docker.enabled);
  CHECK(environment.docker.base_image == "myregistry.io/train:1");
  REQUIRE(environment.docker.base_image_registry);
  CHECK(environment.docker.base_image_registry->address == "myregistry.io");
  CHECK(environment.docker.base_image_registry->username == "me");
  CHECK(environment.docker.base_image_registry->password == "s3cret");
  CHECK(environment.python.conda_packages == std::vector<std::string>{"python=3.8", "numpy"});
  CHECK(environment.python.pip_packages == std::vector<std::string>{"torch==1.12"});
  CHECK(environment.python.pip_options ==
        std::vector<std::string>{"--extra-index-url https://download.example.org/whl"});
  CHECK(environment.python.conda_dependencies_file == project.root() / "env" / "conda.yml");
  CHECK(environment.python.pip_requirements_file == project.root() / "env" / "requirements.txt");
  CHECK(environment.docker.shm_size == "512M");
  CHECK(environment.docker.shm_size_bytes == 512ull << 20);
}

TEST_CASE("shm sizes follow docker's format", "[spec][native]") {
  struct Case {
    std::string size;
    std::uint64_t bytes;
  };
  auto c = GENERATE(values<Case>({
      {"2g", 2ull << 30},
      {"2G", 2ull << 30},
      {"2gb", 2ull << 30},
      {"512m", 512ull << 20},
      {"512MB", 512ull << 20},
      {"64k", 64ull << 10},
      {"64Kb", 64ull << 10},
      {"100b", 100},
      {"1073741824", 1ull << 30},
  }));
  Project project;
  Job job =
      require_job(project.load("job.yml", "entry_script: train.py\nshm_size: " + c.size + "\n"));
  CHECK(job.environment.docker.shm_size == c.size);
  CHECK(job.environment.docker.shm_size_bytes == c.bytes);
}

TEST_CASE("user_managed cannot be combined with packages", "[spec][native]") {
  Project project;
  project.write("conda.yml", "dependencies: []\n");
  project.write("requirements.txt", "numpy\n");
  SECTION("alone it is a user-managed environment") {
    Job job = require_job(project.load("job.yml", "entry_script: train.py\nuser_managed: true\n"));
    CHECK(job.environment.python.user_managed_dependencies);
  }
  SECTION("with packages or package files each is an error naming both") {
    auto field = GENERATE(
        as<std::string>{}, "conda_packages: [numpy]", "pip_packages: [numpy]",
        "conda_dependencies_file: conda.yml", "pip_requirements_file: requirements.txt",
        "conda_dependencies_file_path: conda.yml", "pip_requirements_file_path: requirements.txt");
    auto result =
        project.load("job.yml", "entry_script: train.py\nuser_managed: true\n" + field + "\n");
    std::string key = field.substr(0, field.find(':'));
    INFO(listing(result.errors));
    CHECK(find(result.errors, key, "cannot be combined with user_managed: true"));
  }
}

TEST_CASE("deprecated parameters work with a warning, and the new one wins", "[spec][native]") {
  Project project;
  project.write("old.yml", "dependencies: []\n");
  project.write("new.yml", "dependencies: []\n");
  project.write("old.txt", "numpy\n");
  project.write("new.txt", "numpy\n");

  SECTION("distributed_backend alone") {
    auto result = project.load("job.yml",
                               "entry_script: train.py\nnode_count: 2\ndistributed_backend: mpi\n");
    Job job = require_job(result);
    CHECK(job.distributed.communicator == Communicator::IntelMpi);
    CHECK(find(result.warnings, "distributed_backend", "deprecated; use distributed_training"));
  }
  SECTION("distributed_backend with distributed_training") {
    auto result = project.load(
        "job.yml",
        "entry_script: train.py\ndistributed_backend: mpi\ndistributed_training: gloo\n");
    Job job = require_job(result);
    CHECK(job.distributed.communicator == Communicator::Gloo);
    CHECK(find(result.warnings, "distributed_backend",
               "deprecated, and ignored because distributed_training is given"));
  }
  SECTION("custom_docker_base_image alone and with custom_docker_image") {
    auto alone =
        project.load("job.yml", "entry_script: train.py\ncustom_docker_base_image: old:1\n");
    CHECK(require_job(alone).environment.docker.base_image == "old:1");
    CHECK(find(alone.warnings, "custom_docker_base_image", "use custom_docker_image"));
    auto both = project.load(
        "job.yml",
        "entry_script: train.py\ncustom_docker_base_image: old:1\ncustom_docker_image: new:1\n");
    CHECK(require_job(both).environment.docker.base_image == "new:1");
    CHECK(find(both.warnings, "custom_docker_base_image", "ignored because custom_docker_image"));
  }
  SECTION("conda_dependencies_file_path and pip_requirements_file_path") {
    auto alone = project.load("job.yml",
                              "entry_script: train.py\nconda_dependencies_file_path: old.yml\n"
                              "pip_requirements_file_path: old.txt\n");
    Job job = require_job(alone);
    CHECK(job.environment.python.conda_dependencies_file == project.root() / "old.yml");
    CHECK(job.environment.python.pip_requirements_file == project.root() / "old.txt");
    CHECK(find(alone.warnings, "conda_dependencies_file_path", "use conda_dependencies_file"));
    CHECK(find(alone.warnings, "pip_requirements_file_path", "use pip_requirements_file"));

    auto both = project.load("job.yml",
                             "entry_script: train.py\nconda_dependencies_file_path: old.yml\n"
                             "conda_dependencies_file: new.yml\npip_requirements_file: new.txt\n"
                             "pip_requirements_file_path: old.txt\n");
    Job newer = require_job(both);
    CHECK(newer.environment.python.conda_dependencies_file == project.root() / "new.yml");
    CHECK(newer.environment.python.pip_requirements_file == project.root() / "new.txt");
    CHECK(find(both.warnings, "conda_dependencies_file_path", "ignored because"));
    CHECK(find(both.warnings, "pip_requirements_file_path", "ignored because"));
  }
  SECTION("no warnings when only current parameters are used") {
    auto result = project.load("job.yml", "entry_script: train.py\ndistributed_training: mpi\n");
    CHECK(result.warnings.empty());
  }
}

TEST_CASE("inputs map names to local paths", "[spec][native]") {
  Project project;
  project.write("jobs/data/train/part-0.csv", "x\n");
  project.write("jobs/data/test.csv", "x\n");
  project.write("jobs/checkpoints/model.pt", "weights");
  // The job file sits in jobs/, the source directory is the project root: data paths are
  // relative to the job file's folder.
  Job job = require_job(project.load("jobs/job.yml", R"(source_directory: ..
entry_script: train.py
inputs:
  train: data/train
  test:
    path: ./data/test.csv
    mode: Download
    path_on_compute: inputs/test.csv
    overwrite: true
resume_from: checkpoints
)"));
  REQUIRE(job.inputs.size() == 2);
  CHECK(job.inputs[0].name == "train");
  CHECK(job.inputs[0].path == (project.root() / "jobs" / "data" / "train").string());
  CHECK(job.inputs[0].mode == InputMode::Mount);
  CHECK(job.inputs[0].path_on_compute.empty());
  CHECK_FALSE(job.inputs[0].overwrite);
  CHECK(job.inputs[1].name == "test");
  CHECK(job.inputs[1].path == (project.root() / "jobs" / "data" / "test.csv").string());
  CHECK(job.inputs[1].mode == InputMode::Download);
  CHECK(job.inputs[1].path_on_compute == "inputs/test.csv");
  CHECK(job.inputs[1].overwrite);
  CHECK(job.resume_from == (project.root() / "jobs" / "checkpoints").string());
}

TEST_CASE("an input cannot take the name resume_from uses", "[spec][native]") {
  Project project;
  project.write("ckpt/model.pt", "");
  auto with_resume = project.load(
      "job.yml", "entry_script: train.py\nresume_from: ckpt\ninputs: {MODEL_LOCATION: ckpt}\n");
  CHECK(find(with_resume.errors, "inputs.MODEL_LOCATION", "taken by resume_from"));
  auto without_resume =
      project.load("job.yml", "entry_script: train.py\ninputs: {MODEL_LOCATION: ckpt}\n");
  CHECK(without_resume.ok());
}

TEST_CASE("parallel_run reads ParallelRunConfig's parameters with the SDK's defaults",
          "[spec][native]") {
  Project project;
  Job job = require_job(project.load("job.yml", R"(entry_script: train.py
parallel_run:
  name: batch-score-01
  mini_batch_size: "1MB"
  error_threshold: 10
  run_invocation_timeout: 600
  append_row_file_name: out.txt
  logging_level: DEBUG
  allowed_failed_percent: 2.5
  allowed_failed_count: 3
  run_max_try: 5
  process_count_per_node: 2
  node_count: 2
  side_inputs: [labels]
  allow_reuse: false
  output_action: summary_only
)"));
  REQUIRE(job.parallel_run);
  const auto& run = *job.parallel_run;
  CHECK(run.name == "batch-score-01");
  CHECK(run.mini_batch_size == "1MB");
  CHECK(run.error_threshold == 10);
  CHECK(run.run_invocation_timeout == 600);
  CHECK(run.append_row_file_name == "out.txt");
  CHECK(run.logging_level == "DEBUG");
  CHECK(run.allowed_failed_percent == 2.5);
  CHECK(run.allowed_failed_count == 3);
  CHECK(run.run_max_try == 5);
  CHECK(run.process_count_per_node == 2);
  CHECK(job.node_count == 2);  // ParallelRunConfig's node_count is the run's
  CHECK(run.side_inputs == std::vector<std::string>{"labels"});
  CHECK_FALSE(run.allow_reuse);
  CHECK(run.output_action == OutputAction::SummaryOnly);
  // Only the two parameters the SDK requires: everything else is its default.
  Job least = require_job(project.load(
      "job.yml",
      "entry_script: train.py\nparallel_run: {error_threshold: -1, output_action: append_row}\n"));
  REQUIRE(least.parallel_run);
  CHECK_FALSE(least.parallel_run->mini_batch_size);
  CHECK(least.parallel_run->append_row_file_name == "parallel_run_step.txt");
  CHECK(least.parallel_run->run_invocation_timeout == 60);
  CHECK(least.parallel_run->run_max_try == 3);
  CHECK(least.parallel_run->allowed_failed_count == -1);
  CHECK(least.parallel_run->allowed_failed_percent == -1);
  CHECK(least.parallel_run->logging_level == "INFO");
  CHECK_FALSE(least.parallel_run->process_count_per_node);
  CHECK(least.node_count == 1);
}

TEST_CASE("parallel_run refuses what ParallelRunConfig would, naming the field", "[spec][native]") {
  auto c = GENERATE(values<std::pair<std::string, std::pair<std::string, std::string>>>({
      {"{output_action: append_row}", {"parallel_run.error_threshold", "required"}},
      {"{error_threshold: 1}", {"parallel_run.output_action", "required"}},
      {"{error_threshold: -2, output_action: append_row}",
       {"parallel_run.error_threshold", "expected an integer >= -1"}},
      {"{error_threshold: 1, output_action: append_rows}",
       {"parallel_run.output_action", "expected append_row or summary_only"}},
      {"{error_threshold: 1, output_action: append_row, allowed_failed_percent: 101}",
       {"parallel_run.allowed_failed_percent", "a percentage from 0 to 100"}},
      {"{error_threshold: 1, output_action: append_row, mini_batch_size: 10, "
       "partition_keys: [region]}",
       {"parallel_run.partition_keys", "conflicts with mini_batch_size"}},
      {"{error_threshold: 1, output_action: append_row, append_row_file_name: ../x.txt}",
       {"parallel_run.append_row_file_name", "a file name (no folders)"}},
      {"{error_threshold: 1, output_action: append_row, run_max_try: 0}",
       {"parallel_run.run_max_try", "an integer >= 1"}},
      {"{error_threshold: 1, output_action: append_row, logging_level: LOUD}",
       {"parallel_run.logging_level", "DEBUG, INFO, WARNING, ERROR or CRITICAL"}},
      {"{error_threshold: 1, output_action: append_row, mini_batch_sise: 10}",
       {"parallel_run.mini_batch_sise", "unknown field"}},
  }));
  Project project;
  auto result = project.load("job.yml", "entry_script: train.py\nparallel_run: " + c.first + "\n");
  INFO(c.first << "\n" << listing(result.errors));
  CHECK_FALSE(result.job);
  CHECK(find(result.errors, c.second.first, c.second.second));
}

TEST_CASE("the other Estimator parameters are accepted", "[spec][native]") {
  Project project;
  Job job = require_job(project.load("job.yml", R"(entry_script: train.py
experiment_name: mnist
compute_target: gpu-cluster
vm_size: STANDARD_NC6
vm_priority: lowpriority
source_directory_data_store: workspaceblobstore
max_run_duration_seconds: 7200
)"));
  CHECK(job.experiment_name == "mnist");
  CHECK(job.compute_target == "gpu-cluster");
  CHECK(job.max_run_duration_seconds == 7200);
}
