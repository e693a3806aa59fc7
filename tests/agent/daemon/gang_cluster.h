#pragma once

// Several real agents of one compute against a real control plane, for the tests of runs across
// nodes: each agent its own state dir and loopback address (127.0.0.2 and on).

#include <signal.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "tests/agent/daemon/agent_config.h"
#include "tests/agent/daemon/control_plane_process.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

namespace amlnode::test {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using nlohmann::json;

inline const char* kEnvironment =
    "environment:\n  python: {user_managed_dependencies: true, interpreter_path: "
    "/usr/bin/python3}\n";

// A control plane and `count` agents of compute cpu-cluster, agent k at 127.0.0.(k + 2).
struct GangCluster {
  // Where submit() takes the job's scripts from.
  fs::path scripts = fs::path(AMLNODE_SOURCE_DIR) / "tests" / "agent" / "distributed";
  TempDir dir;
  ControlPlaneProcess server;
  std::vector<pid_t> agents;
  std::vector<fs::path> configs;
  int starts = 0;

  // `extra`: more of each agent's config (a docker: section).
  explicit GangCluster(int count,
                       std::vector<std::string> server_args = {"--heartbeat-interval", "1"},
                       const std::string& extra = "")
      : server(dir / "cp", std::move(server_args)) {
    server.start();
    for (int k = 0; k < count; ++k) {
      std::string name = "n" + std::to_string(k);
      AgentConfigSections sections;
      sections.node =
          "  labels: {compute_name: cpu-cluster}\n  lease_wait_seconds: 2\n"
          "  address: " +
          address(k) + "\n";
      sections.extra = extra;
      auto config =
          dir.write(name + "/config.yml",
                    agent_config_text(dir / name / "state", server.url(),
                                      server.registration_token("cpu-cluster"), sections));
      configs.push_back(config);
      agents.push_back(-1);
      start_agent(k);
    }
  }
  void start_agent(int k) {
    auto name = "n" + std::to_string(k);
    ++starts;
    agents[k] = start_command({amlnode_binary().string(), "agent", "--config", configs[k].string()},
                              dir / name / ("out." + std::to_string(starts)),
                              dir / name / ("err." + std::to_string(starts)));
  }
  ~GangCluster() {
    for (pid_t agent : agents) {
      if (agent <= 0) continue;
      ::kill(agent, SIGTERM);
      if (wait_command(agent, 20s) < 0) ::kill(agent, SIGKILL);
    }
  }
  static std::string address(int k) { return "127.0.0." + std::to_string(k + 2); }
  std::string output() {
    std::string out;
    for (std::size_t k = 0; k < agents.size(); ++k) out += output_of(static_cast<int>(k));
    return out;
  }
  std::string output_of(int k) {
    std::string out;
    for (int i = 1; i <= starts; ++i) {
      for (const char* kind : {"out.", "err."}) {
        std::error_code ec;
        auto file = dir / ("n" + std::to_string(k)) / (kind + std::to_string(i));
        if (fs::exists(file, ec)) out += slurp(file);
      }
    }
    return out;
  }
  std::vector<std::string> user_env() const {
    return {"AMLNODE_CONTROL_PLANE=" + server.url(), "AMLNODE_USER_TOKEN=" + server.user_token()};
  }
  // Submits src/job.yml with the real client, which sends the job's node_count.
  std::string submit(const std::string& script, const std::string& job) {
    return submit(script, job, {});
  }
  std::string submit(const std::string& script, const std::string& job,
                     const std::vector<std::string>& more_scripts) {
    fs::create_directories(dir / "src");
    for (const auto& more : more_scripts)
      fs::copy_file(scripts / more, dir / "src" / more, fs::copy_options::overwrite_existing);
    fs::create_directories(dir / "src");
    fs::copy_file(scripts / script, dir / "src" / script, fs::copy_options::overwrite_existing);
    auto file = dir.write("src/job.yml", "script: " + script + "\n" + kEnvironment + job);
    auto submitted = run_command(
        {amlnode_binary().string(), "submit", file.string(), "--compute", "cpu-cluster"},
        user_env());
    INFO(submitted.out << submitted.err);
    REQUIRE(submitted.exit_code == 0);
    return submitted.out.substr(0, submitted.out.find_last_not_of("\n") + 1);
  }
  json wait_terminal(const std::string& id, std::chrono::seconds limit = 120s) {
    json record;
    eventually(
        [&] {
          auto run = server.try_run(id);
          if (!run) return false;
          record = *run;
          std::string status = record["status"];
          return status == "Completed" || status == "Failed" || status == "Canceled";
        },
        limit);
    INFO("last failed call: " << server.last_error());
    return record;
  }
  std::string log(const std::string& id, const std::string& stream) {
    return server.log(id, stream);
  }
  // Submits ranks_wait_file.py over 2 nodes x `per_node` processes (each rank records its start
  // in starts.txt, then waits for the file `go`), and waits until every rank has started.
  std::string submit_waiting(int per_node) {
    std::string id = submit(
        "ranks_wait_file.py",
        "distributed_job_config: {type: pytorch, communication_backend: gloo, process_count: " +
            std::to_string(2 * per_node) + ", node_count: 2}\nenvironment_variables: {GO: " +
            (dir / "go").string() + ", STARTS: " + starts_file().string() + "}\n");
    REQUIRE(eventually([&] { return started_ranks() == 2 * per_node; }, 60s));
    return id;
  }
  fs::path starts_file() const { return dir.path() / "starts.txt"; }
  int started_ranks() const {
    std::error_code ec;
    if (!fs::exists(starts_file(), ec)) return 0;
    auto text = slurp(starts_file());
    return static_cast<int>(std::count(text.begin(), text.end(), '\n'));
  }
  // Waits until `count` ranks have written "RANK PID" lines to `file` (ranks_pid_wait.py).
  std::map<int, pid_t> rank_pids(const fs::path& file, std::size_t count) {
    std::map<int, pid_t> pids;
    REQUIRE(eventually(
        [&] {
          std::error_code ec;
          if (!fs::exists(file, ec)) return false;
          std::istringstream lines(slurp(file));
          int rank = 0;
          pid_t pid = 0;
          while (lines >> rank >> pid) pids[rank] = pid;
          return pids.size() == count;
        },
        60s));
    return pids;
  }
  // Whether every one of the ranks is gone, within the grace the tests allow.
  static bool all_gone(const std::map<int, pid_t>& pids) {
    return eventually(
        [&] {
          for (const auto& [rank, pid] : pids)
            if (::kill(pid, 0) == 0) return false;
          return true;
        },
        30s);
  }
  // Which agent is `node_id`: agent k registered with 127.0.0.(k + 2) as its first address.
  int agent_of(const std::string& node_id) {
    auto [status, nodes] = server.user_call("GET", "/v1/nodes", nullptr);
    REQUIRE(status == 200);
    for (const auto& node : nodes) {
      if (node["nodeId"] == node_id)
        return node["privateIpAddress"].get<std::string>().back() - '2';
    }
    return -1;
  }
};

}  // namespace amlnode::test
