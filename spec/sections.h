#pragma once

// Readers for the parts both shapes share: an environment (python, docker, registry, conda
// specification, variables) and data references. The native shape spells keys in snake_case and
// rejects keys it does not know; a .runconfig spells them in camelCase and keeps keys it does not
// use, because RunConfiguration.save() writes many that do not matter here.

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "spec/job.h"
#include "spec/reader.h"

namespace amlnode::spec::detail {

class ShapeContext {
 public:
  ShapeContext(SourceShape shape, Reader& reader) : shape_(shape), reader_(reader) {}

  SourceShape shape() const { return shape_; }
  Reader& reader() const { return reader_; }
  Diagnostics& diagnostics() const { return reader_.diagnostics(); }

  // The source directory, once known to be valid.
  const std::optional<std::filesystem::path>& source_dir() const { return source_dir_; }
  void set_source_dir(std::filesystem::path dir) { source_dir_ = std::move(dir); }
  // Where files an environment names (a conda file, a Dockerfile) are relative to: the source
  // directory, unless set (a .runconfig's project folder, whatever --source-dir says, as the SDK
  // resolves them next to .azureml/).
  const std::optional<std::filesystem::path>& files_dir() const {
    return files_dir_ ? files_dir_ : source_dir_;
  }
  void set_files_dir(std::filesystem::path dir) { files_dir_ = std::move(dir); }

  // Where a .runconfig's unused keys are kept, by their path in the file.
  void keep_unused_in(nlohmann::json* unused) { unused_ = unused; }
  void keep(const Field& field) const;

  // A key in this shape's spelling: "shm_size" stays as it is natively, becomes "shmSize" in a
  // .runconfig.
  std::string key(std::string_view snake) const;

  // Walks a section: unknown keys are errors in the native shape; in a .runconfig they are kept,
  // with a warning unless they are among `known_unused` (keys the SDK writes that amlnode does not
  // use).
  void walk(const MappingWalker& walker, const Field& section,
            std::span<const std::string_view> known_unused = {}) const;

 private:
  SourceShape shape_;
  Reader& reader_;
  std::optional<std::filesystem::path> source_dir_;
  std::optional<std::filesystem::path> files_dir_;
  nlohmann::json* unused_ = nullptr;
};

// An environment as read, with the settings the user gave explicitly, for the precedence rules
// each shape applies afterwards. Paths are empty when the setting was not given.
struct EnvironmentFields {
  Environment environment;
  std::optional<bool> docker_enabled;
  std::optional<bool> gpu_support;
  std::string shm_size_path;
  std::string arguments_path;
  std::string shared_volumes_path;
  std::string image_path;         // base_image or base_dockerfile
  std::string user_managed_path;  // user_managed_dependencies, when true
  std::string conda_path;         // inline conda_dependencies or conda_dependencies_file
};

EnvironmentFields read_environment(const Field& field, const ShapeContext& context);

// The top-level hdi ({yarn_deploy_mode}) and spark ({configuration}) sections, in either shape.
void read_hdi(const Field& field, const ShapeContext& context, Job::SparkRun& out);
void read_spark_run(const Field& field, const ShapeContext& context, Job::SparkRun& out);

// Registry credentials; nullopt when every part is unset. The password is never described in a
// message, whatever is wrong with it.
std::optional<RegistryDetails> read_registry(const Field& field, const ShapeContext& context);

// Where an input goes on the node from a path_on_compute as written: "" (the default place), a
// relative path inside the run's inputs folder, or an absolute path below /tmp; nullopt for
// anything else.
std::optional<std::string> path_on_compute(std::string_view text);

// A mapping of variable names to scalar values. A null value leaves the variable unset; `""`
// sets it to the empty string.
std::optional<EnvVars> read_variables(const Field& field, Reader& reader);

struct Size {
  std::string text;
  std::uint64_t bytes = 0;
};
std::optional<Size> read_size(const Field& field, Reader& reader);

// Adds pip entries to a python section: options such as `--index-url URL` go to pip_options,
// everything else is a package.
void add_pip_entries(PythonSection& python, const std::vector<std::string>& entries);

// One input or data reference named `name`; relative paths are relative to `anchor`.
std::optional<Input> read_input(const std::string& name, const Field& field,
                                const ShapeContext& context, const std::filesystem::path& anchor);

}  // namespace amlnode::spec::detail
