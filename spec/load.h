#pragma once

// Loading and validating a job file. Parsing problems and rule violations are collected, never
// thrown: the caller gets every problem at once, each naming its field path.

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "spec/job.h"

namespace amlnode::spec {

// One problem or warning, e.g. {"environment.docker.shm_size",
// "expected a size like 2g, got \"lots\""}. `path` is "" for whole-file problems such as
// malformed YAML, whose message then carries line and column.
struct Diagnostic {
  std::string path;
  std::string message;

  // "path: message", or just the message when there is no path.
  std::string to_string() const;
};

struct LoadOptions {
  // Overrides the source directory (`--source-dir`).
  std::optional<std::filesystem::path> source_dir_override;
  // A script and its arguments given on the command line after the job file, as `az ml run
  // submit-script -c CONFIG SCRIPT ARGS...` takes them: they replace what the file says to run
  // (its script or command, and its arguments), and a file that names nothing to run is fine.
  std::optional<std::string> script_override;
  std::vector<std::string> arguments_override;
  // -e/--experiment: replaces the file's experiment name.
  std::optional<std::string> experiment_override;
};

struct LoadResult {
  std::optional<Job> job;            // set only when there are no errors
  std::vector<Diagnostic> errors;    // every problem found, in file order where possible
  std::vector<Diagnostic> warnings;  // deprecations and other non-fatal notes

  bool ok() const { return job.has_value() && errors.empty(); }
};

// Loads a native job file (.yml/.yaml/.json) or a v1 .runconfig (by extension `.runconfig`, or by
// content: camelCase RunConfiguration keys such as `script` / `environment.python`).
LoadResult load_job_file(const std::filesystem::path& file, const LoadOptions& options = {});

// Same, from text already in memory (the control plane receives specs this way). `file` is used
// for relative paths and messages only.
LoadResult load_job_text(const std::string& text, const std::filesystem::path& file,
                         const LoadOptions& options = {});

// An environment definition in the shape of a native job's environment_definition (python,
// docker, environment_variables, ...), given as YAML or JSON text: one of the node config's named
// environments. Files it names are relative to `base_dir`; errors name their path below `where`.
struct EnvironmentDefinition {
  std::optional<Environment> environment;  // set only when there are no errors
  bool gpu_support = false;                // docker.gpu_support, for use_gpu
  std::vector<Diagnostic> errors;
};
EnvironmentDefinition load_environment_definition(const std::string& text,
                                                  const std::filesystem::path& base_dir,
                                                  const std::string& where);

}  // namespace amlnode::spec
