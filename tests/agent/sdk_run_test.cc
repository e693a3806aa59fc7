// A script that uses the Azure ML SDK's runtime surface, run by the real `amlnode run`: the run
// context file, named environments from the node config, datasets and models, placeholders in the
// arguments, and run.fail().

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

using namespace amlnode;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// Debian's interpreter, which has numpy and pandas (scripts/setup installs them).
const char* kNodePython = "/usr/bin/python3";

struct SdkWorkspace {
  test::TempDir dir;
  fs::path config = dir.write("node.yml", std::string("named_environments:\n"
                                                      "  AzureML-Minimal:\n"
                                                      "    python: {user_managed_dependencies: "
                                                      "true, interpreter_path: ") +
                                              kNodePython + "}\n");

  test::CommandResult run(const std::string& job, std::vector<std::string> extra = {}) {
    auto file = dir.write("project/job.yml", job);
    std::vector<std::string> argv = {
        test::amlnode_binary().string(), "run", "--config", config.string(), "--state-dir",
        (dir / "state").string()};
    argv.insert(argv.end(), extra.begin(), extra.end());
    argv.push_back(file.string());
    return test::run_command(argv, {}, std::chrono::seconds(120));
  }
  fs::path run_dir(const std::string& id) const { return dir / "state" / "runs" / id; }
  json run_json(const std::string& id) const {
    return json::parse(test::slurp(run_dir(id) / "run.json"));
  }
};

}  // namespace

TEST_CASE("a script using azureml.core runs with its datasets, model and metrics", "[sdk]") {
  SdkWorkspace ws;
  ws.dir.write("project/data/diabetes.csv", "age;bmi\n50;22.5\n61;30.1\n");
  ws.dir.write("project/data/images/a.png", "png");
  ws.dir.write("project/models/iris.pkl", "weights");
  ws.dir.write("project/train.py", R"(
import sys
import numpy as np
from azureml.core import Run, Model
run = Run.get_context()
table = run.input_datasets["diabetes"].to_pandas_dataframe()
print("rows", len(table), "columns", list(table.columns))
print("images", run.input_datasets["images"])
print("model", Model.get_model_path("iris"))
print("args", sys.argv[1:])
run.log("mean_bmi", np.float64(table["bmi"].mean()))
run.log_list("ages", np.array(table["age"]))
run.tag("team", "vision")
run.complete()
)");
  auto result = ws.run(R"(
experiment_name: sdk
script: train.py
arguments: [--data, DatasetConsumptionConfig:images, --table, $AZUREML_DATAREFERENCE_diabetes]
environment: AzureML-Minimal
inputs:
  diabetes: {path: data/diabetes.csv, dataset: tabular, separator: ';'}
  images: {path: data/images, dataset: file, path_on_compute: /tmp/amlnode-sdk-test-images}
models:
  iris: {path: models/iris.pkl, version: 3}
)",
                       {"--run-id", "sdk-1"});
  INFO(result.out << result.err);
  REQUIRE(result.exit_code == 0);
  CHECK(result.out.find("rows 2 columns ['age', 'bmi']") != std::string::npos);
  CHECK(result.out.find("images /tmp/amlnode-sdk-test-images\n") != std::string::npos);
  CHECK(result.out.find("model " + (ws.run_dir("sdk-1") / "models/iris/3/iris.pkl").string()) !=
        std::string::npos);
  CHECK(result.out.find("args ['--data', '/tmp/amlnode-sdk-test-images', '--table', '" +
                        (ws.run_dir("sdk-1") / "inputs/diabetes").string() + "']") !=
        std::string::npos);
  // The place on compute outside the run folder is gone with the run.
  CHECK_FALSE(fs::exists(fs::symlink_status("/tmp/amlnode-sdk-test-images")));
  std::string metrics = test::slurp(ws.run_dir("sdk-1") / "system_logs" / "metrics.jsonl");
  CHECK(metrics.find("\"name\":\"mean_bmi\"") != std::string::npos);
  CHECK(metrics.find("\"value\":26.3") != std::string::npos);
  CHECK(metrics.find("\"values\":[50,61]") != std::string::npos);
  CHECK(test::slurp(ws.run_dir("sdk-1") / "system_logs" / "tags.jsonl").find("\"team\"") !=
        std::string::npos);
  CHECK(ws.run_json("sdk-1")["status"] == "Completed");
}

TEST_CASE("run.fail() ends the run Failed with its error, though the script exits 0", "[sdk]") {
  SdkWorkspace ws;
  ws.dir.write("project/train.py",
               "from azureml.core import Run\n"
               "Run.get_context().fail(error_details='validation loss diverged', "
               "error_code='Diverged')\n");
  auto result =
      ws.run("script: train.py\nenvironment: AzureML-Minimal\n", {"--run-id", "sdk-fail"});
  INFO(result.out << result.err);
  CHECK(result.exit_code == 1);
  auto record = ws.run_json("sdk-fail");
  CHECK(record["status"] == "Failed");
  CHECK(record["error"]["code"] == "Diverged");
  CHECK(record["error"]["message"] == "validation loss diverged");
}

TEST_CASE("an environment the node does not know is refused before anything runs", "[sdk]") {
  SdkWorkspace ws;
  ws.dir.write("project/train.py", "print('never')\n");
  auto result = ws.run("script: train.py\nenvironment: AzureML-sklearn-0.24-ubuntu18.04-py37-cpu\n",
                       {"--run-id", "sdk-unknown"});
  CHECK(result.exit_code == 2);
  CHECK(result.err.find("environment: this node has no environment named "
                        "\"AzureML-sklearn-0.24-ubuntu18.04-py37-cpu\" (its config's "
                        "named_environments has: AzureML-Minimal)") != std::string::npos);
  CHECK_FALSE(fs::exists(ws.run_dir("sdk-unknown")));
}

TEST_CASE("what this node cannot run yet is refused by the field that asks for it", "[sdk]") {
  SdkWorkspace ws;
  ws.dir.write("project/train.py", "print('never')\n");
  struct Case {
    std::string job;
    std::string message;
  };
  for (const auto& c : std::vector<Case>{
           {"parallel_run: {name: score, entry_script: train.py, error_threshold: 1, "
            "output_action: append_row, partition_keys: [region]}\n",
            "inputs: a ParallelRunStep needs an input to split into mini-batches"},
           {"distributed_job_config: {type: mpi, node_count: 2}\n",
            "distributed_job_config: a run across nodes (node_count 2) runs only as a gang"}}) {
    auto result = ws.run("script: train.py\nenvironment: AzureML-Minimal\n" + c.job);
    INFO(c.job << result.out << result.err);
    CHECK(result.exit_code == 125);
    CHECK(result.err.find(c.message) != std::string::npos);
  }
}

TEST_CASE("a runconfig's registered datasets come from the node's datasets registry", "[sdk]") {
  SdkWorkspace ws;
  ws.dir.write("registry/mnist/0.bin", "digits");
  ws.config = ws.dir.write(
      "node.yml",
      std::string("named_environments:\n  AzureML-Minimal:\n    python: "
                  "{user_managed_dependencies: true, interpreter_path: ") +
          kNodePython +
          "}\ndatasets:\n  ed4b4117-8eec-4a5f-afb6-481bd5ef0017: {path: registry/mnist, "
          "kind: file}\n");
  ws.dir.write("project/train.py",
               "import os, sys\nprint('argv', sys.argv[1:])\nprint('var', os.environ['mnist'])\n"
               "print('files', os.listdir(sys.argv[2]))\n");
  auto runconfig = ws.dir.write("project/.azureml/mnist.runconfig", R"(
script: train.py
arguments: [--data-folder, DatasetConsumptionConfig:mnist]
framework: Python
environment:
  python:
    userManagedDependencies: true
    interpreterPath: /usr/bin/python3
data:
  mnist:
    dataLocation:
      dataset:
        id: ed4b4117-8eec-4a5f-afb6-481bd5ef0017
      datapath:
    createOutputDirectories: false
    mechanism: mount
    environmentVariableName: mnist
    pathOnCompute:
    overwrite: false
)");
  auto result = test::run_command({test::amlnode_binary().string(), "run", "--config",
                                   ws.config.string(), "--state-dir", (ws.dir / "state").string(),
                                   "--run-id", "data-1", runconfig.string()});
  INFO(result.out << result.err);
  REQUIRE(result.exit_code == 0);
  std::string staged = (ws.run_dir("data-1") / "inputs" / "mnist").string();
  CHECK(result.out.find("argv ['--data-folder', '" + staged + "']") != std::string::npos);
  CHECK(result.out.find("var " + staged + "\n") != std::string::npos);
  CHECK(result.out.find("files ['0.bin']") != std::string::npos);

  // A dataset the node does not have is refused before anything runs, naming it.
  ws.config = ws.dir.write("node.yml", "datasets: {}\n");
  auto unknown = test::run_command({test::amlnode_binary().string(), "run", "--config",
                                    ws.config.string(), "--state-dir", (ws.dir / "state").string(),
                                    "--run-id", "data-2", runconfig.string()});
  CHECK(unknown.exit_code == 2);
  CHECK(unknown.err.find("data.mnist: this node has no dataset with id "
                         "ed4b4117-8eec-4a5f-afb6-481bd5ef0017 or name \"mnist\"") !=
        std::string::npos);
}

TEST_CASE("a deadline ends the run RunTimeout even after the script called run.fail()", "[sdk]") {
  SdkWorkspace ws;
  ws.dir.write("project/train.py",
               "import time\n"
               "from azureml.core import Run\n"
               "Run.get_context().fail(error_details='gave up', error_code='Diverged')\n"
               "time.sleep(60)\n");
  auto result = ws.run(
      "script: train.py\nenvironment: AzureML-Minimal\n"
      "max_run_duration_seconds: 1\n",
      {"--run-id", "sdk-deadline", "--kill-grace", "1"});
  INFO(result.out << result.err);
  CHECK(result.exit_code == 124);
  CHECK(ws.run_json("sdk-deadline")["error"]["code"] == "RunTimeout");
}

TEST_CASE("the node's sdk switches are booleans it knows, and stand_in: false reaches the run",
          "[sdk]") {
  SdkWorkspace ws;
  ws.dir.write("project/train.py",
               "import os\nprint('standin', os.environ.get("
               "'AMLNODE_SDK_STANDIN'))\n");
  auto node = test::slurp(ws.config);
  ws.dir.write("node.yml", node + "sdk: {stand_in: \"no\"}\n");
  auto refused = ws.run("script: train.py\nenvironment: AzureML-Minimal\n");
  CHECK(refused.exit_code != 0);
  CHECK_THAT(refused.err, Catch::Contains("sdk.stand_in: expected true or false, got \"no\""));
  ws.dir.write("node.yml", node + "sdk: {standin: false}\n");
  CHECK_THAT(ws.run("script: train.py\nenvironment: AzureML-Minimal\n").err,
             Catch::Contains("sdk.standin: unknown setting"));
  ws.dir.write("node.yml", node + "sdk: {stand_in: false}\n");
  auto ran = ws.run("script: train.py\nenvironment: AzureML-Minimal\n");
  INFO(ran.out << ran.err);
  CHECK(ran.exit_code == 0);
  CHECK_THAT(ran.out, Catch::Contains("standin 0\n"));
}

TEST_CASE("a model name that is not Azure ML's shape is refused, naming it", "[sdk]") {
  SdkWorkspace ws;
  ws.dir.write("project/train.py", "print('never')\n");
  ws.dir.write("project/model.pkl", "weights");
  auto result = ws.run(
      "script: train.py\nenvironment: AzureML-Minimal\n"
      "models: {'../../escape': model.pkl}\n");
  CHECK(result.exit_code == 2);
  CHECK_THAT(result.err, Catch::Contains("models.../../escape: a model name is 1-255 letters"));
}
