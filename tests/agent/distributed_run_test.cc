// Runs of several processes on one node, by the real `amlnode run`: Open MPI's mpirun with mpi4py,
// PyTorch's gloo backend, a TensorFlow-style parameter-server job, and what happens to every rank
// when one fails, the deadline passes or the run is canceled. The scripts are in distributed/.

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cerrno>
#include <nlohmann/json.hpp>

#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

using namespace amlnode;
using namespace std::chrono_literals;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const fs::path kScripts = fs::path(AMLNODE_SOURCE_DIR) / "tests" / "agent" / "distributed";

// Debian's interpreter, which has mpi4py and torch (scripts/setup installs them).
const char* kEnvironment =
    "environment:\n  python: {user_managed_dependencies: true, interpreter_path: "
    "/usr/bin/python3}\n";

struct DistributedWorkspace {
  test::TempDir dir;
  // Rides in every rank's command line, so the test can look for survivors.
  std::string marker = "amlnode-dist-" + std::to_string(::getpid());

  fs::path job(const std::string& script, const std::string& distribution,
               const std::string& extra = "") {
    fs::create_directories(dir / "project");
    fs::copy_file(kScripts / script, dir / "project" / script,
                  fs::copy_options::overwrite_existing);
    return dir.write("project/job.yml", "script: " + script + "\narguments: [" + marker + "]\n" +
                                            kEnvironment + distribution + "\n" + extra);
  }
  test::CommandResult run(const fs::path& job, const std::string& id,
                          std::vector<std::string> extra = {}) {
    std::vector<std::string> argv = {test::amlnode_binary().string(), "run",      "--state-dir",
                                     (dir / "state").string(),        "--run-id", id};
    argv.insert(argv.end(), extra.begin(), extra.end());
    argv.push_back(job.string());
    return test::run_command(argv, {}, 120s);
  }
  fs::path run_dir(const std::string& id) const { return dir / "state" / "runs" / id; }
  std::string rank_log(const std::string& id, int rank) const {
    char name[40];
    std::snprintf(name, sizeof name, "std_log_process_%02d.txt", rank);
    return test::slurp(run_dir(id) / "user_logs" / name);
  }
  json run_json(const std::string& id) const {
    return json::parse(test::slurp(run_dir(id) / "run.json"));
  }
};

}  // namespace

TEST_CASE("an MPI job runs 4 ranks under mpirun: an allreduce, a log per rank, rank 0 shown",
          "[distributed]") {
  DistributedWorkspace ws;
  auto job = ws.job("mpi_allreduce.py",
                    "distributed_job_config: {type: mpi, "
                    "process_count_per_node: 4}");
  auto result = ws.run(job, "mpi-1");
  INFO(result.out << result.err);
  REQUIRE(result.exit_code == 0);
  CHECK(result.out == "rank 0 of 4 local 0/4 sum 10\n");
  for (int rank = 0; rank < 4; ++rank) {
    CHECK(ws.rank_log("mpi-1", rank) ==
          "rank " + std::to_string(rank) + " of 4 local " + std::to_string(rank) + "/4 sum 10\n");
  }
  CHECK(fs::exists(ws.run_dir("mpi-1") / "user_logs" / "mpi_log.txt"));
  CHECK_FALSE(fs::exists(ws.run_dir("mpi-1") / "user_logs" / "std_log.txt"));
  CHECK(ws.run_json("mpi-1")["status"] == "Completed");
}

TEST_CASE("a PyTorch job runs 4 gloo processes whose DDP gradients agree", "[distributed]") {
  DistributedWorkspace ws;
  auto job = ws.job("ddp_step.py",
                    "distributed_job_config: {type: pytorch, "
                    "communication_backend: gloo, process_count: 4}");
  auto result = ws.run(job, "ddp-1");
  INFO(result.out << result.err);
  REQUIRE(result.exit_code == 0);
  for (int rank = 0; rank < 4; ++rank) {
    CHECK_THAT(ws.rank_log("ddp-1", rank),
               Catch::Contains("rank " + std::to_string(rank) + "/4 local " + std::to_string(rank) +
                               " node 0 master 127.0.0.1:") &&
                   Catch::Contains("grads_agree True"));
  }
  CHECK_THAT(result.out, Catch::StartsWith("rank 0/4"));
}

TEST_CASE("a TensorFlow job of 2 workers and 1 parameter server: each task finds its peers",
          "[distributed]") {
  DistributedWorkspace ws;
  auto job = ws.job("tf_peers.py",
                    "distributed_job_config: {type: tensorflow, worker_count: 2, "
                    "parameter_server_count: 1}");
  auto result = ws.run(job, "tf-1");
  INFO(result.out << result.err);
  REQUIRE(result.exit_code == 0);
  CHECK_THAT(ws.rank_log("tf-1", 0), Catch::Contains("worker 0 at 127.0.0.1:") &&
                                         Catch::Contains("of 2 workers") &&
                                         Catch::Contains("environment cloud"));
  CHECK_THAT(ws.rank_log("tf-1", 1), Catch::Contains("worker 1 at 127.0.0.1:"));
  CHECK_THAT(ws.rank_log("tf-1", 2), Catch::Contains("heard ['worker0', 'worker1']"));
}

TEST_CASE("the first rank to fail ends the run, and the others, ignoring SIGTERM, are killed",
          "[distributed]") {
  struct Case {
    std::string name;
    std::string distribution;
  };
  for (const auto& c : {Case{"mpi",
                             "distributed_job_config: {type: mpi, "
                             "process_count_per_node: 4}"},
                        Case{"pytorch",
                             "distributed_job_config: {type: pytorch, "
                             "communication_backend: gloo, process_count: 4}"}}) {
    DistributedWorkspace ws;
    auto job = ws.job("rank_fails.py", c.distribution);
    auto started = std::chrono::steady_clock::now();
    auto result = ws.run(job, "fail-" + c.name, {"--kill-grace", "1"});
    auto took = std::chrono::steady_clock::now() - started;
    INFO(c.name << "\n" << result.out << result.err);
    CHECK(result.exit_code == 3);
    // Rank 2 fails after half a second; a second of grace; interpreters start in about a second.
    CHECK(took < 8s);
    auto record = ws.run_json("fail-" + c.name);
    CHECK(record["status"] == "Failed");
    CHECK(record["error"]["message"] ==
          "Rank 2 of 4 ('python3') exited with status code 3; the other ranks were stopped; its "
          "log is user_logs/std_log_process_02.txt");
    CHECK(ws.rank_log("fail-" + c.name, 2) == "rank 2 gives up\n");
    CHECK(test::processes_with_marker(ws.marker).empty());
  }
}

TEST_CASE("the deadline stops every rank of a run", "[distributed]") {
  DistributedWorkspace ws;
  auto job = ws.job("ranks_wait.py",
                    "distributed_job_config: {type: pytorch, communication_backend: gloo, "
                    "process_count: 3}",
                    "max_run_duration_seconds: 2\n");
  auto result = ws.run(job, "deadline-1", {"--kill-grace", "1"});
  INFO(result.out << result.err);
  CHECK(result.exit_code == 124);
  CHECK(ws.run_json("deadline-1")["error"]["code"] == "RunTimeout");
  for (int rank = 0; rank < 3; ++rank)
    CHECK(ws.rank_log("deadline-1", rank) == "rank " + std::to_string(rank) + " up\n");
  CHECK(test::processes_with_marker(ws.marker).empty());
}

TEST_CASE("Ctrl-C cancels every rank of an MPI run, mpirun included", "[distributed]") {
  DistributedWorkspace ws;
  auto job = ws.job("ranks_wait.py",
                    "distributed_job_config: {type: mpi, "
                    "process_count_per_node: 3}");
  pid_t pid = test::start_command(
      {test::amlnode_binary().string(), "run", "--state-dir", (ws.dir / "state").string(),
       "--run-id", "cancel-1", "--kill-grace", "1", job.string()},
      ws.dir / "out.txt", ws.dir / "err.txt");
  REQUIRE(test::eventually(
      [&] {
        for (int rank = 0; rank < 3; ++rank) {
          std::error_code ec;
          char name[40];
          std::snprintf(name, sizeof name, "std_log_process_%02d.txt", rank);
          if (fs::file_size(ws.run_dir("cancel-1") / "user_logs" / name, ec) == 0 || ec)
            return false;
        }
        return true;
      },
      30s));
  ::kill(pid, SIGINT);
  CHECK(test::wait_command(pid, 30s) == 130);
  CHECK(ws.run_json("cancel-1")["status"] == "Canceled");
  CHECK(test::processes_with_marker(ws.marker).empty());
  CHECK(test::processes_with_marker("mpirun -np 3").empty());
}

// As on Azure ML, a job of one process per node may start its own workers (a
// torch.distributed.launch command, or torch.multiprocessing.spawn): the launcher is the run's one
// process, gets the PyTorch variables, and its workers are the run's too, stopped with it.
TEST_CASE("a per-node launcher spawns its own gloo workers, and a cancel stops them too",
          "[distributed]") {
  DistributedWorkspace ws;
  const char* distribution =
      "distributed_job_config: {type: pytorch, communication_backend: gloo, process_count: 1}";
  auto job = ws.job("per_node_spawn.py", distribution);
  auto result = ws.run(job, "per-node-1");
  INFO(result.out << result.err);
  REQUIRE(result.exit_code == 0);
  CHECK_THAT(result.out,
             Catch::StartsWith("launcher " + ws.marker + " node 0/1 master 127.0.0.1:") &&
                 Catch::Contains("worker 0/2 sum 3\n") && Catch::Contains("worker 1/2 sum 3\n"));
  CHECK(test::slurp(ws.run_dir("per-node-1") / "user_logs" / "std_log.txt") == result.out);

  job = ws.dir.write("project/job.yml", "script: per_node_spawn.py\narguments: [" + ws.marker +
                                            ", hold]\n" + kEnvironment + distribution + "\n");
  pid_t pid = test::start_command(
      {test::amlnode_binary().string(), "run", "--state-dir", (ws.dir / "state").string(),
       "--run-id", "per-node-2", "--kill-grace", "1", job.string()},
      ws.dir / "out.txt", ws.dir / "err.txt");
  auto outputs = ws.run_dir("per-node-2") / "wd" / "outputs";
  REQUIRE(test::eventually(
      [&] { return fs::exists(outputs / "worker_0.pid") && fs::exists(outputs / "worker_1.pid"); },
      60s));
  std::vector<pid_t> workers;
  for (int rank = 0; rank < 2; ++rank) {
    std::string text;
    REQUIRE(test::eventually(
        [&] {
          text = test::slurp(outputs / ("worker_" + std::to_string(rank) + ".pid"));
          return !text.empty();
        },
        10s));
    workers.push_back(static_cast<pid_t>(std::stoi(text)));
  }
  ::kill(pid, SIGINT);
  CHECK(test::wait_command(pid, 30s) == 130);
  CHECK(ws.run_json("per-node-2")["status"] == "Canceled");
  for (pid_t worker : workers) CHECK((::kill(worker, 0) != 0 && errno == ESRCH));
  CHECK(test::processes_with_marker(ws.marker).empty());
}

TEST_CASE("the plan lists the ranks, and takes another port when 6105 is in use", "[distributed]") {
  DistributedWorkspace ws;
  auto job = ws.job("ddp_step.py",
                    "distributed_job_config: {type: pytorch, "
                    "communication_backend: gloo, process_count: 2}");
  // Holds 6105 as another job on the node would (when nothing else does already).
  int holder = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(6105);
  ::bind(holder, reinterpret_cast<sockaddr*>(&address), sizeof address);
  ::listen(holder, 1);
  auto planned = ws.run(job, "plan-1", {"--dry-run", "--json"});
  ::close(holder);
  INFO(planned.out << planned.err);
  REQUIRE(planned.exit_code == 0);
  auto plan = json::parse(planned.out);
  CHECK(plan["launcher"] == "processes");
  REQUIRE(plan["ranks"].size() == 2);
  CHECK(plan["ranks"][1]["env"]["RANK"] == "1");
  CHECK(plan["ranks"][1]["std_log"] ==
        (ws.run_dir("plan-1") / "user_logs" / "std_log_process_01.txt").string());
  std::string port = plan["env"]["MASTER_PORT"];
  CHECK(port != "6105");
  REQUIRE(plan["notes"].size() == 1);
  CHECK(plan["notes"][0] == "MASTER_PORT is " + port + ": port 6105 is in use on this node");
}
