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
