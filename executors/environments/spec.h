#pragma once

// The canonical form of a job's conda / pip environment and its content hash. Everything that
// decides what gets installed counts: conda channels and packages (inline, from conda_packages, or
// from a conda dependencies file), pip options and packages (including the contents of requirement
// files), the platform, and for a pip-only environment the system interpreter it is made from.
// How the source files are written does not count: key order, comments, whitespace and the order
// of package lists all canonicalise away, while a changed version pin changes the hash.

#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "executors/environment_kind.h"
#include "spec/job.h"

namespace amlnode::executors::environments {

// The conda part of an environment: what `create` or `env create` installs.
struct CondaSpec {
  std::vector<std::string> channels;  // in priority order, as conda reads them
  std::vector<std::string> packages;  // match specs, sorted and unique
  // Keys of a dependencies file other than name, prefix, channels and dependencies (e.g.
  // `variables`), carried into the file the environment is created from.
  nlohmann::json extra = nlohmann::json::object();
  bool from_file = false;  // the job named a dependencies file: built with `env create -f`
};

// The pip part, installed with PREFIX/bin/python -m pip after the conda or venv step.
struct PipSpec {
  std::vector<std::string> options;   // e.g. "--index-url URL", in the order given
  std::vector<std::string> packages;  // requirement specifiers, sorted and unique
  std::vector<std::filesystem::path> requirement_files;  // absolute; passed to pip with -r
};

struct EnvironmentSpec {
  EnvironmentKind kind = EnvironmentKind::Pip;  // Conda or Pip
  std::optional<CondaSpec> conda;               // set when kind is Conda
  PipSpec pip;
  std::filesystem::path base_python;  // the interpreter a Pip environment's venv is made from
  nlohmann::json identity;            // the canonical spec that is hashed
  std::string hash;                   // 32 lower-case hex digits of its SHA-256
};

struct SpecOptions {
  // The system interpreter pip-only environments are made from. Its resolved path is part of the
  // identity, because a venv only works with the interpreter it was made from.
  std::filesystem::path system_python = "/usr/bin/python3";
};

// The environment a job needs, canonicalised and hashed. Reads the job's conda dependencies file
// and pip requirement files (with the requirement files they include). Fails with
// "EnvironmentNotManaged" for user-managed environments, which are not built, and with
// "InvalidCondaDependencies" / "InvalidPipRequirements" when a file cannot be understood.
Result<EnvironmentSpec> environment_spec(const spec::Job& job, const SpecOptions& options = {});

// "linux-x86_64" on the machines this project targets: the running kernel's system and machine.
std::string platform_tag();

// A package specifier with surrounding whitespace removed and inner runs of whitespace made one
// space, so that formatting does not change the hash.
std::string normalise_entry(std::string_view entry);

}  // namespace amlnode::executors::environments
