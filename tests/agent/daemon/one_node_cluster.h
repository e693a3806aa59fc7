#pragma once

// A real control plane and one real agent on loopback, for tests that run jobs end to end and
// look at what each side kept: the run folder on the node, the streams and records on the server.

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tests/agent/daemon/agent_config.h"
#include "tests/agent/daemon/control_plane_process.h"
#include "tests/support/temp_dir.h"

namespace amlnode::test {

class OneNodeCluster {
 public:
  // `server_args` are the control plane's extra flags; `sections` the agent's config;
  // `agent_env` entries ("NAME=value") are added to the agent's environment.
  explicit OneNodeCluster(std::vector<std::string> server_args = {},
                          AgentConfigSections sections = {},
                          std::vector<std::string> agent_env = {});
  ~OneNodeCluster();  // SIGKILLs the agent if it still runs

  // Submits `job_text` with the snapshot of `source` (relative to dir()); returns the run id.
  std::string submit(const std::string& job_text, const std::string& source = "src");
  // Waits until the run is terminal on the control plane; returns its record. Fails the test
  // (with the agent's output) when it is not within `limit`.
  nlohmann::json wait_terminal(const std::string& run_id,
                               std::chrono::seconds limit = std::chrono::seconds(60));
  // The run's folder on the node.
  std::filesystem::path run_dir(const std::string& run_id) const;
  // The agent's stdout and stderr so far.
  std::string agent_output() const;
  // A scrape of the agent's /metrics (its config must keep the default metrics section).
  std::string scrape_metrics();
  // Drains the agent (SIGTERM) and checks it exits 0.
  void stop_agent();

  TempDir& dir() { return dir_; }
  ControlPlaneProcess& server() { return server_; }
  pid_t agent_pid() const { return agent_; }
  std::vector<std::string> user_env() const {
    return {"AMLNODE_CONTROL_PLANE=" + server_.url(), "AMLNODE_USER_TOKEN=" + server_.user_token()};
  }

 private:
  TempDir dir_;
  ControlPlaneProcess server_;
  pid_t agent_ = -1;
};

}  // namespace amlnode::test
