// AzureBatchStep in the native shape (azure_batch_step, docs/batch.md): its parameters, their
// defaults, and what is refused (pool creation, Windows programs, fields a Batch task has not).

#include <catch2/catch.hpp>

#include "tests/spec/spec_test_support.h"

using namespace amlnode::spec;
using namespace amlnode::spec::testing;

namespace {

const char* kTaskJob =
    "experiment_name: batch-demo\n"
    "inputs:\n"
    "  raw: {path: data}\n"
    "azure_batch_step:\n"
    "  name: count_words\n"
    "  source_directory: task\n"
    "  executable: run.sh\n"
    "  arguments: [--in, $AZUREML_DATAREFERENCE_raw, --out, $AZUREML_DATAREFERENCE_counts]\n"
    "  inputs: [raw]\n"
    "  outputs: [counts]\n"
    "  pool_id: pool-a\n";

struct TaskProject : Project {
  TaskProject() {
    write("task/run.sh", "#!/bin/sh\necho hi\n");
    write("data/a.txt", "a b c\n");
  }
};

}  // namespace

TEST_CASE("azure_batch_step: AzureBatchStep's parameters with the SDK's defaults",
          "[spec][batch]") {
  TaskProject project;
  auto job = require_job(project.load("job.yml", kTaskJob));
  REQUIRE(job.batch_task);
  const BatchTask& task = *job.batch_task;
  CHECK(task.name == "count_words");
  CHECK(task.executable == "run.sh");
  CHECK(task.arguments == std::vector<std::string>{"--in", "$AZUREML_DATAREFERENCE_raw", "--out",
                                                   "$AZUREML_DATAREFERENCE_counts"});
  CHECK(task.inputs == std::vector<std::string>{"raw"});
  CHECK(task.outputs == std::vector<std::string>{"counts"});
  CHECK(task.pool_id == "pool-a");
  CHECK_FALSE(task.run_task_as_admin);
  CHECK(task.is_positive_exit_code_failure);
  CHECK(task.delete_batch_job_after_finish);
  // source_directory inside the step is the job's source folder; no environment is built.
  CHECK(job.source_directory == project.root() / "task");
  CHECK(job.environment.python.user_managed_dependencies);
  CHECK_FALSE(job.entry_script);
  CHECK_FALSE(job.shell_command);
}

TEST_CASE("azure_batch_step: the defaults that only describe a pool to create are accepted",
          "[spec][batch]") {
  TaskProject project;
  auto job = require_job(project.load(
      "job.yml", std::string(kTaskJob) +
                     "  create_pool: false\n  delete_batch_pool_after_finish: false\n"
                     "  target_compute_nodes: 1\n  run_task_as_admin: true\n"
                     "  is_positive_exit_code_failure: false\n"
                     "  delete_batch_job_after_finish: false\n  allow_reuse: false\n"));
  CHECK(job.batch_task->run_task_as_admin);
  CHECK_FALSE(job.batch_task->is_positive_exit_code_failure);
  CHECK_FALSE(job.batch_task->delete_batch_job_after_finish);
}

TEST_CASE("azure_batch_step: creating or deleting a pool is refused, naming the field",
          "[spec][batch]") {
  TaskProject project;
  auto result = project.load("job.yml", std::string(kTaskJob) +
                                            "  create_pool: true\n"
                                            "  delete_batch_pool_after_finish: true\n"
                                            "  vm_size: standard_d1_v2\n"
                                            "  vm_image_urn: urn:Canonical:UbuntuServer:18.04-LTS\n"
                                            "  target_compute_nodes: 3\n");
  REQUIRE_FALSE(result.ok());
  INFO(listing(result.errors));
  CHECK(find(result.errors, "azure_batch_step.create_pool", "never creates or deletes"));
  CHECK(find(result.errors, "azure_batch_step.delete_batch_pool_after_finish", "attached pool"));
  CHECK(find(result.errors, "azure_batch_step.vm_size", "pool to create"));
  CHECK(find(result.errors, "azure_batch_step.vm_image_urn", "pool to create"));
  CHECK(find(result.errors, "azure_batch_step.target_compute_nodes", "only 1"));
}

TEST_CASE("azure_batch_step: a Windows executable is refused, naming the Windows pool it needs",
          "[spec][batch]") {
  TaskProject project;
  for (const char* program : {"azurebatch.cmd", "run.BAT", "tool.exe"}) {
    std::string job = kTaskJob;
    job.replace(job.find("executable: run.sh"), 18, std::string("executable: ") + program);
    auto result = project.load("job.yml", job);
    INFO(program << "\n" << listing(result.errors));
    REQUIRE_FALSE(result.ok());
    CHECK(find(result.errors, "azure_batch_step.executable", "Windows"));
    CHECK(find(result.errors, "azure_batch_step.executable", "WindowsServer"));
  }
}

TEST_CASE("azure_batch_step: what a task is not is refused, each naming its field",
          "[spec][batch]") {
  TaskProject project;
  SECTION("a training script's fields") {
    auto result = project.load("job.yml", std::string(kTaskJob) +
                                              "entry_script: train.py\nuse_docker: true\n"
                                              "arguments: [--x]\n");
    REQUIRE_FALSE(result.ok());
    INFO(listing(result.errors));
    for (const char* field : {"entry_script", "use_docker", "arguments"})
      CHECK(find(result.errors, field, "cannot be combined with azure_batch_step"));
  }
  SECTION("required parameters, unknown ones, a task id Batch refuses") {
    auto result = project.load("job.yml", "azure_batch_step:\n  name: 'has space'\n  retries: 3\n");
    REQUIRE_FALSE(result.ok());
    INFO(listing(result.errors));
    CHECK(find(result.errors, "azure_batch_step.name", "Batch task id"));
    CHECK(find(result.errors, "azure_batch_step.executable", "required"));
    CHECK(find(result.errors, "azure_batch_step.retries"));
  }
  SECTION("inputs and outputs that do not match the job's") {
    auto result = project.load("job.yml",
                               "inputs:\n  raw: {path: data}\n  extra: {path: data}\n"
                               "azure_batch_step:\n  name: t1\n  source_directory: task\n"
                               "  executable: run.sh\n  inputs: [raw, missing]\n"
                               "  outputs: [extra]\n");
    REQUIRE_FALSE(result.ok());
    INFO(listing(result.errors));
    CHECK(find(result.errors, "azure_batch_step.inputs", "\"missing\" is not among"));
    CHECK(find(result.errors, "inputs.extra", "not among azure_batch_step.inputs"));
    CHECK(find(result.errors, "azure_batch_step.outputs", "an input of the job too"));
    result = project.load("job.yml",
                          "azure_batch_step:\n  name: t1\n  source_directory: task\n"
                          "  executable: run.sh\n  outputs: [raw2, raw2]\n");
    REQUIRE_FALSE(result.ok());
    CHECK(find(result.errors, "azure_batch_step.outputs", "listed twice"));
  }
  SECTION("an executable path out of the task's folder; AZ_BATCH_ variables of its own") {
    auto result = project.load("job.yml",
                               "azure_batch_step:\n  name: t1\n  source_directory: task\n"
                               "  executable: ../data/a.txt\n");
    REQUIRE_FALSE(result.ok());
    CHECK(find(result.errors, "azure_batch_step.executable", "climbs out"));
    result = project.load("job.yml",
                          "azure_batch_step:\n  name: t1\n  source_directory: task\n"
                          "  executable: run.sh\nenvironment_variables: {AZ_BATCH_POOL_ID: x}\n");
    REQUIRE_FALSE(result.ok());
    CHECK(find(result.errors, "environment_variables.AZ_BATCH_POOL_ID", "Azure Batch's own"));
  }
  SECTION("source_directory twice") {
    auto result = project.load("job.yml", std::string(kTaskJob) + "source_directory: task\n");
    REQUIRE_FALSE(result.ok());
    CHECK(find(result.errors, "azure_batch_step.source_directory", "give it once"));
  }
}

TEST_CASE("azure_batch_step: a program on PATH or an absolute path is taken as it is",
          "[spec][batch]") {
  TaskProject project;
  for (const char* program : {"python3", "/bin/echo"}) {
    auto job = require_job(project.load(
        "job.yml", std::string("azure_batch_step:\n  name: t1\n  source_directory: task\n"
                               "  executable: ") +
                       program + "\n  arguments: [hello]\n"));
    CHECK(job.batch_task->executable == program);
    // Every input of the job is the task's when the step lists none.
    CHECK(job.batch_task->inputs.empty());
  }
}
