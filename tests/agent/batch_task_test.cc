// AzureBatchStep tasks under `amlnode run` (docs/batch.md), with the real binary, the real shim,
// real users and real processes: the task runs as the unprivileged _azbatch, in Azure Batch's
// folder layout, with Azure Batch's variables, its executable and arguments not under a shell,
// and its exit code judged as is_positive_exit_code_failure says. Switching users needs root, as
// the agent on a pool node has; the tests skip without it.

#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <sstream>

#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

using namespace amlnode;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

// The task: tries to write each path it is given after --try and says what happened, prints
// what it is and sees, and exits with $TASK_EXIT.
const char* kTaskScript = R"sh(#!/bin/sh
echo "user=$(id -un) uid=$(id -u)"
echo "cwd=$(pwd -P)"
echo "args:"
for a in "$@"; do echo "[$a]"; done
env | grep '^AZ_BATCH_' | sort
echo "this goes to stderr" >&2
trying=0
for a in "$@"; do
  if [ "$a" = "--try" ]; then trying=1; continue; fi
  [ $trying = 1 ] || continue
  if ( echo x > "$a" ) 2>/dev/null; then echo "WROTE $a"; else echo "DENIED $a"; fi
done
echo "done" > "$AZUREML_DATAREFERENCE_result/out.txt"
exit "${TASK_EXIT:-0}"
)sh";

struct BatchWorkspace {
  test::TempDir dir;
  BatchWorkspace(bool reachable = true) {
    // The task user must pass through every folder above its own (as /mnt/batch/tasks allows).
    if (reachable) ::chmod(dir.path().c_str(), 0755);
    dir.write("project/task/task.sh", kTaskScript);  // left without +x: Batch makes it runnable
    dir.write("project/data/input.txt", "words\n");
  }
  fs::path state() const { return dir / "state"; }
  fs::path root() const { return state() / "batch"; }

  fs::path job(const std::string& step_extra, const std::string& arguments = "[]") const {
    return dir.write("project/job.yml",
                     "inputs:\n  raw: {path: data}\n"
                     "environment_variables: {TASK_EXIT: '" +
                         exit_code +
                         "'}\n"
                         "azure_batch_step:\n  name: word-count\n  source_directory: task\n"
                         "  executable: task.sh\n  outputs: [result]\n  arguments: " +
                         arguments + "\n" + step_extra);
  }
  test::CommandResult run(const fs::path& job) const {
    return test::run_command(
        {test::amlnode_binary().string(), "run", "--state-dir", state().string(), job.string()}, {},
        60s);
  }
  std::string run_id(const test::CommandResult& result) const {
    auto at = result.err.find("amlnode: ");
    REQUIRE(at != std::string::npos);
    auto end = result.err.find(':', at + 9);
    return result.err.substr(at + 9, end - at - 9);
  }
  nlohmann::json run_json(const std::string& id) const {
    return nlohmann::json::parse(test::slurp(state() / "runs" / id / "run.json"));
  }
  fs::path task_dir(const std::string& id) const {
    return root() / "workitems" / id / "job-1" / "word-count";
  }
  std::string exit_code = "0";

  // A run that must complete: its id, its task's folder and what the task printed.
  struct TaskRun {
    std::string id;
    fs::path task;
    std::string out;
  };
  TaskRun completed(const fs::path& job) const {
    auto result = run(job);
    INFO(result.out << result.err);
    REQUIRE(result.exit_code == 0);
    TaskRun task{run_id(result), {}, {}};
    task.task = task_dir(task.id);
    task.out = test::slurp(task.task / "stdout.txt");
    return task;
  }
};

// Switching to the task user needs root, as the agent on a pool node has.
bool skipped_without_root() {
  if (::geteuid() == 0) return false;
  WARN("skipped: switching to the task user needs root");
  return true;
}

}  // namespace

TEST_CASE("a Batch task runs as _azbatch and cannot write outside its task folder",
          "[batch][agent]") {
  if (skipped_without_root()) return;
  BatchWorkspace ws;
  // Another job's task folder on the same node, as an earlier run left it.
  fs::path other = ws.root() / "workitems" / "other_1_abcd" / "job-1" / "t" / "wd";
  fs::create_directories(other);
  // Paths of the node's folders; the task's and its job's own, which only the run id names,
  // relative to the task's working directory (wd/.. is the task's folder, wd/../../.. the job's).
  std::string paths =
      "[--try, wd-file.txt, $AZUREML_DATAREFERENCE_result/x.txt, @SHARED@/shared.txt, "
      "../escape.txt, ../../../escape.txt, @ROOT@/escape.txt, @OTHER@/escape.txt, "
      "@STATE@/escape.txt, @RUNS@/escape.txt, /etc/amlnode-escape.txt, "
      "/root/amlnode-escape.txt]";
  auto replace = [&](const std::string& key, const fs::path& value) {
    auto at = paths.find(key);
    REQUIRE(at != std::string::npos);
    paths.replace(at, key.size(), value.string());
  };
  replace("@SHARED@", ws.root() / "shared");
  replace("@ROOT@", ws.root());
  replace("@OTHER@", other);
  replace("@STATE@", ws.state());
  replace("@RUNS@", ws.state() / "runs");
  auto [id, task, out] = ws.completed(ws.job("", paths));
  INFO(out);
  CHECK_THAT(out, Catch::Contains("user=_azbatch"));
  CHECK_THAT(out, Catch::Contains("cwd=" + (task / "wd").string()));
  // Its own working folder, its outputs and the node's shared folder are the task's to write.
  CHECK_THAT(out, Catch::Contains("WROTE wd-file.txt"));
  CHECK_THAT(out,
             Catch::Contains("WROTE " + (task / "wd" / "outputs" / "result" / "x.txt").string()));
  CHECK_THAT(out, Catch::Contains("WROTE " + (ws.root() / "shared" / "shared.txt").string()));
  // Nothing else: the task folder's own files, the job's, the node's Batch root, another job's
  // task, the agent's state, the run folders, /etc, root's home.
  for (const std::string denied :
       {std::string("../escape.txt"), std::string("../../../escape.txt"),
        (ws.root() / "escape.txt").string(), (other / "escape.txt").string(),
        (ws.state() / "escape.txt").string(), (ws.state() / "runs" / "escape.txt").string(),
        std::string("/etc/amlnode-escape.txt"), std::string("/root/amlnode-escape.txt")}) {
    CHECK_THAT(out, Catch::Contains("DENIED " + denied));
  }
  std::error_code ec;
  CHECK_FALSE(fs::exists("/etc/amlnode-escape.txt", ec));
  CHECK_FALSE(fs::exists(task / "escape.txt", ec));
  CHECK(test::slurp(task / "wd" / "outputs" / "result" / "out.txt") == "done\n");
  // stdout.txt and stderr.txt apart, in the task's folder, the agent's and not the task's.
  CHECK(test::slurp(task / "stderr.txt") == "this goes to stderr\n");
  struct stat st {};
  REQUIRE(::stat((task / "stdout.txt").c_str(), &st) == 0);
  CHECK(st.st_uid == 0);
}

TEST_CASE("a Batch task sees AZ_BATCH_* and gets its arguments as written, not under a shell",
          "[batch][agent]") {
  if (skipped_without_root()) return;
  BatchWorkspace ws;
  auto [id, task, out] = ws.completed(ws.job("",
                                             "[\"$HOME;echo injected\", '*', '$AZ_BATCH_TASK_ID', "
                                             "$AZUREML_DATAREFERENCE_raw, 'two words']"));
  INFO(out);
  CHECK_THAT(out, Catch::Contains("[$HOME;echo injected]\n[*]\n[$AZ_BATCH_TASK_ID]\n[" +
                                  (task / "inputs" / "raw").string() + "]\n[two words]\n"));
  CHECK_THAT(out, !Catch::Contains("\ninjected"));
  for (const std::string& line :
       std::vector<std::string>{"AZ_BATCH_ACCOUNT_NAME=local", "AZ_BATCH_POOL_ID=local",
                                "AZ_BATCH_NODE_ID=local", "AZ_BATCH_JOB_ID=" + id,
                                "AZ_BATCH_TASK_ID=word-count", "AZ_BATCH_TASK_DIR=" + task.string(),
                                "AZ_BATCH_TASK_WORKING_DIR=" + (task / "wd").string(),
                                "AZ_BATCH_NODE_ROOT_DIR=" + ws.root().string(),
                                "AZ_BATCH_NODE_SHARED_DIR=" + (ws.root() / "shared").string(),
                                "AZ_BATCH_NODE_IS_DEDICATED=true"}) {
    CHECK_THAT(out, Catch::Contains(line + "\n"));
  }
  // The input is linked into the task's folder, read with the task's own rights.
  CHECK(test::slurp(task / "inputs" / "raw" / "input.txt") == "words\n");
  CHECK(fs::is_symlink(task / "inputs" / "raw"));
}

TEST_CASE("a Batch task's exit code fails the run unless is_positive_exit_code_failure is false",
          "[batch][agent]") {
  if (skipped_without_root()) return;
  BatchWorkspace ws;
  ws.exit_code = "3";
  auto failed = ws.run(ws.job(""));
  INFO(failed.out << failed.err);
  CHECK(failed.exit_code == 3);
  auto record = ws.run_json(ws.run_id(failed));
  CHECK(record["status"] == "Failed");
  CHECK(record["exit_code"] == 3);

  auto completed = ws.run(ws.job("  is_positive_exit_code_failure: false\n"));
  INFO(completed.out << completed.err);
  CHECK(completed.exit_code == 0);
  record = ws.run_json(ws.run_id(completed));
  CHECK(record["status"] == "Completed");
  CHECK(record["exit_code"] == 3);
}

TEST_CASE("a Batch task runs as root only with run_task_as_admin", "[batch][agent]") {
  if (skipped_without_root()) return;
  BatchWorkspace ws;
  CHECK_THAT(ws.completed(ws.job("  run_task_as_admin: true\n")).out,
             Catch::Contains("user=root uid=0"));
}

TEST_CASE("a Batch root the task user cannot reach is refused, naming batch.root_dir",
          "[batch][agent]") {
  if (skipped_without_root()) return;
  BatchWorkspace ws(false);  // the test's folder stays 0700
  auto result = ws.run(ws.job(""));
  INFO(result.out << result.err);
  CHECK(result.exit_code == 125);
  CHECK_THAT(result.err, Catch::Contains("the task user cannot reach"));
  CHECK_THAT(result.err, Catch::Contains("batch.root_dir"));
}

TEST_CASE("a Batch task's inputs are links: a copy by the agent is refused, naming the input",
          "[batch][agent]") {
  BatchWorkspace ws;
  auto job = ws.dir.write("project/job.yml",
                          "inputs:\n  raw: {path: data, mode: download}\n"
                          "azure_batch_step:\n  name: word-count\n  source_directory: task\n"
                          "  executable: task.sh\n");
  auto result = ws.run(job);
  INFO(result.out << result.err);
  CHECK(result.exit_code == 125);
  CHECK_THAT(result.err, Catch::Contains("inputs.raw.mode: a Batch task reads its inputs with its "
                                         "own rights"));
}
