// A ParallelRunStep across nodes under real agents: one control plane hands out the mini-batches
// to 2 agents x 2 workers on this machine (each agent its own state dir and loopback address), and
// the first node rank writes the output the control plane assembled.

#include <signal.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <fstream>
#include <set>
#include <sstream>

#include "tests/agent/daemon/gang_cluster.h"
#include "tests/agent/parallel/pids.h"
#include "tests/docker/docker_test_support.h"

using namespace amlnode;
using namespace std::chrono_literals;
namespace fs = std::filesystem;
using nlohmann::json;
using test::GangCluster;

namespace {

// `count` files f01.txt ... in src/data, and the rows file_names.py returns for them, in order.
std::string write_files(GangCluster& cluster, int count) {
  std::string rows;
  for (int i = 1; i <= count; ++i) {
    char name[16];
    std::snprintf(name, sizeof name, "f%02d.txt", i);
    cluster.dir.write(std::string("src/data/") + name, "x");
    rows += std::string("p-") + name + "\n";
  }
  return rows;
}

// file_names.py over src/data on 2 nodes x 2 workers, mini-batches of 2 files; `parameters` are
// more of parallel_run's, `more` more of the job's fields.
std::string submit_files(GangCluster& cluster, const std::string& parameters,
                         const std::string& more = "") {
  return cluster.submit("file_names.py",
                        "arguments: [--prefix, p-]\n"
                        "inputs:\n  images: {path: data, dataset: file}\n"
                        "parallel_run: {mini_batch_size: 2, output_action: append_row, "
                        "process_count_per_node: 2, node_count: 2, " +
                            parameters + "}\n" + more);
}

// The append_row output the master's node uploaded.
std::string uploaded_rows(GangCluster& cluster, const std::string& id) {
  cluster.dir.write("outputs.tar.gz", cluster.server.outputs(id));
  fs::create_directories(cluster.dir / "out");
  auto untar = test::run_command({"tar", "-xzf", (cluster.dir / "outputs.tar.gz").string(), "-C",
                                  (cluster.dir / "out").string()});
  REQUIRE(untar.exit_code == 0);
  std::string rows;
  for (const auto& entry : fs::recursive_directory_iterator(cluster.dir / "out"))
    if (entry.path().filename() == "parallel_run_step.txt") rows = test::slurp(entry.path());
  return rows;
}

// The mini-batches node k's report lists as succeeded.
int succeeded_on(GangCluster& cluster, int k, const std::string& id) {
  auto report = cluster.dir / ("n" + std::to_string(k)) / "state" / "runs" / id / "wd" / "logs" /
                "sys" / "job_report" / "processed_mini-batches.csv";
  std::error_code ec;
  if (!fs::exists(report, ec)) return 0;
  std::istringstream lines(test::slurp(report));
  int count = 0;
  for (std::string line; std::getline(lines, line);)
    if (line.find(",succeeded,") != std::string::npos) ++count;
  return count;
}

}  // namespace

TEST_CASE(
    "a ParallelRunStep over 2 agents x 2 workers: both nodes work and every row is written once",
    "[daemon][parallel][gang]") {
  GangCluster cluster(2);
  cluster.scripts = fs::path(AMLNODE_SOURCE_DIR) / "tests" / "agent" / "parallel";
  std::string all_rows = write_files(cluster, 40);
  std::string id = submit_files(cluster, "error_threshold: 0");
  auto record = cluster.wait_terminal(id);
  INFO(record.dump() << cluster.output());
  REQUIRE(record["status"] == "Completed");
  CHECK(uploaded_rows(cluster, id) == all_rows);
  int first = succeeded_on(cluster, 0, id);
  int second = succeeded_on(cluster, 1, id);
  CHECK(first + second == 20);
  CHECK(first > 0);
  CHECK(second > 0);
}

TEST_CASE("run() raising on some files across nodes: error_threshold is counted over all nodes",
          "[daemon][parallel][gang]") {
  GangCluster cluster(2);
  cluster.scripts = fs::path(AMLNODE_SOURCE_DIR) / "tests" / "agent" / "parallel";
  write_files(cluster, 12);
  std::string fail_on = "environment_variables: {FAIL_ON: \"f03.txt,f10.txt\"}\n";
  SECTION("within the limit: the other rows are written, each once") {
    std::string id = submit_files(cluster, "error_threshold: 4, run_max_try: 2", fail_on);
    auto record = cluster.wait_terminal(id);
    INFO(record.dump() << cluster.output());
    REQUIRE(record["status"] == "Completed");
    // f03 fails its mini-batch (f03, f04) and f10 its (f09, f10): 4 items, as many as allowed.
    CHECK(
        uploaded_rows(cluster, id) ==
        "p-f01.txt\np-f02.txt\np-f05.txt\np-f06.txt\np-f07.txt\np-f08.txt\np-f11.txt\np-f12.txt\n");
  }
  SECTION("past the limit: the run fails with the entry script's error") {
    std::string id = submit_files(cluster, "error_threshold: 3, run_max_try: 2", fail_on);
    auto record = cluster.wait_terminal(id);
    INFO(record.dump() << cluster.output());
    REQUIRE(record["status"] == "Failed");
    std::string message = record["error"]["message"];
    CHECK_THAT(message, Catch::Contains("error_threshold"));
    CHECK_THAT(message, Catch::Contains("ValueError: cannot score f"));
    CHECK_THAT(message, Catch::Contains("Traceback"));
  }
}

TEST_CASE("init() raising on every worker of both nodes: each node stops, then the run fails",
          "[daemon][parallel][gang]") {
  GangCluster cluster(2);
  cluster.scripts = fs::path(AMLNODE_SOURCE_DIR) / "tests" / "agent" / "parallel";
  write_files(cluster, 4);
  std::string id =
      submit_files(cluster, "error_threshold: 0", "environment_variables: {INIT_FAILS: \"1\"}\n");
  auto record = cluster.wait_terminal(id);
  INFO(record.dump() << cluster.output());
  REQUIRE(record["status"] == "Failed");
  std::string message = record["error"]["message"];
  CHECK_THAT(message, Catch::Contains("every node stopped taking mini-batches"));
  CHECK_THAT(message, Catch::Contains("3 x process_count_per_node"));
  CHECK_THAT(message, Catch::Contains("the model could not be loaded"));
}

namespace {

// A run over 20 files whose mini-batch of f05 and f06 waits for the file `go`, each worker
// recording "PID FIRST-FILE" in pids.txt as it starts a mini-batch.
struct HeldRun {
  GangCluster& cluster;
  std::string all_rows;
  std::string id;
  fs::path pids = cluster.dir / "pids.txt";

  explicit HeldRun(GangCluster& c) : cluster(c) {
    cluster.scripts = fs::path(AMLNODE_SOURCE_DIR) / "tests" / "agent" / "parallel";
    all_rows = write_files(cluster, 20);
    id = submit_files(cluster, "error_threshold: 0",
                      "environment_variables: {WAIT_ON: f05.txt, GO: " +
                          (cluster.dir / "go").string() + ", PIDS: " + pids.string() + "}\n");
    REQUIRE(held_by() > 0);
  }
  // The worker holding f05's mini-batch.
  pid_t held_by() { return test::worker_of(pids, "f05.txt"); }
  // Mini-batches started, counting each try.
  int starts() {
    std::istringstream lines(test::slurp(pids));
    int count = 0;
    for (std::string line; std::getline(lines, line);) ++count;
    return count;
  }
  void go() { cluster.dir.write("go", ""); }
  json finish() {
    auto record = cluster.wait_terminal(id);
    INFO(record.dump() << cluster.output());
    REQUIRE(record["status"] == "Completed");
    CHECK(uploaded_rows(cluster, id) == all_rows);
    return record;
  }
};

// A variable of a process's environment ("" when it has none, or is gone).
std::string environ_of(pid_t pid, const std::string& name) {
  std::ifstream in(fs::path("/proc") / std::to_string(pid) / "environ", std::ios::binary);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::string key = name + "=";
  for (std::size_t at = 0; at < text.size();) {
    auto end = text.find('\0', at);
    if (end == std::string::npos) end = text.size();
    if (text.compare(at, key.size(), key) == 0)
      return text.substr(at + key.size(), end - at - key.size());
    at = end + 1;
  }
  return "";
}

// SIGKILLs every process of the run's share of node rank `rank` on this machine.
void kill_share(const std::string& run_id, const std::string& rank) {
  for (const auto& entry : fs::directory_iterator("/proc")) {
    pid_t pid = std::atoi(entry.path().filename().c_str());
    if (pid <= 0 || pid == ::getpid()) continue;
    if (environ_of(pid, "AZUREML_RUN_ID") == run_id && environ_of(pid, "AMLNODE_NODE_RANK") == rank)
      ::kill(pid, SIGKILL);
  }
}

}  // namespace

TEST_CASE("across nodes a worker SIGKILLed mid-batch: the mini-batch is tried again, its rows once",
          "[daemon][parallel][gang]") {
  GangCluster cluster(2);
  HeldRun run(cluster);
  ::kill(run.held_by(), SIGKILL);
  run.go();
  run.finish();
  CHECK(run.starts() == 11);  // 10 mini-batches, f05's twice
}

TEST_CASE("across nodes an agent SIGKILLed and restarted: the run goes on, every mini-batch once",
          "[daemon][parallel][gang]") {
  GangCluster cluster(2);
  HeldRun run(cluster);
  // The agent of the node whose worker holds f05.
  int rank = std::atoi(environ_of(run.held_by(), "AMLNODE_NODE_RANK").c_str());
  auto shares = cluster.server.run(run.id)["shares"];
  int k = cluster.agent_of(shares[rank]["node_id"]);
  REQUIRE(k >= 0);
  ::kill(cluster.agents[k], SIGKILL);
  CHECK(test::wait_command(cluster.agents[k], 10s) == 128 + SIGKILL);
  cluster.start_agent(k);
  run.go();
  run.finish();
  CHECK(run.starts() == 10);
}

TEST_CASE("across nodes the control plane SIGKILLed and restarted: every mini-batch once",
          "[daemon][parallel][gang]") {
  GangCluster cluster(2);
  HeldRun run(cluster);
  cluster.server.kill();
  // The nodes' outcomes wait for it: none is lost, none counted twice.
  run.go();
  cluster.server.start();
  run.finish();
  CHECK(run.starts() == 10);
}

TEST_CASE("across nodes a node lost mid-run: its mini-batches go to the nodes that take its place",
          "[daemon][parallel][gang]") {
  GangCluster cluster(3, {"--heartbeat-interval", "1", "--heartbeat-timeout", "3"});
  HeldRun run(cluster);
  std::string rank = environ_of(run.held_by(), "AMLNODE_NODE_RANK");
  auto shares = cluster.server.run(run.id)["shares"];
  int k = cluster.agent_of(shares[std::atoi(rank.c_str())]["node_id"]);
  REQUIRE(k >= 0);
  // The node is gone: its agent and its share's processes, all at once.
  ::kill(cluster.agents[k], SIGKILL);
  test::wait_command(cluster.agents[k], 10s);
  cluster.agents[k] = -1;
  kill_share(run.id, rank);
  run.go();
  auto record = run.finish();
  CHECK(record["epoch"].get<int>() >= 2);
  for (const auto& share : record["shares"]) CHECK(cluster.agent_of(share["node_id"]) != k);
}

TEST_CASE("Azure ML's iris sample over 2 agents: its entry script scores every row once, unchanged",
          "[daemon][parallel][gang][compat]") {
  GangCluster cluster(2);
  // tests/compat/prs-tabular-iris: the notebook's iris_score.py byte for byte, its job file, and
  // make_data.py's stand-ins for the dataset and the model (ORIGIN.md says what and why).
  auto project = cluster.dir / "iris";
  fs::copy(fs::path(AMLNODE_SOURCE_DIR) / "tests" / "compat" / "prs-tabular-iris", project,
           fs::copy_options::recursive);
  auto made = test::run_command(
      {"/bin/sh", "-c", "cd \"$0\" && exec /usr/bin/python3 make_data.py", project.string()});
  REQUIRE(made.exit_code == 0);
  // The nodes find the dataset, the model and the output folder where a datastore would be
  // mounted on each: at the same absolute paths (relative ones name folders of the run's snapshot
  // on a node). The job's Python is the machine's, which has numpy and pandas, as the notebook's
  // environment has them.
  auto job = test::slurp(project / "job.yml");
  for (const std::string path :
       {"iris,", "iris_model.pkl/iris_model.pkl\n", "datastore/azureml/example-iris/inferences,"}) {
    auto at = job.find(": " + path);
    REQUIRE(at != std::string::npos);
    job.replace(at + 2, 0, project.string() + "/");
  }
  cluster.dir.write("iris/job.yml", job + test::kEnvironment);
  auto submitted = test::run_command({test::amlnode_binary().string(), "submit",
                                      (project / "job.yml").string(), "--compute", "cpu-cluster"},
                                     cluster.user_env());
  INFO(submitted.out << submitted.err);
  REQUIRE(submitted.exit_code == 0);
  std::string id = submitted.out.substr(0, submitted.out.find_last_not_of("\n") + 1);
  auto record = cluster.wait_terminal(id);
  INFO(record.dump() << cluster.output());
  REQUIRE(record["status"] == "Completed");
  // Every row once, in order, as the features then the predicted species, space-separated.
  std::istringstream data(test::slurp(project / "iris" / "iris.csv"));
  std::istringstream truth(test::slurp(project / "iris_truth.txt"));
  std::string expected, line, species;
  std::getline(data, line);  // the header
  while (std::getline(data, line) && std::getline(truth, species)) {
    std::replace(line.begin(), line.end(), ',', ' ');
    expected += line + " " + species + "\n";
  }
  cluster.dir.write("outputs.tar.gz", cluster.server.outputs(id));
  fs::create_directories(cluster.dir / "out");
  REQUIRE(test::run_command({"tar", "-xzf", (cluster.dir / "outputs.tar.gz").string(), "-C",
                             (cluster.dir / "out").string()})
              .exit_code == 0);
  std::string rows;
  for (const auto& entry : fs::recursive_directory_iterator(cluster.dir / "out"))
    if (entry.path().filename() == "iris_outputs.txt") rows = test::slurp(entry.path());
  CHECK(rows == expected);
  // About 2.4 KB of rows at mini_batch_size 1KB: three mini-batches, each tried once somewhere.
  CHECK(succeeded_on(cluster, 0, id) + succeeded_on(cluster, 1, id) == 3);
  CHECK_THAT(cluster.log(id, "logs/user/entry_script_log/0/process001.log.txt"),
             Catch::Contains("init() is called."));
}

TEST_CASE(
    "across nodes a run() that hangs: its worker is killed, the mini-batch tried again, then the "
    "run fails",
    "[daemon][parallel][gang]") {
  GangCluster cluster(2);
  cluster.scripts = fs::path(AMLNODE_SOURCE_DIR) / "tests" / "agent" / "parallel";
  write_files(cluster, 8);
  std::string id =
      submit_files(cluster, "error_threshold: 0, run_max_try: 2, run_invocation_timeout: 1",
                   "environment_variables: {HANG_ON: f07.txt}\n");
  auto record = cluster.wait_terminal(id);
  INFO(record.dump() << cluster.output());
  REQUIRE(record["status"] == "Failed");
  std::string message = record["error"]["message"];
  CHECK_THAT(message, Catch::Contains("error_threshold: 2 items failed"));
  CHECK_THAT(message, Catch::Contains("run() took longer than run_invocation_timeout (1 s)"));
  // Each of its two tries is in the report of the node that ran it.
  int timed_out = 0;
  for (int k = 0; k < 2; ++k) {
    auto report = cluster.dir / ("n" + std::to_string(k)) / "state" / "runs" / id / "wd" / "logs" /
                  "sys" / "job_report" / "processed_mini-batches.csv";
    std::error_code ec;
    if (!fs::exists(report, ec)) continue;
    std::istringstream lines(test::slurp(report));
    for (std::string line; std::getline(lines, line);)
      if (line.starts_with("3,") && line.find(",timed out,") != std::string::npos) ++timed_out;
  }
  CHECK(timed_out == 2);
}

TEST_CASE("init() raising on one node only: that node stops, the other does every mini-batch",
          "[daemon][parallel][gang]") {
  GangCluster cluster(2);
  cluster.scripts = fs::path(AMLNODE_SOURCE_DIR) / "tests" / "agent" / "parallel";
  std::string all_rows = write_files(cluster, 12);
  std::string id = submit_files(cluster, "error_threshold: 0",
                                "environment_variables: {INIT_FAILS_ON_RANK: \"1\"}\n");
  auto record = cluster.wait_terminal(id);
  INFO(record.dump() << cluster.output());
  REQUIRE(record["status"] == "Completed");
  CHECK(uploaded_rows(cluster, id) == all_rows);
  int rank1 = cluster.agent_of(record["shares"][1]["node_id"]);
  CHECK(succeeded_on(cluster, rank1, id) == 0);
  CHECK(succeeded_on(cluster, 1 - rank1, id) == 6);
  // The node that stopped says why in its result.
  auto result = cluster.dir / ("n" + std::to_string(rank1)) / "state" / "runs" / id / "wd" /
                "logs" / "job_result.txt";
  CHECK_THAT(test::slurp(result), Catch::StartsWith("Completed\n"));
}

TEST_CASE(
    "a ParallelRunStep across 2 agents in Docker containers: each node's workers in its own, every "
    "row once",
    "[docker][parallel][gang]") {
  const auto& services = test::services();
  GangCluster cluster(2, {"--heartbeat-interval", "1"},
                      "docker:\n  host: " + services.docker_host +
                          "\n  pip_install_options: [--no-index, --find-links, /amlnode/wheels]\n"
                          "  local_wheel_dir: " +
                          services.wheels.string() + "\n");
  std::string all_rows;
  for (int i = 1; i <= 12; ++i) {
    std::string name = "f" + std::to_string(100 + i) + ".txt";
    cluster.dir.write("src/data/" + name, "x");
    all_rows += name + " container\n";
  }
  cluster.dir.write("src/score.py",
                    "import os\n"
                    "def init():\n    pass\n"
                    "def run(mini_batch):\n"
                    "    where = 'container' if os.path.exists('/.dockerenv') else 'host'\n"
                    "    return [f'{os.path.basename(f)} {where}' for f in mini_batch]\n");
  auto job = cluster.dir.write(
      "src/job.yml",
      "script: score.py\n"
      "environment:\n  docker: {enabled: true, base_image: " +
          services.base_image +
          "}\n  python: {user_managed_dependencies: true}\n"
          "inputs:\n  images: {path: data, dataset: file}\n"
          "parallel_run: {mini_batch_size: 1, error_threshold: 0, output_action: append_row, "
          "process_count_per_node: 2, node_count: 2}\n");
  auto submitted = test::run_command(
      {test::amlnode_binary().string(), "submit", job.string(), "--compute", "cpu-cluster"},
      cluster.user_env());
  INFO(submitted.out << submitted.err);
  REQUIRE(submitted.exit_code == 0);
  std::string id = submitted.out.substr(0, submitted.out.find_last_not_of("\n") + 1);
  auto record = cluster.wait_terminal(id, 300s);
  INFO(record.dump() << cluster.output());
  REQUIRE(record["status"] == "Completed");
  CHECK(uploaded_rows(cluster, id) == all_rows);
  CHECK(succeeded_on(cluster, 0, id) + succeeded_on(cluster, 1, id) == 12);
}
