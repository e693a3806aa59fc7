#include "executors/batch_task.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "common/fs.h"
#include "common/json.h"

namespace amlnode::executors {

namespace fs = std::filesystem;

namespace {

constexpr const char* kLocal = "local";

std::string or_local(const std::string& value) {
  return value.empty() ? kLocal : value;
}

}  // namespace

std::optional<Error> batch_task_refusal(const spec::Job& job, const PlanContext& context) {
  auto refuse = [](const std::string& what) { return Error{"NotSupported", what}; };
  bool pool_node = context.compute_kind == "batch";
  if (!job.batch_task) {
    if (pool_node)
      return refuse("compute_target: compute " + context.compute_name +
                    " is an Azure Batch pool, which runs AzureBatchStep tasks "
                    "(azure_batch_step) only");
    return std::nullopt;
  }
  const spec::BatchTask& task = *job.batch_task;
  if (context.leased && !pool_node)
    return refuse(
        "azure_batch_step: a Batch task runs on a compute attached as an Azure Batch "
        "pool (amlnode compute attach-batch), and compute " +
        context.compute_name + " is not one");
  if (pool_node && !task.pool_id.empty() && task.pool_id != context.batch_pool_id)
    return refuse("azure_batch_step.pool_id: the task asks for pool " + task.pool_id +
                  ", and compute " + context.compute_name + " is pool " + context.batch_pool_id);
  bool local = !context.leased;
  if (!context.agent_is_root && (task.run_task_as_admin || !local))
    return refuse(std::string("azure_batch_step") +
                  (task.run_task_as_admin ? ".run_task_as_admin: an admin task runs as root, "
                                          : ": a task runs as the unprivileged user " +
                                                std::string(kBatchTaskUser) + ", ") +
                  "which this agent cannot switch to: it does not run as root (docs/batch.md, "
                  "\"The agent on a pool node\")");
  if (context.batch_root_dir.empty())
    return refuse("azure_batch_step: this node has no Batch folder (batch.root_dir)");
  // Staging by copy is done by the agent: it would hand the task what only root may read, and an
  // upload folder the task could not write. A link to the data leaves the task its own rights.
  for (const auto& input : job.inputs) {
    if (input.mode == spec::InputMode::Mount) continue;
    return refuse("inputs." + input.name + ".mode: a Batch task reads its inputs with its own " +
                  "rights, through a link to them (mount, the default); " +
                  spec::to_string(input.mode) +
                  " is refused (write results to the step's outputs)");
  }
  return std::nullopt;
}

void place_batch_task(const spec::Job& job, const PlanContext& context, Plan& plan) {
  const spec::BatchTask& task = *job.batch_task;
  BatchTaskPlan batch;
  batch.job_id = context.run_id;
  batch.task_id = task.name;
  batch.pool_id = !task.pool_id.empty() ? task.pool_id : or_local(context.batch_pool_id);
  batch.root_dir = context.batch_root_dir;
  batch.job_dir = batch_job_dir(batch.root_dir, batch.job_id);
  batch.task_dir = batch_task_dir(batch.root_dir, batch.job_id, batch.task_id);
  batch.stderr_log = batch.task_dir / "stderr.txt";
  batch.positive_exit_code_failure = task.is_positive_exit_code_failure;
  batch.delete_job_after_finish = task.delete_batch_job_after_finish;
  if (!task.run_task_as_admin && context.agent_is_root) {
    batch.user = kBatchTaskUser;
  } else if (!task.run_task_as_admin) {
    plan.notes.push_back(std::string("the task runs as you: amlnode run is not root, so it "
                                     "cannot switch to ") +
                         kBatchTaskUser);
  }
  plan.working_dir = batch.task_dir / "wd";
  plan.std_log = batch.task_dir / "stdout.txt";
  // A relative path runs from the task's working directory, as Batch's resource files do, and so
  // does a plain name that is a file of the source folder (not a link); any other name is looked
  // up on PATH, an absolute path is taken as it is.
  std::string program = task.executable;
  std::error_code ec;
  bool relative_path = !fs::path(program).is_absolute() && program.find('/') != std::string::npos;
  bool in_folder = relative_path ||
                   (!fs::path(program).is_absolute() &&
                    fs::is_regular_file(fs::symlink_status(job.source_directory / program, ec)));
  if (in_folder) {
    batch.executable_file = plan.working_dir / fs::path(program).lexically_normal();
    program = batch.executable_file.string();
  }
  for (const auto& output : task.outputs)
    batch.output_dirs.push_back(plan.working_dir / "outputs" / output);
  plan.argv = {program};
  plan.argv.insert(plan.argv.end(), task.arguments.begin(), task.arguments.end());
  plan.batch = std::move(batch);
}

void add_batch_task_vars(const spec::Job& job, const PlanContext& context, Plan& plan) {
  const BatchTaskPlan& batch = *plan.batch;
  // A task is not a training run's process: none of the distributed run's node variables.
  std::erase_if(plan.env, [](const auto& var) {
    return var.first == "AZ_BATCH_MASTER_NODE" || var.first == "AZ_BATCH_IS_CURRENT_NODE_MASTER" ||
           var.first.starts_with("AZ_BATCHAI_");
  });
  auto set = [&plan](const std::string& name, const std::string& value) {
    set_env_var(plan.env, name, value);
  };
  set("AZ_BATCH_ACCOUNT_NAME", or_local(context.batch_account_name));
  set("AZ_BATCH_ACCOUNT_URL", or_local(context.batch_account_url));
  set("AZ_BATCH_POOL_ID", batch.pool_id);
  set("AZ_BATCH_NODE_ID", or_local(context.node_id));
  set("AZ_BATCH_NODE_IS_DEDICATED", "true");
  set("AZ_BATCH_NODE_ROOT_DIR", batch.root_dir.string());
  set("AZ_BATCH_NODE_SHARED_DIR", (batch.root_dir / "shared").string());
  set("AZ_BATCH_NODE_STARTUP_DIR", (batch.root_dir / "startup").string());
  set("AZ_BATCH_NODE_MOUNTS_DIR", (batch.root_dir / "fsmounts").string());
  set("AZ_BATCH_JOB_ID", batch.job_id);
  set("AZ_BATCH_TASK_ID", batch.task_id);
  set("AZ_BATCH_TASK_DIR", batch.task_dir.string());
  set("AZ_BATCH_TASK_WORKING_DIR", plan.working_dir.string());
  // amlnode reserves no disk for a task.
  set("AZ_BATCH_TASK_RESERVED_EPHEMERAL_DISK_SPACE_BYTES", "0");
  // The task user has no home of its own; what tools keep under ~ stays in the task's folder.
  if (!batch.user.empty()) {
    set("HOME", plan.working_dir.string());
    set("USER", batch.user);
    set("LOGNAME", batch.user);
  }
  for (std::size_t i = 0; i < job.batch_task->outputs.size(); ++i)
    set("AZUREML_DATAREFERENCE_" + job.batch_task->outputs[i], batch.output_dirs[i].string());
}

fs::path batch_job_dir(const fs::path& root, const std::string& run_id) {
  return root / "workitems" / run_id;
}

fs::path batch_task_dir(const fs::path& root, const std::string& run_id,
                        const std::string& task_id) {
  return batch_job_dir(root, run_id) / "job-1" / task_id;
}

Result<void> write_batch_task_record(const Plan& plan) {
  const BatchTaskPlan& batch = *plan.batch;
  nlohmann::json record = {{"task_id", batch.task_id},
                           {"delete_job_after_finish", batch.delete_job_after_finish}};
  return write_file_atomically(plan.run_dir / kBatchTaskRecord, record.dump() + "\n", false);
}

std::optional<BatchTaskRecord> read_batch_task_record(const fs::path& run_dir) {
  auto file = open_beneath(run_dir, kBatchTaskRecord, O_RDONLY | O_NONBLOCK);
  if (!file.ok()) return std::nullopt;
  char text[4096];
  ssize_t n = ::read(file->get(), text, sizeof text);
  if (n <= 0) return std::nullopt;
  auto json = parse_untrusted_json(std::string_view(text, static_cast<std::size_t>(n)));
  if (!json.is_object() || !json["task_id"].is_string() ||
      !json["delete_job_after_finish"].is_boolean())
    return std::nullopt;
  BatchTaskRecord record{json["task_id"].get<std::string>(),
                         json["delete_job_after_finish"].get<bool>()};
  if (!spec::is_batch_task_id(record.task_id)) return std::nullopt;
  return record;
}

}  // namespace amlnode::executors
