// A run of several processes under the daemon: leased, run by one shim, each rank's log shipped
// as its own stream, and `amlnode logs` showing rank 0's by default.

#include <catch2/catch.hpp>

#include "tests/agent/daemon/one_node_cluster.h"
#include "tests/support/process.h"

using namespace amlnode;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const fs::path kScripts = fs::path(AMLNODE_SOURCE_DIR) / "tests" / "agent" / "distributed";

test::CommandResult logs_of(const test::OneNodeCluster& cluster, const std::string& id,
                            std::vector<std::string> extra = {}) {
  std::vector<std::string> argv = {test::amlnode_binary().string(), "logs", id};
  argv.insert(argv.end(), extra.begin(), extra.end());
  return test::run_command(argv, cluster.user_env());
}

}  // namespace

TEST_CASE("under the daemon, an MPI run's ranks each ship their own log stream",
          "[daemon][distributed]") {
  test::OneNodeCluster cluster;
  fs::create_directories(cluster.dir() / "src");
  fs::copy_file(kScripts / "mpi_allreduce.py", cluster.dir() / "src" / "mpi_allreduce.py");
  std::string id = cluster.submit(
      "script: mpi_allreduce.py\n"
      "environment:\n  python: {user_managed_dependencies: true, interpreter_path: "
      "/usr/bin/python3}\n"
      "distributed_job_config: {type: mpi, process_count_per_node: 3}\n");
  auto record = cluster.wait_terminal(id);
  INFO(cluster.agent_output());
  CHECK(record["status"] == "Completed");
  for (int rank = 0; rank < 3; ++rank) {
    auto shown = logs_of(
        cluster, id, {"--stream", "user_logs/std_log_process_0" + std::to_string(rank) + ".txt"});
    INFO(shown.err);
    CHECK(shown.out ==
          "rank " + std::to_string(rank) + " of 3 local " + std::to_string(rank) + "/3 sum 6\n");
  }
  // The main log of a distributed run is rank 0's; mpirun's own stream is accepted too.
  CHECK(logs_of(cluster, id).out == "rank 0 of 3 local 0/3 sum 6\n");
  CHECK(logs_of(cluster, id, {"--stream", "user_logs/mpi_log.txt"}).exit_code == 0);
  CHECK(cluster.agent_output().find("refused") == std::string::npos);
}
