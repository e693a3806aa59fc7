#include "spec/batch_step.h"

#include <algorithm>
#include <array>
#include <string_view>

#include "spec/paths.h"
#include "spec/values.h"

namespace amlnode::spec {

bool is_batch_task_id(std::string_view id) {
  return !id.empty() && id.size() <= 64 && std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
  });
}

}  // namespace amlnode::spec

namespace amlnode::spec::detail {

namespace fs = std::filesystem;

namespace {

constexpr std::string_view kStep = "azure_batch_step";

// The top-level fields a Batch task's job may have besides azure_batch_step itself.
constexpr auto kBatchJobFields = std::to_array<std::string_view>(
    {"azure_batch_step", "compute_target", "experiment_name", "inputs", "environment_variables",
     "max_run_duration_seconds", "source_directory"});

bool ends_with_ignoring_case(std::string_view text, std::string_view suffix) {
  if (text.size() < suffix.size()) return false;
  return std::equal(suffix.begin(), suffix.end(), text.end() - suffix.size(), [](char a, char b) {
    return std::tolower(static_cast<unsigned char>(a)) ==
           std::tolower(static_cast<unsigned char>(b));
  });
}

// Why `executable` cannot run on this node, or nullopt.
std::optional<std::string> unrunnable_executable(const std::string& executable) {
  for (std::string_view windows : {".cmd", ".bat", ".exe", ".ps1"}) {
    if (ends_with_ignoring_case(executable, windows))
      return quote(executable) +
             " is a Windows program; it needs a pool of Windows nodes (AzureBatchStep's default "
             "vm_image_urn, urn:MicrosoftWindowsServer:WindowsServer:2012-R2-Datacenter), and "
             "this node's pool runs Linux";
  }
  if (executable.empty()) return std::string("an executable is required");
  if (fs::path(executable).is_absolute()) return std::nullopt;
  if (executable.find('/') == std::string::npos) return std::nullopt;  // the folder, else PATH
  // A relative path with a folder is relative to the task's working directory, as in Batch: it
  // must stay in it. (Whether the file is there is the node's to find: a task may make it.)
  if (!is_contained_relative(executable))
    return quote(executable) + " climbs out of the task's working directory";
  return std::nullopt;
}

void read_names(const Field& field, Reader& reader, std::vector<std::string>& out) {
  auto names = reader.text_list(field);
  if (!names) return;
  std::set<std::string> seen;
  for (const auto& name : *names) {
    if (!is_input_name(name))
      return reader.wrong(field, "a list of names of letters, digits and _");
    if (!seen.insert(name).second)
      return reader.diagnostics().error(field.path, quote(name) + " is listed twice");
  }
  out = std::move(*names);
}

// A pool-creation parameter: accepted only with the value that asks for nothing.
void refuse_pool_creation(const Field& field, Reader& reader, bool asks) {
  if (!asks) return;
  reader.diagnostics().error(
      field.path,
      "creates or deletes a Batch pool, and amlnode runs tasks on an attached pool only "
      "(amlnode compute attach-batch); it never creates or deletes one. Remove it");
}

}  // namespace

std::optional<BatchTask> read_batch_step(const Field& field, Reader& reader) {
  if (!reader.mapping(field)) return std::nullopt;
  BatchTask task;
  std::size_t errors_before = reader.diagnostics().error_count();
  MappingWalker walker;
  walker.on("name", [&](const Field& f) {
    auto text = reader.text(f);
    if (text && !is_batch_task_id(*text))
      return reader.wrong(f, "a Batch task id: 1-64 letters, digits, hyphens and underscores");
    if (text) task.name = *text;
  });
  walker.on("source_directory", [](const Field&) {});  // settled with the job's source folder
  walker.on("executable", [&](const Field& f) {
    auto text = reader.text(f);
    if (!text) return;
    if (auto why = unrunnable_executable(*text)) return reader.diagnostics().error(f.path, *why);
    task.executable = *text;
  });
  walker.on("arguments", [&](const Field& f) {
    if (auto list = reader.text_list(f)) task.arguments = *list;
  });
  walker.on("inputs", [&](const Field& f) { read_names(f, reader, task.inputs); });
  walker.on("outputs", [&](const Field& f) { read_names(f, reader, task.outputs); });
  walker.on("pool_id", [&](const Field& f) {
    auto text = reader.text(f);
    if (text && (text->empty() || text->size() > 64))
      return reader.wrong(f, "a pool id of 1-64 characters");
    if (text) task.pool_id = *text;
  });
  walker.on("target_compute_nodes", [&](const Field& f) {
    auto nodes = reader.count(f);
    if (nodes && *nodes != 1)
      reader.diagnostics().error(f.path,
                                 "only 1: it is the size of a pool to create, and a task runs on "
                                 "one node of the attached pool");
  });
  walker.on("run_task_as_admin", [&](const Field& f) {
    if (auto v = reader.boolean(f)) task.run_task_as_admin = *v;
  });
  walker.on("is_positive_exit_code_failure", [&](const Field& f) {
    if (auto v = reader.boolean(f)) task.is_positive_exit_code_failure = *v;
  });
  walker.on("delete_batch_job_after_finish", [&](const Field& f) {
    if (auto v = reader.boolean(f)) task.delete_batch_job_after_finish = *v;
  });
  walker.on("allow_reuse", [&](const Field& f) {
    if (auto v = reader.boolean(f)) task.allow_reuse = *v;
  });
  walker.on("create_pool",
            [&](const Field& f) { refuse_pool_creation(f, reader, reader.boolean(f) == true); });
  walker.on("delete_batch_pool_after_finish",
            [&](const Field& f) { refuse_pool_creation(f, reader, reader.boolean(f) == true); });
  for (const char* pool_only : {"vm_size", "vm_image_urn"}) {
    walker.on(pool_only, [&reader](const Field& f) {
      reader.diagnostics().error(f.path,
                                 "describes a pool to create (create_pool), and amlnode runs "
                                 "tasks on an attached pool only; remove it");
    });
  }
  walker.walk_strict(field, reader.diagnostics());
  for (const char* required : {"name", "executable"}) {
    if (!field[required].is_set())
      reader.diagnostics().error(field.path + "." + required,
                                 "required (AzureBatchStep has no default for it)");
  }
  for (const auto& output : task.outputs) {
    if (std::find(task.inputs.begin(), task.inputs.end(), output) != task.inputs.end())
      reader.diagnostics().error(field.path + ".outputs",
                                 quote(output) + " is an input too; give it another name");
  }
  if (reader.diagnostics().error_count() != errors_before) return std::nullopt;
  return task;
}

void check_batch_job(const std::set<std::string, std::less<>>& given, Job& job,
                     Diagnostics& diagnostics) {
  for (const auto& key : given) {
    if (std::find(kBatchJobFields.begin(), kBatchJobFields.end(), key) != kBatchJobFields.end())
      continue;
    diagnostics.error(key,
                      "cannot be combined with azure_batch_step: a Batch task runs its "
                      "executable on the pool's node as it is, with its own arguments and no "
                      "Azure ML environment");
  }
  if (!job.batch_task) return;
  BatchTask& task = *job.batch_task;
  auto is_job_input = [&](const std::string& name) {
    return std::any_of(job.inputs.begin(), job.inputs.end(),
                       [&](const Input& input) { return input.name == name; });
  };
  // Without a list, the task is given every input of the job.
  if (task.inputs.empty())
    for (const auto& input : job.inputs) task.inputs.push_back(input.name);
  for (const auto& name : task.inputs) {
    if (!is_job_input(name))
      diagnostics.error(std::string(kStep) + ".inputs",
                        quote(name) + " is not among the job's inputs");
  }
  if (given.contains("inputs")) {
    for (const auto& input : job.inputs) {
      if (std::find(task.inputs.begin(), task.inputs.end(), input.name) == task.inputs.end())
        diagnostics.error("inputs." + input.name,
                          "not among azure_batch_step.inputs; a Batch task is given the inputs "
                          "its step names");
    }
  }
  for (const auto& name : task.outputs) {
    if (is_job_input(name))
      diagnostics.error(std::string(kStep) + ".outputs",
                        quote(name) + " is an input of the job too; give it another name");
  }
  for (const auto& [name, value] : job.environment_variables) {
    if (name.starts_with("AZ_BATCH_"))
      diagnostics.error("environment_variables." + name,
                        "the AZ_BATCH_ names are Azure Batch's own, set for every task");
  }
  // The executable runs as the pool's node has it: no environment is built for it.
  job.environment.python.user_managed_dependencies = true;
  job.arguments = task.arguments;
}

}  // namespace amlnode::spec::detail
