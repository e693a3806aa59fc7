// A run of several processes under the daemon: leased, run by one shim, each rank's log shipped
// as its own stream, and `amlnode logs` showing rank 0's by default.

#include <signal.h>

#include <catch2/catch.hpp>

#include "tests/agent/daemon/agent_config.h"
#include "tests/agent/daemon/control_plane_process.h"
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

TEST_CASE("an agent killed under a 3-rank run finds every rank again when it restarts",
          "[daemon][distributed]") {
  test::TempDir dir;
  test::ControlPlaneProcess server(dir / "cp", {"--heartbeat-interval", "1"});
  server.start();
  fs::create_directories(dir / "src");
  fs::copy_file(kScripts / "ranks_wait_file.py", dir / "src" / "ranks_wait_file.py");
  auto go = dir / "go";
  auto starts = dir / "starts.txt";
  std::string id = server.submit(
      "script: ranks_wait_file.py\n"
      "environment:\n  python: {user_managed_dependencies: true, interpreter_path: "
      "/usr/bin/python3}\n"
      "distributed_job_config: {type: pytorch, communication_backend: gloo, process_count: 3}\n"
      "environment_variables: {GO: " +
          go.string() + ", STARTS: " + starts.string() + "}\n",
      dir / "src", "cpu-cluster");
  auto config = dir.write("a/config.yml",
                          test::agent_config_text(dir.path() / "a" / "state", server.url(),
                                                  server.registration_token("cpu-cluster"), {}))
                    .string();
  std::vector<std::string> argv{test::amlnode_binary().string(), "agent", "--config", config};
  pid_t first = test::start_command(argv, dir / "a" / "out.1", dir / "a" / "err.1");
  REQUIRE(test::eventually(
      [&] {
        std::error_code ec;
        return fs::exists(starts, ec) &&
               test::slurp(starts).size() == 3 * std::string("rank 0\n").size();
      },
      std::chrono::seconds(30)));
  ::kill(first, SIGKILL);
  CHECK(test::wait_command(first, std::chrono::seconds(10)) == 128 + SIGKILL);
  pid_t second = test::start_command(argv, dir / "a" / "out.2", dir / "a" / "err.2");
  dir.write("go", "");
  bool done = test::eventually(
      [&] {
        std::string status = server.run(id)["status"];
        return status == "Completed" || status == "Failed" || status == "Canceled";
      },
      std::chrono::seconds(60));
  INFO(test::slurp(dir / "a" / "err.1") + test::slurp(dir / "a" / "err.2"));
  REQUIRE(done);
  CHECK(server.run(id)["status"] == "Completed");
  // Each rank ran once, and each stream holds its whole output.
  CHECK(test::slurp(starts).size() == 3 * std::string("rank 0\n").size());
  for (int rank = 0; rank < 3; ++rank) {
    std::string r = std::to_string(rank);
    CHECK(server.log(id, "user_logs/std_log_process_0" + r + ".txt") ==
          "rank " + r + " up\nrank " + r + " done\n");
  }
  ::kill(second, SIGTERM);
  CHECK(test::wait_command(second, std::chrono::seconds(20)) == 0);
}

TEST_CASE("under the daemon, a failing rank fails the run and a cancel stops every rank",
          "[daemon][distributed]") {
  test::OneNodeCluster cluster;
  fs::create_directories(cluster.dir() / "src");
  for (const char* script : {"rank_fails.py", "ranks_wait.py"})
    fs::copy_file(kScripts / script, cluster.dir() / "src" / script);
  const std::string environment =
      "environment:\n  python: {user_managed_dependencies: true, interpreter_path: "
      "/usr/bin/python3}\n"
      "distributed_job_config: {type: pytorch, communication_backend: gloo, process_count: 4}\n";
  // Rides in every rank's command line, so the test can look for survivors.
  const std::string marker = "amlnode-dist-daemon-" + std::to_string(::getpid());

  std::string failing =
      cluster.submit("script: rank_fails.py\narguments: [" + marker + "]\n" + environment);
  auto failed = cluster.wait_terminal(failing);
  INFO(failed.dump());
  CHECK(failed["status"] == "Failed");
  CHECK(failed["error"]["message"] ==
        "Rank 2 of 4 ('python3') exited with status code 3; the other ranks were stopped; its "
        "log is user_logs/std_log_process_02.txt");
  CHECK(test::processes_with_marker(marker).empty());

  std::string waiting =
      cluster.submit("script: ranks_wait.py\narguments: [" + marker + "]\n" + environment);
  REQUIRE(test::eventually([&] { return test::processes_with_marker(marker).size() == 4; },
                           std::chrono::seconds(30)));
  auto canceled =
      test::run_command({test::amlnode_binary().string(), "cancel", waiting}, cluster.user_env());
  REQUIRE(canceled.exit_code == 0);
  CHECK(cluster.wait_terminal(waiting)["status"] == "Canceled");
  CHECK(test::processes_with_marker(marker).empty());
}
