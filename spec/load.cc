#include "spec/load.h"

#include <algorithm>
#include <cctype>

#include "common/fs.h"
#include "spec/paths.h"
#include "spec/shapes.h"
#include "spec/tree.h"
#include "spec/values.h"

namespace amlnode::spec {
namespace {

namespace fs = std::filesystem;
using detail::Diagnostics;
using detail::Node;

// Job files are small; anything this large is a mistake, not a job.
constexpr std::size_t kMaxJobFileBytes = 4 << 20;

bool is_blank(const std::string& text) {
  return std::all_of(text.begin(), text.end(),
                     [](unsigned char c) { return std::isspace(c) != 0; });
}

bool has_extension(const fs::path& file, std::string_view extension) {
  return detail::equals_ignoring_case(file.extension().string(), extension);
}

std::string kind_of(const Node& root) {
  switch (root.kind) {
    case Node::Kind::Sequence:
      return "a list";
    case Node::Kind::Scalar:
      return "a single value";
    default:
      return "nothing";
  }
}

LoadResult finish(Diagnostics& diagnostics, std::optional<Job> job) {
  LoadResult result;
  result.errors = std::move(diagnostics.errors());
  result.warnings = std::move(diagnostics.warnings());
  if (result.errors.empty()) result.job = std::move(job);
  return result;
}

// The command line's script and arguments, and experiment, over the file's.
void apply_overrides(Job& job, const LoadOptions& options, Diagnostics& diagnostics) {
  if (options.experiment_override) {
    if (options.experiment_override->empty()) {
      diagnostics.error("--experiment", "expected an experiment name, got nothing");
    } else {
      job.experiment_name = *options.experiment_override;
    }
  }
  if (!options.script_override) return;
  const std::string& script = *options.script_override;
  if (auto why = detail::unrunnable_entry(script)) return diagnostics.error("SCRIPT", *why);
  if (job.source_directory.empty()) return;  // its problem is reported already
  auto resolved = detail::resolve_entry_script(script, job.source_directory);
  if (!resolved.ok()) return diagnostics.error("SCRIPT", resolved.error().message);
  job.entry_script = resolved.value();
  job.shell_command.reset();
  job.arguments = options.arguments_override;
}

LoadResult load_text(const std::string& text, const fs::path& file, const LoadOptions& options) {
  Diagnostics diagnostics;
  std::error_code ec;
  fs::path job_file = detail::clean_absolute(file, fs::current_path(ec));
  if (is_blank(text)) {
    diagnostics.error("", "the job file " + job_file.string() + " is empty");
    return finish(diagnostics, std::nullopt);
  }
  detail::ParsedFile parsed =
      has_extension(job_file, ".json") ? detail::parse_json(text) : detail::parse_yaml(text);
  diagnostics.add_errors(parsed.errors);
  if (!parsed.root) return finish(diagnostics, std::nullopt);
  const Node& root = *parsed.root;
  if (root.is_null()) {
    diagnostics.error("", "the job file " + job_file.string() + " is empty");
    return finish(diagnostics, std::nullopt);
  }
  if (!root.is_mapping()) {
    diagnostics.error("", "expected a mapping of job fields at the top level of " +
                              job_file.string() + ", got " + kind_of(root));
    return finish(diagnostics, std::nullopt);
  }
  detail::Reader reader(diagnostics);
  detail::LoadContext context{job_file, options};
  bool runconfig = has_extension(job_file, ".runconfig") || detail::looks_like_runconfig(root);
  Job job = runconfig ? detail::read_runconfig(root, context, reader)
                      : detail::read_native(root, context, reader);
  apply_overrides(job, options, diagnostics);
  return finish(diagnostics, std::move(job));
}

LoadResult internal_error(const std::string& what) {
  LoadResult result;
  result.errors.push_back({"", "internal error while loading the job file: " + what});
  return result;
}

}  // namespace

// Both entry points catch everything: parsing uses exceptions internally, and a malformed file
// must come back as diagnostics, never as an exception or a crash.
LoadResult load_job_text(const std::string& text, const fs::path& file,
                         const LoadOptions& options) {
  try {
    return load_text(text, file, options);
  } catch (const std::exception& error) {
    return internal_error(error.what());
  } catch (...) {
    return internal_error("unknown exception");
  }
}

EnvironmentDefinition load_environment_definition(const std::string& text, const fs::path& base_dir,
                                                  const std::string& where) {
  EnvironmentDefinition out;
  Diagnostics diagnostics;
  try {
    detail::ParsedFile parsed = detail::parse_yaml(text);
    diagnostics.add_errors(parsed.errors);
    if (parsed.root && !parsed.root->is_mapping()) diagnostics.error(where, "expected a mapping");
    if (parsed.root && parsed.root->is_mapping()) {
      detail::Reader reader(diagnostics);
      detail::ShapeContext context(SourceShape::Native, reader);
      context.set_source_dir(base_dir);
      detail::Field field{&*parsed.root, where};
      detail::EnvironmentFields fields = detail::read_environment(field, context);
      if (!fields.user_managed_path.empty() && !fields.conda_path.empty()) {
        diagnostics.error(fields.conda_path, "cannot be combined with " + fields.user_managed_path +
                                                 ": true; nothing installs packages into an "
                                                 "environment you manage yourself");
      }
      fields.environment.docker.enabled = fields.docker_enabled.value_or(false);
      out.gpu_support = fields.gpu_support.value_or(false);
      if (diagnostics.errors().empty()) out.environment = std::move(fields.environment);
    }
  } catch (const std::exception& error) {
    diagnostics.error(where, std::string("internal error: ") + error.what());
  }
  out.errors = std::move(diagnostics.errors());
  if (!out.errors.empty()) out.environment.reset();
  return out;
}

LoadResult load_job_file(const fs::path& file, const LoadOptions& options) {
  try {
    auto text = read_file(file, kMaxJobFileBytes);
    if (!text.ok()) {
      LoadResult result;
      result.errors.push_back({"", "cannot read the job file: " + text.error().message});
      return result;
    }
    return load_job_text(text.value(), file, options);
  } catch (const std::exception& error) {
    return internal_error(error.what());
  } catch (...) {
    return internal_error("unknown exception");
  }
}

}  // namespace amlnode::spec
