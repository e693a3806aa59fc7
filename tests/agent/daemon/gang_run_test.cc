// Runs across nodes under real agents: one control plane and three `amlnode agent` processes on
// this machine, each with its own state dir and its own loopback address (127.0.0.2-4), the run
// submitted with the real `amlnode submit`. PyTorch's gloo backend really meets across the agents'
// addresses.

#include <signal.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <map>
#include <set>
#include <sstream>

#include "tests/agent/daemon/agent_config.h"
#include "tests/agent/daemon/control_plane_process.h"
#include "tests/agent/daemon/gang_cluster.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

using namespace amlnode;
using namespace std::chrono_literals;
namespace fs = std::filesystem;
using nlohmann::json;

using test::GangCluster;

namespace {

const fs::path kScripts = fs::path(AMLNODE_SOURCE_DIR) / "tests" / "agent" / "distributed";

}  // namespace

TEST_CASE("a PyTorch run over 2 nodes x 2 processes: gloo meets across the agents' addresses",
          "[daemon][gang]") {
  GangCluster cluster(3);
  std::string id = cluster.submit(
      "ddp_step.py",
      "distributed_job_config: {type: pytorch, communication_backend: gloo, process_count: 4, "
      "node_count: 2}\n");
  auto record = cluster.wait_terminal(id);
  INFO(record.dump() << cluster.output());
  REQUIRE(record["status"] == "Completed");
  REQUIRE(record["shares"].size() == 2);
  std::string master = record["shares"][0]["node_id"];
  std::set<std::string> nodes;
  for (const auto& share : record["shares"]) nodes.insert(share["node_id"].get<std::string>());
  CHECK(nodes.size() == 2);
  // Every rank's log, numbered by its rank in the run, says the same master and agreeing grads.
  std::string master_address;
  for (int rank = 0; rank < 4; ++rank) {
    std::string text =
        cluster.log(id, "user_logs/std_log_process_0" + std::to_string(rank) + ".txt");
    INFO("rank " << rank << ": " << text);
    CHECK_THAT(text, Catch::StartsWith("rank " + std::to_string(rank) + "/4 local " +
                                       std::to_string(rank % 2) + " node " +
                                       std::to_string(rank / 2) + " master 127.0.0."));
    CHECK_THAT(text, Catch::Contains("grads_agree True"));
    auto at = text.find(" master ");
    std::string shown = text.substr(at + 8, text.find(' ', at + 8) - at - 8);
    if (rank == 0) master_address = shown;
    CHECK(shown == master_address);
  }
  // The master's system log is the run's; the other share's carries its node rank.
  CHECK_THAT(cluster.log(id, "system_logs/lifecycle.txt"),
             Catch::Contains("node rank 0 of 2 prepared"));
  CHECK_THAT(cluster.log(id, "system_logs/node_01/lifecycle.txt"),
             Catch::Contains("node rank 1 of 2 prepared"));
}

TEST_CASE("a failing share fails the run across nodes, and the other share is stopped",
          "[daemon][gang]") {
  GangCluster cluster(2);
  std::string id = cluster.submit(
      "rank_fails.py",
      "distributed_job_config: {type: pytorch, communication_backend: gloo, process_count: 4, "
      "node_count: 2}\n");
  auto record = cluster.wait_terminal(id, 90s);
  INFO(record.dump() << cluster.output());
  CHECK(record["status"] == "Failed");
  CHECK(record["error"]["node_rank"] == 1);  // rank 2 is node 1's first
  CHECK_THAT(record["error"]["message"].get<std::string>(),
             Catch::StartsWith("Rank 2 of 4 ('python3') exited with status code 3"));
  CHECK(record["exit_code"] == 3);
  // The master's share, whose ranks ignore SIGTERM, is stopped too: both nodes let go of the run.
  CHECK(test::eventually(
      [&] {
        auto [status, nodes] = cluster.server.user_call("GET", "/v1/nodes", nullptr);
        for (const auto& node : nodes)
          if (!node["runId"].is_null()) return false;
        return status == 200;
      },
      60s));
}

TEST_CASE("an agent SIGKILLed under its share finds its ranks again, and every rank runs once",
          "[daemon][gang]") {
  GangCluster cluster(2);
  std::string id = cluster.submit_waiting(2);
  // Node 1's agent dies; its ranks go on under their shim, and the next agent finds them.
  int k = cluster.agent_of(cluster.server.run(id)["shares"][1]["node_id"]);
  REQUIRE((k == 0 || k == 1));
  ::kill(cluster.agents[k], SIGKILL);
  CHECK(test::wait_command(cluster.agents[k], 10s) == 128 + SIGKILL);
  cluster.start_agent(k);
  cluster.dir.write("go", "");
  auto done = cluster.wait_terminal(id);
  INFO(done.dump() << cluster.output());
  CHECK(done["status"] == "Completed");
  CHECK(cluster.started_ranks() == 4);
  for (int rank = 0; rank < 4; ++rank) {
    std::string r = std::to_string(rank);
    CHECK(cluster.log(id, "user_logs/std_log_process_0" + r + ".txt") ==
          "rank " + r + " up\nrank " + r + " done\n");
  }
}

TEST_CASE("a TensorFlow run over 3 nodes: each task finds its peers at their nodes' addresses",
          "[daemon][gang]") {
  GangCluster cluster(3);
  std::string id = cluster.submit(
      "tf_peers.py",
      "distributed_job_config: {type: tensorflow, worker_count: 2, parameter_server_count: 1, "
      "node_count: 3}\n");
  auto record = cluster.wait_terminal(id);
  INFO(record.dump() << cluster.output());
  REQUIRE(record["status"] == "Completed");
  // Task t runs on node rank t: worker 0, worker 1, then the parameter server, each at the
  // address of its own node.
  std::vector<std::string> address;
  auto [status, nodes] = cluster.server.user_call("GET", "/v1/nodes", nullptr);
  for (const auto& share : record["shares"]) {
    for (const auto& node : nodes)
      if (node["nodeId"] == share["node_id"]) address.push_back(node["privateIpAddress"]);
  }
  REQUIRE(address.size() == 3);
  CHECK_THAT(cluster.log(id, "user_logs/std_log_process_00.txt"),
             Catch::Contains("worker 0 at " + address[0] + ":") &&
                 Catch::Contains("ps ['" + address[2] + ":"));
  CHECK_THAT(cluster.log(id, "user_logs/std_log_process_01.txt"),
             Catch::Contains("worker 1 at " + address[1] + ":"));
  CHECK_THAT(cluster.log(id, "user_logs/std_log_process_02.txt"),
             Catch::Contains("ps 0 at " + address[2] + ":") &&
                 Catch::Contains("heard ['worker0', 'worker1']"));
}

TEST_CASE("a share's node cut off: the run stops on the other, is requeued whole, and completes",
          "[daemon][gang]") {
  GangCluster cluster(3, {"--heartbeat-interval", "1", "--heartbeat-timeout", "3"});
  std::string id = cluster.submit_waiting(1);
  auto first = cluster.server.run(id);
  std::string cut = first["shares"][1]["node_id"];
  int k = cluster.agent_of(cut);
  REQUIRE(k >= 0);
  // Frozen, the agent heartbeats no more: its node is lost, the run goes back to the queue whole,
  // and the other share is told to stop.
  ::kill(cluster.agents[k], SIGSTOP);
  bool requeued = test::eventually(
      [&] {
        auto run = cluster.server.try_run(id);
        return run && (*run)["epoch"] == first["epoch"].get<int>() + 1;
      },
      30s);
  INFO("last failed call: " << cluster.server.last_error());
  REQUIRE(requeued);
  cluster.dir.write("go", "");
  auto record = cluster.wait_terminal(id);
  ::kill(cluster.agents[k], SIGCONT);
  INFO(record.dump() << cluster.output());
  CHECK(record["status"] == "Completed");
  for (const auto& share : record["shares"]) CHECK(share["node_id"] != cut);
  // The frozen node, back, hears its epoch is over and stops its share without reporting.
  bool stopped = test::eventually(
      [&] { return cluster.output_of(k).find("stopping it here") != std::string::npos; }, 30s);
  INFO(cluster.output_of(k));
  CHECK(stopped);
  CHECK(cluster.server.run(id)["status"] == "Completed");
}

TEST_CASE("two gangs that together need more nodes than exist run one after the other",
          "[daemon][gang]") {
  GangCluster cluster(3);
  auto go = cluster.dir / "go";
  auto starts = cluster.dir / "starts.txt";
  std::string job =
      "distributed_job_config: {type: pytorch, communication_backend: gloo, process_count: 2, "
      "node_count: 2}\nenvironment_variables: {GO: " +
      go.string() + ", STARTS: " + starts.string() + "}\n";
  std::string first = cluster.submit("ranks_wait_file.py", job);
  std::string second = cluster.submit("ranks_wait_file.py", job);
  REQUIRE(test::eventually([&] { return cluster.server.run(first)["status"] == "Running"; }, 60s));
  // The second waits whole: no node holds a share of it while the first runs.
  auto waiting = cluster.server.run(second);
  CHECK(waiting["status"] == "Queued");
  CHECK(waiting["shares"].empty());
  CHECK(waiting["queue_reason"] == "waiting for 2 nodes of compute cpu-cluster to be free at once");
  cluster.dir.write("go", "");
  for (const auto& id : {first, second}) {
    auto record = cluster.wait_terminal(id);
    INFO(record.dump() << cluster.output());
    CHECK(record["status"] == "Completed");
  }
}

TEST_CASE("a run needing more nodes than its compute has waits, and amlnode status says why",
          "[daemon][gang]") {
  GangCluster cluster(2);
  std::string id = cluster.submit(
      "ddp_step.py",
      "distributed_job_config: {type: pytorch, communication_backend: gloo, process_count: 3, "
      "node_count: 3}\n");
  // Once both agents have registered, the reason counts them.
  json record;
  bool counted = test::eventually(
      [&] {
        auto shown = test::run_command({test::amlnode_binary().string(), "status", id, "--json"},
                                       cluster.user_env());
        if (shown.exit_code != 0) return false;
        record = json::parse(shown.out);
        return record["queue_reason"] == "needs 3 nodes; compute cpu-cluster has 2 usable";
      },
      20s);
  INFO(record.dump());
  CHECK(counted);
  CHECK(record["status"] == "Queued");
  CHECK(record["node_count"] == 3);
}

TEST_CASE("a rank SIGKILLed on one node fails the run, and every rank on every node is gone",
          "[daemon][gang]") {
  GangCluster cluster(2);
  auto pids_file = cluster.dir / "pids.txt";
  std::string id = cluster.submit(
      "ranks_pid_wait.py",
      "distributed_job_config: {type: pytorch, communication_backend: gloo, process_count: 4, "
      "node_count: 2}\nenvironment_variables: {PIDS: " +
          pids_file.string() + "}\n");
  auto pids = cluster.rank_pids(pids_file, 4);
  ::kill(pids[3], SIGKILL);
  auto record = cluster.wait_terminal(id);
  INFO(record.dump() << cluster.output());
  CHECK(record["status"] == "Failed");
  CHECK(record["error"]["node_rank"] == 1);
  CHECK_THAT(record["error"]["message"].get<std::string>(),
             Catch::StartsWith("Rank 3 of 4 ('python3') was killed by signal 9 (Killed)"));
  // The master's share hears of it at its next heartbeat and stops its ranks (they take SIGTERM).
  CHECK(GangCluster::all_gone(pids));
}

TEST_CASE(
    "an MPI run over 2 nodes x 2 ranks: mpirun starts the other node's ranks through its "
    "agent, without SSH",
    "[daemon][gang][mpi]") {
  GangCluster cluster(2);
  std::string id = cluster.submit(
      "mpi_nodes.py",
      "distributed_job_config: {type: mpi, process_count_per_node: 2, node_count: 2}\n");
  auto record = cluster.wait_terminal(id);
  INFO(record.dump() << cluster.output() << cluster.log(id, "user_logs/mpi_log.txt"));
  REQUIRE(record["status"] == "Completed");
  // Ranks 0 and 1 run on the master's node, 2 and 3 on the other agent's: each agent's folder.
  std::string master_agent = "n" + std::to_string(cluster.agent_of(record["shares"][0]["node_id"]));
  std::string other_agent = "n" + std::to_string(cluster.agent_of(record["shares"][1]["node_id"]));
  for (int rank = 0; rank < 4; ++rank) {
    bool master = rank < 2;
    CHECK(cluster.log(id, "user_logs/std_log_process_0" + std::to_string(rank) + ".txt") ==
          "rank " + std::to_string(rank) + " of 4 local " + std::to_string(rank % 2) +
              "/2 sum 10 master " + (master ? "true" : "false") + " agent " +
              (master ? master_agent : other_agent) + "\n");
  }
  // The other share's daemon ran under that share, and said so in its node's mpi log.
  CHECK_THAT(cluster.log(id, "user_logs/mpi_log_node_01.txt"),
             Catch::Contains("node rank 1 starts launch 1 for mpirun"));
}

TEST_CASE("Open MPI's rsh agent cannot start anything on a node holding no share of the run",
          "[daemon][gang][mpi]") {
  GangCluster cluster(3);
  fs::create_directories(cluster.dir / "markers");
  std::string id = cluster.submit(
      "mpi_rsh_elsewhere.py",
      "distributed_job_config: {type: mpi, process_count_per_node: 1, node_count: 2}\n"
      "environment_variables: {ADDRESSES: '127.0.0.2,127.0.0.3,127.0.0.4', MARKERS: " +
          (cluster.dir / "markers").string() + ", AMLNODE: " + test::amlnode_binary().string() +
          "}\n");
  auto record = cluster.wait_terminal(id);
  std::string log = cluster.log(id, "user_logs/std_log_process_00.txt");
  INFO(record.dump() << log << cluster.output());
  REQUIRE(record["status"] == "Completed");
  int idle = 3 - cluster.agent_of(record["shares"][0]["node_id"]) -
             cluster.agent_of(record["shares"][1]["node_id"]);
  std::string master = GangCluster::address(cluster.agent_of(record["shares"][0]["node_id"]));
  CHECK_THAT(log, Catch::Contains(GangCluster::address(idle) +
                                  " exit 255: amlnode mpi-rsh: cannot "
                                  "start a daemon on " +
                                  GangCluster::address(idle) + ": HTTP 403 Forbidden: host " +
                                  GangCluster::address(idle) + " holds no share of run " + id));
  CHECK_THAT(log,
             Catch::Contains("127.0.0.99 exit 255: amlnode mpi-rsh: cannot start a daemon on "
                             "127.0.0.99: HTTP 403 Forbidden: host 127.0.0.99 holds no share"));
  CHECK_THAT(log, Catch::Contains(master + " exit 255: amlnode mpi-rsh: cannot start a daemon on " +
                                  master + ": HTTP 403 Forbidden: host " + master +
                                  " is node rank 0 of run " + id));
  CHECK(fs::is_empty(cluster.dir / "markers"));
}

TEST_CASE("an MPI rank SIGKILLed on the other node fails the run naming it, and every rank is gone",
          "[daemon][gang][mpi]") {
  GangCluster cluster(2);
  auto pids_file = cluster.dir / "pids.txt";
  std::string id = cluster.submit(
      "ranks_pid_wait.py",
      "distributed_job_config: {type: mpi, process_count_per_node: 2, node_count: 2}\n"
      "environment_variables: {PIDS: " +
          pids_file.string() + "}\n");
  auto pids = cluster.rank_pids(pids_file, 4);
  ::kill(pids[3], SIGKILL);
  auto record = cluster.wait_terminal(id);
  INFO(record.dump() << cluster.output() << cluster.log(id, "user_logs/mpi_log.txt"));
  CHECK(record["status"] == "Failed");
  // mpirun on the master saw its daemon's rank die and names it.
  CHECK(record["error"]["node_rank"] == 0);
  CHECK_THAT(record["error"]["message"].get<std::string>(), Catch::Contains("Rank 3 of 4"));
  CHECK(GangCluster::all_gone(pids));
}
