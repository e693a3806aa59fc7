// amlnode submit/status/logs/cancel/nodes/compute status against the real control plane and agent.

#include <signal.h>

#include <catch2/catch.hpp>

#include "tests/agent/daemon/agent_config.h"
#include "tests/agent/daemon/control_plane_process.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

using namespace amlnode;

TEST_CASE("a user submits a job, follows its log and sees the nodes", "[daemon]") {
  test::TempDir dir;
  test::ControlPlaneProcess server(dir / "cp", {"--heartbeat-interval", "1"});
  server.start();
  auto config =
      dir.write("a/config.yml", test::agent_config_text(dir / "a" / "state", server.url(),
                                                        server.registration_token("cpu-cluster")));
  pid_t agent =
      test::start_command({test::amlnode_binary().string(), "agent", "--config", config.string()},
                          dir / "a" / "out", dir / "a" / "err");
  dir.write("src/job.yml", "entry_script: hi.sh\nuser_managed: true\nuse_docker: false\n");
  dir.write("src/hi.sh", "for i in 1 2 3; do echo \"hi $i\"; sleep 0.1; done\n");
  const std::vector<std::string> env{"AMLNODE_CONTROL_PLANE=" + server.url(),
                                     "AMLNODE_USER_TOKEN=" + server.user_token()};
  auto amlnode = test::amlnode_binary().string();

  auto submitted = test::run_command(
      {amlnode, "submit", (dir / "src" / "job.yml").string(), "--compute", "cpu-cluster"}, env);
  INFO(submitted.err);
  REQUIRE(submitted.exit_code == 0);
  std::string id = submitted.out.substr(0, submitted.out.find('\n'));

  auto followed =
      test::run_command({amlnode, "logs", id, "--follow"}, env, std::chrono::seconds(60));
  INFO(followed.err);
  CHECK(followed.exit_code == 0);
  CHECK(followed.out == "hi 1\nhi 2\nhi 3\n");

  auto status = test::run_command({amlnode, "status", id, "--json"}, env);
  CHECK(status.exit_code == 0);
  CHECK(nlohmann::json::parse(status.out)["status"] == "Completed");

  auto nodes = test::run_command({amlnode, "nodes", "--json"}, env);
  CHECK(nodes.exit_code == 0);
  CHECK(nlohmann::json::parse(nodes.out).size() == 1);

  auto compute = test::run_command({amlnode, "compute", "status", "cpu-cluster", "--json"}, env);
  CHECK(compute.exit_code == 0);
  CHECK(nlohmann::json::parse(compute.out)["current_node_count"] == 1);

  auto runs = test::run_command({amlnode, "runs", "--json"}, env);
  CHECK(runs.exit_code == 0);
  auto listed = nlohmann::json::parse(runs.out);
  REQUIRE(listed.size() == 1);
  CHECK(listed[0]["run_id"] == id);
  CHECK(listed[0]["status"] == "Completed");
  auto live = test::run_command({amlnode, "runs", "--live", "--json"}, env);
  CHECK(nlohmann::json::parse(live.out).empty());
  auto table = test::run_command({amlnode, "runs", "--compute", "cpu-cluster"}, env);
  CHECK(table.out.find(id + " ") != std::string::npos);
  auto other = test::run_command({amlnode, "runs", "--compute", "gpu-cluster"}, env);
  CHECK(other.out.find(id) == std::string::npos);

  auto unknown = test::run_command({amlnode, "status", "no-such-run"}, env);
  CHECK(unknown.exit_code == 1);
  CHECK(unknown.err.find("404") != std::string::npos);

  auto no_token = test::run_command({amlnode, "nodes", "--control-plane", server.url()},
                                    {"AMLNODE_USER_TOKEN="});
  CHECK(no_token.exit_code == 2);

  ::kill(agent, SIGTERM);
  CHECK(test::wait_command(agent, std::chrono::seconds(20)) == 0);
}

TEST_CASE("a user makes a registration token and a node registers with it", "[daemon]") {
  test::TempDir dir;
  test::ControlPlaneProcess server(dir / "cp", {"--heartbeat-interval", "1"});
  server.start();
  const std::vector<std::string> env{"AMLNODE_CONTROL_PLANE=" + server.url(),
                                     "AMLNODE_USER_TOKEN=" + server.user_token()};
  auto amlnode = test::amlnode_binary().string();
  auto made = test::run_command({amlnode, "compute", "token", "create", "gpu-cluster"}, env);
  INFO(made.err);
  REQUIRE(made.exit_code == 0);
  std::string token = made.out.substr(0, made.out.find('\n'));
  REQUIRE_FALSE(token.empty());

  // The node gives no compute of its own: the token's compute is the one it joins.
  auto config = dir.write(
      "a/config.yml",
      test::agent_config_text(dir / "a" / "state", server.url(), token,
                              test::AgentConfigSections{}.with_node("  lease_wait_seconds: 2\n")));
  pid_t agent = test::start_command({amlnode, "agent", "--config", config.string()},
                                    dir / "a" / "out", dir / "a" / "err");
  CHECK(test::eventually(
      [&] {
        auto compute =
            test::run_command({amlnode, "compute", "status", "gpu-cluster", "--json"}, env);
        return compute.exit_code == 0 &&
               nlohmann::json::parse(compute.out)["current_node_count"] == 1;
      },
      std::chrono::seconds(30)));
  auto unnamed = test::run_command({amlnode, "compute", "token", "create"}, env);
  CHECK(unnamed.exit_code == 2);
  ::kill(agent, SIGTERM);
  CHECK(test::wait_command(agent, std::chrono::seconds(20)) == 0);
}
