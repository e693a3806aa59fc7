// `amlnode agent` as a real process against the real control plane: registration, identity
// reuse across SIGKILL, registering once the control plane comes up, draining on SIGTERM.

#include <signal.h>

#include <catch2/catch.hpp>

#include "agent/daemon/control_plane_client.h"
#include "agent/daemon/state_store.h"
#include "tests/agent/daemon/agent_config.h"
#include "tests/agent/daemon/control_plane_process.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

using namespace amlnode;

namespace {

// One agent: its config, state dir and process.
class AgentProcess {
 public:
  AgentProcess(const test::TempDir& dir, const std::string& name, const std::string& url,
               const std::string& token)
      : dir_(dir.path() / name) {
    config_ = dir.write(
        name + "/config.yml",
        test::agent_config_text(
            dir_ / "state", url, token,
            test::AgentConfigSections().with_node("  labels: {compute_name: cpu-cluster, vm_size: "
                                                  "STANDARD_D2_V2, vm_priority: dedicated}\n")));
  }
  ~AgentProcess() {
    if (pid_ > 0) kill(SIGKILL);
  }

  void start() {
    pid_ = test::start_command(
        {test::amlnode_binary().string(), "agent", "--config", config_.string()},
        dir_ / ("out." + std::to_string(starts_)), dir_ / ("err." + std::to_string(starts_)));
    ++starts_;
  }
  // Sends `signal` and waits for the exit; returns the exit code.
  int kill(int signal) {
    ::kill(pid_, signal);
    int code = test::wait_command(pid_, std::chrono::seconds(20));
    pid_ = -1;
    return code;
  }
  // What the last start logged (stdout and stderr).
  std::string log() const {
    std::string n = std::to_string(starts_ - 1);
    return test::slurp(dir_ / ("out." + n)) + test::slurp(dir_ / ("err." + n));
  }

 private:
  std::filesystem::path dir_;
  std::filesystem::path config_;
  pid_t pid_ = -1;
  int starts_ = 0;
};

nlohmann::json nodes(test::ControlPlaneProcess& server) {
  auto [status, body] = server.user_call("GET", "/v1/nodes");
  REQUIRE(status == 200);
  return body;
}

bool one_node_in_state(test::ControlPlaneProcess& server, const std::string& state) {
  auto listed = nodes(server);
  return listed.size() == 1 && listed[0]["nodeState"] == state;
}

}  // namespace

TEST_CASE("an agent registers once and keeps its identity across SIGKILL", "[daemon]") {
  test::TempDir dir;
  test::ControlPlaneProcess server(dir / "cp", {"--heartbeat-interval", "1"});
  server.start();
  AgentProcess agent(dir, "a", server.url(), server.registration_token("cpu-cluster"));
  agent.start();
  REQUIRE(test::eventually([&] { return one_node_in_state(server, "idle"); },
                           std::chrono::seconds(15)));
  std::string node_id = nodes(server)[0]["nodeId"];
  // The server lists the node as soon as it answers the registration, a moment before the agent
  // has stored the identity; "registered as node" is logged only once it is stored.
  REQUIRE(test::eventually(
      [&] { return agent.log().find("registered as node " + node_id) != std::string::npos; },
      std::chrono::seconds(15)));

  agent.kill(SIGKILL);
  // The registration token is spent, so only the stored identity lets it back in.
  agent.start();
  bool loaded =
      test::eventually([&] { return agent.log().find("identity loaded") != std::string::npos; },
                       std::chrono::seconds(15));
  INFO("the restarted agent logged:\n" << agent.log());
  REQUIRE(loaded);
  CHECK(nodes(server).size() == 1);
  CHECK(nodes(server)[0]["nodeId"] == node_id);

  SECTION("SIGTERM drains: the node reports leaving and the agent exits 0") {
    CHECK(agent.kill(SIGTERM) == 0);
    CHECK(one_node_in_state(server, "leaving"));
  }
}

TEST_CASE("an agent killed between the registration answer and storing it registers again",
          "[daemon]") {
  test::TempDir dir;
  test::ControlPlaneProcess server(dir / "cp", {"--heartbeat-interval", "1"});
  server.start();
  std::string token = server.registration_token("cpu-cluster");
  // What a killed agent leaves: its registration key stored, the token spent by a registration
  // made with that key, and no identity.
  std::string node_id;
  {
    auto store = agent::open_sqlite_state_store(dir / "a" / "state");
    REQUIRE(store.ok());
    auto key = (*store)->registration_key();
    REQUIRE(key.ok());
    auto client = agent::make_http_control_plane_client(
        agent::make_http_client(*agent::parse_http_url(server.url())));
    agent::NodeFacts facts;
    facts.hostname = "node-a";
    facts.labels = {{"compute_name", "cpu-cluster"}};
    auto registered = client->register_node(token, facts, *key);
    REQUIRE(registered.ok());
    node_id = registered->identity.node_id;
  }
  AgentProcess agent(dir, "a", server.url(), token);
  agent.start();
  bool registered = test::eventually(
      [&] { return agent.log().find("registered as node " + node_id) != std::string::npos; },
      std::chrono::seconds(15));
  INFO(agent.log());
  REQUIRE(registered);
  REQUIRE(test::eventually([&] { return one_node_in_state(server, "idle"); },
                           std::chrono::seconds(15)));
  CHECK(nodes(server)[0]["nodeId"] == node_id);
  CHECK(agent.kill(SIGTERM) == 0);
}

TEST_CASE("an agent started before its control plane registers once it is up", "[daemon]") {
  test::TempDir dir;
  test::ControlPlaneProcess server(dir / "cp", {"--heartbeat-interval", "1"});
  server.start();
  std::string token = server.registration_token("cpu-cluster");
  server.stop();
  AgentProcess agent(dir, "a", server.url(), token);
  agent.start();
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  server.start();
  REQUIRE(test::eventually([&] { return one_node_in_state(server, "idle"); },
                           std::chrono::seconds(15)));
}

TEST_CASE("an agent whose registration is refused exits 1 and says why", "[daemon]") {
  test::TempDir dir;
  test::ControlPlaneProcess server(dir / "cp");
  server.start();
  AgentProcess agent(dir, "a", server.url(), "not-a-token");
  agent.start();
  REQUIRE(
      test::eventually([&] { return agent.log().find("registration failed") != std::string::npos; },
                       std::chrono::seconds(15)));
  CHECK(agent.kill(0) == 1);
}

TEST_CASE("a node short of disk reports unusable with the reason and takes no runs", "[daemon]") {
  test::TempDir dir;
  test::ControlPlaneProcess server(dir / "cp", {"--heartbeat-interval", "1"});
  server.start();
  std::string token = server.registration_token("cpu-cluster");
  auto config = dir.write("a/config.yml",
                          test::agent_config_text(dir / "a" / "state", server.url(), token,
                                                  test::AgentConfigSections().with_node(
                                                      "  labels: {compute_name: cpu-cluster}\n"
                                                      "  min_free_bytes: 1000000000000000000\n")));
  pid_t agent =
      test::start_command({test::amlnode_binary().string(), "agent", "--config", config.string()},
                          dir / "a" / "out", dir / "a" / "err");
  REQUIRE(test::eventually([&] { return one_node_in_state(server, "unusable"); },
                           std::chrono::seconds(15)));
  ::kill(agent, SIGTERM);
  CHECK(test::wait_command(agent, std::chrono::seconds(20)) == 0);
}
