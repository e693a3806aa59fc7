// A .runconfig and a native file describing the same job load into the same model, in every
// field that matters to running it.

#include "tests/spec/spec_test_support.h"

using namespace amlnode::spec;
using namespace amlnode::spec::testing;

namespace {

const char* kNative = R"(entry_script: train.py
script_params:
  --data: data
  --lr: 0.01
arguments: [--epochs, 3]
node_count: 2
distributed_training: {type: mpi, process_count_per_node: 2}
use_docker: true
custom_docker_image: myregistry.io/train:1
image_registry_details: {address: myregistry.io, username: puller, password: pw}
shm_size: 4g
conda_packages: [python=3.8, numpy]
pip_packages: [torch==1.12, --index-url https://pypi.example.org/simple]
environment_variables: {OMP_NUM_THREADS: 1, MODE: two}
max_run_duration_seconds: 600
inputs:
  train: {path: data, mode: download, path_on_compute: in/train}
)";

// What RunConfiguration.save() writes for the same job, nulls included.
const char* kRunConfig = R"(script: train.py
arguments: [--data, data, --lr, 0.01, --epochs, 3]
target: local
framework: Python
communicator: IntelMpi
maxRunDurationSeconds: 600
nodeCount: 2
environment:
  name:
  version:
  environmentVariables: {OMP_NUM_THREADS: 1, MODE: two}
  python:
    userManagedDependencies: false
    interpreterPath: python
    condaDependenciesFile:
    condaDependencies:
      dependencies:
      - python=3.8
      - numpy
      - pip: [torch==1.12, --index-url https://pypi.example.org/simple]
  docker:
    enabled: true
    baseImage: myregistry.io/train:1
    baseDockerfile:
    sharedVolumes: true
    shmSize: 4g
    arguments: []
    baseImageRegistry: {address: myregistry.io, username: puller, password: pw}
history: {outputCollection: true}
docker: {useDocker: true, sharedVolumes: true, arguments: [], shmSize: 4g}
tensorflow: {workerCount: 1, parameterServerCount: 1}
mpi: {processCountPerNode: 2}
pytorch: {communicationBackend: nccl, processCount:}
dataReferences:
  train: {dataStoreName: workspaceblobstore, mode: download, pathOnDataStore: data,
          pathOnCompute: in/train, overwrite: false}
)";

}  // namespace

TEST_CASE("a runconfig and a native file for the same job agree", "[spec][equivalence]") {
  Project project;
  project.write("data/train.csv", "x\n1\n");
  Job native = require_job(project.load("job.yml", kNative));
  Job runconfig = require_job(project.load(".azureml/job.runconfig", kRunConfig));

  CHECK(native.shape == SourceShape::Native);
  CHECK(runconfig.shape == SourceShape::RunConfig);
  CHECK(runconfig.source_directory == native.source_directory);
  CHECK(runconfig.experiment_name == native.experiment_name);
  CHECK(runconfig.compute_target == native.compute_target);
  CHECK(runconfig.entry_script == native.entry_script);
  CHECK(runconfig.arguments == native.arguments);
  CHECK(runconfig.environment_variables == native.environment_variables);
  CHECK(runconfig.max_run_duration_seconds == native.max_run_duration_seconds);
  CHECK(runconfig.node_count == native.node_count);
  CHECK(runconfig.framework == native.framework);
  CHECK(runconfig.use_gpu == native.use_gpu);

  const Distributed& a = runconfig.distributed;
  const Distributed& b = native.distributed;
  CHECK(a.communicator == b.communicator);
  CHECK(a.process_count_per_node == b.process_count_per_node);
  CHECK(a.communication_backend == b.communication_backend);
  CHECK(a.pytorch_process_count == b.pytorch_process_count);
  CHECK(a.worker_count == b.worker_count);
  CHECK(a.parameter_server_count == b.parameter_server_count);

  const PythonSection& python = runconfig.environment.python;
  CHECK(python.user_managed_dependencies == native.environment.python.user_managed_dependencies);
  CHECK(python.interpreter_path == native.environment.python.interpreter_path);
  CHECK(python.conda_packages == native.environment.python.conda_packages);
  CHECK(python.pip_packages == native.environment.python.pip_packages);
  CHECK(python.pip_options == native.environment.python.pip_options);
  CHECK(python.channels == native.environment.python.channels);

  const DockerSection& docker = runconfig.environment.docker;
  CHECK(docker.enabled == native.environment.docker.enabled);
  CHECK(docker.base_image == native.environment.docker.base_image);
  CHECK(docker.base_dockerfile == native.environment.docker.base_dockerfile);
  CHECK(docker.shm_size == native.environment.docker.shm_size);
  CHECK(docker.shm_size_bytes == native.environment.docker.shm_size_bytes);
  CHECK(docker.arguments == native.environment.docker.arguments);
  CHECK(docker.shared_volumes == native.environment.docker.shared_volumes);
  REQUIRE(docker.base_image_registry);
  REQUIRE(native.environment.docker.base_image_registry);
  CHECK(docker.base_image_registry->address ==
        native.environment.docker.base_image_registry->address);
  CHECK(docker.base_image_registry->password ==
        native.environment.docker.base_image_registry->password);

  REQUIRE(runconfig.inputs.size() == native.inputs.size());
  for (std::size_t i = 0; i < native.inputs.size(); ++i) {
    CHECK(runconfig.inputs[i].name == native.inputs[i].name);
    CHECK(runconfig.inputs[i].path == native.inputs[i].path);
    CHECK(runconfig.inputs[i].mode == native.inputs[i].mode);
    CHECK(runconfig.inputs[i].path_on_compute == native.inputs[i].path_on_compute);
    CHECK(runconfig.inputs[i].overwrite == native.inputs[i].overwrite);
  }
}
