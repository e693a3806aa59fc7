// What a hostile (or careless) job can make the agent and the control plane do: each case is a real
// job run by a real agent against a real control plane, and checks that nothing outside the run is
// harmed and nothing is lost or dropped without saying so (docs/security.md).

#include <signal.h>
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <fstream>

#include "tests/agent/daemon/one_node_cluster.h"
#include "tests/support/process.h"

using namespace amlnode;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const std::string kShellJob = "entry_script: job.sh\nuser_managed: true\nuse_docker: false\n";

}  // namespace

TEST_CASE("a metrics line nested 100 000 deep is skipped, and the control plane stays up",
          "[daemon][hostile]") {
  test::OneNodeCluster cluster;
  std::string deep = "{\"name\":\"x\",\"kind\":\"scalar\",\"value\":" + std::string(100000, '[') +
                     std::string(100000, ']') + "}";
  cluster.dir().write("src/deep.json", deep + "\n");
  cluster.dir().write("src/job.sh",
                      "cat deep.json >> \"$AMLNODE_METRICS_FILE\"\n"
                      "echo '{\"name\":\"loss\",\"kind\":\"scalar\",\"time\":1,\"value\":0.5}' >> "
                      "\"$AMLNODE_METRICS_FILE\"\n");
  std::string id = cluster.submit(kShellJob);
  CHECK(cluster.wait_terminal(id)["status"] == "Completed");
  for (int i = 0; i < 2; ++i) {
    auto status = test::run_command({test::amlnode_binary().string(), "metrics", id, "--json"},
                                    cluster.user_env());
    INFO(status.err);
    REQUIRE(status.exit_code == 0);
    auto answer = json::parse(status.out);
    CHECK(answer["skipped_lines"] == 1);
    CHECK(answer["metrics"]["loss"]["last"]["value"] == 0.5);
  }
  CHECK(cluster.server().run(id)["status"] == "Completed");  // still answering
}

TEST_CASE("a request body nested 100 000 deep is refused with 400", "[daemon][hostile]") {
  test::TempDir dir;
  test::ControlPlaneProcess server(dir / "cp");
  server.start();
  std::string deep = std::string(100000, '[') + std::string(100000, ']');
  auto [status, body] =
      server.user_call("POST", "/v1/registration-tokens", json::parse("{\"compute_name\": \"x\"}"));
  REQUIRE(status == 201);
  agent::HttpRequest request;
  request.method = "POST";
  request.target = "/v1/runs";
  request.bearer_token = server.user_token();
  request.content_type = "application/json";
  request.body = "{\"job\": " + deep + "}";
  auto http = agent::make_http_client(*agent::parse_http_url(server.url()));
  auto answer = http->send(request);
  REQUIRE(answer.ok());
  CHECK(answer->status == 400);
  CHECK(answer->body.find("nested deeper than 64") != std::string::npos);
  CHECK(server.user_call("GET", "/v1/nodes").first == 200);
}

namespace {

// Bytes the files below `dir` take on disk (allocated blocks, not their apparent sizes).
std::uint64_t disk_usage(const fs::path& dir) {
  std::uint64_t total = 0;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    struct stat st {};
    if (::lstat(entry.path().c_str(), &st) == 0)
      total += static_cast<std::uint64_t>(st.st_blocks) * 512;
  }
  return total;
}

}  // namespace

TEST_CASE("holes and bytes past the budgets cost the control plane nothing, and are counted",
          "[daemon][hostile]") {
  test::OneNodeCluster cluster({"--log-budget-stream", "1MiB", "--log-budget-run", "64MiB"});
  cluster.dir().write("src/job.sh",
                      "truncate -s 200G logs/sparse.bin\n"
                      "head -c 3000000 /dev/zero | tr '\\0' 'x' > logs/big.txt\n"
                      "echo done\n");
  std::string id = cluster.submit(kShellJob);
  auto record = cluster.wait_terminal(id, std::chrono::seconds(120));
  INFO(record.dump());
  CHECK(record["status"] == "Completed");

  // logs/big.txt: its first MiB, the budget's marker, and the count once the run ended.
  std::string big = cluster.server().log(id, "logs/big.txt");
  CHECK(big.size() < (1u << 20) + 1000);
  CHECK(big.rfind(std::string(1 << 20, 'x'), 0) == 0);
  CHECK(big.find("[amlnode: this stream reached the log budget of 1.0 MiB per stream; later "
                 "bytes are dropped") != std::string::npos);
  CHECK(big.find("[amlnode: in all 1.9 MiB (" + std::to_string(3000000 - (1 << 20)) +
                 " bytes) of this stream's file were not delivered: HTTP 413 LogBudgetExceeded") !=
        std::string::npos);
  // logs/sparse.bin: no data at all, one marker for its 200 GiB hole.
  std::string sparse = cluster.server().log(id, "logs/sparse.bin");
  CHECK(sparse.size() < 1000);
  CHECK(sparse.find("200.0 GiB (214748364800 bytes) of logs/sparse.bin from byte 0 are a hole") !=
        std::string::npos);

  CHECK(record["dropped_logs"]["logs/big.txt"]["bytes"] == 3000000 - (1 << 20));
  CHECK(record["dropped_logs"]["logs/sparse.bin"]["bytes"] == 214748364800ull);
  CHECK(record["dropped_logs"]["logs/sparse.bin"]["why"] == "holes");
  CHECK(record["dropped_log_bytes"] == 214748364800ull + 3000000 - (1 << 20));
  CHECK(disk_usage(cluster.dir() / "cp" / "runs" / id) < (8u << 20));
  // The node says which stream it set aside, and why.
  std::string lifecycle = cluster.server().log(id, "system_logs/lifecycle.txt");
  CHECK(lifecycle.find("log stream logs/big.txt is set aside: the control plane refused it (HTTP "
                       "413 LogBudgetExceeded") != std::string::npos);
}

TEST_CASE("links a job plants where the agent writes lead the agent nowhere", "[daemon][hostile]") {
  test::OneNodeCluster cluster(
      {}, test::AgentConfigSections{}.with_metrics("{listen: '127.0.0.1:0', interval_seconds: 1}"));
  auto victim = cluster.dir().write("victim.txt", "the host's file\n");
  fs::path absent = cluster.dir() / "absent.txt";
  cluster.dir().write(
      "src/job.sh",
      "ln -sf " + victim.string() +
          " ../system_logs/lifecycle.txt\n"
          "ln -sf " +
          absent.string() +
          " ../system_logs/resources.jsonl\n"
          "mkdir -p ../elsewhere && ln -sfn " +
          cluster.dir().path().string() +
          " ../elsewhere/up\n"
          // Long enough for the agent to sample the run (every second) through the planted link.
          "sleep 2.5\necho planted\n");
  std::string id = cluster.submit(kShellJob);
  auto record = cluster.wait_terminal(id);
  INFO(record.dump());
  CHECK(record["status"] == "Completed");
  CHECK(test::slurp(victim) == "the host's file\n");
  CHECK_FALSE(fs::exists(absent));
  CHECK(cluster.server().log(id, "user_logs/std_log.txt") == "planted\n");
  // The agent said it would not follow them.
  CHECK(cluster.agent_output().find("symbolic link is on the way; it is not followed") !=
        std::string::npos);
}

TEST_CASE("a log file whose name only fits the control plane hashed is delivered",
          "[daemon][hostile]") {
  test::OneNodeCluster cluster;
  // 194 bytes as a stream name (under the 200-byte limit), about 290 once escaped.
  std::string folders;
  for (int i = 0; i < 47; ++i) folders += "a/";
  cluster.dir().write("src/job.sh",
                      "mkdir -p logs/" + folders + " && echo deep > logs/" + folders + "x.txt\n");
  std::string id = cluster.submit(kShellJob);
  auto record = cluster.wait_terminal(id);
  INFO(record.dump());
  CHECK(record["status"] == "Completed");
  CHECK(cluster.server().log(id, "logs/" + folders + "x.txt") == "deep\n");
  auto [status, listed] = cluster.server().user_call("GET", "/v1/runs/" + id + "/logs");
  CHECK(listed["streams"].contains("logs/" + folders + "x.txt"));
}

TEST_CASE("log files named with a backslash or a newline are set aside and the run ends",
          "[daemon][hostile]") {
  test::OneNodeCluster cluster;
  cluster.dir().write("src/job.sh",
                      "echo a > 'logs/back\\slash.txt'\n"
                      "echo b > \"logs/new$(printf '\\nline').txt\"\n"
                      "echo c > logs/fine.txt\n");
  std::string id = cluster.submit(kShellJob);
  auto record = cluster.wait_terminal(id);
  INFO(record.dump());
  CHECK(record["status"] == "Completed");
  CHECK(cluster.server().log(id, "logs/fine.txt") == "c\n");
  CHECK(record["dropped_logs"]["logs/back\\slash.txt"]["bytes"] == 2);
  CHECK(record["dropped_logs"]["logs/new\nline.txt"]["bytes"] == 2);
  std::string lifecycle = cluster.server().log(id, "system_logs/lifecycle.txt");
  CHECK(lifecycle.find("InvalidStreamName") != std::string::npos);
  // Said once each, not once a tick.
  std::size_t count = 0;
  for (auto at = lifecycle.find("is set aside"); at != std::string::npos;
       at = lifecycle.find("is set aside", at + 1))
    ++count;
  CHECK(count == 2);
}

TEST_CASE("a truncated std_log and a rewritten log file are told, not lost", "[daemon][hostile]") {
  test::OneNodeCluster cluster;
  fs::path go = cluster.dir() / "go";
  cluster.dir().write("src/job.sh",
                      "echo first\necho one > logs/t.txt\n"
                      "while [ ! -e " +
                          go.string() +
                          " ]; do sleep 0.02; done\n"
                          ": > ../user_logs/std_log.txt\necho second\n"
                          "echo two-rewritten > logs/t.txt\n");
  std::string id = cluster.submit(kShellJob);
  // The test lets the job go on once the control plane has the first lines.
  REQUIRE(test::eventually(
      [&] {
        return cluster.server().log(id, "user_logs/std_log.txt") == "first\n" &&
               cluster.server().log(id, "logs/t.txt") == "one\n";
      },
      std::chrono::seconds(30)));
  cluster.dir().write("go", "");
  auto record = cluster.wait_terminal(id);
  INFO(record.dump());
  CHECK(record["status"] == "Completed");
  std::string std_log = cluster.server().log(id, "user_logs/std_log.txt");
  INFO(std_log);
  CHECK(std_log.rfind("first\n[amlnode: user_logs/std_log.txt was ", 0) == 0);
  CHECK(std_log.find("what follows is its content again from its start]\nsecond\n") !=
        std::string::npos);
  std::string t = cluster.server().log(id, "logs/t.txt");
  INFO(t);
  CHECK(t.rfind("one\n[amlnode: logs/t.txt was ", 0) == 0);
  CHECK(t.find("]\ntwo-rewritten\n") != std::string::npos);
}

namespace {

// A zombie is not alive: its process is gone, and only whoever inherited it has yet to reap it
// (init, here, after the shim that would have reaped it was killed).
bool alive(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return false;
  auto close = line.rfind(')');
  return close != std::string::npos && close + 2 < line.size() && line[close + 2] != 'Z';
}

// The pids a job wrote into `file`, one a line.
std::vector<pid_t> pids_in(const fs::path& file) {
  std::vector<pid_t> pids;
  std::ifstream in(file);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) pids.push_back(std::stoi(line));
  return pids;
}

// A job whose processes (one in the background, one setsid'd away, one in front) say where they
// are and stay until they are stopped.
const char* kLingeringJob =
    "sleep 300 & echo $! >> \"$PIDS\"\n"
    "setsid sleep 300 & echo $! >> \"$PIDS\"\n"
    "echo $$ >> \"$PIDS\"\n"
    "touch \"$PIDS.ready\"\n"
    "wait\n";

// A run of kLingeringJob, up: its id, the job's three processes and its shim.
struct LingeringRun {
  std::string id;
  std::vector<pid_t> job;
  pid_t shim = 0;
};

LingeringRun start_lingering_run(test::OneNodeCluster& cluster) {
  fs::path pids = cluster.dir() / "pids";
  cluster.dir().write("src/job.sh", kLingeringJob);
  LingeringRun run;
  run.id = cluster.submit(kShellJob + "environment_variables: {PIDS: " + pids.string() + "}\n");
  REQUIRE(test::eventually([&] { return fs::exists(pids.string() + ".ready"); },
                           std::chrono::seconds(30)));
  run.job = pids_in(pids);
  REQUIRE(run.job.size() == 3);
  auto shims = test::processes_with_marker((cluster.run_dir(run.id) / "launch.json").string());
  REQUIRE(shims.size() == 1);
  run.shim = shims[0];
  return run;
}

}  // namespace

TEST_CASE("SIGKILL of a run's shim takes every process of the run with it", "[daemon][hostile]") {
  test::OneNodeCluster cluster;
  auto [id, job, shim] = start_lingering_run(cluster);
  ::kill(shim, SIGKILL);

  auto record = cluster.wait_terminal(id);
  INFO(record.dump());
  CHECK(record["status"] == "Failed");
  CHECK(record["error"]["code"] == "SupervisorFailed");
  for (pid_t pid : job) CHECK_FALSE(alive(pid));
  CHECK(cluster.server()
            .log(id, "system_logs/lifecycle.txt")
            .find("killed 3 process(es) of the "
                  "run left after its supervisor") != std::string::npos);
  CHECK(cluster.scrape_metrics().find("\namlnode_run_cgroups 1\n") != std::string::npos);
}

TEST_CASE("without cgroups the agent says so at start and on /metrics", "[daemon][hostile]") {
  test::OneNodeCluster cluster({}, {}, {"AMLNODE_RUN_CGROUPS=0"});
  CHECK(cluster.scrape_metrics().find("\namlnode_run_cgroups 0\n") != std::string::npos);
  CHECK(cluster.agent_output().find("runs are not held in cgroups (turned off "
                                    "($AMLNODE_RUN_CGROUPS=0)): a run's processes can outlive a "
                                    "killed supervisor") != std::string::npos);
  // Runs still run, held by their shim as before.
  cluster.dir().write("src/job.sh", "echo still runs\n");
  std::string id = cluster.submit(kShellJob);
  CHECK(cluster.wait_terminal(id)["status"] == "Completed");
}

TEST_CASE("an experiment name too long for a run id is refused at submit, naming the field",
          "[daemon][hostile]") {
  test::TempDir dir;
  test::ControlPlaneProcess server(dir / "cp");
  server.start();
  dir.write("src/job.yml", kShellJob);
  dir.write("src/job.sh", "true\n");
  auto submitted = test::run_command(
      {test::amlnode_binary().string(), "submit", (dir / "src" / "job.yml").string(), "--compute",
       "cpu", "--experiment", std::string(240, 'e')},
      {"AMLNODE_CONTROL_PLANE=" + server.url(), "AMLNODE_USER_TOKEN=" + server.user_token()});
  CHECK(submitted.exit_code == 1);
  CHECK(submitted.err.find("HTTP 400") != std::string::npos);
  CHECK(submitted.err.find("experiment_name") != std::string::npos);
  // At the limit it is taken, and its snapshot stored.
  auto taken = test::run_command(
      {test::amlnode_binary().string(), "submit", (dir / "src" / "job.yml").string(), "--compute",
       "cpu", "--experiment", std::string(235, 'e')},
      {"AMLNODE_CONTROL_PLANE=" + server.url(), "AMLNODE_USER_TOKEN=" + server.user_token()});
  INFO(taken.err);
  CHECK(taken.exit_code == 0);
}

TEST_CASE("a log file named with a percent sign is listed and read back as named",
          "[daemon][hostile]") {
  test::OneNodeCluster cluster;
  cluster.dir().write("src/job.sh", "echo percent > 'logs/%ff'\n");
  std::string id = cluster.submit(kShellJob);
  CHECK(cluster.wait_terminal(id)["status"] == "Completed");
  auto [status, listed] = cluster.server().user_call("GET", "/v1/runs/" + id + "/logs");
  INFO(listed.dump());
  CHECK(listed["streams"].contains("logs/%ff"));
  auto read = test::run_command(
      {test::amlnode_binary().string(), "logs", id, "--stream", "logs/%ff"}, cluster.user_env());
  CHECK(read.out == "percent\n");
}

TEST_CASE("a run whose folder is removed under it says so", "[daemon][hostile]") {
  test::TempDir dir;
  dir.write("src/job.yml", kShellJob);
  dir.write("src/job.sh", "rm -rf \"$(dirname \"$PWD\")\"\n");
  auto result = test::run_command({test::amlnode_binary().string(), "run", "--state-dir",
                                   (dir / "state").string(), (dir / "src" / "job.yml").string()});
  CHECK(result.exit_code != 0);
  CHECK(result.err.find("was removed while the run ran") != std::string::npos);
}

TEST_CASE("a run whose logs cannot be stored can still be canceled to a terminal status",
          "[daemon][hostile]") {
  test::OneNodeCluster cluster;
  fs::path go = cluster.dir() / "go";
  cluster.dir().write("src/job.sh", "echo started\nwhile [ ! -e " + go.string() +
                                        " ]; do sleep 0.02; done\necho more\n");
  std::string id = cluster.submit(kShellJob);
  REQUIRE(test::eventually(
      [&] { return cluster.server().log(id, "user_logs/std_log.txt") == "started\n"; },
      std::chrono::seconds(30)));
  // The control plane's stream files become unreachable for it: every append fails as storage
  // trouble (503), which the node retries, as it would for a full disk.
  fs::path logs = cluster.dir() / "cp" / "runs" / id / "logs";
  fs::remove_all(logs);
  cluster.dir().write("cp/runs/" + id + "/logs", "in the way\n");
  cluster.dir().write("go", "");
  REQUIRE(test::eventually([&] { return cluster.server().run(id)["status"] == "Finalizing"; },
                           std::chrono::seconds(30)));
  auto canceled =
      test::run_command({test::amlnode_binary().string(), "cancel", id}, cluster.user_env());
  CHECK(canceled.exit_code == 0);
  auto record = cluster.wait_terminal(id, std::chrono::seconds(30));
  INFO(record.dump());
  CHECK(record["status"] == "Completed");
}

TEST_CASE("a cancel the run's stopped shim cannot carry out ends with the run's processes killed",
          "[daemon][hostile]") {
  test::OneNodeCluster cluster;
  auto [id, job, shim] = start_lingering_run(cluster);
  // A stopped supervisor holds the SIGTERM the cancel sends; the agent's lifecycle gives it the
  // grace period (10 s) and a margin (5 s), then kills the run's cgroup.
  ::kill(shim, SIGSTOP);
  auto started = std::chrono::steady_clock::now();
  auto canceled =
      test::run_command({test::amlnode_binary().string(), "cancel", id}, cluster.user_env());
  REQUIRE(canceled.exit_code == 0);
  auto record = cluster.wait_terminal(id, std::chrono::seconds(60));
  auto took = std::chrono::steady_clock::now() - started;
  INFO(record.dump());
  CHECK(record["status"] == "Canceled");
  CHECK(took >= std::chrono::seconds(14));
  CHECK(took < std::chrono::seconds(30));
  for (pid_t pid : job) CHECK_FALSE(alive(pid));
  CHECK_FALSE(alive(shim));
}
