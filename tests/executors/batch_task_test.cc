// The plan of an AzureBatchStep's task (executors/batch_task.h): Azure Batch's folders and
// variables, the executable with its arguments and no shell, who it runs as, and where it is
// refused.

#include "executors/batch_task.h"

#include <catch2/catch.hpp>

#include "tests/support/temp_dir.h"

using namespace amlnode;
using executors::PlanContext;
using executors::resolve_plan;

namespace {

struct TaskJob {
  test::TempDir source;
  spec::Job job;

  TaskJob() {
    source.write("run.sh", "#!/bin/sh\n");
    job.source_directory = source.path();
    job.experiment_name = "batch";
    job.environment.python.user_managed_dependencies = true;
    spec::BatchTask task;
    task.name = "count_words";
    task.executable = "run.sh";
    task.arguments = {"$AZUREML_DATAREFERENCE_raw", "$AZUREML_DATAREFERENCE_counts",
                      "$AZ_BATCH_TASK_ID", "$HOME;rm -rf /", "DatasetConsumptionConfig:raw"};
    task.inputs = {"raw"};
    task.outputs = {"counts"};
    job.inputs.push_back(spec::Input{"raw", "/data/raw"});
    job.arguments = task.arguments;
    job.batch_task = task;
  }
};

// A node of the Batch pool "pool-a", as the daemon plans a leased run there.
PlanContext pool_node() {
  PlanContext c;
  c.run_id = "batch_1_abcd";
  c.run_dir = "/state/runs/batch_1_abcd";
  c.leased = true;
  c.compute_name = "pool-a-compute";
  c.compute_kind = "batch";
  c.batch_pool_id = "pool-a";
  c.batch_account_name = "acct";
  c.batch_account_url = "https://cp.example:8080";
  c.node_id = "node-7";
  c.batch_root_dir = "/mnt/batch/tasks";
  c.agent_is_root = true;
  return c;
}

std::string env_of(const executors::Plan& plan, const std::string& name) {
  for (const auto& [n, v] : plan.env)
    if (n == name) return v;
  return "<unset>";
}

}  // namespace

TEST_CASE("a Batch task: the executable from its working directory, arguments without a shell",
          "[plan][batch]") {
  TaskJob task;
  auto plan = resolve_plan(task.job, pool_node());
  INFO((plan.cannot_run ? plan.cannot_run->message : ""));
  REQUIRE_FALSE(plan.cannot_run);
  const std::string dir = "/mnt/batch/tasks/workitems/batch_1_abcd/job-1/count_words";
  CHECK(plan.working_dir == dir + "/wd");
  CHECK(plan.std_log == dir + "/stdout.txt");
  REQUIRE(plan.batch);
  CHECK(plan.batch->stderr_log == dir + "/stderr.txt");
  CHECK(plan.batch->user == executors::kBatchTaskUser);
  CHECK(plan.batch->executable_file == dir + "/wd/run.sh");
  // The data references are the staged paths; every other `$` word reaches the task as written.
  CHECK(plan.argv == std::vector<std::string>{dir + "/wd/run.sh", dir + "/inputs/raw",
                                              dir + "/wd/outputs/counts", "$AZ_BATCH_TASK_ID",
                                              "$HOME;rm -rf /", dir + "/inputs/raw"});
  CHECK(plan.ranks.empty());
  CHECK_FALSE(plan.python_environment);
}

TEST_CASE("a Batch task sees Azure Batch's variables, not a training run's", "[plan][batch]") {
  TaskJob task;
  auto plan = resolve_plan(task.job, pool_node());
  const std::string dir = "/mnt/batch/tasks/workitems/batch_1_abcd/job-1/count_words";
  CHECK(env_of(plan, "AZ_BATCH_ACCOUNT_NAME") == "acct");
  CHECK(env_of(plan, "AZ_BATCH_ACCOUNT_URL") == "https://cp.example:8080");
  CHECK(env_of(plan, "AZ_BATCH_POOL_ID") == "pool-a");
  CHECK(env_of(plan, "AZ_BATCH_NODE_ID") == "node-7");
  CHECK(env_of(plan, "AZ_BATCH_NODE_IS_DEDICATED") == "true");
  CHECK(env_of(plan, "AZ_BATCH_NODE_ROOT_DIR") == "/mnt/batch/tasks");
  CHECK(env_of(plan, "AZ_BATCH_NODE_SHARED_DIR") == "/mnt/batch/tasks/shared");
  CHECK(env_of(plan, "AZ_BATCH_NODE_STARTUP_DIR") == "/mnt/batch/tasks/startup");
  CHECK(env_of(plan, "AZ_BATCH_NODE_MOUNTS_DIR") == "/mnt/batch/tasks/fsmounts");
  CHECK(env_of(plan, "AZ_BATCH_JOB_ID") == "batch_1_abcd");
  CHECK(env_of(plan, "AZ_BATCH_TASK_ID") == "count_words");
  CHECK(env_of(plan, "AZ_BATCH_TASK_DIR") == dir);
  CHECK(env_of(plan, "AZ_BATCH_TASK_WORKING_DIR") == dir + "/wd");
  CHECK(env_of(plan, "AZ_BATCH_TASK_RESERVED_EPHEMERAL_DISK_SPACE_BYTES") == "0");
  CHECK(env_of(plan, "AZUREML_DATAREFERENCE_counts") == dir + "/wd/outputs/counts");
  CHECK(env_of(plan, "HOME") == dir + "/wd");
  CHECK(env_of(plan, "USER") == "_azbatch");
  CHECK(env_of(plan, "AZ_BATCH_MASTER_NODE") == "<unset>");
  CHECK(env_of(plan, "AZ_BATCH_IS_CURRENT_NODE_MASTER") == "<unset>");
  CHECK(env_of(plan, "AZ_BATCHAI_JOB_WORK_DIR") == "<unset>");
}

TEST_CASE("a Batch task: admin, exit-code rules and the job folder's fate are carried",
          "[plan][batch]") {
  TaskJob task;
  task.job.batch_task->run_task_as_admin = true;
  task.job.batch_task->is_positive_exit_code_failure = false;
  task.job.batch_task->delete_batch_job_after_finish = false;
  task.job.batch_task->executable = "/usr/bin/env";
  auto plan = resolve_plan(task.job, pool_node());
  REQUIRE(plan.batch);
  CHECK(plan.batch->user.empty());
  CHECK_FALSE(plan.batch->positive_exit_code_failure);
  CHECK_FALSE(plan.batch->delete_job_after_finish);
  CHECK(plan.batch->executable_file.empty());
  CHECK(plan.argv.front() == "/usr/bin/env");
  CHECK(env_of(plan, "HOME") == "<unset>");
}

TEST_CASE("a Batch task is refused where it cannot run as Batch runs it", "[plan][batch]") {
  TaskJob task;
  auto refusal = [&](const PlanContext& context) {
    auto plan = resolve_plan(task.job, context);
    REQUIRE(plan.cannot_run);
    CHECK(plan.cannot_run->code == "NotSupported");
    return plan.cannot_run->message;
  };
  SECTION("a compute that is not a Batch pool") {
    auto context = pool_node();
    context.compute_kind = "";
    CHECK_THAT(refusal(context), Catch::Contains("pool-a-compute is not one"));
  }
  SECTION("another pool than the task names") {
    task.job.batch_task->pool_id = "pool-b";
    CHECK_THAT(refusal(pool_node()),
               Catch::Contains("asks for pool pool-b, and compute pool-a-compute is pool pool-a"));
  }
  SECTION("an agent that is not root cannot switch to the task user") {
    auto context = pool_node();
    context.agent_is_root = false;
    CHECK_THAT(refusal(context), Catch::Contains("unprivileged user _azbatch"));
    task.job.batch_task->run_task_as_admin = true;
    CHECK_THAT(refusal(context), Catch::Contains("run_task_as_admin"));
  }
  SECTION("a job that is not a Batch task, on a Batch pool") {
    task.job.batch_task.reset();
    task.job.entry_script = "run.sh";
    task.job.arguments.clear();
    CHECK_THAT(refusal(pool_node()), Catch::Contains("runs AzureBatchStep tasks"));
  }
}

TEST_CASE("a Batch task under amlnode run: pool local, run as the caller when not root",
          "[plan][batch]") {
  TaskJob task;
  PlanContext c;
  c.run_id = "batch_2_abcd";
  c.run_dir = "/home/me/.amlnode/runs/batch_2_abcd";
  c.batch_root_dir = "/home/me/.amlnode/batch";
  c.agent_is_root = false;
  auto plan = resolve_plan(task.job, c);
  INFO((plan.cannot_run ? plan.cannot_run->message : ""));
  REQUIRE_FALSE(plan.cannot_run);
  CHECK(plan.batch->user.empty());
  CHECK(env_of(plan, "AZ_BATCH_POOL_ID") == "local");
  CHECK(env_of(plan, "AZ_BATCH_NODE_ID") == "local");
  REQUIRE(plan.notes.size() == 1);
  CHECK_THAT(plan.notes[0], Catch::Contains("runs as you"));
}
