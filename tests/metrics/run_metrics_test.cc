// Metrics end to end through the whole amlnode: a script's metrics under `amlnode run`, and the
// daemon sampling, serving and shipping metrics to the real amlnode-controlplane.

#include "controlplane/run_metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <nlohmann/json.hpp>

#include "agent/daemon/metrics_service.h"
#include "executors/run_cgroup.h"
#include "tests/agent/daemon/agent_config.h"
#include "tests/agent/daemon/control_plane_process.h"
#include "tests/metrics/metrics_test_support.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

using amlnode::test::read_json_lines;
using amlnode::test::run_command;
using amlnode::test::TempDir;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const fs::path kModuleDir = fs::path(AMLNODE_BINARY_DIR) / "share" / "amlnode" / "python";

}  // namespace

TEST_CASE("A script run by `amlnode run` logs into its run folder", "[metrics]") {
  TempDir dir;
  dir.write("project/train.py", R"(
import os
import amlnode_run
for step in range(3):
    amlnode_run.log("loss", 1.0 / (step + 1), step=step)
amlnode_run.log_row("final", accuracy=0.9)
print("metrics file:", os.environ["AMLNODE_METRICS_FILE"])
print("python path:", os.environ["PYTHONPATH"])
)");
  auto job = dir.write("project/job.yml",
                       "experiment_name: metrics\nuser_managed: true\nuse_docker: false\n"
                       "source_directory: .\nentry_script: train.py\n");
  auto result = run_command({amlnode::test::amlnode_binary().string(), "run", "--state-dir",
                             (dir / "state").string(), "--run-id", "m-1", job.string()},
                            {"PYTHONPATH=/opt/job-libs"});
  INFO(result.out << result.err);
  REQUIRE(result.exit_code == 0);
  fs::path file = dir / "state" / "runs" / "m-1" / "system_logs" / "metrics.jsonl";
  CHECK(result.out.find("metrics file: " + file.string()) != std::string::npos);
  // The caller's PYTHONPATH is kept; the module's folder comes after it.
  CHECK(result.out.find("python path: /opt/job-libs:" + kModuleDir.string()) != std::string::npos);
  auto lines = read_json_lines(file);
  REQUIRE(lines.size() == 4);
  CHECK(lines[2]["value"] == Approx(1.0 / 3));
  CHECK(lines[2]["step"] == 2);
  CHECK(lines[3]["row"]["accuracy"] == 0.9);
}

namespace {

// The agent's own log, started with its stdout and stderr in `dir`/out and `dir`/err: both are
// read, so the test does not depend on which of the two the log goes to.
std::string agent_log(const fs::path& dir) {
  std::string log;
  for (const char* name : {"out", "err"}) {
    std::error_code ec;
    if (fs::exists(dir / name, ec)) log += amlnode::test::slurp(dir / name);
  }
  return log;
}

// The port the agent serves /metrics on, from its log line `metrics: serving
// http://127.0.0.1:PORT/metrics` (the config says port 0, so the kernel picks a free one and no
// two tests can want the same); 0 when the line does not come within 30 s.
std::uint16_t served_port(const fs::path& agent_dir) {
  const std::string prefix = "metrics: serving http://127.0.0.1:";
  std::uint16_t port = 0;
  amlnode::test::eventually(
      [&] {
        std::string log = agent_log(agent_dir);
        auto at = log.find(prefix);
        if (at != std::string::npos)
          port = static_cast<std::uint16_t>(std::atoi(log.c_str() + at + prefix.size()));
        return port != 0;
      },
      std::chrono::seconds(30));
  return port;
}

// A scrape of the agent's /metrics with curl-free plain HTTP from the test's own client.
std::string scrape(std::uint16_t port) {
  auto result = run_command({"python3", "-c",
                             "import urllib.request,sys;sys.stdout.write(urllib.request.urlopen("
                             "'http://127.0.0.1:" +
                                 std::to_string(port) + "/metrics',timeout=5).read().decode())"});
  return result.exit_code == 0 ? result.out : "";
}

// The value of a sample line `SERIES VALUE`, -1 when there is none. Only whole lines count: the
// family's `# HELP NAME ...` line also has the name followed by a space.
double value_of(const std::string& exposition, const std::string& series) {
  std::string line = series + " ";
  for (std::size_t at = exposition.find(line); at != std::string::npos;
       at = exposition.find(line, at + 1)) {
    if (at == 0 || exposition[at - 1] == '\n')
      return std::strtod(exposition.c_str() + at + line.size(), nullptr);
  }
  return -1;
}

// The job: logs three losses and a row, holds 64 MiB, burns 1.5 s of CPU, then stays (at most
// 60 s) until the test has seen it on /metrics and creates `release` in its working directory, so
// the scrapes cannot miss the run however slowly this machine runs them.
const char* kTrainScript = R"(
import os, time
import amlnode_run
data = bytearray(64 << 20)
for i in range(0, len(data), 4096):
    data[i] = 1
for step in range(3):
    amlnode_run.log("loss", 1.0 / (step + 1), step=step)
amlnode_run.log_row("final", accuracy=0.9)
amlnode_run.flush()
while time.process_time() < 1.5:
    pass
deadline = time.monotonic() + 60
while time.monotonic() < deadline and not os.path.exists("release"):
    time.sleep(0.05)
print("done", len(data))
)";

}  // namespace

TEST_CASE("The daemon samples a run, serves /metrics and ships metrics to the control plane",
          "[metrics][daemon]") {
  TempDir dir;
  amlnode::test::ControlPlaneProcess server(dir / "cp", {"--heartbeat-interval", "1"});
  server.start();
  auto config = dir.write("a/config.yml", amlnode::test::agent_config_text(
                                              dir / "a" / "state", server.url(),
                                              server.registration_token("cpu-cluster"),
                                              amlnode::test::AgentConfigSections().with_metrics(
                                                  "{interval_seconds: 1, listen: '127.0.0.1:0'}")));
  pid_t agent = amlnode::test::start_command(
      {amlnode::test::amlnode_binary().string(), "agent", "--config", config.string()},
      dir / "a" / "out", dir / "a" / "err");
  std::uint16_t port = served_port(dir / "a");
  REQUIRE(port != 0);
  dir.write("src/train.py", kTrainScript);
  std::string id = server.submit("entry_script: train.py\nuser_managed: true\nuse_docker: false\n",
                                 dir / "src", "cpu-cluster");

  // While the run is live, /metrics shows it, with what it uses and what its script logged.
  const std::string series = "{run_id=\"" + id + "\"}";
  const std::string loss = "amlnode_run_metric{run_id=\"" + id + "\",name=\"loss\"}";
  std::string exposition;
  bool seen = amlnode::test::eventually(
      [&] {
        exposition = scrape(port);
        return value_of(exposition, "amlnode_run_cpu_seconds_total" + series) >= 1.5 &&
               value_of(exposition, loss) >= 0;
      },
      std::chrono::seconds(60));
  dir.write("a/state/runs/" + id + "/wd/release", "");
  INFO(agent_log(dir / "a"));
  REQUIRE(seen);
  CHECK(value_of(exposition, "amlnode_run_memory_bytes" + series) >= 64.0 * (1 << 20));
  CHECK(value_of(exposition, "amlnode_node_memory_total_bytes") > 0);
  // The last of the three losses (1, 1/2, 1/3); the row has no single value and is left out.
  CHECK(value_of(exposition, loss) == Approx(1.0 / 3));
  CHECK(exposition.find("name=\"final\"") == std::string::npos);
  auto file = dir.write("exposition.txt", exposition);
  auto checked = run_command({"sh", "-c", "promtool check metrics < " + file.string()});
  INFO(checked.out << checked.err);
  CHECK(checked.exit_code == 0);

  REQUIRE(amlnode::test::eventually([&] { return server.run(id)["status"] == "Completed"; },
                                    std::chrono::seconds(60)));
  const std::vector<std::string> env{"AMLNODE_CONTROL_PLANE=" + server.url(),
                                     "AMLNODE_USER_TOKEN=" + server.user_token()};
  auto amlnode = amlnode::test::amlnode_binary().string();
  auto answer = run_command({amlnode, "metrics", id, "--json"}, env);
  INFO(answer.err);
  REQUIRE(answer.exit_code == 0);
  auto metrics = json::parse(answer.out);
  CHECK(metrics["metrics"]["loss"]["count"] == 3);
  CHECK(metrics["metrics"]["loss"]["last"]["step"] == 2);
  CHECK(metrics["metrics"]["final"]["last"]["row"]["accuracy"] == 0.9);
  CHECK(metrics["resources"]["cpu_seconds"].get<double>() >= 1.5);
  CHECK(metrics["resources"]["memory_peak_bytes"].get<double>() >= 64.0 * (1 << 20));
  // A run is held in a cgroup of its own where the host allows (executors/run_cgroup.h), and is
  // then sampled from it.
  CHECK(metrics["resources"]["source"] ==
        (amlnode::executors::run_cgroup_support().available ? "cgroup" : "process_tree"));

  auto text = run_command({amlnode, "metrics", id}, env);
  CHECK(text.exit_code == 0);
  CHECK(text.out.find("NAME ") == 0);
  CHECK(text.out.find("\nloss ") != std::string::npos);
  CHECK(text.out.find(" scalar        3  0.3333333333333333 (step 2)\n") != std::string::npos);
  CHECK(text.out.find(" row           1  {\"accuracy\":0.9}\n") != std::string::npos);
  CHECK(text.out.find("resources at ") != std::string::npos);

  auto status = run_command({amlnode, "status", id, "--json"}, env);
  REQUIRE(status.exit_code == 0);
  auto record = json::parse(status.out);
  CHECK(record["status"] == "Completed");
  CHECK(record["resources"]["cpu_seconds"].get<double>() >= 1.5);

  ::kill(agent, SIGTERM);
  CHECK(amlnode::test::wait_command(agent, std::chrono::seconds(30)) == 0);
}

TEST_CASE("A metrics port already taken is logged and the agent goes on running jobs",
          "[metrics][daemon]") {
  // Someone else (another exporter, a second agent) listens on the configured port.
  int taken = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(taken >= 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(taken, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
  REQUIRE(::listen(taken, 1) == 0);
  socklen_t length = sizeof address;
  ::getsockname(taken, reinterpret_cast<sockaddr*>(&address), &length);
  const std::string where = "127.0.0.1:" + std::to_string(ntohs(address.sin_port));

  TempDir dir;
  amlnode::test::ControlPlaneProcess server(dir / "cp", {"--heartbeat-interval", "1"});
  server.start();
  auto config =
      dir.write("a/config.yml",
                amlnode::test::agent_config_text(
                    dir / "a" / "state", server.url(), server.registration_token("cpu-cluster"),
                    amlnode::test::AgentConfigSections().with_metrics(
                        "{interval_seconds: 1, listen: '" + where + "'}")));
  pid_t agent = amlnode::test::start_command(
      {amlnode::test::amlnode_binary().string(), "agent", "--config", config.string()},
      dir / "a" / "out", dir / "a" / "err");
  // The job ends once the agent has sampled it (at most 60 s): sampling goes on without /metrics.
  dir.write("src/train.py", R"(
import os, time
resources = os.path.join(os.path.dirname(os.environ["AMLNODE_METRICS_FILE"]), "resources.jsonl")
deadline = time.monotonic() + 60
while time.monotonic() < deadline and not os.path.exists(resources):
    time.sleep(0.05)
print("sampled" if os.path.exists(resources) else "never sampled")
)");
  std::string id = server.submit("entry_script: train.py\nuser_managed: true\nuse_docker: false\n",
                                 dir / "src", "cpu-cluster");
  bool completed = amlnode::test::eventually(
      [&] { return server.run(id)["status"] == "Completed"; }, std::chrono::seconds(60));
  std::string log = agent_log(dir / "a");
  INFO(log);
  CHECK(log.find("error metrics: cannot serve metrics on " + where +
                 ": Address already in use; /metrics is off, sampling goes on") !=
        std::string::npos);
  REQUIRE(completed);
  std::string output = server.log(id, "user_logs/std_log.txt");
  CHECK(output.find("sampled\n") != std::string::npos);
  CHECK(output.find("never sampled") == std::string::npos);
  CHECK(server.log(id, "system_logs/resources.jsonl").find("\"cpu_seconds\"") != std::string::npos);

  ::kill(agent, SIGTERM);
  CHECK(amlnode::test::wait_command(agent, std::chrono::seconds(30)) == 0);
  ::close(taken);
}

TEST_CASE("A public metrics address is refused unless the config allows it", "[metrics][daemon]") {
  TempDir dir;
  auto config = dir.write("config.yml",
                          "state_dir: " + (dir / "state").string() +
                              "\ncontrol_plane: {url: 'http://127.0.0.1:1', registration_token: t}"
                              "\nmetrics: {listen: '0.0.0.0:9108'}\n");
  auto result =
      run_command({amlnode::test::amlnode_binary().string(), "agent", "--config", config.string()});
  CHECK(result.exit_code != 0);
  CHECK(result.err.find("metrics.listen: 0.0.0.0 is not a loopback address") != std::string::npos);
}

TEST_CASE("A bad metrics section stops the agent with the key named", "[metrics][daemon]") {
  TempDir dir;
  auto config =
      dir.write("config.yml", "state_dir: " + (dir / "state").string() +
                                  "\ncontrol_plane: {url: 'http://127.0.0.1:1', "
                                  "registration_token: t}\nmetrics: {interval_seconds: 0}\n");
  auto result =
      run_command({amlnode::test::amlnode_binary().string(), "agent", "--config", config.string()});
  CHECK(result.exit_code != 0);
  CHECK(result.err.find("metrics.interval_seconds: expected 1 to 3600") != std::string::npos);
}

TEST_CASE("resources.jsonl ends at its limit with one marker line", "[metrics]") {
  amlnode::metrics::RunSample sample;
  sample.cpu_seconds = 1.5;
  sample.time_ms = 1763800980123;
  std::string line = amlnode::agent::resources_line(0, sample);
  auto parsed = json::parse(line);
  CHECK(parsed["cpu_seconds"] == 1.5);
  CHECK(parsed["time"] == "2025-11-22T08:43:00.123Z");
  CHECK(parsed["source"] == "process_tree");
  const std::uint64_t limit = amlnode::agent::kMaxResourcesFileBytes;
  CHECK(amlnode::agent::resources_line(limit - 256 - line.size(), sample) == line);
  std::string marker = amlnode::agent::resources_line(limit - 300, sample);
  CHECK(marker.size() == 300);  // fills the file to the limit exactly
  CHECK(json::parse(marker).contains("truncated"));
  CHECK(amlnode::agent::resources_line(limit, sample).empty());
}

namespace {

// The streams of run "r" as the control plane holds them, written as a node delivers them.
struct ShippedStreams {
  TempDir dir;
  amlnode::controlplane::LogStreams logs{dir / "runs"};
  void append(const std::string& stream, const std::string& text) {
    auto done = logs.append("r", stream, logs.length("r", stream), text);
    REQUIRE(done.ok());
  }
};

}  // namespace

TEST_CASE("GET /v1/runs/{id}/metrics survives lines a script wrote by hand", "[metrics]") {
  ShippedStreams shipped;
  shipped.append("system_logs/metrics.jsonl",
                 "{\"name\":\"loss\",\"kind\":\"scalar\",\"time\":1.0,\"value\":0.5,\"step\":0}\n"
                 "not json at all\n"
                 "{\"name\":\"loss\",\"kind\":5,\"value\":1}\n"
                 "{\"name\":7,\"kind\":\"scalar\",\"value\":1}\n"
                 "[1,2]\n"
                 "{\"name\":\"acc\",\"kind\":\"list\",\"time\":2.0,\"values\":[0.5,0.7]}\n"
                 "{\"kind\":\"truncated\",\"name\":\"\",\"time\":3.0}\n"
                 "{\"name\":\"loss\",\"kind\":\"scalar\",\"time\":4.0,\"value\":0.25,\"step\":1}\n"
                 "{\"name\":\"loss\",\"kind\":\"scal");  // still being written
  json answer = amlnode::controlplane::run_metrics_json(shipped.logs, "r");
  CHECK(answer["skipped_lines"] == 4);
  CHECK(answer["truncated"] == false);
  CHECK(answer["metrics"].size() == 2);
  CHECK(answer["metrics"]["loss"]["count"] == 2);
  CHECK(answer["metrics"]["loss"]["last"] == json{{"value", 0.25}, {"step", 1}, {"time", 4.0}});
  CHECK(answer["metrics"]["acc"]["kind"] == "list");
  CHECK(answer["metrics"]["acc"]["last"]["values"] == json{0.5, 0.7});
  CHECK(answer["resources"].is_null());
  // The answer is always something the server can send.
  CHECK_NOTHROW(answer.dump());
}

TEST_CASE("GET /v1/runs/{id}/metrics keeps the last values and says when it read only the end",
          "[metrics]") {
  ShippedStreams shipped;
  std::string text;
  for (int step = 0; step < 1500; ++step) {
    text +=
        "{\"name\":\"loss\",\"kind\":\"scalar\",\"time\":1.0,\"value\":" + std::to_string(step) +
        ",\"step\":" + std::to_string(step) + "}\n";
  }
  shipped.append("system_logs/metrics.jsonl", text);
  json answer = amlnode::controlplane::run_metrics_json(shipped.logs, "r");
  CHECK(answer["truncated"] == false);
  CHECK(answer["metrics"]["loss"]["count"] == 1500);
  REQUIRE(answer["metrics"]["loss"]["values"].size() == amlnode::controlplane::kMaxValuesPerMetric);
  CHECK(answer["metrics"]["loss"]["values"][0]["step"] == 500);
  CHECK(answer["metrics"]["loss"]["last"]["step"] == 1499);

  // Past 4 MiB only the end is read, from its first whole line.
  std::string padding(2000, 'x');
  std::string big;
  for (int i = 0; big.size() < amlnode::controlplane::kMetricsReadBytes + (1 << 20); ++i) {
    big += "{\"name\":\"text\",\"kind\":\"scalar\",\"time\":2.0,\"value\":\"" + padding +
           "\",\"step\":" + std::to_string(i) + "}\n";
  }
  shipped.append("system_logs/metrics.jsonl", big);
  answer = amlnode::controlplane::run_metrics_json(shipped.logs, "r");
  CHECK(answer["truncated"] == true);
  CHECK(answer["skipped_lines"] == 0);
  CHECK(answer["metrics"]["text"]["count"] < 2200);
  CHECK(answer["metrics"]["text"]["last"]["value"] == padding);
}

TEST_CASE("GET /v1/runs/{id}/metrics answers the last resource sample", "[metrics]") {
  ShippedStreams shipped;
  amlnode::metrics::RunSample sample;
  sample.cpu_seconds = 1.5;
  sample.time_ms = 1763800980123;
  shipped.append("system_logs/resources.jsonl", amlnode::agent::resources_line(0, sample));
  sample.cpu_seconds = 2.5;
  sample.memory_peak_bytes = 1 << 20;
  std::string last = amlnode::agent::resources_line(0, sample);
  shipped.append("system_logs/resources.jsonl", last);
  json answer = amlnode::controlplane::run_metrics_json(shipped.logs, "r");
  CHECK(answer["resources"] == json::parse(last));
  CHECK(answer["metrics"].empty());

  // A file that reached its limit ends with the marker line; the sample before it is the last.
  shipped.append(
      "system_logs/resources.jsonl",
      amlnode::agent::resources_line(amlnode::agent::kMaxResourcesFileBytes - 300, sample));
  answer = amlnode::controlplane::run_metrics_json(shipped.logs, "r");
  CHECK(answer["resources"]["cpu_seconds"] == 2.5);
}
