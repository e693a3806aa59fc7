// Docker runs under `amlnode agent`: the real control plane, a real agent, and the real dockerd,
// registry and base image of the docker_services fixture (scripts/test-services).

#include <signal.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <sstream>

#include "agent/daemon/state_store.h"
#include "executors/archive.h"
#include "tests/agent/daemon/agent_config.h"
#include "tests/agent/daemon/control_plane_process.h"
#include "tests/docker/docker_test_support.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

using namespace amlnode;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

bool is_terminal(const std::string& status) {
  return status == "Completed" || status == "Failed" || status == "Canceled";
}

// A control plane and one agent whose node runs Docker jobs on the test dockerd (or on
// `docker_host`, to point it elsewhere).
struct DockerCluster {
  test::TempDir dir;
  test::ControlPlaneProcess server{dir / "cp",
                                   {"--heartbeat-interval", "1", "--heartbeat-timeout", "60"}};
  fs::path config;
  pid_t agent = -1;
  int starts = 0;

  explicit DockerCluster(const std::string& docker_host = test::services().docker_host) {
    server.start();
    test::AgentConfigSections sections;
    sections.node = "  labels: {compute_name: gpu-less}\n  lease_wait_seconds: 2\n";
    sections.metrics = "{listen: '127.0.0.1:0', interval_seconds: 1}";
    sections.extra = "docker:\n  host: " + docker_host +
                     "\n  pip_install_options: [--no-index, --find-links, /amlnode/wheels]\n"
                     "  local_wheel_dir: " +
                     test::services().wheels.string() + "\n";
    config = dir.write("a/config.yml",
                       test::agent_config_text(state(), server.url(),
                                               server.registration_token("gpu-less"), sections));
  }
  ~DockerCluster() {
    if (agent > 0) {
      ::kill(agent, SIGKILL);
      test::wait_command(agent, 10s);
    }
  }

  fs::path state() const { return dir / "a" / "state"; }
  fs::path run_dir(const std::string& id) const { return state() / "runs" / id; }
  void start_agent(std::vector<std::string> env = {}) {
    ++starts;
    agent =
        test::start_command({test::amlnode_binary().string(), "agent", "--config", config.string()},
                            dir / "a" / ("out." + std::to_string(starts)),
                            dir / "a" / ("err." + std::to_string(starts)), env);
  }
  void kill_agent() {
    ::kill(agent, SIGKILL);
    test::wait_command(agent, 10s);
    agent = -1;
  }
  int drain_agent() {
    ::kill(agent, SIGTERM);
    int code = test::wait_command(agent, 30s);
    agent = -1;
    return code;
  }
  std::string agent_output() const {
    std::string out;
    for (int i = 1; i <= starts; ++i) {
      out += test::slurp(dir / "a" / ("out." + std::to_string(i)));
      out += test::slurp(dir / "a" / ("err." + std::to_string(i)));
    }
    return out;
  }
  std::string submit(const std::string& body) {
    return server.submit("use_docker: true\nuser_managed: true\ncustom_docker_image: " +
                             test::services().base_image + "\n" + body,
                         dir / "src", "gpu-less");
  }
  bool wait_for(const std::string& id, const std::string& status,
                std::chrono::seconds limit = 60s) {
    return test::eventually([&] { return server.run(id)["status"] == status; }, limit);
  }
  bool wait_terminal(const std::string& id, std::chrono::seconds limit = 120s) {
    return test::eventually([&] { return is_terminal(server.run(id)["status"]); }, limit);
  }
};

std::vector<docker::ContainerInfo> containers_of(const std::string& run_id) {
  auto runtime = test::make_runtime(fs::path("/tmp"));
  auto listed = runtime->list_containers("amlnode.run_id=" + run_id);
  REQUIRE(listed.ok());
  return *listed;
}

std::string numbered_lines(int count) {
  std::string out;
  for (int i = 1; i <= count; ++i) out += "line " + std::to_string(i) + "\n";
  return out;
}

}  // namespace

TEST_CASE("a leased Docker job runs in its container and its log reaches the control plane whole",
          "[docker]") {
  DockerCluster cluster;
  // Over 4 MiB, so the log goes in several chunks; stderr too; an output file.
  cluster.dir.write(
      "src/train.py",
      "import os, sys\n"
      "print('run', os.environ['AZUREML_RUN_ID'], flush=True)\n"
      "for i in range(600000): print(i)\n"
      "sys.stdout.flush()\n"
      "print('to stderr', file=sys.stderr, flush=True)\n"
      "shm = [l for l in open('/proc/mounts') if ' /dev/shm ' in l][0]\n"
      "print('shm', [f for f in shm.split()[3].split(',') if f.startswith('size=')][0])\n"
      "open('outputs/model.txt', 'w').write('trained\\n')\n");
  std::string id = cluster.submit("entry_script: train.py\nshm_size: 300m\n");
  cluster.start_agent();
  bool done = cluster.wait_terminal(id);
  INFO(cluster.agent_output());
  REQUIRE(done);
  auto record = cluster.server.run(id);
  INFO(record.dump());
  CHECK(record["status"] == "Completed");
  CHECK(record["exit_code"] == 0);
  std::string std_log = test::slurp(cluster.run_dir(id) / "user_logs" / "std_log.txt");
  CHECK(std_log.rfind("run " + id + "\n0\n1\n", 0) == 0);
  CHECK(std_log.find("to stderr\nshm size=307200k\n") != std::string::npos);
  CHECK(cluster.server.log(id, "user_logs/std_log.txt") == std_log);
  std::string lifecycle = test::slurp(cluster.run_dir(id) / "system_logs" / "lifecycle.txt");
  CHECK(lifecycle.find("image " + test::services().base_image) != std::string::npos);
  CHECK(lifecycle.find("started from " + test::services().base_image) != std::string::npos);
  CHECK(cluster.server.log(id, "system_logs/lifecycle.txt") == lifecycle);
  REQUIRE(executors::extract_snapshot_from_memory(cluster.server.outputs(id), cluster.dir / "out")
              .ok());
  CHECK(test::slurp(cluster.dir / "out" / "model.txt") == "trained\n");
  // Released: no container of the run is left.
  CHECK(containers_of(id).empty());
  CHECK(cluster.drain_agent() == 0);
}

// The largest value of `field` over the run's resources.jsonl lines.
double largest_sample(const fs::path& run_dir, const std::string& field) {
  double largest = -1;
  fs::path file = run_dir / "system_logs" / "resources.jsonl";
  if (!fs::exists(file)) return largest;
  std::istringstream lines(test::slurp(file));
  for (std::string line; std::getline(lines, line);) {
    auto sample = nlohmann::json::parse(line, nullptr, false);
    if (sample.is_object() && sample.contains(field))
      largest = std::max(largest, sample[field].get<double>());
  }
  return largest;
}

TEST_CASE("a Docker run is sampled in its container, and amlnode_run works inside it", "[docker]") {
  DockerCluster cluster;
  // Holds 64 MiB and burns a second of CPU, logs through amlnode_run (which the image does not
  // have), then waits for the test to have seen its samples.
  cluster.dir.write("src/train.py",
                    "import os, time\n"
                    "import amlnode_run\n"
                    "data = bytearray(64 << 20)\n"
                    "for i in range(0, len(data), 4096): data[i] = 1\n"
                    "for step in range(3): amlnode_run.log('loss', 1.0 / (step + 1), step=step)\n"
                    "amlnode_run.flush()\n"
                    "while time.process_time() < 1.0: pass\n"
                    "deadline = time.monotonic() + 60\n"
                    "while time.monotonic() < deadline and not os.path.exists('release'):\n"
                    "    time.sleep(0.05)\n"
                    "print('done', len(data))\n");
  std::string id = cluster.submit("command: [python3, train.py]\n");
  cluster.start_agent();
  fs::path run_dir = cluster.run_dir(id);
  bool sampled = test::eventually(
      [&] {
        return largest_sample(run_dir, "cpu_seconds") >= 1.0 &&
               largest_sample(run_dir, "memory_bytes") >= 64.0 * (1 << 20);
      },
      90s);
  cluster.dir.write("a/state/runs/" + id + "/wd/release", "");
  INFO(cluster.agent_output() << test::slurp(run_dir / "user_logs" / "std_log.txt"));
  CHECK(sampled);
  CHECK(largest_sample(run_dir, "processes") >= 2);  // docker-init and python
  REQUIRE(cluster.wait_terminal(id));
  CHECK(cluster.server.run(id)["status"] == "Completed");
  CHECK(cluster.server.log(id, "system_logs/resources.jsonl") ==
        test::slurp(run_dir / "system_logs" / "resources.jsonl"));

  const std::vector<std::string> env{"AMLNODE_CONTROL_PLANE=" + cluster.server.url(),
                                     "AMLNODE_USER_TOKEN=" + cluster.server.user_token()};
  auto answer = test::run_command({test::amlnode_binary().string(), "metrics", id, "--json"}, env);
  INFO(answer.err);
  REQUIRE(answer.exit_code == 0);
  auto metrics = nlohmann::json::parse(answer.out);
  CHECK(metrics["metrics"]["loss"]["count"] == 3);
  CHECK(metrics["metrics"]["loss"]["last"]["step"] == 2);
  CHECK(metrics["resources"]["memory_peak_bytes"].get<double>() >= 64.0 * (1 << 20));
  CHECK(cluster.drain_agent() == 0);
}

TEST_CASE("a SIGKILLed agent finds its Docker runs again, and the log is exact", "[docker]") {
  DockerCluster cluster;
  cluster.dir.write("src/count.py",
                    "import time\n"
                    "for i in range(1, 81):\n"
                    "    print(f'line {i}', flush=True)\n"
                    "    time.sleep(0.1)\n"
                    "open('outputs/done', 'w').write('ok\\n')\n"
                    "raise SystemExit(3)\n");
  std::string id = cluster.submit("entry_script: count.py\n");
  cluster.start_agent();
  REQUIRE(cluster.wait_for(id, "Running"));
  REQUIRE(test::eventually([&] { return containers_of(id).size() == 1; }, 20s));
  std::string container = containers_of(id).front().id;

  // Killed while the container runs; the stored id is made wrong, so the next agent has only
  // the run-id label to find the container by.
  std::this_thread::sleep_for(500ms);
  cluster.kill_agent();
  {
    auto store = agent::open_sqlite_state_store(cluster.state());
    REQUIRE(store.ok());
    REQUIRE((*store)->save_container_id(id, "no-such-container").ok());
  }
  cluster.start_agent();
  REQUIRE(test::eventually(
      [&] { return cluster.agent_output().find("found again (running)") != std::string::npos; },
      20s));

  // Killed again, and the container ends while no agent is there: its exit code is read after.
  cluster.kill_agent();
  REQUIRE(test::eventually(
      [&] {
        auto found = containers_of(id);
        return found.size() == 1 && found.front().state == "exited";
      },
      30s));
  cluster.start_agent();
  bool done = cluster.wait_terminal(id);
  std::string output = cluster.agent_output();
  INFO(output);
  REQUIRE(done);
  auto record = cluster.server.run(id);
  INFO(record.dump());
  CHECK(record["status"] == "Failed");
  CHECK(record["exit_code"] == 3);
  CHECK(record["error"]["code"] == "UserError");
  CHECK(output.find("container " + container + " found again (running)") != std::string::npos);
  CHECK(output.find("container " + container + " found again (exited)") != std::string::npos);
  // One container, never a second, and none left.
  CHECK(containers_of(id).empty());
  CHECK(test::slurp(cluster.run_dir(id) / "user_logs" / "std_log.txt") == numbered_lines(80));
  CHECK(cluster.server.log(id, "user_logs/std_log.txt") == numbered_lines(80));
  REQUIRE(executors::extract_snapshot_from_memory(cluster.server.outputs(id), cluster.dir / "out")
              .ok());
  CHECK(test::slurp(cluster.dir / "out" / "done") == "ok\n");
  CHECK(cluster.drain_agent() == 0);
}

// The two instants of a Docker launch a crash is hardest to recover from: the launch recorded but
// no container created (the run is prepared afresh: Docker refuses a second container of its
// name, so nothing can run twice), and the container created but not started (the next agent
// starts that one). Either way the script runs once.
TEST_CASE("an agent killed while launching a Docker run runs its script once", "[docker]") {
  for (const char* point : {"after-launch-marker", "after-container-created"}) {
    DYNAMIC_SECTION(point) {
      DockerCluster cluster;
      cluster.dir.write("src/once.py", "import os\nprint('ran once', os.getpid(), flush=True)\n");
      std::string id = cluster.submit("entry_script: once.py\n");
      cluster.start_agent({std::string("AMLNODE_TEST_HOOK_CRASH=") + point});
      CHECK(test::wait_command(cluster.agent, 60s) == 128 + SIGKILL);
      cluster.agent = -1;
      if (std::string(point) == "after-container-created") {
        auto found = containers_of(id);
        REQUIRE(found.size() == 1);
        CHECK(found.front().state == "created");
      }
      cluster.start_agent();
      bool done = cluster.wait_terminal(id);
      std::string output = cluster.agent_output();
      INFO(output);
      REQUIRE(done);
      CHECK(cluster.server.run(id)["status"] == "Completed");
      std::string log = cluster.server.log(id, "user_logs/std_log.txt");
      CHECK(log.rfind("ran once ", 0) == 0);
      CHECK(std::count(log.begin(), log.end(), '\n') == 1);
      CHECK(containers_of(id).empty());
      CHECK(cluster.drain_agent() == 0);
    }
  }
}

TEST_CASE("a Docker run past its deadline is stopped and fails with RunTimeout", "[docker]") {
  DockerCluster cluster;
  cluster.dir.write("src/slow.py", "import time\nprint('started', flush=True)\ntime.sleep(120)\n");
  std::string id = cluster.submit("entry_script: slow.py\nmax_run_duration_seconds: 2\n");
  cluster.start_agent();
  bool done = cluster.wait_terminal(id, 60s);
  INFO(cluster.agent_output());
  REQUIRE(done);
  auto record = cluster.server.run(id);
  INFO(record.dump());
  CHECK(record["status"] == "Failed");
  CHECK(record["error"]["code"] == "RunTimeout");
  CHECK(cluster.server.log(id, "user_logs/std_log.txt") == "started\n");
  CHECK(containers_of(id).empty());
  CHECK(cluster.drain_agent() == 0);
}

TEST_CASE("a Docker run canceled at the control plane is stopped and ends Canceled", "[docker]") {
  DockerCluster cluster;
  // The script sees SIGTERM (the container's stop) and says so before it ends.
  cluster.dir.write("src/long.py",
                    "import signal, sys, time\n"
                    "def bye(*_):\n"
                    "    print('got SIGTERM', flush=True)\n"
                    "    sys.exit(143)\n"
                    "signal.signal(signal.SIGTERM, bye)\n"
                    "print('started', flush=True)\n"
                    "time.sleep(120)\n");
  std::string id = cluster.submit("entry_script: long.py\n");
  cluster.start_agent();
  auto log = cluster.run_dir(id) / "user_logs" / "std_log.txt";
  REQUIRE(
      test::eventually([&] { return fs::exists(log) && test::slurp(log) == "started\n"; }, 60s));
  auto [code, answer] =
      cluster.server.user_call("POST", "/v1/runs/" + id + "/cancel", nlohmann::json::object());
  REQUIRE(code == 200);
  bool done = cluster.wait_terminal(id, 60s);
  INFO(cluster.agent_output());
  REQUIRE(done);
  CHECK(cluster.server.run(id)["status"] == "Canceled");
  CHECK(cluster.server.log(id, "user_logs/std_log.txt") == "started\ngot SIGTERM\n");
  CHECK(containers_of(id).empty());
  CHECK(cluster.drain_agent() == 0);
}

TEST_CASE("a node whose dockerd does not answer is unusable, takes no runs, and recovers",
          "[docker]") {
  // The agent's socket path does not exist yet; later it becomes a link to the test dockerd.
  test::TempDir sockets;
  fs::path socket = sockets / "docker.sock";
  DockerCluster cluster("unix://" + socket.string());
  cluster.dir.write("src/hi.py", "print('hello from the container')\n");
  std::string id = cluster.submit("entry_script: hi.py\n");
  cluster.start_agent();
  const std::vector<std::string> env{"AMLNODE_CONTROL_PLANE=" + cluster.server.url(),
                                     "AMLNODE_USER_TOKEN=" + cluster.server.user_token()};
  nlohmann::json node;
  bool unusable = test::eventually(
      [&] {
        auto nodes = test::run_command({test::amlnode_binary().string(), "nodes", "--json"}, env);
        if (nodes.exit_code != 0) return false;
        auto listed = nlohmann::json::parse(nodes.out, nullptr, false);
        if (!listed.is_array() || listed.size() != 1) return false;
        node = listed[0];
        return node["nodeState"] == "unusable";
      },
      30s);
  INFO(cluster.agent_output());
  REQUIRE(unusable);
  const std::string reason = node["reason"];
  CHECK(reason.rfind("docker unavailable: ", 0) == 0);
  CHECK(reason.find(socket.string()) != std::string::npos);
  // Unusable, it leases nothing.
  std::this_thread::sleep_for(1500ms);
  CHECK(cluster.server.run(id)["status"] == "Queued");

  // dockerd answers at that path now: the node is usable again and runs the job.
  fs::path real = test::services().docker_host.substr(std::string("unix://").size());
  fs::create_symlink(real, socket);
  bool done = cluster.wait_terminal(id);
  INFO(cluster.agent_output());
  REQUIRE(done);
  CHECK(cluster.server.run(id)["status"] == "Completed");
  CHECK(cluster.server.log(id, "user_logs/std_log.txt") == "hello from the container\n");
  CHECK(cluster.drain_agent() == 0);
}

TEST_CASE("the state store keeps a run's container id across reopening until the run is dropped",
          "[daemon]") {
  test::TempDir dir;
  {
    auto store = agent::open_sqlite_state_store(dir / "state");
    REQUIRE(store.ok());
    agent::HeldRunRecord run;
    run.lease = {"run-1", 2, "exp", "use_docker: true", "job.yml"};
    run.status = "Running";
    REQUIRE((*store)->save_run(run).ok());
    REQUIRE((*store)->save_container_id("run-1", "c0ffee").ok());
    // A later status leaves the container id as it is.
    run.status = "CancelRequested";
    REQUIRE((*store)->save_run(run).ok());
    REQUIRE((*store)->save_run({{"run-2", 1, "exp", "x", "job.yml"}, "Running", {}, {}}).ok());
  }
  auto store = agent::open_sqlite_state_store(dir / "state");
  REQUIRE(store.ok());
  auto runs = (*store)->load_runs();
  REQUIRE(runs.ok());
  REQUIRE(runs->size() == 2);
  CHECK((*runs)[0].status == "CancelRequested");
  CHECK((*runs)[0].container_id == std::optional<std::string>("c0ffee"));
  CHECK_FALSE((*runs)[1].container_id.has_value());
  REQUIRE((*store)->drop_run("run-1").ok());
  // A run of the same id leased again later starts without the old container.
  REQUIRE((*store)->save_run({{"run-1", 3, "exp", "x", "job.yml"}, "Queued", {}, {}}).ok());
  runs = (*store)->load_runs();
  REQUIRE(runs.ok());
  REQUIRE(runs->size() == 2);
  CHECK_FALSE((*runs)[0].container_id.has_value());
}

TEST_CASE("waiting in slices tells a running container from an ended one, with its times",
          "[docker]") {
  test::TempDir dir;
  auto runtime = test::make_runtime(dir.path());
  auto plan = test::make_plan(dir / "run", {"sh", "-c", "sleep 2; exit 7"});
  spec::Environment environment;
  environment.docker.enabled = true;
  environment.docker.base_image = test::services().base_image;
  auto spec = docker::container_spec_for(plan, test::docker_job(environment),
                                         test::services().base_image, {});
  REQUIRE(spec.ok());
  auto id = runtime->create_container(*spec);
  REQUIRE(id.ok());
  REQUIRE(runtime->start_container(*id).ok());
  auto before = std::chrono::system_clock::now();
  auto early = runtime->wait_container_for(*id, 300ms);
  REQUIRE(early.ok());
  CHECK_FALSE(early->has_value());  // still running after the slice
  std::optional<docker::ContainerExit> exit;
  REQUIRE(test::eventually(
      [&] {
        auto waited = runtime->wait_container_for(*id, 1s);
        REQUIRE(waited.ok());
        exit = *waited;
        return exit.has_value();
      },
      30s));
  CHECK(exit->exit_code == 7);
  auto info = runtime->inspect_container(*id);
  REQUIRE(info.ok());
  REQUIRE(info->started_at);
  REQUIRE(info->finished_at);
  CHECK(*info->started_at < before);
  CHECK(*info->finished_at - *info->started_at >= 1900ms);
  CHECK(runtime->ping(1s).ok());
  CHECK(runtime->remove_container(*id).ok());

  auto missing = test::runtime_config(dir.path());
  missing.engine.docker_host = "unix://" + (dir / "no.sock").string();
  auto down = docker::make_docker_runtime(missing);
  REQUIRE(down.ok());
  auto ping = (*down)->ping(1s);
  REQUIRE_FALSE(ping.ok());
  CHECK(ping.error().code == docker::kDockerUnavailable);
}

// The run folder is mounted read-write into the container, whose root is the host's root for
// files: links it plants where the agent writes must lead the agent nowhere.
TEST_CASE("links a container plants in its run folder lead the agent nowhere", "[docker]") {
  DockerCluster cluster;
  auto victim = cluster.dir.write("victim.txt", "the host's file\n");
  fs::path absent = cluster.dir / "absent.txt";
  cluster.dir.write("src/plant.py",
                    "import os, time\n"
                    "if os.path.lexists('../system_logs/lifecycle.txt'):\n"
                    "    os.remove('../system_logs/lifecycle.txt')\n"
                    "os.symlink('" +
                        victim.string() +
                        "', '../system_logs/lifecycle.txt')\n"
                        "os.symlink('" +
                        absent.string() +
                        "', '../system_logs/resources.jsonl')\n"
                        "time.sleep(2.5)\n"
                        "print('planted', flush=True)\n");
  std::string id = cluster.submit("command: [python3, plant.py]\n");
  cluster.start_agent();
  bool done = cluster.wait_terminal(id);
  INFO(cluster.agent_output());
  REQUIRE(done);
  auto record = cluster.server.run(id);
  INFO(record.dump());
  CHECK(record["status"] == "Completed");
  CHECK(test::slurp(victim) == "the host's file\n");
  CHECK_FALSE(fs::exists(absent));
  CHECK(cluster.server.log(id, "user_logs/std_log.txt").find("planted\n") != std::string::npos);
  CHECK(cluster.agent_output().find("symbolic link is on the way; it is not followed") !=
        std::string::npos);
}

TEST_CASE("under the daemon, a Docker run's ranks start in its container and each ships its log",
          "[docker][distributed]") {
  DockerCluster cluster;
  cluster.dir.write("src/tf_peers.py", test::slurp(fs::path(AMLNODE_SOURCE_DIR) / "tests" /
                                                   "agent" / "distributed" / "tf_peers.py"));
  std::string id = cluster.submit(
      "entry_script: tf_peers.py\n"
      "distributed_training: {type: tensorflow, worker_count: 2, parameter_server_count: 1}\n");
  cluster.start_agent();
  bool done = cluster.wait_terminal(id);
  INFO(cluster.agent_output());
  REQUIRE(done);
  CHECK(cluster.server.run(id)["status"] == "Completed");
  CHECK_THAT(cluster.server.log(id, "user_logs/std_log_process_00.txt"),
             Catch::Contains("worker 0 at"));
  CHECK_THAT(cluster.server.log(id, "user_logs/std_log_process_02.txt"),
             Catch::Contains("heard ['worker0', 'worker1']"));
  auto exit = nlohmann::json::parse(test::slurp(cluster.run_dir(id) / "exit.json"));
  CHECK(exit["ranks"].size() == 3);
  CHECK(containers_of(id).empty());
}

// A run across nodes in Docker: each share's ranks run in its node's container (host network), at
// its node's address, with the same variables as processes get.
TEST_CASE("a Docker TensorFlow run over 3 nodes: each task finds its peers at their addresses",
          "[docker][gang]") {
  test::TempDir dir;
  test::ControlPlaneProcess server{dir / "cp", {"--heartbeat-interval", "1"}};
  server.start();
  std::vector<pid_t> agents;
  for (int k = 0; k < 3; ++k) {
    std::string name = "n" + std::to_string(k);
    test::AgentConfigSections sections;
    sections.node =
        "  labels: {compute_name: gpu-less}\n  lease_wait_seconds: 2\n  address: 127.0.0." +
        std::to_string(k + 2) + "\n";
    sections.extra = "docker:\n  host: " + test::services().docker_host + "\n";
    auto config =
        dir.write(name + "/config.yml",
                  test::agent_config_text(dir / name / "state", server.url(),
                                          server.registration_token("gpu-less"), sections));
    agents.push_back(
        test::start_command({test::amlnode_binary().string(), "agent", "--config", config.string()},
                            dir / name / "out", dir / name / "err"));
  }
  dir.write("src/tf_peers.py", test::slurp(fs::path(AMLNODE_SOURCE_DIR) / "tests" / "agent" /
                                           "distributed" / "tf_peers.py"));
  auto job = dir.write(
      "src/job.yml",
      "use_docker: true\nuser_managed: true\ncustom_docker_image: " + test::services().base_image +
          "\nentry_script: tf_peers.py\n"
          "distributed_training: {type: tensorflow, worker_count: 2, "
          "parameter_server_count: 1}\nnode_count: 3\n");
  auto submitted = test::run_command(
      {test::amlnode_binary().string(), "submit", job.string(), "--compute", "gpu-less"},
      {"AMLNODE_CONTROL_PLANE=" + server.url(), "AMLNODE_USER_TOKEN=" + server.user_token()});
  INFO(submitted.out << submitted.err);
  REQUIRE(submitted.exit_code == 0);
  std::string id = submitted.out.substr(0, submitted.out.find_last_not_of("\n") + 1);
  nlohmann::json record;
  bool done = test::eventually(
      [&] {
        record = server.run(id);
        return is_terminal(record["status"]);
      },
      120s);
  std::string output;
  for (int k = 0; k < 3; ++k)
    output += test::slurp(dir / ("n" + std::to_string(k)) / "out") +
              test::slurp(dir / ("n" + std::to_string(k)) / "err");
  INFO(record.dump() << output);
  REQUIRE(done);
  CHECK(record["status"] == "Completed");
  CHECK_THAT(server.log(id, "user_logs/std_log_process_01.txt"),
             Catch::Contains("worker 1 at 127.0.0."));
  CHECK_THAT(server.log(id, "user_logs/std_log_process_02.txt"),
             Catch::Contains("heard ['worker0', 'worker1']"));
  CHECK(containers_of(id).empty());
  for (pid_t agent : agents) {
    ::kill(agent, SIGTERM);
    CHECK(test::wait_command(agent, 30s) == 0);
  }
}
