#pragma once

// Path rules: where a job's folders are, and which files a job may name. Messages returned here
// are complete sentences about the value; callers prefix the field path.

#include <filesystem>
#include <string>
#include <string_view>

#include "common/result.h"

namespace amlnode::spec::detail {

// `path` made absolute against `base` (when relative) and lexically normal, without a trailing
// separator. Symbolic links are not resolved: the user's spelling of the folder is kept.
std::filesystem::path clean_absolute(const std::filesystem::path& path,
                                     const std::filesystem::path& base);

// The project folder of a .runconfig: the parent of `.azureml/` or `aml_config/` when the file
// sits directly in one of them (where RunConfiguration.save() puts it), else the file's folder.
std::filesystem::path runconfig_project_dir(const std::filesystem::path& job_file);

// Succeeds when `dir` exists and is a directory.
Result<void> check_directory(const std::filesystem::path& dir);

// An entry script: a relative path that stays inside `source_dir` (lexically, and through
// symbolic links when the file exists) and names an existing file. Returns the path relative
// to `source_dir`, lexically normal.
Result<std::string> resolve_entry_script(std::string_view value,
                                         const std::filesystem::path& source_dir);

// A file the job names (a conda or pip file, a Dockerfile), relative to `base` unless absolute.
Result<std::filesystem::path> resolve_existing_file(std::string_view value,
                                                    const std::filesystem::path& base);

// A local data path (an input, resume_from): an existing file or directory.
Result<std::filesystem::path> resolve_existing_path(std::string_view value,
                                                    const std::filesystem::path& base);

// Whether `value` is a relative path that does not climb out of its base with `..`.
bool is_contained_relative(std::string_view value);

// A file read into memory, bounded (Dockerfiles are small).
Result<std::string> read_small_file(const std::filesystem::path& file);

}  // namespace amlnode::spec::detail
