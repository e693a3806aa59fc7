// Leased runs end to end: the real control plane, a real `amlnode agent`, real shims.

#include <signal.h>

#include <catch2/catch.hpp>
#include <set>

#include "executors/archive.h"
#include "tests/agent/daemon/control_plane_process.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

using namespace amlnode;

namespace {

std::string agent_config(const test::TempDir& dir, const std::string& name, const std::string& url,
                         const std::string& token, int concurrency) {
  return dir
      .write(name + "/config.yml",
             "state_dir: " + (dir.path() / name / "state").string() +
                 "\ncontrol_plane:\n  url: " + url + "\n  registration_token: " + token +
                 "\nnode:\n  labels: {compute_name: cpu-cluster}\n" +
                 "  lease_wait_seconds: 2\n  run_concurrency: " + std::to_string(concurrency) +
                 "\n")
      .string();
}

bool is_terminal(const std::string& status) {
  return status == "Completed" || status == "Failed" || status == "Canceled";
}

}  // namespace

TEST_CASE("leased runs are prepared from their snapshot, run, and reported to the end",
          "[daemon]") {
  test::TempDir dir;
  test::ControlPlaneProcess server(dir / "cp", {"--heartbeat-interval", "1"});
  server.start();
  dir.write("src/hello.sh",
            "echo \"hello from $AZUREML_RUN_ID\"\nseq 1 700000\necho done > outputs/result.txt\n"
            "echo metrics > logs/metrics.txt\n");
  dir.write("src/fail.sh", "echo failing >&2\nexit 3\n");
  const std::string hello = "entry_script: hello.sh\nuser_managed: true\nuse_docker: false\n";
  const std::string fail = "entry_script: fail.sh\nuser_managed: true\nuse_docker: false\n";
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) ids.push_back(server.submit(hello, dir / "src", "cpu-cluster"));
  std::string failing = server.submit(fail, dir / "src", "cpu-cluster");

  auto config = agent_config(dir, "a", server.url(), server.registration_token("cpu-cluster"), 2);
  pid_t agent = test::start_command({test::amlnode_binary().string(), "agent", "--config", config},
                                    dir / "a" / "out", dir / "a" / "err");
  auto all_done = [&] {
    for (const auto& id : ids) {
      if (!is_terminal(server.run(id)["status"])) return false;
    }
    return is_terminal(server.run(failing)["status"]);
  };
  bool done = test::eventually(all_done, std::chrono::seconds(60));
  INFO(test::slurp(dir / "a" / "out") + test::slurp(dir / "a" / "err"));
  REQUIRE(done);
  for (const auto& id : ids) {
    auto record = server.run(id);
    INFO(record.dump());
    CHECK(record["status"] == "Completed");
    auto run_dir = dir / "a" / "state" / "runs" / id;
    std::string std_log = test::slurp(run_dir / "user_logs" / "std_log.txt");
    CHECK(std_log.rfind("hello from " + id + "\n1\n2\n", 0) == 0);
    CHECK(std_log.size() > (4u << 20));  // more than one chunk
    // Completed is reported only once the control plane has every byte of every stream.
    CHECK(server.log(id, "user_logs/std_log.txt") == std_log);
    CHECK(server.log(id, "logs/metrics.txt") == "metrics\n");
    CHECK(server.log(id, "system_logs/lifecycle.txt") ==
          test::slurp(run_dir / "system_logs" / "lifecycle.txt"));
    CHECK(test::slurp(run_dir / "wd" / "outputs" / "result.txt") == "done\n");
    auto extracted =
        executors::extract_snapshot_from_memory(server.outputs(id), dir / "outputs" / id);
    REQUIRE(extracted.ok());
    CHECK(test::slurp(dir / "outputs" / id / "result.txt") == "done\n");
  }
  auto failed = server.run(failing);
  INFO(failed.dump());
  CHECK(failed["status"] == "Failed");
  CHECK(failed["exit_code"] == 3);
  CHECK(failed["error"]["code"] == "UserError");

  // Drained with nothing held, the agent leaves at once.
  ::kill(agent, SIGTERM);
  CHECK(test::wait_command(agent, std::chrono::seconds(20)) == 0);
}

TEST_CASE("a job that cannot be loaded fails at the control plane instead of hanging", "[daemon]") {
  test::TempDir dir;
  test::ControlPlaneProcess server(dir / "cp", {"--heartbeat-interval", "1"});
  server.start();
  dir.write("src/x.sh", "true\n");
  std::string id =
      server.submit("entry_script: missing.sh\nuser_managed: true\nuse_docker: false\n",
                    dir / "src", "cpu-cluster");
  auto config = agent_config(dir, "a", server.url(), server.registration_token("cpu-cluster"), 1);
  pid_t agent = test::start_command({test::amlnode_binary().string(), "agent", "--config", config},
                                    dir / "a" / "out", dir / "a" / "err");
  bool done = test::eventually([&] { return is_terminal(server.run(id)["status"]); },
                               std::chrono::seconds(30));
  INFO(test::slurp(dir / "a" / "out") + test::slurp(dir / "a" / "err"));
  REQUIRE(done);
  CHECK(server.run(id)["status"] == "Failed");
  ::kill(agent, SIGTERM);
  CHECK(test::wait_command(agent, std::chrono::seconds(20)) == 0);
}

TEST_CASE("SIGKILLed agents and a restarted control plane lose and double nothing", "[daemon]") {
  test::TempDir dir;
  test::ControlPlaneProcess server(dir / "cp",
                                   {"--heartbeat-interval", "1", "--heartbeat-timeout", "60"});
  server.start();
  dir.write(
      "src/count.sh",
      "for i in $(seq 1 60); do echo \"line $i\"; sleep 0.05; done\necho ok > outputs/done\n");
  std::string id = server.submit("entry_script: count.sh\nuser_managed: true\nuse_docker: false\n",
                                 dir / "src", "cpu-cluster");
  auto config = agent_config(dir, "a", server.url(), server.registration_token("cpu-cluster"), 1);
  int starts = 0;
  auto start_agent = [&] {
    ++starts;
    return test::start_command({test::amlnode_binary().string(), "agent", "--config", config},
                               dir / "a" / ("out." + std::to_string(starts)),
                               dir / "a" / ("err." + std::to_string(starts)));
  };
  pid_t agent = start_agent();
  REQUIRE(test::eventually([&] { return server.run(id)["status"] == "Running"; },
                           std::chrono::seconds(20)));
  for (int round = 0; round < 4; ++round) {
    std::this_thread::sleep_for(std::chrono::milliseconds(400));
    ::kill(agent, SIGKILL);
    test::wait_command(agent, std::chrono::seconds(10));
    if (round == 1) {
      server.kill();
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
      server.start();
    }
    agent = start_agent();
  }
  bool done = test::eventually([&] { return is_terminal(server.run(id)["status"]); },
                               std::chrono::seconds(60));
  std::string logs;
  for (int i = 1; i <= starts; ++i) logs += test::slurp(dir / "a" / ("out." + std::to_string(i)));
  INFO(logs);
  REQUIRE(done);
  CHECK(server.run(id)["status"] == "Completed");
  // The run outlived at least one agent: a later one found its shim again.
  CHECK(logs.find("resuming it") != std::string::npos);
  std::string expected;
  for (int i = 1; i <= 60; ++i) expected += "line " + std::to_string(i) + "\n";
  CHECK(test::slurp(dir / "a" / "state" / "runs" / id / "user_logs" / "std_log.txt") == expected);
  CHECK(server.log(id, "user_logs/std_log.txt") == expected);
  REQUIRE(executors::extract_snapshot_from_memory(server.outputs(id), dir / "outputs").ok());
  CHECK(test::slurp(dir / "outputs" / "done") == "ok\n");
  ::kill(agent, SIGTERM);
  CHECK(test::wait_command(agent, std::chrono::seconds(20)) == 0);
}

TEST_CASE("a run canceled at the control plane is stopped on its node and ends Canceled",
          "[daemon]") {
  test::TempDir dir;
  test::ControlPlaneProcess server(dir / "cp", {"--heartbeat-interval", "1"});
  server.start();
  dir.write("src/long.sh", "echo started\nsleep 60\n");
  std::string id = server.submit("entry_script: long.sh\nuser_managed: true\nuse_docker: false\n",
                                 dir / "src", "cpu-cluster");
  auto config = agent_config(dir, "a", server.url(), server.registration_token("cpu-cluster"), 1);
  pid_t agent = test::start_command({test::amlnode_binary().string(), "agent", "--config", config},
                                    dir / "a" / "out", dir / "a" / "err");
  REQUIRE(test::eventually([&] { return server.run(id)["status"] == "Running"; },
                           std::chrono::seconds(20)));
  auto [code, answer] =
      server.user_call("POST", "/v1/runs/" + id + "/cancel", nlohmann::json::object());
  REQUIRE(code == 200);
  bool done = test::eventually([&] { return is_terminal(server.run(id)["status"]); },
                               std::chrono::seconds(30));
  INFO(test::slurp(dir / "a" / "out"));
  REQUIRE(done);
  CHECK(server.run(id)["status"] == "Canceled");
  CHECK(test::processes_with_marker((dir / "a" / "state").string()).empty());
  ::kill(agent, SIGTERM);
  CHECK(test::wait_command(agent, std::chrono::seconds(20)) == 0);
}

TEST_CASE("a run reassigned away from a cut-off node is stopped there when it returns",
          "[daemon]") {
  test::TempDir dir;
  test::ControlPlaneProcess server(dir / "cp",
                                   {"--heartbeat-interval", "1", "--heartbeat-timeout", "2"});
  server.start();
  dir.write("src/job.sh", "echo \"start $AZUREML_RUN_ID\"\nsleep 4\necho end\n");
  std::string id = server.submit("entry_script: job.sh\nuser_managed: true\nuse_docker: false\n",
                                 dir / "src", "cpu-cluster");
  auto config_a = agent_config(dir, "a", server.url(), server.registration_token("cpu-cluster"), 1);
  pid_t a = test::start_command({test::amlnode_binary().string(), "agent", "--config", config_a},
                                dir / "a" / "out", dir / "a" / "err");
  REQUIRE(test::eventually([&] { return server.run(id)["status"] == "Running"; },
                           std::chrono::seconds(20)));
  // Cut off: the agent freezes, its shim runs on, the control plane loses the node and requeues.
  ::kill(a, SIGSTOP);
  auto config_b = agent_config(dir, "b", server.url(), server.registration_token("cpu-cluster"), 1);
  pid_t b = test::start_command({test::amlnode_binary().string(), "agent", "--config", config_b},
                                dir / "b" / "out", dir / "b" / "err");
  REQUIRE(test::eventually([&] { return server.run(id)["epoch"] == 2; }, std::chrono::seconds(20)));
  ::kill(a, SIGCONT);
  // Back, node a is told its lease is stale and stops its copy of the run; b finishes it.
  bool stopped_on_a = test::eventually(
      [&] { return test::processes_with_marker((dir / "a" / "state").string()).empty(); },
      std::chrono::seconds(15));
  INFO(test::slurp(dir / "a" / "out"));
  CHECK(stopped_on_a);
  CHECK(test::slurp(dir / "a" / "out").find("stopping it here") != std::string::npos);
  bool done = test::eventually([&] { return is_terminal(server.run(id)["status"]); },
                               std::chrono::seconds(30));
  INFO(test::slurp(dir / "b" / "out"));
  REQUIRE(done);
  auto record = server.run(id);
  CHECK(record["status"] == "Completed");
  CHECK(record["epoch"] == 2);
  for (pid_t agent : {a, b}) {
    ::kill(agent, SIGTERM);
    CHECK(test::wait_command(agent, std::chrono::seconds(20)) == 0);
  }
}

TEST_CASE("three agents run many jobs; every log at the control plane equals the node's file",
          "[daemon]") {
  test::TempDir dir;
  test::ControlPlaneProcess server(dir / "cp", {"--heartbeat-interval", "1"});
  server.start();
  dir.write("src/job.sh",
            "echo \"run $AZUREML_RUN_ID\"\nseq 1 $((RANDOM % 20000))\necho err >&2\n");
  std::vector<std::string> ids;
  for (int i = 0; i < 24; ++i) {
    ids.push_back(server.submit("entry_script: job.sh\nuser_managed: true\nuse_docker: false\n",
                                dir / "src", "cpu-cluster"));
  }
  std::vector<pid_t> agents;
  const std::vector<std::string> names{"a", "b", "c"};
  for (const auto& name : names) {
    auto config =
        agent_config(dir, name, server.url(), server.registration_token("cpu-cluster"), 2);
    agents.push_back(
        test::start_command({test::amlnode_binary().string(), "agent", "--config", config},
                            dir / name / "out", dir / name / "err"));
  }
  bool done = test::eventually(
      [&] {
        for (const auto& id : ids) {
          if (!is_terminal(server.run(id)["status"])) return false;
        }
        return true;
      },
      std::chrono::seconds(90));
  REQUIRE(done);
  std::set<std::string> nodes_used;
  for (const auto& id : ids) {
    auto record = server.run(id);
    CHECK(record["status"] == "Completed");
    nodes_used.insert(record["node_id"].get<std::string>());
    int holders = 0;
    for (const auto& name : names) {
      auto file = dir / name / "state" / "runs" / id / "user_logs" / "std_log.txt";
      if (!std::filesystem::exists(file)) continue;
      ++holders;
      CHECK(server.log(id, "user_logs/std_log.txt") == test::slurp(file));
    }
    CHECK(holders == 1);
  }
  CHECK(nodes_used.size() >= 2);
  for (pid_t agent : agents) {
    ::kill(agent, SIGTERM);
    CHECK(test::wait_command(agent, std::chrono::seconds(20)) == 0);
  }
}
