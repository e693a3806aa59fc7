// PySpark runs on an HDInsight node under the real daemon and control plane. Spark and YARN are not
// in Debian: tests/agent/spark/spark-submit and yarn are stand-ins, named so, that take exactly
// the real command lines, print what the real ones print (the "Submitted application" line, the
// driver's log) and record what they were asked. The agent is labelled compute_kind: hdinsight, as
// `amlnode attach --kind hdinsight` labels it, and finds the stand-ins on its PATH.

#include <signal.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <sstream>

#include "tests/agent/daemon/one_node_cluster.h"
#include "tests/support/process.h"

using namespace amlnode;
using namespace std::chrono_literals;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const fs::path kStandIns = fs::path(AMLNODE_SOURCE_DIR) / "tests" / "agent" / "spark";

struct HdiNode {
  test::TempDir state;
  test::OneNodeCluster cluster;

  HdiNode()
      : cluster({},
                test::AgentConfigSections{}.with_node(
                    "  labels: {compute_name: cpu-cluster, compute_kind: hdinsight}\n"
                    "  lease_wait_seconds: 2\n"),
                {"PATH=" + kStandIns.string() + ":" + std::getenv("PATH"),
                 "SPARK_STANDIN_STATE=" + state.path().string()}) {}

  // A RunConfiguration, as RunConfiguration(framework="PySpark").save() writes one.
  std::string submit(const std::string& script, const std::string& more) {
    cluster.dir().write("src/job.py", script);
    return cluster.submit(
        "script: job.py\narguments: [--rows, 3]\nframework: PySpark\n"
        "environment:\n  docker: {enabled: false}\n"
        "  python: {userManagedDependencies: true, interpreterPath: /usr/bin/python3}\n" +
        more);
  }
  // The command lines spark-submit was given.
  std::vector<json> submits() {
    std::vector<json> out;
    std::error_code ec;
    if (!fs::exists(state / "submits.jsonl", ec)) return out;
    std::istringstream lines(test::slurp(state / "submits.jsonl"));
    for (std::string line; std::getline(lines, line);) out.push_back(json::parse(line));
    return out;
  }
};

}  // namespace

TEST_CASE("PySpark in cluster mode: spark-submit as the SDK's settings say, the driver's log back",
          "[daemon][pyspark]") {
  HdiNode node;
  std::string id = node.submit(
      "import sys\nprint('driver says', sys.argv[1:])\n",
      "  spark:\n    repositories: [https://mmlspark.azureedge.net/maven]\n"
      "    packages: [{group: com.microsoft.ml.spark, artifact: mmlspark_2.11, version: '0.15'}]\n"
      "    precachePackages: false\n"
      "spark: {configuration: {spark.executor.instances: 2, spark.app.name: counting}}\n"
      "hdi: {yarnDeployMode: cluster}\n");
  auto record = node.cluster.wait_terminal(id);
  INFO(record.dump());
  REQUIRE(record["status"] == "Completed");
  auto submits = node.submits();
  REQUIRE(submits.size() == 1);
  CHECK(submits[0] == json::array({"--master",
                                   "yarn",
                                   "--deploy-mode",
                                   "cluster",
                                   "--conf",
                                   "spark.yarn.maxAppAttempts=1",
                                   "--conf",
                                   "spark.pyspark.python=/usr/bin/python3",
                                   "--conf",
                                   "spark.pyspark.driver.python=/usr/bin/python3",
                                   "--conf",
                                   "spark.yarn.appMasterEnv.PYSPARK_PYTHON=/usr/bin/python3",
                                   "--conf",
                                   "spark.executor.instances=2",
                                   "--conf",
                                   "spark.app.name=counting",
                                   "--packages",
                                   "com.microsoft.ml.spark:mmlspark_2.11:0.15",
                                   "--repositories",
                                   "https://mmlspark.azureedge.net/maven",
                                   "job.py",
                                   "--rows",
                                   "3"}));
  // The driver ran in YARN: its output reaches the run's log through yarn logs.
  std::string log = node.cluster.server().log(id, "user_logs/std_log.txt");
  CHECK_THAT(log, Catch::Contains("Submitted application application_1700000000000_0001"));
  CHECK_THAT(
      log, Catch::Contains("the driver's log of application_1700000000000_0001 (yarn logs -am 1)"));
  CHECK_THAT(log, Catch::Contains("driver says ['--rows', '3']"));
}

TEST_CASE("PySpark in client mode: the driver runs here, Azure ML's defaults for the rest",
          "[daemon][pyspark]") {
  HdiNode node;
  std::string id = node.submit("import sys\nprint('driver here', sys.argv[1:])\nsys.exit(3)\n",
                               "hdi: {yarnDeployMode: client}\n");
  auto record = node.cluster.wait_terminal(id);
  INFO(record.dump());
  CHECK(record["status"] == "Failed");
  auto submits = node.submits();
  REQUIRE(submits.size() == 1);
  CHECK(submits[0] ==
        json::array({"--master", "yarn", "--deploy-mode", "client", "--conf",
                     "spark.app.name=Azure ML Experiment", "--conf", "spark.yarn.maxAppAttempts=1",
                     "--conf", "spark.pyspark.python=/usr/bin/python3", "--conf",
                     "spark.pyspark.driver.python=/usr/bin/python3", "job.py", "--rows", "3"}));
  std::string log = node.cluster.server().log(id, "user_logs/std_log.txt");
  CHECK_THAT(log, Catch::Contains("driver here ['--rows', '3']"));
  CHECK(log.find("yarn logs") == std::string::npos);
}

TEST_CASE("PySpark canceled: the YARN application is killed, not only spark-submit",
          "[daemon][pyspark]") {
  HdiNode node;
  std::string id = node.submit("import time\ntime.sleep(600)\n", "");
  auto pid_file = node.state / "application_1700000000000_0001.pid";
  REQUIRE(test::eventually([&] { return fs::exists(pid_file); }, 60s));
  pid_t application = std::stoi(test::slurp(pid_file));
  auto [status, answer] = node.cluster.server().user_call("POST", "/v1/runs/" + id + "/cancel");
  CHECK(status == 200);
  auto record = node.cluster.wait_terminal(id);
  CHECK(record["status"] == "Canceled");
  CHECK(test::slurp(node.state / "killed") == "application_1700000000000_0001\n");
  CHECK(test::eventually([&] { return ::kill(application, 0) != 0; }, 10s));
}

TEST_CASE("PySpark past its deadline: the YARN application is killed and the run times out",
          "[daemon][pyspark]") {
  HdiNode node;
  std::string id = node.submit("import time\ntime.sleep(600)\n", "maxRunDurationSeconds: 2\n");
  auto record = node.cluster.wait_terminal(id);
  INFO(record.dump());
  CHECK(record["status"] == "Failed");
  CHECK(record["error"]["code"] == "RunTimeout");
  CHECK(test::slurp(node.state / "killed") == "application_1700000000000_0001\n");
  pid_t application = std::stoi(test::slurp(node.state / "application_1700000000000_0001.pid"));
  CHECK(test::eventually([&] { return ::kill(application, 0) != 0; }, 10s));
}
