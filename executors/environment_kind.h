#pragma once

#include <string>

namespace amlnode::executors {

// How a run's Python environment is provided: the interpreter as it is (user-managed), a conda or
// pip environment built once per content hash, or a Docker image.
enum class EnvironmentKind { UserManaged, Conda, Pip, Docker };

inline std::string to_string(EnvironmentKind kind) {
  switch (kind) {
    case EnvironmentKind::UserManaged:
      return "user-managed";
    case EnvironmentKind::Conda:
      return "conda";
    case EnvironmentKind::Pip:
      return "pip";
    case EnvironmentKind::Docker:
      return "docker";
  }
  return "unknown";
}

}  // namespace amlnode::executors
