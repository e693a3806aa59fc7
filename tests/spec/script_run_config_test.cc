// ScriptRunConfig's spelling of a job, the framework estimators, named environments, datasets and
// models, and what cannot run here refused by name.

#include "tests/spec/spec_test_support.h"

using namespace amlnode::spec;
using namespace amlnode::spec::testing;

TEST_CASE("a ScriptRunConfig job loads with its own field names", "[spec][src]") {
  Project project;
  Job job = require_job(project.load("job.yml", R"(
script: train.py
arguments: [--epochs, 3]
environment:
  python: {user_managed_dependencies: true, interpreter_path: /usr/bin/python3}
  environment_variables: {FROM_ENV: "1"}
docker_runtime_config: {use_docker: true, shm_size: 8g, arguments: [--cap-add, SYS_PTRACE]}
distributed_job_config: {type: pytorch, process_count: 4, node_count: 2}
compute_target: cpu-cluster
max_run_duration_seconds: 600
)"));
  CHECK(job.entry_script == "train.py");
  CHECK(job.arguments == std::vector<std::string>{"--epochs", "3"});
  CHECK(job.environment.python.user_managed_dependencies);
  CHECK(job.environment.python.interpreter_path == "/usr/bin/python3");
  CHECK(job.environment.environment_variables == EnvVars{{"FROM_ENV", "1"}});
  CHECK(job.environment.docker.enabled);
  CHECK(job.environment.docker.shm_size == "8g");
  CHECK(job.environment.docker.arguments == std::vector<std::string>{"--cap-add", "SYS_PTRACE"});
  CHECK(job.framework == Framework::PyTorch);
  CHECK(job.node_count == 2);
  CHECK(job.distributed.process_count_per_node == 2);
  CHECK(job.compute_target == "cpu-cluster");
  CHECK(job.max_run_duration_seconds == 600);
  CHECK_FALSE(job.environment_name);
}

TEST_CASE("an environment named rather than defined is left for the node to resolve",
          "[spec][src]") {
  Project project;
  SECTION("ScriptRunConfig's environment by name") {
    Job job = require_job(project.load(
        "job.yml", "script: train.py\nenvironment: AzureML-sklearn-0.24-ubuntu18.04-py37-cpu\n"));
    CHECK(job.environment_name == "AzureML-sklearn-0.24-ubuntu18.04-py37-cpu");
    CHECK(job.environment_name_path == "environment");
  }
  SECTION("a definition holding only a name") {
    Job job = require_job(project.load(
        "job.yml", "entry_script: train.py\nenvironment_definition: {name: AzureML-Minimal}\n"));
    CHECK(job.environment_name == "AzureML-Minimal");
    CHECK(job.environment_name_path == "environment_definition.name");
  }
  SECTION("no environment at all in a ScriptRunConfig: the node's default") {
    Job job = require_job(
        project.load("job.yml", "script: train.py\ndocker_runtime_config: {use_docker: false}\n"));
    CHECK(job.node_default_environment);
    CHECK_FALSE(job.environment_name);
  }
  SECTION("an Estimator without environment parameters keeps the Estimator's defaults") {
    Job job = require_job(project.load("job.yml", "entry_script: train.py\n"));
    CHECK_FALSE(job.node_default_environment);
    CHECK(job.environment.docker.enabled);
  }
}

TEST_CASE("Estimator and ScriptRunConfig fields cannot be mixed in one file", "[spec][src]") {
  Project project;
  auto result =
      project.load("job.yml", "entry_script: train.py\nenvironment: e\nscript: train.py\n");
  INFO(listing(result.errors));
  CHECK_FALSE(result.ok());
  CHECK(find(result.errors, "environment",
             "a ScriptRunConfig parameter, which cannot be mixed with the Estimator's "
             "entry_script"));
  CHECK(find(result.errors, "script", "entry_script"));
}

TEST_CASE("framework estimators name their curated environment", "[spec][src]") {
  Project project;
  SECTION("pytorch on CPU") {
    Job job = require_job(project.load(
        "job.yml", "entry_script: train.py\nframework: PyTorch\nframework_version: '1.13'\n"));
    CHECK(job.environment_name == "AzureML-PyTorch-1.13-CPU");
    CHECK(job.framework == Framework::PyTorch);
  }
  SECTION("tensorflow on GPU") {
    Job job = require_job(project.load("job.yml",
                                       "entry_script: train.py\nframework: "
                                       "tensorflow\nframework_version: '2.4'\nuse_gpu: true\n"));
    CHECK(job.environment_name == "AzureML-TensorFlow-2.4-GPU");
  }
  SECTION("a version is required") {
    auto result = project.load("job.yml", "entry_script: train.py\nframework: sklearn\n");
    CHECK(find(result.errors, "framework_version", "required with framework"));
  }
  SECTION("packages belong to the named environment") {
    auto result = project.load("job.yml",
                               "entry_script: train.py\nframework: chainer\nframework_version: "
                               "'7'\npip_packages: [x]\n");
    CHECK(find(result.errors, "pip_packages", "cannot be combined with framework"));
  }
  SECTION("use_docker is honoured over the named environment, and user_managed refused") {
    Job job = require_job(project.load("job.yml",
                                       "entry_script: train.py\nframework: pytorch\n"
                                       "framework_version: '1.13'\nuse_docker: false\n"));
    REQUIRE(job.docker_runtime);
    CHECK(job.docker_runtime->use_docker == false);
    auto result = project.load("job.yml",
                               "entry_script: train.py\nframework: pytorch\n"
                               "framework_version: '1.13'\nuser_managed: true\n");
    CHECK(find(result.errors, "user_managed", "cannot be combined with framework"));
  }
  SECTION("an unknown framework") {
    auto result = project.load("job.yml", "entry_script: train.py\nframework: caffe\n");
    CHECK(find(result.errors, "framework", "pytorch, tensorflow, sklearn or chainer"));
  }
}

TEST_CASE("notebooks and Windows entry points are refused naming what they would need",
          "[spec][src]") {
  Project project;
  project.write("explore.ipynb", "{}\n");
  project.write("run.cmd", "echo\n");
  auto notebook = project.load("job.yml", "script: explore.ipynb\n");
  CHECK(find(notebook.errors, "script", "jupyter nbconvert --to script explore.ipynb"));
  auto windows = project.load("job.yml", "entry_script: run.cmd\n");
  CHECK(find(windows.errors, "entry_script", "needs a Windows compute"));
}

TEST_CASE("inputs declared as datasets, absolute places on compute and models", "[spec][src]") {
  Project project;
  project.write("data/diabetes.csv", "a;b\n1;2\n");
  project.write("data/images/x.png", "png\n");
  project.write("models/iris.pkl", "model\n");
  Job job = require_job(project.load("job.yml", R"(
script: train.py
inputs:
  diabetes: {path: data/diabetes.csv, dataset: tabular, format: delimited, separator: ';'}
  images: {path: data/images, dataset: file, path_on_compute: /tmp/3fa9c1/}
  plain: {path: data, path_on_compute: ./}
models:
  iris: {path: models/iris.pkl, version: 3}
  latest: models
)"));
  REQUIRE(job.inputs.size() == 3);
  CHECK(job.inputs[0].dataset);
  CHECK(job.inputs[0].kind == DatasetKind::Tabular);
  CHECK(job.inputs[0].separator == ";");
  CHECK(job.inputs[1].kind == DatasetKind::File);
  CHECK(job.inputs[1].path_on_compute == "/tmp/3fa9c1");
  CHECK(job.inputs[2].path_on_compute.empty());
  REQUIRE(job.models.size() == 2);
  CHECK(job.models[0].name == "iris");
  CHECK(job.models[0].version == 3);
  CHECK(job.models[1].path == (project.root() / "models").string());

  auto outside = project.load(
      "job.yml", "script: train.py\ninputs: {d: {path: data, path_on_compute: /etc/x}}\n");
  CHECK(find(outside.errors, "inputs.d.path_on_compute", "an absolute path below /tmp"));
}

TEST_CASE("a script on the command line replaces what the file says to run", "[spec][src]") {
  Project project;
  project.write("other.py", "print(1)\n");
  LoadOptions options;
  options.script_override = "other.py";
  options.arguments_override = {"--alpha", "1"};
  options.experiment_override = "exp";
  // A .runconfig that names no script, as `az ml run submit-script -c local train.py` uses them.
  Job job = require_job(project.load("local.runconfig", "script:\narguments: []\n", options));
  CHECK(job.entry_script == "other.py");
  CHECK(job.arguments == std::vector<std::string>{"--alpha", "1"});
  CHECK(job.experiment_name == "exp");

  options.script_override = "missing.py";
  auto missing = project.load("job.yml", "command: echo hi\n", options);
  CHECK(find(missing.errors, "SCRIPT", "missing.py"));
}
