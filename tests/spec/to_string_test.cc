// The names the model's enums and diagnostics print as.

#include "tests/spec/spec_test_support.h"

using namespace amlnode::spec;

TEST_CASE("enums print as the SDK spells them", "[spec]") {
  CHECK(to_string(Framework::Python) == "Python");
  CHECK(to_string(Framework::PySpark) == "PySpark");
  CHECK(to_string(Framework::CNTK) == "CNTK");
  CHECK(to_string(Framework::TensorFlow) == "TensorFlow");
  CHECK(to_string(Framework::PyTorch) == "PyTorch");
  CHECK(to_string(Communicator::None) == "None");
  CHECK(to_string(Communicator::ParameterServer) == "ParameterServer");
  CHECK(to_string(Communicator::OpenMpi) == "OpenMpi");
  CHECK(to_string(Communicator::IntelMpi) == "IntelMpi");
  CHECK(to_string(Communicator::Mpi) == "Mpi");
  CHECK(to_string(Communicator::Gloo) == "Gloo");
  CHECK(to_string(Communicator::Nccl) == "Nccl");
  CHECK(to_string(Communicator::ParallelTask) == "ParallelTask");
  CHECK(to_string(InputMode::Mount) == "mount");
  CHECK(to_string(InputMode::Download) == "download");
  CHECK(to_string(InputMode::Upload) == "upload");
}

TEST_CASE("a diagnostic prints as path: message", "[spec]") {
  CHECK(Diagnostic{"inputs.train.mode", "expected mount"}.to_string() ==
        "inputs.train.mode: expected mount");
  CHECK(Diagnostic{"", "malformed YAML at line 1, column 2: x"}.to_string() ==
        "malformed YAML at line 1, column 2: x");
}
