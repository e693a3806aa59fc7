// Leased runs end to end: the real control plane, a real `amlnode agent`, real shims.

#include <signal.h>

#include <catch2/catch.hpp>
#include <map>
#include <random>
#include <set>

#include "executors/archive.h"
#include "tests/agent/daemon/agent_config.h"
#include "tests/agent/daemon/control_plane_process.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

using namespace amlnode;

namespace {

// `extra` is appended: sections of its own (environments:, ...).
std::string agent_config(const test::TempDir& dir, const std::string& name, const std::string& url,
                         const std::string& token, int concurrency, const std::string& extra = "") {
  test::AgentConfigSections sections;
  sections.node += "  run_concurrency: " + std::to_string(concurrency) + "\n";
  sections.extra = extra;
  return dir
      .write(name + "/config.yml",
             test::agent_config_text(dir.path() / name / "state", url, token, sections))
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

TEST_CASE("a minute of SIGKILLed agents and restarted control planes loses and doubles nothing",
          "[daemon]") {
  test::TempDir dir;
  test::ControlPlaneProcess server(dir / "cp",
                                   {"--heartbeat-interval", "1", "--heartbeat-timeout", "60"});
  server.start();
  constexpr int kLines = 1200;  // one every 50 ms: a minute
  dir.write("src/count.sh", "for i in $(seq 1 " + std::to_string(kLines) +
                                "); do echo \"line $i\"; sleep 0.05; done\n"
                                "echo ok > outputs/done\n");
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

  // 10 agent SIGKILLs and 3 control plane SIGKILLs, at random moments of the run's minute.
  auto seed = std::random_device{}();
  INFO("seed " << seed);
  std::mt19937 random(seed);
  std::vector<std::pair<int, bool>> events;  // (ms after Running, is a control plane restart)
  std::uniform_int_distribution<int> moment(500, 52000);
  for (int i = 0; i < 13; ++i) events.emplace_back(moment(random), i < 3);
  std::sort(events.begin(), events.end());
  auto running_since = std::chrono::steady_clock::now();
  std::uniform_int_distribution<int> pause(0, 400);
  for (const auto& [at, control_plane] : events) {
    std::this_thread::sleep_until(running_since + std::chrono::milliseconds(at));
    if (control_plane) {
      server.kill();
      std::this_thread::sleep_for(std::chrono::milliseconds(pause(random)));
      server.start();
      continue;
    }
    ::kill(agent, SIGKILL);
    test::wait_command(agent, std::chrono::seconds(10));
    std::this_thread::sleep_for(std::chrono::milliseconds(pause(random)));
    agent = start_agent();
  }
  bool done = test::eventually([&] { return is_terminal(server.run(id)["status"]); },
                               std::chrono::seconds(60));
  std::string logs;
  for (int i = 1; i <= starts; ++i) {
    for (const char* stream : {"out.", "err."})
      logs += test::slurp(dir / "a" / (stream + std::to_string(i)));
  }
  INFO(logs);
  REQUIRE(done);
  CHECK(starts == 11);
  CHECK(server.run(id)["status"] == "Completed");
  // The run outlived agents: later ones found its shim again.
  CHECK(logs.find("resuming it") != std::string::npos);
  std::string expected;
  for (int i = 1; i <= kLines; ++i) expected += "line " + std::to_string(i) + "\n";
  auto run_dir = dir / "a" / "state" / "runs" / id;
  CHECK(test::slurp(run_dir / "user_logs" / "std_log.txt") == expected);
  CHECK(server.log(id, "user_logs/std_log.txt") == expected);
  CHECK(server.log(id, "system_logs/lifecycle.txt") ==
        test::slurp(run_dir / "system_logs" / "lifecycle.txt"));
  REQUIRE(executors::extract_snapshot_from_memory(server.outputs(id), dir / "outputs").ok());
  CHECK(test::slurp(dir / "outputs" / "done") == "ok\n");
  // run.json was carried across every restart: one record, from the first preparation to the end.
  auto record = nlohmann::json::parse(test::slurp(run_dir / "run.json"));
  CHECK(record["status"] == "Completed");
  CHECK(record["exit_code"] == 0);
  CHECK_FALSE(record["timings"]["preparing_at"].is_null());
  CHECK_FALSE(record["timings"]["running_at"].is_null());
  CHECK(record["durations"]["running_ms"].get<long long>() >= 55000);
  ::kill(agent, SIGTERM);
  CHECK(test::wait_command(agent, std::chrono::seconds(20)) == 0);
}

TEST_CASE("an agent killed right after starting a run's shim runs the process only once",
          "[daemon]") {
  test::TempDir dir;
  test::ControlPlaneProcess server(dir / "cp", {"--heartbeat-interval", "1"});
  server.start();
  auto starts_file = dir / "starts.txt";
  dir.write("src/once.sh", "echo started >> " + starts_file.string() + "\nsleep 1\necho done\n");
  std::string id = server.submit("entry_script: once.sh\nuser_managed: true\nuse_docker: false\n",
                                 dir / "src", "cpu-cluster");
  auto config = agent_config(dir, "a", server.url(), server.registration_token("cpu-cluster"), 1);
  std::vector<std::string> argv{test::amlnode_binary().string(), "agent", "--config", config};
  pid_t first = test::start_command(argv, dir / "a" / "out.1", dir / "a" / "err.1",
                                    {"AMLNODE_TEST_HOOK_CRASH=after-launch"});
  CHECK(test::wait_command(first, std::chrono::seconds(30)) == 128 + SIGKILL);
  pid_t second = test::start_command(argv, dir / "a" / "out.2", dir / "a" / "err.2");
  bool done = test::eventually([&] { return is_terminal(server.run(id)["status"]); },
                               std::chrono::seconds(30));
  INFO(test::slurp(dir / "a" / "err.1") + test::slurp(dir / "a" / "err.2"));
  REQUIRE(done);
  CHECK(server.run(id)["status"] == "Completed");
  CHECK(test::slurp(starts_file) == "started\n");
  CHECK(server.log(id, "user_logs/std_log.txt") == "done\n");
  ::kill(second, SIGTERM);
  CHECK(test::wait_command(second, std::chrono::seconds(20)) == 0);
}

TEST_CASE("an agent killed while launching, before any shim, fails the run rather than guess",
          "[daemon]") {
  test::TempDir dir;
  test::ControlPlaneProcess server(dir / "cp", {"--heartbeat-interval", "1"});
  server.start();
  auto starts_file = dir / "starts.txt";
  dir.write("src/once.sh", "echo started >> " + starts_file.string() + "\n");
  std::string id = server.submit("entry_script: once.sh\nuser_managed: true\nuse_docker: false\n",
                                 dir / "src", "cpu-cluster");
  auto config = agent_config(dir, "a", server.url(), server.registration_token("cpu-cluster"), 1);
  std::vector<std::string> argv{test::amlnode_binary().string(), "agent", "--config", config};
  pid_t first = test::start_command(argv, dir / "a" / "out.1", dir / "a" / "err.1",
                                    {"AMLNODE_TEST_HOOK_CRASH=after-launch-marker"});
  CHECK(test::wait_command(first, std::chrono::seconds(30)) == 128 + SIGKILL);
  pid_t second = test::start_command(argv, dir / "a" / "out.2", dir / "a" / "err.2");
  bool done = test::eventually([&] { return is_terminal(server.run(id)["status"]); },
                               std::chrono::seconds(30));
  INFO(test::slurp(dir / "a" / "err.2"));
  REQUIRE(done);
  auto record = server.run(id);
  CHECK(record["status"] == "Failed");
  CHECK(record["error"]["code"] == "LaunchInterrupted");
  CHECK_FALSE(std::filesystem::exists(starts_file));
  ::kill(second, SIGTERM);
  CHECK(test::wait_command(second, std::chrono::seconds(20)) == 0);
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
  INFO(test::slurp(dir / "a" / "err"));
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
  std::string log_a = test::slurp(dir / "a" / "out") + test::slurp(dir / "a" / "err");
  INFO(log_a);
  CHECK(stopped_on_a);
  CHECK(log_a.find("stopping it here") != std::string::npos);
  bool done = test::eventually([&] { return is_terminal(server.run(id)["status"]); },
                               std::chrono::seconds(30));
  INFO(test::slurp(dir / "b" / "err"));
  REQUIRE(done);
  auto record = server.run(id);
  CHECK(record["status"] == "Completed");
  CHECK(record["epoch"] == 2);
  for (pid_t agent : {a, b}) {
    ::kill(agent, SIGTERM);
    CHECK(test::wait_command(agent, std::chrono::seconds(20)) == 0);
  }
}

TEST_CASE("a run given back to the node it was taken from starts there only after the old epoch",
          "[daemon]") {
  test::TempDir dir;
  test::ControlPlaneProcess server(dir / "cp",
                                   {"--heartbeat-interval", "1", "--heartbeat-timeout", "2"});
  server.start();
  // The old epoch's process ignores SIGTERM for a while, so it is still there when the run comes
  // back; its exit.json must never land in the new epoch's folder.
  dir.write("src/job.sh",
            "trap 'echo term; sleep 1; exit 143' TERM\necho \"start $AZUREML_RUN_ID\"\n"
            "for i in 1 2 3 4 5 6; do sleep 0.5; done\necho end\n");
  std::string id = server.submit("entry_script: job.sh\nuser_managed: true\nuse_docker: false\n",
                                 dir / "src", "cpu-cluster");
  auto config = agent_config(dir, "a", server.url(), server.registration_token("cpu-cluster"), 1);
  pid_t a = test::start_command({test::amlnode_binary().string(), "agent", "--config", config},
                                dir / "a" / "out", dir / "a" / "err");
  REQUIRE(test::eventually([&] { return server.run(id)["status"] == "Running"; },
                           std::chrono::seconds(20)));
  // Cut off: the control plane loses the only node and queues the run again.
  ::kill(a, SIGSTOP);
  REQUIRE(test::eventually([&] { return server.run(id)["status"] == "Queued"; },
                           std::chrono::seconds(20)));
  SECTION("the control plane remembers where the run was taken from") {}
  SECTION("the control plane restarted meanwhile and forgot it") {
    server.stop();
    server.start();
  }
  ::kill(a, SIGCONT);

  bool done = test::eventually([&] { return is_terminal(server.run(id)["status"]); },
                               std::chrono::seconds(60));
  std::string log = test::slurp(dir / "a" / "out") + test::slurp(dir / "a" / "err");
  INFO(log);
  REQUIRE(done);
  auto record = server.run(id);
  CHECK(record["status"] == "Completed");
  CHECK(record["epoch"] == 2);
  CHECK(log.find("stopping it here") != std::string::npos);
  // The second epoch ran whole in a folder of its own: one start, an end, its own exit.json.
  auto run_dir = dir / "a" / "state" / "runs" / id;
  std::string std_log = test::slurp(run_dir / "user_logs" / "std_log.txt");
  CHECK(std_log == "start " + id + "\nend\n");
  CHECK(server.log(id, "user_logs/std_log.txt") == std_log);
  CHECK(test::slurp(run_dir / "exit.json").find("\"exit_code\":0") != std::string::npos);
  ::kill(a, SIGTERM);
  CHECK(test::wait_command(a, std::chrono::seconds(20)) == 0);
}

TEST_CASE("an agent and the user commands work against a control plane that speaks only TLS",
          "[daemon][tls]") {
  test::TempDir dir;
  auto made = test::run_command({"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                                 "-days", "1", "-subj", "/CN=amlnode-test", "-addext",
                                 "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout",
                                 (dir / "key.pem").string(), "-out", (dir / "cert.pem").string()});
  INFO(made.err);
  REQUIRE(made.exit_code == 0);
  test::ControlPlaneProcess server(
      dir / "cp", {"--heartbeat-interval", "1", "--tls-cert", (dir / "cert.pem").string(),
                   "--tls-key", (dir / "key.pem").string()});
  server.start();
  REQUIRE(server.url().rfind("https://", 0) == 0);

  auto config = [&](const std::string& name, const std::string& trust) {
    return dir
        .write(name + "/config.yml",
               test::agent_config_text(dir / name / "state", server.url(),
                                       server.registration_token("cpu-cluster"),
                                       test::AgentConfigSections().with_control_plane(trust)))
        .string();
  };
  // Without the CA, the certificate is refused and the agent says so (and keeps trying).
  pid_t untrusting =
      test::start_command({test::amlnode_binary().string(), "agent", "--config", config("b", "")},
                          dir / "b" / "out", dir / "b" / "err");
  pid_t agent =
      test::start_command({test::amlnode_binary().string(), "agent", "--config",
                           config("a", "  ca_file: " + (dir / "cert.pem").string() + "\n")},
                          dir / "a" / "out", dir / "a" / "err");

  dir.write("src/job/hello.sh", "echo \"hello over tls from $AZUREML_RUN_ID\"\nseq 1 200000\n");
  dir.write("src/job.yml",
            "source_directory: job\nentry_script: hello.sh\nuser_managed: true\n"
            "use_docker: false\n");
  const std::vector<std::string> env{"AMLNODE_CONTROL_PLANE=" + server.url(),
                                     "AMLNODE_USER_TOKEN=" + server.user_token()};
  auto amlnode = test::amlnode_binary().string();
  auto refused = test::run_command(
      {amlnode, "submit", (dir / "src" / "job.yml").string(), "--compute", "cpu-cluster"}, env);
  CHECK(refused.exit_code != 0);
  CHECK(refused.err.find("certificate verify failed") != std::string::npos);

  const std::vector<std::string> trusted{env[0], env[1],
                                         "AMLNODE_CA_FILE=" + (dir / "cert.pem").string()};
  auto submitted = test::run_command(
      {amlnode, "submit", (dir / "src" / "job.yml").string(), "--compute", "cpu-cluster"}, trusted);
  INFO(submitted.err);
  REQUIRE(submitted.exit_code == 0);
  std::string id = submitted.out.substr(0, submitted.out.find('\n'));
  bool done = test::eventually([&] { return is_terminal(server.run(id)["status"]); },
                               std::chrono::seconds(60));
  INFO(test::slurp(dir / "a" / "out") + test::slurp(dir / "a" / "err"));
  REQUIRE(done);
  CHECK(server.run(id)["status"] == "Completed");
  auto logs = test::run_command({amlnode, "logs", id, "--control-plane", server.url(), "--ca-file",
                                 (dir / "cert.pem").string()},
                                {env[1]});
  std::string node_log =
      test::slurp(dir / "a" / "state" / "runs" / id / "user_logs" / "std_log.txt");
  CHECK(node_log.rfind("hello over tls from " + id + "\n1\n", 0) == 0);
  CHECK(logs.out == node_log);

  std::string refused_log = test::slurp(dir / "b" / "out") + test::slurp(dir / "b" / "err");
  INFO(refused_log);
  CHECK(refused_log.find("certificate verify failed") != std::string::npos);
  for (pid_t pid : {agent, untrusting}) {
    ::kill(pid, SIGTERM);
    CHECK(test::wait_command(pid, std::chrono::seconds(20)) == 0);
  }
}

TEST_CASE("a run canceled while its environment is built never starts its process", "[daemon]") {
  test::TempDir dir;
  test::ControlPlaneProcess server(dir / "cp", {"--heartbeat-interval", "1"});
  server.start();
  // The conda stand-in would take 300 s to build the environment: the cancel must stop it.
  std::filesystem::create_directories(dir / "bin");
  std::filesystem::create_symlink(AMLNODE_FAKE_CONDA, dir / "bin" / "micromamba");
  auto config =
      agent_config(dir, "a", server.url(), server.registration_token("cpu-cluster"), 1,
                   "environments:\n  conda_tool: " + (dir / "bin" / "micromamba").string() + "\n");
  pid_t agent = test::start_command(
      {test::amlnode_binary().string(), "agent", "--config", config}, dir / "a" / "out",
      dir / "a" / "err",
      {"FAKE_CONDA_LOG=" + (dir / "conda.log").string(), "FAKE_CONDA_SLEEP=300"});
  dir.write("src/train.py", "print('the process ran')\n");
  std::string id =
      server.submit("entry_script: train.py\nuse_docker: false\nconda_packages: [numpy]\n",
                    dir / "src", "cpu-cluster");
  // The build has begun: cancel.
  REQUIRE(test::eventually([&] { return std::filesystem::exists(dir / "conda.log"); },
                           std::chrono::seconds(20)));
  auto asked = std::chrono::steady_clock::now();
  REQUIRE(server.user_call("POST", "/v1/runs/" + id + "/cancel", nlohmann::json::object()).first ==
          200);
  // CancelRequested is reported while the build still runs, not after it.
  bool requested = test::eventually([&] { return server.run(id)["status"] == "CancelRequested"; },
                                    std::chrono::seconds(3));
  CHECK(std::chrono::steady_clock::now() - asked < std::chrono::seconds(3));
  CHECK(requested);
  bool done = test::eventually([&] { return is_terminal(server.run(id)["status"]); },
                               std::chrono::seconds(30));
  INFO(test::slurp(dir / "a" / "out") + test::slurp(dir / "a" / "err"));
  REQUIRE(done);
  auto record = server.run(id);
  CHECK(record["status"] == "Canceled");
  CHECK_THAT(record["error"]["message"].get<std::string>(), Catch::Contains("was canceled"));
  CHECK(record["exit_code"].is_null());
  // The process never started: no output, no shim.
  auto run_dir = dir / "a" / "state" / "runs" / id;
  CHECK_FALSE(std::filesystem::exists(run_dir / "launch.json"));
  CHECK(server.log(id, "user_logs/std_log.txt").find("the process ran") == std::string::npos);
  ::kill(agent, SIGTERM);
  CHECK(test::wait_command(agent, std::chrono::seconds(20)) == 0);
}

namespace {

// The streams a node ships for a run (log_shipper.cc): user_logs/*, system_logs/** and the run's
// ./logs as logs/**, each with its file.
std::map<std::string, std::filesystem::path> node_streams(const std::filesystem::path& run_dir) {
  namespace fs = std::filesystem;
  std::map<std::string, fs::path> streams;
  for (const auto& [prefix, folder] :
       {std::pair<std::string, fs::path>{"user_logs/", run_dir / "user_logs"},
        {"system_logs/", run_dir / "system_logs"},
        {"logs/", run_dir / "wd" / "logs"}}) {
    std::error_code ec;
    for (fs::recursive_directory_iterator it(folder, ec), end; !ec && it != end; it.increment(ec)) {
      if (it->is_regular_file())
        streams[prefix + fs::relative(it->path(), folder).generic_string()] = it->path();
    }
  }
  return streams;
}

struct ExpectedRun {
  std::string status;
  std::string error_code;  // "" when the run has none
  std::string in_log;      // a line its std_log.txt must hold
  std::string output;      // a file its outputs must hold ("" for none)
};

}  // namespace

TEST_CASE("three agents run 30 mixed jobs and each ends right and every log equals the node's file",
          "[daemon]") {
  test::TempDir dir;
  test::ControlPlaneProcess server(dir / "cp", {"--heartbeat-interval", "1"});
  server.start();
  dir.write("src/job.sh",
            "echo \"run $AZUREML_RUN_ID\"\nseq 1 $((RANDOM % 20000))\necho err >&2\n");
  dir.write("src/train.py",
            "import os, sys\n"
            "print('args=' + ' '.join(sys.argv[1:]), flush=True)\n"
            "for epoch in range(int(sys.argv[sys.argv.index('--epochs') + 1])):\n"
            "    print('epoch %d loss %.3f' % (epoch, 1.0 / (epoch + 1)), flush=True)\n"
            "open('outputs/model.txt', 'w').write('model of ' + os.environ['AZUREML_RUN_ID'])\n"
            "open('logs/metrics.txt', 'w').write('loss=0.1\\n')\n");
  dir.write("src/fail.sh", "echo failing >&2\nexit 3\n");
  dir.write("src/slow.sh", "echo slow\nsleep 60\n");
  const std::string local = "user_managed: true\nuse_docker: false\n";
  std::map<std::string, ExpectedRun> expected;
  // The slow ones first, so they hold slots while everything else goes through the others.
  std::string canceled =
      server.submit("entry_script: slow.sh\n" + local, dir / "src", "cpu-cluster");
  expected[canceled] = {"Canceled", "Canceled", "slow", ""};
  expected[server.submit("entry_script: slow.sh\nmax_run_duration_seconds: 1\n" + local,
                         dir / "src", "cpu-cluster")] = {"Failed", "RunTimeout", "slow", ""};
  expected[server.submit("entry_script: fail.sh\n" + local, dir / "src", "cpu-cluster")] = {
      "Failed", "UserError", "failing", ""};
  for (int i = 0; i < 10; ++i) {
    std::string command = "command: \"echo cmd " + std::to_string(i) + "; seq 1 " +
                          std::to_string(i * 700) + "; echo c" + std::to_string(i) +
                          " > outputs/c.txt\"\n";
    expected[server.submit(command + local, dir / "src", "cpu-cluster")] = {
        "Completed", "", "cmd " + std::to_string(i), "c.txt"};
  }
  for (int i = 0; i < 12; ++i) {
    std::string epochs = std::to_string(1 + i % 4);
    std::string job =
        "entry_script: train.py\nscript_params: {--batch: 32}\narguments: [--epochs, " + epochs +
        ", --lr, 0.01]\n";
    expected[server.submit(job + local, dir / "src", "cpu-cluster")] = {
        "Completed", "", "args=--batch 32 --epochs " + epochs + " --lr 0.01", "model.txt"};
  }
  for (int i = 0; i < 5; ++i) {
    expected[server.submit("entry_script: job.sh\n" + local, dir / "src", "cpu-cluster")] = {
        "Completed", "", "run ", ""};
  }
  REQUIRE(expected.size() == 30);

  std::vector<pid_t> agents;
  const std::vector<std::string> names{"a", "b", "c"};
  for (const auto& name : names) {
    auto config =
        agent_config(dir, name, server.url(), server.registration_token("cpu-cluster"), 2);
    agents.push_back(
        test::start_command({test::amlnode_binary().string(), "agent", "--config", config},
                            dir / name / "out", dir / name / "err"));
  }
  REQUIRE(test::eventually([&] { return server.run(canceled)["status"] == "Running"; },
                           std::chrono::seconds(30)));
  REQUIRE(server.user_call("POST", "/v1/runs/" + canceled + "/cancel", nlohmann::json::object())
              .first == 200);
  bool done = test::eventually(
      [&] {
        for (const auto& [id, want] : expected) {
          if (!is_terminal(server.run(id)["status"])) return false;
        }
        return true;
      },
      std::chrono::seconds(120));
  REQUIRE(done);
  std::set<std::string> nodes_used;
  for (const auto& [id, want] : expected) {
    auto record = server.run(id);
    INFO(record.dump());
    CHECK(record["status"] == want.status);
    if (!want.error_code.empty()) CHECK(record["error"]["code"] == want.error_code);
    nodes_used.insert(record["node_id"].get<std::string>());
    std::vector<std::filesystem::path> run_dirs;
    for (const auto& name : names) {
      auto run_dir = dir / name / "state" / "runs" / id;
      if (std::filesystem::exists(run_dir)) run_dirs.push_back(run_dir);
    }
    REQUIRE(run_dirs.size() == 1);
    const auto& run_dir = run_dirs[0];
    auto streams = node_streams(run_dir);
    CHECK(streams.count("user_logs/std_log.txt") == 1);
    CHECK(streams.count("system_logs/lifecycle.txt") == 1);
    for (const auto& [stream, file] : streams) {
      INFO(stream);
      CHECK(server.log(id, stream) == test::slurp(file));
    }
    CHECK(test::slurp(run_dir / "user_logs" / "std_log.txt").find(want.in_log) !=
          std::string::npos);
    if (!want.output.empty()) {
      auto into = dir / "outputs" / id;
      REQUIRE(executors::extract_snapshot_from_memory(server.outputs(id), into).ok());
      CHECK(std::filesystem::exists(into / want.output));
    }
    // run.json on the node says what the control plane says, as `amlnode run` would write it.
    auto run_json = nlohmann::json::parse(test::slurp(run_dir / "run.json"));
    CHECK(run_json["run_id"] == id);
    CHECK(run_json["status"] == want.status);
    CHECK(run_json["exit_code"] == record["exit_code"]);
    CHECK_FALSE(run_json["timings"]["running_at"].is_null());
    CHECK_FALSE(run_json["timings"]["ended_at"].is_null());
    CHECK(record["timings"].contains("running_ms"));
  }
  CHECK(nodes_used.size() >= 2);
  for (pid_t agent : agents) {
    ::kill(agent, SIGTERM);
    CHECK(test::wait_command(agent, std::chrono::seconds(20)) == 0);
  }
}
