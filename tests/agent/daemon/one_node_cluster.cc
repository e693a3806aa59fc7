#include "tests/agent/daemon/one_node_cluster.h"

#include <signal.h>

#include <catch2/catch.hpp>

#include "tests/support/process.h"

namespace amlnode::test {

namespace {

bool terminal(const nlohmann::json& status) {
  return status == "Completed" || status == "Failed" || status == "Canceled";
}

}  // namespace

OneNodeCluster::OneNodeCluster(std::vector<std::string> server_args, AgentConfigSections sections,
                               std::vector<std::string> agent_env)
    : server_(dir_ / "cp", [&] {
        server_args.insert(server_args.begin(), {"--heartbeat-interval", "1"});
        return server_args;
      }()) {
  server_.start();
  auto config = dir_.write("node/config.yml",
                           agent_config_text(dir_ / "node" / "state", server_.url(),
                                             server_.registration_token("cpu-cluster"), sections));
  agent_ = start_command({amlnode_binary().string(), "agent", "--config", config.string()},
                         dir_ / "node" / "out", dir_ / "node" / "err", agent_env);
}

OneNodeCluster::~OneNodeCluster() {
  if (agent_ > 0) {
    ::kill(agent_, SIGKILL);
    wait_command(agent_, std::chrono::seconds(20));
  }
}

std::string OneNodeCluster::submit(const std::string& job_text, const std::string& source) {
  return server_.submit(job_text, dir_ / source, "cpu-cluster");
}

nlohmann::json OneNodeCluster::wait_terminal(const std::string& run_id,
                                             std::chrono::seconds limit) {
  bool done = eventually([&] { return terminal(server_.run(run_id)["status"]); }, limit);
  INFO(agent_output());
  REQUIRE(done);
  return server_.run(run_id);
}

std::filesystem::path OneNodeCluster::run_dir(const std::string& run_id) const {
  return dir_.path() / "node" / "state" / "runs" / run_id;
}

std::string OneNodeCluster::agent_output() const {
  return slurp(dir_.path() / "node" / "out") + slurp(dir_.path() / "node" / "err");
}

std::string OneNodeCluster::scrape_metrics() {
  const std::string prefix = "metrics: serving http://127.0.0.1:";
  std::string port;
  bool serving = eventually(
      [&] {
        auto output = agent_output();
        auto at = output.find(prefix);
        if (at == std::string::npos) return false;
        port = output.substr(at + prefix.size(),
                             output.find('/', at + prefix.size()) - at - prefix.size());
        return true;
      },
      std::chrono::seconds(30));
  REQUIRE(serving);
  auto http = agent::make_http_client(*agent::parse_http_url("http://127.0.0.1:" + port));
  agent::HttpRequest request;
  request.target = "/metrics";
  auto answer = http->send(request);
  REQUIRE(answer.ok());
  return answer->body;
}

void OneNodeCluster::stop_agent() {
  ::kill(agent_, SIGTERM);
  CHECK(wait_command(agent_, std::chrono::seconds(30)) == 0);
  agent_ = -1;
}

}  // namespace amlnode::test
