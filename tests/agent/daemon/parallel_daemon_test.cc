// A ParallelRunStep under the real daemon and control plane: its node driver and workers run
// under the run's shim, so an agent SIGKILLed mid-run finds the run again and the output still
// holds every row once.

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

// The rows of the outputs the node uploaded for the run.
std::string uploaded_rows(test::TempDir& dir, test::ControlPlaneProcess& server,
                          const std::string& id) {
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

const char* kAllRows =
    "p-f01.txt\np-f02.txt\np-f03.txt\np-f04.txt\np-f05.txt\np-f06.txt\np-f07.txt\np-f08.txt\n";

}  // namespace

TEST_CASE("an agent SIGKILLed under a ParallelRunStep: the run completes, every row once",
          "[daemon][parallel]") {
  test::TempDir dir;
  test::ControlPlaneProcess server(dir / "cp", {"--heartbeat-interval", "1"});
  server.start();
  fs::create_directories(dir / "src");
  fs::copy_file(kScripts / "file_names.py", dir / "src" / "file_names.py");
  for (int i = 1; i <= 8; ++i) dir.write("src/data/f0" + std::to_string(i) + ".txt", "x");
  auto pids = dir / "pids.txt";
  std::string id = server.submit(
      "script: file_names.py\narguments: [--prefix, p-]\n"
      "environment:\n  python: {user_managed_dependencies: true, interpreter_path: "
      "/usr/bin/python3}\n"
      "inputs:\n  images: {path: data, dataset: file}\n"
      "parallel_run: {mini_batch_size: 2, error_threshold: 0, output_action: append_row, "
      "process_count_per_node: 2}\n"
      "environment_variables: {WAIT_ON: f05.txt, GO: " +
          (dir / "go").string() + ", PIDS: " + pids.string() + "}\n",
      dir / "src", "cpu-cluster");
  auto config = dir.write("a/config.yml",
                          test::agent_config_text(dir.path() / "a" / "state", server.url(),
                                                  server.registration_token("cpu-cluster"), {}))
                    .string();
  std::vector<std::string> argv{test::amlnode_binary().string(), "agent", "--config", config};
  pid_t first = test::start_command(argv, dir / "a" / "out.1", dir / "a" / "err.1");
  // A worker holds the mini-batch of f05 and f06, waiting for `go`.
  REQUIRE(test::eventually(
      [&] {
        std::error_code ec;
        return fs::exists(pids, ec) && test::slurp(pids).find(" f05.txt") != std::string::npos;
      },
      30s));
  ::kill(first, SIGKILL);
  CHECK(test::wait_command(first, 10s) == 128 + SIGKILL);
  pid_t second = test::start_command(argv, dir / "a" / "out.2", dir / "a" / "err.2");
  // While it runs, `amlnode status` shows its progress, from the node's progress log.
  std::string shown;
  CHECK(test::eventually(
      [&] {
        auto status = test::run_command(
            {test::amlnode_binary().string(), "status", id, "--json"},
            {"AMLNODE_CONTROL_PLANE=" + server.url(), "AMLNODE_USER_TOKEN=" + server.user_token()});
        shown = status.out;
        auto record = nlohmann::json::parse(status.out, nullptr, false);
        return record.is_object() && record.contains("progress") &&
               record["progress"].get<std::string>().find("total 4 mini-batches") !=
                   std::string::npos;
      },
      30s));
  INFO(shown);
  dir.write("go", "");
  bool done = test::eventually(
      [&] {
        std::string status = server.run(id)["status"];
        return status == "Completed" || status == "Failed" || status == "Canceled";
      },
      60s);
  INFO(test::slurp(dir / "a" / "err.1") + test::slurp(dir / "a" / "err.2"));
  REQUIRE(done);
  CHECK(server.run(id)["status"] == "Completed");
  // Each mini-batch ran once, and the output the node uploaded holds every row once, in order.
  std::istringstream started(test::slurp(pids));
  int batches = 0;
  for (std::string line; std::getline(started, line);) ++batches;
  CHECK(batches == 4);
  dir.write("outputs.tar.gz", server.outputs(id));
  fs::create_directories(dir / "out");
  auto untar = test::run_command(
      {"tar", "-xzf", (dir / "outputs.tar.gz").string(), "-C", (dir / "out").string()});
  REQUIRE(untar.exit_code == 0);
  std::string rows;
  for (const auto& entry : fs::recursive_directory_iterator(dir / "out"))
    if (entry.path().filename() == "parallel_run_step.txt") rows = test::slurp(entry.path());
  CHECK(rows ==
        "p-f01.txt\np-f02.txt\np-f03.txt\np-f04.txt\np-f05.txt\np-f06.txt\np-f07.txt\n"
        "p-f08.txt\n");
  CHECK_THAT(server.log(id, "logs/job_result.txt"), Catch::StartsWith("Completed\n"));
  ::kill(second, SIGTERM);
  CHECK(test::wait_command(second, 20s) == 0);
}

TEST_CASE("a control plane SIGKILLed under a ParallelRunStep: the run completes, every row once",
          "[daemon][parallel]") {
  test::TempDir dir;
  test::ControlPlaneProcess server(dir / "cp", {"--heartbeat-interval", "1"});
  server.start();
  fs::create_directories(dir / "src");
  fs::copy_file(kScripts / "file_names.py", dir / "src" / "file_names.py");
  for (int i = 1; i <= 8; ++i) dir.write("src/data/f0" + std::to_string(i) + ".txt", "x");
  auto pids = dir / "pids.txt";
  std::string id = server.submit(
      "script: file_names.py\narguments: [--prefix, p-]\n"
      "environment:\n  python: {user_managed_dependencies: true, interpreter_path: "
      "/usr/bin/python3}\n"
      "inputs:\n  images: {path: data, dataset: file}\n"
      "parallel_run: {mini_batch_size: 2, error_threshold: 0, output_action: append_row, "
      "process_count_per_node: 2}\n"
      "environment_variables: {WAIT_ON: f05.txt, GO: " +
          (dir / "go").string() + ", PIDS: " + pids.string() + "}\n",
      dir / "src", "cpu-cluster");
  auto config = dir.write("a/config.yml",
                          test::agent_config_text(dir.path() / "a" / "state", server.url(),
                                                  server.registration_token("cpu-cluster"), {}))
                    .string();
  pid_t agent = test::start_command({test::amlnode_binary().string(), "agent", "--config", config},
                                    dir / "a" / "out", dir / "a" / "err");
  REQUIRE(test::eventually(
      [&] {
        std::error_code ec;
        return fs::exists(pids, ec) && test::slurp(pids).find(" f05.txt") != std::string::npos;
      },
      30s));
  // The control plane dies while a worker holds a mini-batch; the run finishes meanwhile.
  server.kill();
  dir.write("go", "");
  REQUIRE(test::eventually(
      [&] {
        std::error_code ec;
        auto result = dir / "a" / "state" / "runs" / id / "wd" / "logs" / "job_result.txt";
        return fs::exists(result, ec);
      },
      30s));
  server.start();
  bool done = test::eventually(
      [&] {
        auto run = server.try_run(id);
        if (!run) return false;
        std::string status = (*run)["status"];
        return status == "Completed" || status == "Failed" || status == "Canceled";
      },
      60s);
  INFO(test::slurp(dir / "a" / "err"));
  REQUIRE(done);
  CHECK(server.run(id)["status"] == "Completed");
  CHECK(uploaded_rows(dir, server, id) == kAllRows);
  ::kill(agent, SIGTERM);
  CHECK(test::wait_command(agent, 20s) == 0);
}
