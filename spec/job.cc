#include "spec/job.h"

#include "spec/load.h"

namespace amlnode::spec {

std::string to_string(Framework framework) {
  switch (framework) {
    case Framework::Python:
      return "Python";
    case Framework::PySpark:
      return "PySpark";
    case Framework::CNTK:
      return "CNTK";
    case Framework::TensorFlow:
      return "TensorFlow";
    case Framework::PyTorch:
      return "PyTorch";
  }
  return "Python";
}

std::string to_string(Communicator communicator) {
  switch (communicator) {
    case Communicator::None:
      return "None";
    case Communicator::ParameterServer:
      return "ParameterServer";
    case Communicator::OpenMpi:
      return "OpenMpi";
    case Communicator::IntelMpi:
      return "IntelMpi";
    case Communicator::Mpi:
      return "Mpi";
    case Communicator::Gloo:
      return "Gloo";
    case Communicator::Nccl:
      return "Nccl";
    case Communicator::ParallelTask:
      return "ParallelTask";
  }
  return "None";
}

void apply_docker_runtime(Job& job) {
  if (!job.docker_runtime) return;
  const DockerRuntime& runtime = *job.docker_runtime;
  DockerSection& docker = job.environment.docker;
  if (runtime.use_docker) docker.enabled = *runtime.use_docker;
  if (runtime.shm_size) {
    docker.shm_size = *runtime.shm_size;
    docker.shm_size_bytes = runtime.shm_size_bytes;
  }
  if (runtime.arguments) docker.arguments = *runtime.arguments;
  if (runtime.shared_volumes) docker.shared_volumes = *runtime.shared_volumes;
}

std::string to_string(DatasetKind kind) {
  return kind == DatasetKind::Tabular ? "tabular" : "file";
}

std::string to_string(TabularFormat format) {
  switch (format) {
    case TabularFormat::Delimited:
      return "delimited";
    case TabularFormat::JsonLines:
      return "json_lines";
    case TabularFormat::Parquet:
      return "parquet";
  }
  return "delimited";
}

std::string to_string(InputMode mode) {
  switch (mode) {
    case InputMode::Mount:
      return "mount";
    case InputMode::Download:
      return "download";
    case InputMode::Upload:
      return "upload";
  }
  return "mount";
}

std::string Diagnostic::to_string() const {
  if (path.empty()) return message;
  return path + ": " + message;
}

}  // namespace amlnode::spec
