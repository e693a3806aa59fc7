// AmlCompute clusters under a real control plane with real agents (docs/compute.md): queued work
// makes the control plane ask its scale hook for nodes, and the hook (tests/agent/daemon/scale/
// start_agents.py, playing the cloud) starts real agents that join and run it; idle nodes past
// idle_seconds_before_scaledown are told to leave, drain, are removed and their agents exit 0;
// an ephemeral agent takes one run and leaves the same way.

#include <signal.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "tests/agent/daemon/one_node_cluster.h"
#include "tests/support/process.h"

using namespace amlnode;
using namespace std::chrono_literals;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const fs::path kHook =
    fs::path(AMLNODE_SOURCE_DIR) / "tests" / "agent" / "daemon" / "scale" / "start_agents.py";

std::vector<json> hook_calls(const fs::path& folder) {
  std::vector<json> calls;
  std::error_code ec;
  if (!fs::exists(folder / "calls.jsonl", ec)) return calls;
  std::istringstream lines(test::slurp(folder / "calls.jsonl"));
  for (std::string line; std::getline(lines, line);) calls.push_back(json::parse(line));
  return calls;
}

// The pids of the agents the hook started.
std::vector<pid_t> hook_agents(const fs::path& folder) {
  std::vector<pid_t> pids;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(folder, ec)) {
    if (!entry.path().filename().string().starts_with("agent-")) continue;
    if (fs::exists(entry.path() / "pid", ec))
      pids.push_back(std::stoi(test::slurp(entry.path() / "pid")));
  }
  return pids;
}

bool alive(pid_t pid) {
  return ::kill(pid, 0) == 0 && !test::slurp("/proc/" + std::to_string(pid) + "/stat").empty() &&
         test::slurp("/proc/" + std::to_string(pid) + "/stat").find(") Z") == std::string::npos;
}

}  // namespace

TEST_CASE("a cluster grows through its scale hook and shrinks as idle agents leave and exit 0",
          "[daemon][scaling]") {
  test::TempDir dir;
  test::TempDir hook_folder;
  test::ControlPlaneProcess server(
      dir / "cp", {"--heartbeat-interval", "1", "--scale-hook",
                   "python3 " + kHook.string() + " " + hook_folder.path().string()});
  server.start();
  hook_folder.write("settings.json", json{{"url", server.url()},
                                          {"user_token", server.user_token()},
                                          {"amlnode", test::amlnode_binary().string()}}
                                         .dump());
  std::vector<std::string> env = {"AMLNODE_CONTROL_PLANE=" + server.url(),
                                  "AMLNODE_USER_TOKEN=" + server.user_token()};
  auto created = test::run_command(
      {test::amlnode_binary().string(), "compute", "create", "burst", "--vm-size", "STANDARD_D2_V2",
       "--max-nodes", "2", "--idle-seconds-before-scaledown", "2", "--json"},
      env);
  INFO(created.out << created.err);
  REQUIRE(created.exit_code == 0);
  auto record = json::parse(created.out);
  CHECK(record["settings"]["min_nodes"] == 0);
  CHECK(record["settings"]["vm_priority"] == "dedicated");

  // Two runs queued on an empty cluster: the hook is asked for two nodes and starts two agents.
  dir.write("src/hello.py", "print('hello from a new node')\n");
  std::string first = server.submit("script: hello.py\n", dir / "src", "burst");
  std::string second = server.submit("script: hello.py\n", dir / "src", "burst");
  for (const auto& id : {first, second}) {
    bool done = test::eventually(
        [&] {
          auto run = server.try_run(id);
          return run && (*run)["status"] == "Completed";
        },
        60s);
    INFO(id << " " << server.run(id).dump());
    CHECK(done);
  }
  auto calls = hook_calls(hook_folder.path());
  REQUIRE_FALSE(calls.empty());
  CHECK(calls.front()["compute"] == "burst");
  CHECK(calls.front()["vm_size"] == "STANDARD_D2_V2");
  CHECK(calls.front()["target_node_count"] == 2);
  auto agents = hook_agents(hook_folder.path());
  CHECK(agents.size() == 2);

  // Idle past 2 s, both are told to leave: each drains, is removed, and its agent exits 0.
  bool gone = test::eventually(
      [&] {
        for (pid_t pid : agents)
          if (alive(pid)) return false;
        return true;
      },
      30s);
  CHECK(gone);
  for (const auto& entry : fs::directory_iterator(hook_folder.path())) {
    if (!entry.path().filename().string().starts_with("agent-")) continue;
    CHECK_THAT(test::slurp(entry.path() / "output.txt"),
               Catch::Contains("asks this node to leave"));
  }
  auto [status_code, status] = server.user_call("GET", "/v1/computes/burst/status");
  CHECK(status["current_node_count"] == 0);
  CHECK(status["target_node_count"] == 0);
  CHECK(status["errors"] == json::array());
  // The hook heard which nodes went.
  calls = hook_calls(hook_folder.path());
  bool told_removal = false;
  for (const auto& call : calls) told_removal = told_removal || !call["nodes_to_remove"].empty();
  CHECK(told_removal);
}

TEST_CASE("a scale hook that fails shows in the cluster's errors", "[daemon][scaling]") {
  test::TempDir dir;
  test::ControlPlaneProcess server(
      dir / "cp", {"--scale-hook", "echo 'quota exceeded for STANDARD_D2_V2' >&2; exit 3"});
  server.start();
  auto [put_code, put] =
      server.user_call("PUT", "/v1/computes/burst", json{{"kind", "amlcompute"}, {"min_nodes", 1}});
  REQUIRE(put_code == 201);
  json errors;
  bool shown = test::eventually(
      [&] {
        errors = server.user_call("GET", "/v1/computes/burst/status").second["errors"];
        return !errors.empty();
      },
      10s);
  REQUIRE(shown);
  CHECK(errors[0]["code"] == "ScaleHookFailed");
  CHECK(errors[0]["message"] == "the scale hook exited with 3: quota exceeded for STANDARD_D2_V2");
}

TEST_CASE("an ephemeral agent takes one run, leaves for good and exits 0", "[daemon][scaling]") {
  test::OneNodeCluster cluster(
      {},
      test::AgentConfigSections{}.with_node(
          "  labels: {compute_name: cpu-cluster}\n  lease_wait_seconds: 2\n  ephemeral: true\n"));
  cluster.dir().write("src/hello.py", "print('once')\n");
  std::string id = cluster.submit("script: hello.py\n");
  REQUIRE(cluster.wait_terminal(id)["status"] == "Completed");
  INFO(cluster.agent_output());
  CHECK(test::wait_command(cluster.agent_pid(), 30s) == 0);
  CHECK_THAT(cluster.agent_output(), Catch::Contains("ephemeral node: its run is over"));
  auto [code, nodes] = cluster.server().user_call("GET", "/v1/nodes");
  CHECK(nodes.empty());
  // A second run waits for a node: the ephemeral one took no other.
  std::string next = cluster.submit("script: hello.py\n");
  CHECK(cluster.server().run(next)["status"] == "Queued");
}

TEST_CASE("one join token registers several real agents, each a node of its own",
          "[daemon][tokens]") {
  test::TempDir dir;
  test::ControlPlaneProcess server(dir / "cp");
  server.start();
  std::vector<std::string> env = {"AMLNODE_CONTROL_PLANE=" + server.url(),
                                  "AMLNODE_USER_TOKEN=" + server.user_token()};
  auto made = test::run_command({test::amlnode_binary().string(), "compute", "token", "create",
                                 "fleet", "--uses", "2", "--ttl", "3600"},
                                env);
  REQUIRE(made.exit_code == 0);
  std::string token = made.out.substr(0, made.out.find('\n'));
  std::vector<pid_t> agents;
  for (int i = 0; i < 3; ++i) {
    auto state = dir / ("agent-" + std::to_string(i));
    auto config =
        dir.write("agent-" + std::to_string(i) + ".yml",
                  test::agent_config_text(
                      state, server.url(), token,
                      test::AgentConfigSections{}.with_node("  labels: {compute_name: fleet}\n")));
    agents.push_back(test::start_command(
        {test::amlnode_binary().string(), "agent", "--config", config.string()},
        dir / ("out-" + std::to_string(i)), dir / ("err-" + std::to_string(i))));
  }
  // Two register; the third is refused (the token is used up) and exits.
  bool two = test::eventually(
      [&] { return server.user_call("GET", "/v1/nodes").second.size() == 2; }, 20s);
  CHECK(two);
  int refused = -1;
  for (pid_t pid : agents) {
    int code = test::wait_command(pid, 1s);
    if (code > 0) refused = code;
  }
  CHECK(refused == 1);
  auto listed = test::run_command(
      {test::amlnode_binary().string(), "compute", "token", "list", "fleet", "--json"}, env);
  auto tokens = json::parse(listed.out)["tokens"];
  REQUIRE(tokens.size() == 1);
  CHECK(tokens[0]["uses"] == 2);
  CHECK(tokens[0]["usable"] == false);
  CHECK(listed.out.find(token) == std::string::npos);
  auto revoked = test::run_command({test::amlnode_binary().string(), "compute", "token", "revoke",
                                    tokens[0]["token_id"].get<std::string>()},
                                   env);
  CHECK(revoked.exit_code == 0);
  for (pid_t pid : agents) ::kill(pid, SIGKILL);
  for (pid_t pid : agents) test::wait_command(pid, 5s);
}

namespace {

// The Scheduled Events stand-in (tests/agent/daemon/imds/scheduled_events.py), on a port of its
// own, serving the VMs of this machine by name.
struct ScheduledEvents {
  test::TempDir folder;
  pid_t pid = -1;
  int port = 0;
  ScheduledEvents() {
    fs::path script = fs::path(AMLNODE_SOURCE_DIR) / "tests/agent/daemon/imds/scheduled_events.py";
    pid = test::start_command({"/usr/bin/python3", script.string(), folder.path().string()},
                              folder / "out.txt", folder / "err.txt");
    REQUIRE(test::eventually(
        [&] {
          std::string out = test::slurp(folder / "out.txt");
          if (out.find("listening on ") == std::string::npos) return false;
          port = std::stoi(out.substr(out.find("listening on ") + 13));
          return true;
        },
        10s));
  }
  ~ScheduledEvents() {
    ::kill(pid, SIGKILL);
    test::wait_command(pid, 5s);
  }
  std::string url(const std::string& vm) const {
    return "http://127.0.0.1:" + std::to_string(port) + "/" + vm +
           "/metadata/scheduledevents?api-version=2020-07-01";
  }
  void preempt(const std::string& vm, const std::string& event_id) {
    folder.write(vm + "/events.json",
                 json::array({{{"EventId", event_id},
                               {"EventType", "Preempt"},
                               {"ResourceType", "VirtualMachine"},
                               {"Resources", {vm}},
                               {"EventStatus", "Scheduled"},
                               {"NotBefore", "Thu, 03 Dec 2026 10:00:30 GMT"},
                               {"Description", "Virtual machine is being preempted."},
                               {"EventSource", "Platform"},
                               {"DurationInSeconds", -1}}})
                     .dump());
  }
};

}  // namespace

TEST_CASE(
    "a preempted low-priority node stops its run, and the run completes elsewhere with "
    "both attempts' logs",
    "[daemon][preemption]") {
  ScheduledEvents events;
  test::TempDir dir;
  test::ControlPlaneProcess server(dir / "cp", {"--heartbeat-interval", "1"});
  server.start();
  auto start_agent = [&](const std::string& name, const std::string& node) {
    auto config = dir.write(
        name + ".yml",
        test::agent_config_text(dir / name, server.url(), server.registration_token("cpu-cluster"),
                                test::AgentConfigSections{}.with_node(node)));
    return test::start_command(
        {test::amlnode_binary().string(), "agent", "--config", config.string()},
        dir / (name + ".out"), dir / (name + ".err"));
  };
  pid_t low = start_agent("low",
                          "  labels: {compute_name: cpu-cluster, vm_priority: lowpriority}\n"
                          "  lease_wait_seconds: 2\n  scheduled_events: {vm_name: vm-low, url: '" +
                              events.url("vm-low") + "'}\n");
  // The first attempt waits to be stopped; the second finds its marker and completes.
  fs::path marker = dir / "first-attempt";
  std::string script =
      "import os, signal, sys, time\n"
      "from azureml.core import Run\n"
      "run = Run.get_context()\n"
      "def stop(*_):\n    print('stopping: SIGTERM', flush=True)\n"
      "    sys.exit(143)\n"
      "signal.signal(signal.SIGTERM, stop)\n"
      "marker = '@MARKER@'\n"
      "if os.path.exists(marker):\n    run.log('attempt', 2)\n"
      "    print('second attempt: done', flush=True)\n    sys.exit(0)\n"
      "run.log('attempt', 1)\n"
      "open(marker, 'w').close()\nprint('first attempt: started', flush=True)\n"
      "time.sleep(120)\n";
  script.replace(script.find("@MARKER@"), 8, marker.string());
  dir.write("src/train.py", script);
  std::string id = server.submit(
      "script: train.py\nenvironment:\n  python: {user_managed_dependencies: true, "
      "interpreter_path: /usr/bin/python3}\n",
      dir / "src", "cpu-cluster");
  REQUIRE(test::eventually([&] { return fs::exists(marker); }, 60s));
  pid_t other =
      start_agent("other", "  labels: {compute_name: cpu-cluster}\n  lease_wait_seconds: 2\n");
  events.preempt("vm-low", "602d9444-d2cd-49c7-8624-8643e7171297");
  bool completed = test::eventually(
      [&] {
        auto run = server.try_run(id);
        return run && (*run)["status"] == "Completed";
      },
      60s);
  INFO(server.run(id).dump() << test::slurp(dir / "low.err") << test::slurp(dir / "low.out"));
  REQUIRE(completed);
  std::vector<std::string> env = {"AMLNODE_CONTROL_PLANE=" + server.url(),
                                  "AMLNODE_USER_TOKEN=" + server.user_token()};
  auto first =
      test::run_command({test::amlnode_binary().string(), "logs", id, "--attempt", "1"}, env);
  auto second = test::run_command({test::amlnode_binary().string(), "logs", id}, env);
  CHECK_THAT(first.out, Catch::Contains("first attempt: started"));
  CHECK_THAT(first.out, Catch::Contains("stopping: SIGTERM"));
  CHECK_THAT(second.out, Catch::Contains("second attempt: done"));
  // The metrics of both attempts, appended in the order they were logged.
  auto metrics = server.user_call("GET", "/v1/runs/" + id + "/metrics").second;
  auto values = metrics["metrics"]["attempt"]["values"];
  REQUIRE(values.size() == 2);
  CHECK(values[0]["value"] == 1);
  CHECK(values[1]["value"] == 2);
  // The node says it is preempted, and acknowledged the event once it let go of the run.
  CHECK(test::eventually(
      [&] {
        return test::slurp(events.folder / "vm-low/acks.jsonl")
                   .find("602d9444-d2cd-49c7-8624-8643e7171297") != std::string::npos;
      },
      20s));
  auto status = server.user_call("GET", "/v1/computes/cpu-cluster/status").second;
  CHECK(status["node_state_counts"]["preempted"] == 1);
  for (pid_t pid : {low, other}) ::kill(pid, SIGKILL);
  for (pid_t pid : {low, other}) test::wait_command(pid, 5s);
}

// GPU health under the real daemon, with the NVML stand-in (tests/metrics/nvml_stand_in.cc) the
// agent loads as its libnvidia-ml: what the GPUs report is changed while the agent runs.
TEST_CASE("a node whose GPUs fail NVML's checks is unusable, naming why, and recovers by itself",
          "[daemon][gpu]") {
  test::TempDir nvml;
  // One GPU of the two is missing when the agent starts, and comes back.
  auto settings = nvml.write("gpus.txt", "gpus=1");
  test::OneNodeCluster cluster(
      {},
      test::AgentConfigSections{}
          .with_node("  labels: {compute_name: cpu-cluster}\n  lease_wait_seconds: 2\n"
                     "  expected_gpus: 2\n")
          .with_metrics("{listen: '127.0.0.1:0', interval_seconds: 1}"),
      {"AMLNODE_NVML_LIBRARY=" AMLNODE_NVML_STAND_IN_LIBRARY,
       "AMLNODE_NVML_STAND_IN=config_file=" + settings.string()});
  auto reason = [&] {
    auto nodes = cluster.server().user_call("GET", "/v1/nodes").second;
    return nodes.empty() ? std::string("?")
                         : nodes[0]["nodeState"].get<std::string>() + ": " +
                               nodes[0]["reason"].get<std::string>();
  };
  REQUIRE(test::eventually(
      [&] { return reason() == "unusable: GPU missing: NVML lists 1 of the 2 expected"; }, 20s));
  nvml.write("gpus.txt", "gpus=2");
  REQUIRE(test::eventually([&] { return reason() == "idle: "; }, 20s));
  nvml.write("gpus.txt", "gpus=2;ecc_uncorrected=2");
  CHECK(test::eventually(
      [&] {
        return reason() ==
               "unusable: GPU 0 (GPU-00000000-0000-0000-0000-000000000000): 2 uncorrectable ECC "
               "error(s)";
      },
      20s));
  nvml.write("gpus.txt", "gpus=1");
  CHECK(test::eventually(
      [&] { return reason() == "unusable: GPU missing: NVML lists 1 of the 2 expected"; }, 20s));
  nvml.write("gpus.txt", "gpus=2");
  CHECK(test::eventually([&] { return reason() == "idle: "; }, 20s));
  INFO(reason() << cluster.agent_output());
}
