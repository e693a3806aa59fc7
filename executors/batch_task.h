#pragma once

// An AzureBatchStep's task (docs/batch.md): the plan runs its executable as Azure Batch runs a
// task on a Linux pool node. Azure Batch's folders are kept under the node's Batch root
// (AZ_BATCH_NODE_ROOT_DIR): shared/, startup/, fsmounts/ and workitems/<job>/job-1/<task>/ with
// the task's stdout.txt, stderr.txt and wd/. The job is the run (its id is the run id), the task
// is the step (its id is the step's name). The run folder's wd/ is a link to the task's wd/, so
// everything of the agent that reads a run's wd/ (its logs/, its outputs/) reads the task's.

#include <optional>
#include <string>

#include "common/result.h"
#include "executors/plan.h"
#include "spec/job.h"

namespace amlnode::executors {

// The unprivileged user a task runs as unless run_task_as_admin: Azure Batch's own name for a
// pool's non-admin auto-user. The agent creates it when it is missing (a system user with no
// login shell and no home).
inline constexpr const char* kBatchTaskUser = "_azbatch";

// Why this node cannot run the job's task here (wrong compute, wrong pool, an agent that cannot
// switch users), or why a job that is not a Batch task cannot run on a Batch pool; nullopt when
// nothing stands in the way.
std::optional<Error> batch_task_refusal(const spec::Job& job, const PlanContext& context);

// Lays the task over the plan: its folders, its working directory and logs, its program and
// arguments (not yet substituted), who it runs as and the rules of its end.
void place_batch_task(const spec::Job& job, const PlanContext& context, Plan& plan);

// The AZ_BATCH_* variables of the task, over the plan's, and the Azure ML runtime's variables of
// a training run that a Batch task does not see taken away. The outputs' data references too.
void add_batch_task_vars(const spec::Job& job, const PlanContext& context, Plan& plan);

// What the agent records in the run folder (batch_task.json) once a task's folder is made: the
// task's id and whether the job's folder goes after the run (delete_batch_job_after_finish). The
// folders themselves are never read from it: they follow from the node's Batch root and the run
// id, so nothing a run writes in its folder can point the agent elsewhere.
struct BatchTaskRecord {
  std::string task_id;
  bool delete_job_after_finish = true;
};
inline constexpr const char* kBatchTaskRecord = "batch_task.json";
Result<void> write_batch_task_record(const Plan& plan);
// nullopt for a run that is not a Batch task (or a record that is not one).
std::optional<BatchTaskRecord> read_batch_task_record(const std::filesystem::path& run_dir);
// The folders of a run's task on a node whose Batch root is `root`.
std::filesystem::path batch_job_dir(const std::filesystem::path& root, const std::string& run_id);
std::filesystem::path batch_task_dir(const std::filesystem::path& root, const std::string& run_id,
                                     const std::string& task_id);

}  // namespace amlnode::executors
