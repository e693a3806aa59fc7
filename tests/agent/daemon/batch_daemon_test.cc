// AzureBatchStep tasks under the real daemon and control plane (docs/batch.md): a compute attached
// as an Azure Batch pool (`amlnode compute attach-batch`), a task submitted with `amlnode submit`,
// run by the agent as the unprivileged _azbatch with the pool's variables, its stdout.txt and
// stderr.txt shipped as the run's logs, its outputs uploaded and its job folder removed after
// (or kept, with delete_batch_job_after_finish: false). The pool and the task refuse each other's
// mismatches at submit, before anything runs.

#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "tests/agent/daemon/one_node_cluster.h"
#include "tests/support/process.h"

using namespace amlnode;
using namespace std::chrono_literals;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const char* kTask = R"sh(#!/bin/sh
echo "user=$(id -un)"
env | grep '^AZ_BATCH_' | sort
echo "a warning" >&2
mkdir -p "$AZ_BATCH_TASK_WORKING_DIR/logs" && echo "task log line" > "$AZ_BATCH_TASK_WORKING_DIR/logs/task.txt"
wc -w < "$1" > "$2/count.txt"
)sh";

// The node's Batch root, in a folder the task user may pass through (the test's own is 0700).
struct BatchRoot {
  test::TempDir dir;
  BatchRoot() { ::chmod(dir.path().c_str(), 0755); }
  fs::path root() const { return dir / "batch"; }
};

struct PoolNode {
  BatchRoot batch;
  test::OneNodeCluster cluster;

  PoolNode()
      : cluster({}, test::AgentConfigSections{}.with_extra(
                        "batch:\n  root_dir: " + (batch.root()).string() + "\n")) {
    cluster.dir().write("src/count.sh", kTask);
    // Read by the task with its own rights: in a folder others may read.
    batch.dir.write("data/words.txt", "one two three four\n");
  }

  test::CommandResult amlnode(std::vector<std::string> args) {
    args.insert(args.begin(), test::amlnode_binary().string());
    return test::run_command(args, cluster.user_env());
  }
  fs::path job(const std::string& step_extra) {
    return cluster.dir().write(
        "job.yml", "inputs:\n  words: {path: " + (batch.dir / "data").string() +
                       "}\n"
                       "azure_batch_step:\n  name: count-words\n  source_directory: src\n"
                       "  executable: count.sh\n"
                       "  arguments: [$AZUREML_DATAREFERENCE_words/words.txt, "
                       "$AZUREML_DATAREFERENCE_counts]\n"
                       "  outputs: [counts]\n" +
                       step_extra);
  }
  test::CommandResult submit(const fs::path& job) {
    return amlnode({"submit", "--compute", "cpu-cluster", job.string()});
  }
  std::string submitted(const fs::path& job) {
    auto result = submit(job);
    INFO(result.out << result.err);
    REQUIRE(result.exit_code == 0);
    std::string id = result.out;
    while (!id.empty() && id.back() == '\n') id.pop_back();
    return id;
  }
  fs::path job_dir(const std::string& id) const { return batch.root() / "workitems" / id; }
};

bool skipped_without_root() {
  if (::geteuid() == 0) return false;
  WARN("skipped: the agent switches to the task user, which needs root");
  return true;
}

}  // namespace

TEST_CASE("a Batch task on an attached pool: run as _azbatch, logs and outputs back",
          "[daemon][batch]") {
  if (skipped_without_root()) return;
  PoolNode node;
  auto attached = node.amlnode({"compute", "attach-batch", "cpu-cluster", "--pool-id", "pool-a",
                                "--account-name", "acct", "--json"});
  INFO(attached.out << attached.err);
  REQUIRE(attached.exit_code == 0);
  auto record = json::parse(attached.out);
  CHECK(record["kind"] == "batch");
  CHECK(record["settings"] == json{{"pool_id", "pool-a"}, {"account_name", "acct"}});

  std::string id = node.submitted(node.job("  pool_id: pool-a\n"));
  auto run = node.cluster.wait_terminal(id);
  INFO(run.dump() << node.cluster.agent_output());
  REQUIRE(run["status"] == "Completed");
  auto stdout_log = node.cluster.server().log(id, "user_logs/stdout.txt");
  INFO(stdout_log);
  CHECK_THAT(stdout_log, Catch::Contains("user=_azbatch\n"));
  CHECK_THAT(stdout_log, Catch::Contains("AZ_BATCH_POOL_ID=pool-a\n"));
  CHECK_THAT(stdout_log, Catch::Contains("AZ_BATCH_ACCOUNT_NAME=acct\n"));
  CHECK_THAT(stdout_log, Catch::Contains("AZ_BATCH_ACCOUNT_URL=" + node.cluster.server().url()));
  CHECK_THAT(stdout_log, Catch::Contains("AZ_BATCH_JOB_ID=" + id + "\n"));
  CHECK_THAT(stdout_log, Catch::Contains("AZ_BATCH_NODE_ID=" + run["node_id"].get<std::string>()));
  CHECK_THAT(stdout_log,
             Catch::Contains("AZ_BATCH_TASK_DIR=" +
                             (node.job_dir(id) / "job-1" / "count-words").string() + "\n"));
  CHECK(node.cluster.server().log(id, "user_logs/stderr.txt") == "a warning\n");
  CHECK(node.cluster.server().log(id, "logs/task.txt") == "task log line\n");
  // The output folder came back as the run's outputs.
  auto outputs = node.cluster.server().outputs(id);
  CHECK_FALSE(outputs.empty());
  // delete_batch_job_after_finish (the default): the job's folder goes once the run is delivered.
  CHECK(test::eventually([&] { return !fs::exists(node.job_dir(id)); }, 20s));

  // Kept when the step says so.
  std::string kept = node.submitted(node.job("  delete_batch_job_after_finish: false\n"));
  REQUIRE(node.cluster.wait_terminal(kept)["status"] == "Completed");
  // A later run's folder going shows the agent is past the kept run's end.
  std::string later = node.submitted(node.job(""));
  REQUIRE(node.cluster.wait_terminal(later)["status"] == "Completed");
  CHECK(test::eventually([&] { return !fs::exists(node.job_dir(later)); }, 20s));
  fs::path task = node.job_dir(kept) / "job-1" / "count-words";
  CHECK(test::slurp(task / "wd" / "outputs" / "counts" / "count.txt") == "4\n");
  CHECK_THAT(test::slurp(task / "stdout.txt"), Catch::Contains("user=_azbatch"));
}

TEST_CASE("a Batch pool and a task refuse each other's mismatches at submit", "[daemon][batch]") {
  if (skipped_without_root()) return;
  PoolNode node;
  // Not attached yet: a task has no pool to go to.
  auto refused = node.submit(node.job(""));
  CHECK(refused.exit_code != 0);
  CHECK_THAT(refused.err, Catch::Contains("compute cpu-cluster is not one"));

  REQUIRE(
      node.amlnode({"compute", "attach-batch", "cpu-cluster", "--pool-id", "pool-a"}).exit_code ==
      0);
  // The same again is no change; another pool under the name is a conflict.
  CHECK(node.amlnode({"compute", "attach-batch", "cpu-cluster", "--pool-id", "pool-a"}).exit_code ==
        0);
  auto conflict = node.amlnode({"compute", "attach-batch", "cpu-cluster", "--pool-id", "pool-b"});
  CHECK(conflict.exit_code != 0);
  CHECK_THAT(conflict.err, Catch::Contains("exists already, as batch"));

  refused = node.submit(node.job("  pool_id: pool-b\n"));
  CHECK(refused.exit_code != 0);
  CHECK_THAT(refused.err, Catch::Contains("asks for pool pool-b"));

  node.cluster.dir().write("src/train.py", "print('training')\n");
  refused = node.submit(node.cluster.dir().write("train.yml",
                                                 "script: train.py\n"
                                                 "source_directory: src\n"));
  CHECK(refused.exit_code != 0);
  CHECK_THAT(refused.err, Catch::Contains("runs AzureBatchStep tasks (azure_batch_step) only"));

  // The record survives a restart of the control plane; detach forgets it, the node stays.
  node.cluster.server().stop();
  node.cluster.server().start();
  auto shown = node.amlnode({"compute", "show", "cpu-cluster", "--json"});
  INFO(shown.out << shown.err);
  REQUIRE(shown.exit_code == 0);
  CHECK(json::parse(shown.out)["settings"]["pool_id"] == "pool-a");
  REQUIRE(node.amlnode({"compute", "detach", "cpu-cluster"}).exit_code == 0);
  auto listed = node.amlnode({"compute", "list", "--json"});
  CHECK(json::parse(listed.out)["computes"].empty());
  auto nodes = node.amlnode({"nodes", "--json"});
  CHECK(json::parse(nodes.out).dump().find("cpu-cluster") != std::string::npos);
  refused = node.submit(node.job(""));
  CHECK_THAT(refused.err, Catch::Contains("is not one"));
}

TEST_CASE("a Batch task that puts a link where its outputs were gets nothing of the node uploaded",
          "[daemon][batch]") {
  if (skipped_without_root()) return;
  PoolNode node;
  REQUIRE(
      node.amlnode({"compute", "attach-batch", "cpu-cluster", "--pool-id", "pool-a"}).exit_code ==
      0);
  node.cluster.dir().write("src/swap.sh",
                           "#!/bin/sh\nrm -rf outputs && ln -s /etc outputs && echo swapped\n");
  auto job = node.cluster.dir().write(
      "swap.yml",
      "azure_batch_step:\n  name: swap\n  source_directory: src\n  executable: swap.sh\n");
  std::string id = node.submitted(job);
  auto run = node.cluster.wait_terminal(id);
  INFO(run.dump() << node.cluster.agent_output());
  REQUIRE(run["status"] == "Completed");
  CHECK(node.cluster.server().log(id, "user_logs/stdout.txt") == "swapped\n");
  CHECK(node.cluster.server().outputs(id).empty());
  CHECK_THAT(node.cluster.server().log(id, "system_logs/lifecycle.txt"),
             Catch::Contains("outputs not uploaded"));
}
