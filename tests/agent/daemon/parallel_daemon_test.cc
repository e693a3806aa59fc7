// A ParallelRunStep under the real daemon and control plane: its node driver and workers run
// under the run's shim, so an agent SIGKILLed mid-run finds the run again, a control plane
// SIGKILLed mid-run finds it finished, and the output still holds every row once.

#include <signal.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <sstream>

#include "tests/agent/daemon/agent_config.h"
#include "tests/agent/daemon/control_plane_process.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

using namespace amlnode;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

const fs::path kScripts = fs::path(AMLNODE_SOURCE_DIR) / "tests" / "agent" / "parallel";

const char* kAllRows =
    "p-f01.txt\np-f02.txt\np-f03.txt\np-f04.txt\np-f05.txt\np-f06.txt\np-f07.txt\np-f08.txt\n";

// A control plane, one agent's config, and a ParallelRunStep over 8 files in mini-batches of 2
// for 2 workers, whose mini-batch of f05 and f06 waits for the file `go`.
struct HeldParallelRun {
  test::TempDir dir;
  test::ControlPlaneProcess server{dir / "cp", {"--heartbeat-interval", "1"}};
  fs::path pids = dir / "pids.txt";
  std::string id;
  std::string config;
  int starts = 0;

  HeldParallelRun() {
    server.start();
    fs::create_directories(dir / "src");
    fs::copy_file(kScripts / "file_names.py", dir / "src" / "file_names.py");
    for (int i = 1; i <= 8; ++i) dir.write("src/data/f0" + std::to_string(i) + ".txt", "x");
    id = server.submit(
        "script: file_names.py\narguments: [--prefix, p-]\n"
        "environment:\n  python: {user_managed_dependencies: true, interpreter_path: "
        "/usr/bin/python3}\n"
        "inputs:\n  images: {path: data, dataset: file}\n"
        "parallel_run: {mini_batch_size: 2, error_threshold: 0, output_action: append_row, "
        "process_count_per_node: 2}\n"
        "environment_variables: {WAIT_ON: f05.txt, GO: " +
            (dir / "go").string() + ", PIDS: " + pids.string() + "}\n",
        dir / "src", "cpu-cluster");
    config = dir.write("a/config.yml",
                       test::agent_config_text(dir.path() / "a" / "state", server.url(),
                                               server.registration_token("cpu-cluster"), {}))
                 .string();
  }
  pid_t start_agent() {
    ++starts;
    return test::start_command({test::amlnode_binary().string(), "agent", "--config", config},
                               dir / "a" / ("out." + std::to_string(starts)),
                               dir / "a" / ("err." + std::to_string(starts)));
  }
  std::string agent_errors() {
    std::string out;
    for (int i = 1; i <= starts; ++i) out += test::slurp(dir / "a" / ("err." + std::to_string(i)));
    return out;
  }
  // Until a worker holds the mini-batch of f05 and f06.
  bool held() {
    return test::eventually(
        [&] {
          std::error_code ec;
          return fs::exists(pids, ec) && test::slurp(pids).find(" f05.txt") != std::string::npos;
        },
        30s);
  }
  bool terminal() {
    return test::eventually(
        [&] {
          auto run = server.try_run(id);
          if (!run) return false;
          std::string status = (*run)["status"];
          return status == "Completed" || status == "Failed" || status == "Canceled";
        },
        60s);
  }
  // The rows of the outputs the node uploaded for the run.
  std::string uploaded_rows() {
    dir.write("outputs.tar.gz", server.outputs(id));
    fs::create_directories(dir / "out");
    auto untar = test::run_command(
        {"tar", "-xzf", (dir / "outputs.tar.gz").string(), "-C", (dir / "out").string()});
    REQUIRE(untar.exit_code == 0);
    std::string rows;
    for (const auto& entry : fs::recursive_directory_iterator(dir / "out"))
      if (entry.path().filename() == "parallel_run_step.txt") rows = test::slurp(entry.path());
    return rows;
  }
};

}  // namespace

TEST_CASE("an agent SIGKILLed under a ParallelRunStep: the run completes, every row once",
          "[daemon][parallel]") {
  HeldParallelRun run;
  pid_t first = run.start_agent();
  REQUIRE(run.held());
  ::kill(first, SIGKILL);
  CHECK(test::wait_command(first, 10s) == 128 + SIGKILL);
  pid_t second = run.start_agent();
  // While it runs, `amlnode status` shows its progress, from the node's progress log.
  std::string shown;
  CHECK(test::eventually(
      [&] {
        auto status =
            test::run_command({test::amlnode_binary().string(), "status", run.id, "--json"},
                              {"AMLNODE_CONTROL_PLANE=" + run.server.url(),
                               "AMLNODE_USER_TOKEN=" + run.server.user_token()});
        shown = status.out;
        auto record = nlohmann::json::parse(status.out, nullptr, false);
        return record.is_object() && record.contains("progress") &&
               record["progress"].get<std::string>().find("total 4 mini-batches") !=
                   std::string::npos;
      },
      30s));
  INFO(shown);
  run.dir.write("go", "");
  bool done = run.terminal();
  INFO(run.agent_errors());
  REQUIRE(done);
  CHECK(run.server.run(run.id)["status"] == "Completed");
  // Each mini-batch ran once, and the output the node uploaded holds every row once, in order.
  std::istringstream started(test::slurp(run.pids));
  int batches = 0;
  for (std::string line; std::getline(started, line);) ++batches;
  CHECK(batches == 4);
  CHECK(run.uploaded_rows() == kAllRows);
  CHECK_THAT(run.server.log(run.id, "logs/job_result.txt"), Catch::StartsWith("Completed\n"));
  ::kill(second, SIGTERM);
  CHECK(test::wait_command(second, 20s) == 0);
}

TEST_CASE("a control plane SIGKILLed under a ParallelRunStep: the run completes, every row once",
          "[daemon][parallel]") {
  HeldParallelRun run;
  pid_t agent = run.start_agent();
  REQUIRE(run.held());
  // The control plane dies while a worker holds a mini-batch; the run finishes meanwhile.
  run.server.kill();
  run.dir.write("go", "");
  REQUIRE(test::eventually(
      [&] {
        std::error_code ec;
        return fs::exists(
            run.dir / "a" / "state" / "runs" / run.id / "wd" / "logs" / "job_result.txt", ec);
      },
      30s));
  run.server.start();
  bool done = run.terminal();
  INFO(run.agent_errors());
  REQUIRE(done);
  CHECK(run.server.run(run.id)["status"] == "Completed");
  CHECK(run.uploaded_rows() == kAllRows);
  ::kill(agent, SIGTERM);
  CHECK(test::wait_command(agent, 20s) == 0);
}
