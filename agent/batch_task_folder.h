#pragma once

// The node's side of an AzureBatchStep's task (executors/batch_task.h, docs/batch.md): making
// its folders as Azure Batch lays them out, the unprivileged user it runs as, and removing the
// job's folder after the run when the step asks for it.

#include <sys/types.h>

#include <filesystem>
#include <optional>
#include <string>

#include "common/result.h"
#include "executors/plan.h"

namespace amlnode::agent {

class SystemLog;

struct TaskIdentity {
  uid_t uid = 0;
  gid_t gid = 0;
};

// The task user's ids, creating the user when it is missing (a system user with its own group,
// no home and no login shell). Only root can do either.
Result<TaskIdentity> ensure_task_user(const std::string& name);
// The task user's ids when it exists with ids other than root's; it is never created here.
std::optional<TaskIdentity> find_task_user(const std::string& name);

// Once the snapshot is in the run folder's wd/ (the daemon) or in the task's wd/ (amlnode run):
// the node's Batch folders, the task's folder with its wd/ (moved there, the run folder's wd/
// becoming a link to it, which the agent follows where it reads the job and packs outputs),
// stdout.txt and stderr.txt, the outputs' folders, the executable made runnable, and the working
// directory handed to the task user. Safe to repeat (an agent restarted mid-way). Returns the
// identity the task runs as, nullopt for the agent's own.
Result<std::optional<TaskIdentity>> make_batch_task_folder(const executors::Plan& plan,
                                                           const SystemLog& log);

// After the run, with its logs delivered: the job's folder under the node's Batch root, when the
// step's delete_batch_job_after_finish says so (the run folder records it).
void remove_batch_job_folder(const std::filesystem::path& run_dir,
                             const std::filesystem::path& batch_root);

}  // namespace amlnode::agent
