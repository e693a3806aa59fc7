// The native environment_definition: the SDK's Environment in snake_case, which replaces the
// flat environment parameters.

#include "tests/spec/spec_test_support.h"

using namespace amlnode::spec;
using namespace amlnode::spec::testing;

namespace {

const char* kFullDefinition = R"(entry_script: train.py
environment_definition:
  name: pytorch-env
  version: "7"
  environment_variables:
    NCCL_DEBUG: INFO
  python:
    user_managed_dependencies: false
    interpreter_path: /opt/conda/bin/python
    conda_dependencies:
      name: train-env
      channels: [pytorch, conda-forge]
      dependencies:
        - python=3.9
        - pytorch=1.12
        - pip:
            - azureml-defaults
            - --index-url https://pypi.example.org/simple
  docker:
    enabled: true
    base_image: myregistry.azurecr.io/base:2
    base_image_registry:
      address: myregistry.azurecr.io
      username: puller
      password: hunter2-registry
    shm_size: 16g
    arguments: [--ulimit, memlock=-1]
    gpu_support: true
    shared_volumes: false
)";

}  // namespace

TEST_CASE("environment_definition fills the whole environment", "[spec][environment]") {
  Project project;
  auto result = project.load("job.yml", kFullDefinition);
  Job job = require_job(result);
  CHECK(result.warnings.empty());

  const Environment& environment = job.environment;
  CHECK(environment.name == "pytorch-env");
  CHECK(environment.version == "7");
  CHECK(environment.environment_variables == EnvVars{{"NCCL_DEBUG", "INFO"}});
  CHECK(job.environment_variables.empty());

  const PythonSection& python = environment.python;
  CHECK_FALSE(python.user_managed_dependencies);
  CHECK(python.interpreter_path == "/opt/conda/bin/python");
  CHECK(python.conda_env_name == "train-env");
  CHECK(python.channels == std::vector<std::string>{"pytorch", "conda-forge"});
  CHECK(python.conda_packages == std::vector<std::string>{"python=3.9", "pytorch=1.12"});
  CHECK(python.pip_packages == std::vector<std::string>{"azureml-defaults"});
  CHECK(python.pip_options ==
        std::vector<std::string>{"--index-url https://pypi.example.org/simple"});

  const DockerSection& docker = environment.docker;
  CHECK(docker.enabled);
  CHECK(docker.base_image == "myregistry.azurecr.io/base:2");
  REQUIRE(docker.base_image_registry);
  CHECK(docker.base_image_registry->username == "puller");
  CHECK(docker.base_image_registry->password == "hunter2-registry");
  CHECK(docker.shm_size == "16g");
  CHECK(docker.shm_size_bytes == 16ull << 30);
  CHECK(docker.arguments == std::vector<std::string>{"--ulimit", "memlock=-1"});
  CHECK(docker.gpu_support);
  CHECK(job.use_gpu);
  CHECK_FALSE(docker.shared_volumes);
}

TEST_CASE("environment_definition defaults are the SDK Environment's", "[spec][environment]") {
  Project project;
  Job job = require_job(
      project.load("job.yml", "entry_script: train.py\nenvironment_definition: {name: bare}\n"));
  // The SDK's DockerSection is disabled unless enabled is set, unlike the Estimator's use_docker.
  CHECK_FALSE(job.environment.docker.enabled);
  CHECK(job.environment.docker.base_image == kDefaultCpuImage);
  CHECK(job.environment.docker.shm_size == "2g");
  CHECK(job.environment.python.interpreter_path == "python");
  CHECK_FALSE(job.use_gpu);
}

TEST_CASE("use_gpu and use_docker cannot be combined with environment_definition",
          "[spec][environment]") {
  Project project;
  auto result = project.load("job.yml", R"(entry_script: train.py
use_gpu: true
use_docker: true
environment_definition:
  docker: {enabled: false}
)");
  // Honoured or refused, never dropped: the definition decides, so the two are refused.
  CHECK_FALSE(result.ok());
  CHECK(find(result.errors, "use_gpu",
             "cannot be combined with a whole environment definition; "
             "environment_definition.docker.gpu_support decides it there"));
  CHECK(find(result.errors, "use_docker", "environment_definition.docker.enabled decides"));
}

TEST_CASE("environment_definition cannot be combined with the flat environment parameters",
          "[spec][environment]") {
  auto field = GENERATE(
      as<std::string>{}, "custom_docker_image: img:1", "custom_docker_base_image: img:1",
      "image_registry_details: {address: r.io}", "user_managed: true", "conda_packages: [numpy]",
      "pip_packages: [numpy]", "conda_dependencies_file: conda.yml",
      "conda_dependencies_file_path: conda.yml", "pip_requirements_file: requirements.txt",
      "pip_requirements_file_path: requirements.txt");
  Project project;
  project.write("conda.yml", "dependencies: []\n");
  project.write("requirements.txt", "numpy\n");
  auto result = project.load(
      "job.yml",
      "entry_script: train.py\nenvironment_definition: {name: e, docker: {enabled: false}}\n" +
          field + "\n");
  std::string key = field.substr(0, field.find(':'));
  INFO(listing(result.errors));
  CHECK_FALSE(result.ok());
  CHECK(find(result.errors, key, "cannot be combined with environment_definition"));
}

TEST_CASE("shm_size applies unless environment_definition sets its own", "[spec][environment]") {
  Project project;
  SECTION("definition without shm_size") {
    Job job =
        require_job(project.load("job.yml",
                                 "entry_script: train.py\nshm_size: 8g\nenvironment_definition: "
                                 "{name: e, docker: {enabled: false}}\n"));
    CHECK(job.environment.docker.shm_size == "8g");
  }
  SECTION("definition with shm_size") {
    auto result = project.load("job.yml",
                               "entry_script: train.py\nshm_size: 8g\n"
                               "environment_definition: {docker: {enabled: true, shm_size: 1g}}\n");
    Job job = require_job(result);
    CHECK(job.environment.docker.shm_size == "1g");
    CHECK(find(result.warnings, "shm_size",
               "ignored because environment_definition.docker.shm_size is given"));
  }
}

TEST_CASE("environment_definition errors carry the nested path", "[spec][environment]") {
  struct Case {
    std::string definition;
    std::string path;
    std::string message;
  };
  auto c = GENERATE(values<Case>({
      {"docker: {shm_size: lots}", "environment_definition.docker.shm_size",
       "expected a size like 2g, 512m or 1073741824, got \"lots\""},
      {"docker: {base_image: 'a:1', base_dockerfile: 'FROM b:1'}",
       "environment_definition.docker.base_dockerfile",
       "cannot be combined with environment_definition.docker.base_image"},
      {"docker: {base_dockerfile: Dockerfile.missing}",
       "environment_definition.docker.base_dockerfile",
       "expected Dockerfile text or the name of a file in the source directory"},
      {"docker: {build_context: ctx}", "environment_definition.docker.build_context",
       "not supported"},
      {"docker: {enabled: sometimes}", "environment_definition.docker.enabled",
       "expected true or false, got \"sometimes\""},
      {"docker: {gpu: true}", "environment_definition.docker.gpu",
       "unknown field; did you mean \"gpu_support\"?"},
      {"docker: {base_image_registry: {address: r.io, username: me}}",
       "environment_definition.docker.base_image_registry.password",
       "expected a username and a password together"},
      {"python: {user_managed_dependencies: true, conda_dependencies: {dependencies: [numpy]}}",
       "environment_definition.python.conda_dependencies",
       "cannot be combined with environment_definition.python.user_managed_dependencies: true"},
      {"python: {conda_dependencies: {dependencies: [numpy]}, conda_dependencies_file: c.yml}",
       "environment_definition.python.conda_dependencies_file",
       "cannot be combined with environment_definition.python.conda_dependencies"},
      {"python: {conda_dependencies_file: none.yml}",
       "environment_definition.python.conda_dependencies_file", "\"none.yml\" not found"},
      {"python: {conda_dependencies: {dependencies: [{conda: [x]}]}}",
       "environment_definition.python.conda_dependencies.dependencies[0]",
       "expected a package or {pip: [...]}, got a mapping"},
      {"python: {conda_dependencies: {dependencies: [{pip: numpy}]}}",
       "environment_definition.python.conda_dependencies.dependencies[0].pip",
       "expected a list of strings, got \"numpy\""},
      {"python: {conda_dependencies: {channel: [x]}}",
       "environment_definition.python.conda_dependencies.channel",
       "unknown field; did you mean \"channels\"?"},
      {"python: {interpreter: python3}", "environment_definition.python.interpreter",
       "unknown field; did you mean \"interpreter_path\"?"},
      {"environment_variables: {BAD-NAME: 1}",
       "environment_definition.environment_variables.BAD-NAME", "expected a variable name"},
      {"colour: blue", "environment_definition.colour", "unknown field"},
      {"python: numpy", "environment_definition.python", "expected a mapping, got \"numpy\""},
  }));
  Project project;
  project.write("c.yml", "dependencies: []\n");
  auto result = project.load(
      "job.yml", "entry_script: train.py\nenvironment_definition:\n  " + c.definition + "\n");
  INFO(c.definition << "\n" << listing(result.errors));
  CHECK_FALSE(result.ok());
  CHECK(find(result.errors, c.path, c.message));
}

TEST_CASE("base_dockerfile is Dockerfile text or a file in the source directory",
          "[spec][environment]") {
  Project project;
  project.write("docker/Dockerfile", "FROM ubuntu:22.04\nRUN apt-get update\n");
  struct Case {
    std::string value;
    std::string expected;
  };
  auto c = GENERATE(values<Case>({
      {"docker/Dockerfile", "FROM ubuntu:22.04\nRUN apt-get update\n"},
      {"FROM python:3.10-slim", "FROM python:3.10-slim"},
      {"\"FROM python:3.10\\nRUN pip install numpy\\n\"",
       "FROM python:3.10\nRUN pip install numpy\n"},
  }));
  auto result = project.load("job.yml",
                             "entry_script: train.py\nenvironment_definition:\n"
                             "  docker:\n    enabled: true\n    base_dockerfile: " +
                                 c.value + "\n");
  Job job = require_job(result);
  CHECK(job.environment.docker.base_dockerfile == c.expected);
  CHECK(job.environment.docker.base_image.empty());
}

TEST_CASE("docker settings without docker.enabled are flagged", "[spec][environment]") {
  Project project;
  auto result = project.load(
      "job.yml", "entry_script: train.py\nenvironment_definition: {docker: {base_image: a:1}}\n");
  require_job(result);
  CHECK(find(result.warnings, "environment_definition.docker.base_image",
             "the job runs without Docker"));
}
