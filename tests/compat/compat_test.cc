// The compatibility suite (tests/compat/README.md): real Azure ML SDK v1 scripts from public Azure
// material, kept byte for byte under tests/compat/<case>/, run by the real `amlnode run` (and, for
// one case, a real control plane and agent) as their notebooks submit them. Each case first checks
// that its original files still have the sha256 their ORIGIN.md records, so an edited script fails
// its case; then it runs the case's project folder (a copy of tests/compat/<case>, with the data
// its make_data.py writes) and checks the exit code, what the script printed, the files it wrote
// and the metrics it logged, with exact values.

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>

#include "common/hash.h"
#include "tests/agent/daemon/one_node_cluster.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

using namespace amlnode;
using namespace std::chrono_literals;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const fs::path kCompat = fs::path(AMLNODE_SOURCE_DIR) / "tests" / "compat";
// Debian's interpreter, which has numpy and pandas: the node's own interpreter.
const std::string kNodePython = "/usr/bin/python3";

// The node's named environments: "default" (for a ScriptRunConfig that names none) and the curated
// names the notebooks ask for, all the node's own interpreter.
std::string named_environments_text() {
  std::string environment =
      "{python: {user_managed_dependencies: true, interpreter_path: " + kNodePython + "}}\n";
  return "named_environments:\n"
         "  default: " +
         environment + "  azureml-acpt-pytorch-2.2-cuda12.1: " + environment +
         "  AzureML-TensorFlow-1.13-GPU: " + environment;
}

struct SavedFile {
  std::string path;  // relative to the case folder
  std::uintmax_t bytes = 0;
  std::string sha256;
};

// The files an ORIGIN.md lists as saved byte for byte: lines "- `PATH` (N bytes, sha256 `HEX`)".
std::vector<SavedFile> saved_files(const fs::path& origin) {
  static const std::regex line(R"(^- `([^`]+)` \(([0-9]+) bytes, sha256 `([0-9a-f]{64})`\)$)");
  std::vector<SavedFile> files;
  std::istringstream text(test::slurp(origin));
  std::string row;
  std::smatch match;
  while (std::getline(text, row)) {
    if (std::regex_match(row, match, line))
      files.push_back({match[1], std::stoull(match[2]), match[3]});
  }
  return files;
}

std::string sha256_of(const fs::path& file) {
  return sha256_hex(test::slurp(file));
}

// Checks each file ORIGIN.md lists in `folder` (size and sha256); returns their paths.
std::vector<std::string> check_originals(const fs::path& folder) {
  std::vector<std::string> paths;
  for (const auto& file : saved_files(folder / "ORIGIN.md")) {
    INFO(folder / file.path);
    REQUIRE(fs::is_regular_file(folder / file.path));
    CHECK(fs::file_size(folder / file.path) == file.bytes);
    CHECK(sha256_of(folder / file.path) == file.sha256);
    paths.push_back(file.path);
  }
  return paths;
}

std::vector<json> json_lines(const fs::path& file) {
  std::vector<json> records;
  if (!fs::exists(file)) return records;
  std::istringstream text(test::slurp(file));
  std::string line;
  while (std::getline(text, line)) records.push_back(json::parse(line));
  return records;
}

// A case's project folder, as its notebook has it: a copy of tests/compat/<case> with the data
// make_data.py writes; a node config; and the node's own interpreter as `python` on PATH.
class Case {
 public:
  explicit Case(const std::string& name)
      : name_(name), source_(kCompat / name), project_(dir_ / name) {
    originals_ = check_originals(source_);
    fs::copy(source_, project_, fs::copy_options::recursive);
    config_ = dir_.write("node.yml", named_environments_text());
    fs::create_directories(dir_ / "bin");
    fs::create_symlink(kNodePython, dir_ / "bin" / "python");
    if (fs::exists(project_ / "make_data.py")) {
      auto made = test::run_command(
          {"/bin/sh", "-c", "cd \"$0\" && exec " + kNodePython + " make_data.py", project_});
      INFO(made.out << made.err);
      REQUIRE(made.exit_code == 0);
    }
  }

  // The files ORIGIN.md lists, each checked in tests/compat/<case> and in the project's copy.
  std::vector<std::string> originals() const {
    for (const auto& path : originals_)
      CHECK(sha256_of(project_ / path) == sha256_of(source_ / path));
    return originals_;
  }

  std::vector<std::string> env() const {
    const char* path = std::getenv("PATH");
    return {"PATH=" + (dir_ / "bin").string() + ":" + (path ? path : "/usr/bin:/bin")};
  }

  test::CommandResult run(const std::string& job, const std::string& run_id) const {
    return test::run_command(
        {test::amlnode_binary().string(), "run", "--config", config_.string(), "--state-dir",
         (dir_ / "state").string(), "--run-id", run_id, (project_ / job).string()},
        env(), 60s);
  }

  // What `amlnode run --dry-run --json` plans for the job on this node.
  json plan(const std::string& job) const {
    auto planned = test::run_command(
        {test::amlnode_binary().string(), "run", "--config", config_.string(), "--state-dir",
         (dir_ / "state").string(), "--dry-run", "--json", (project_ / job).string()},
        env(), 60s);
    INFO(planned.err);
    REQUIRE(planned.exit_code == 0);
    return json::parse(planned.out);
  }

  fs::path run_dir(const std::string& run_id) const { return dir_ / "state" / "runs" / run_id; }
  fs::path project() const { return project_; }
  json run_json(const std::string& run_id) const {
    return json::parse(test::slurp(run_dir(run_id) / "run.json"));
  }
  // The run's metrics file, without the times.
  json metrics(const std::string& run_id) const {
    json records = json::array();
    for (auto record : json_lines(run_dir(run_id) / "system_logs" / "metrics.jsonl")) {
      CHECK(record["time"].is_number());
      record.erase("time");
      records.push_back(record);
    }
    return records;
  }

  // The script the run ran (its snapshot in wd/) is the original byte for byte.
  void check_ran_original(const std::string& run_id, const std::string& original,
                          const std::string& in_wd) const {
    auto saved = saved_files(source_ / "ORIGIN.md");
    auto it = std::find_if(saved.begin(), saved.end(),
                           [&](const SavedFile& f) { return f.path == original; });
    REQUIRE(it != saved.end());
    CHECK(sha256_of(run_dir(run_id) / "wd" / in_wd) == it->sha256);
  }

  // A run refused before it starts: exit 125, the run Failed with NotSupported and `message`, and
  // nothing of the script ran (no snapshot, no std_log).
  void check_refused(const test::CommandResult& result, const std::string& run_id,
                     const std::string& message) const {
    INFO(result.out << result.err);
    CHECK(result.exit_code == 125);
    CHECK(result.out == "");
    CHECK_THAT(result.err, Catch::Contains("Failed: NotSupported: " + message));
    auto record = run_json(run_id);
    CHECK(record["status"] == "Failed");
    CHECK(record["error"]["code"] == "NotSupported");
    CHECK(record["error"]["message"] == message);
    CHECK(record["timings"]["running_at"].is_null());
    CHECK_FALSE(fs::exists(run_dir(run_id) / "wd"));
    auto std_log = run_dir(run_id) / "user_logs" / "std_log.txt";
    CHECK((!fs::exists(std_log) || fs::file_size(std_log) == 0));
  }

 private:
  test::TempDir dir_;
  std::string name_;
  fs::path source_;
  fs::path project_;
  fs::path config_;
  std::vector<std::string> originals_;
};

#define REQUIRE_COMPLETED(c, result, run_id)              \
  do {                                                    \
    INFO((result).out << (result).err);                   \
    REQUIRE((result).exit_code == 0);                     \
    CHECK((c).run_json(run_id)["status"] == "Completed"); \
  } while (false)

json scalars(const std::string& name, const std::vector<json>& values) {
  json records = json::array();
  for (const auto& value : values)
    records.push_back({{"name", name}, {"kind", "scalar"}, {"value", value}});
  return records;
}

const std::string kStars = "*********************************************************\n";

}  // namespace

// ---- training ------------------------------------------------------------------------------

TEST_CASE("train-hello: hello.py logs its message through Run", "[compat][training]") {
  Case c("train-hello");
  CHECK(c.originals() == std::vector<std::string>{"hello.py"});
  auto result = c.run("job.yml", "hello-1");
  REQUIRE_COMPLETED(c, result, "hello-1");
  c.check_ran_original("hello-1", "hello.py", "hello.py");
  CHECK(result.out == "");
  CHECK_THAT(result.err, Catch::Contains("Running: " + kNodePython + " hello.py\n"));
  CHECK(c.metrics("hello-1") == scalars("message", {"Hello from run!"}));
}

TEST_CASE("train-child-runs: five child runs each log a metric under their own run id",
          "[compat][training]") {
  Case c("train-child-runs");
  CHECK(c.originals() == std::vector<std::string>{"hello_with_children.py"});
  auto result = c.run("job.yml", "children-1");
  REQUIRE_COMPLETED(c, result, "children-1");
  c.check_ran_original("children-1", "hello_with_children.py", "hello_with_children.py");
  json expected = json::array();
  for (int i = 0; i < 5; ++i) {
    expected.push_back({{"name", "Hello from child run "},
                        {"kind", "scalar"},
                        {"value", i},
                        {"run_id", "children-1_" + std::to_string(i)}});
  }
  CHECK(c.metrics("children-1") == expected);
}

TEST_CASE("train-env-vars: the environment's variables reach the script", "[compat][training]") {
  Case c("train-env-vars");
  CHECK(c.originals() == std::vector<std::string>{"example.py"});
  auto result = c.run("job.yml", "env-1");
  REQUIRE_COMPLETED(c, result, "env-1");
  c.check_ran_original("env-1", "example.py", "example.py");
  CHECK(result.out == "Hello from Azure Machine Learning\n");
  CHECK_THAT(result.err, Catch::Contains("Running: python example.py\n"));
}

TEST_CASE("train-estimator-script-params: script_params with a bare flag, a metric series",
          "[compat][training]") {
  Case c("train-estimator-script-params");
  CHECK(c.originals() == std::vector<std::string>{"dummy_train.py"});
  auto result = c.run("job.yml", "estimator-1");
  REQUIRE_COMPLETED(c, result, "estimator-1");
  c.check_ran_original("estimator-1", "dummy_train.py", "dummy_train.py");
  CHECK_THAT(result.err, Catch::Contains("Running: python dummy_train.py --numbers-in-sequence 10 "
                                         "--my_bool_var\n"));
  // The script hides any failure of azureml.core behind a bare except; its output and the metrics
  // show that none happened.
  CHECK(result.out == kStars +
                          "Hello Azure ML!\n"
                          "The value of boolean parameter 'my_bool_var' is True\n"
                          "Log Fibonacci numbers.\n" +
                          kStars);
  CHECK(c.metrics("estimator-1") == scalars("Fibonacci numbers", {0, 1, 1, 2, 3, 5, 8, 13, 21}));
}

TEST_CASE("train-scriptrun-dataset-io: a mounted file dataset in, an output dataset out",
          "[compat][training][data]") {
  Case c("train-scriptrun-dataset-io");
  CHECK(c.originals() == std::vector<std::string>{"script_run/dummy_train.py", "iris.csv"});
  auto result = c.run("job.yml", "scriptrun-1");
  REQUIRE_COMPLETED(c, result, "scriptrun-1");
  c.check_ran_original("scriptrun-1", "script_run/dummy_train.py", "dummy_train.py");
  auto input = c.run_dir("scriptrun-1") / "inputs" / "input";
  auto output = c.project() / "datastore" / "sample" / "outputdataset";
  CHECK(result.out == kStars + "Hello Azure ML!\nArgument 1: " + input.string() +
                          "\nArgument 2: " + output.string() + "\n");
  CHECK(fs::read_symlink(input) == c.project() / "datastore" / "script-run" / "iris.csv");
  CHECK(test::slurp(output / "output.csv") == test::slurp(c.project() / "iris.csv"));
  CHECK(c.metrics("scriptrun-1") == json::array());
}

// ---- pipelines -----------------------------------------------------------------------------

TEST_CASE("pipeline-intro-steps (getting started): three steps without arguments, in order",
          "[compat][pipeline]") {
  Case c("pipeline-intro-steps");
  CHECK(c.originals() ==
        std::vector<std::string>{"train/train.py", "extract/extract.py", "compare/compare.py"});
  struct Step {
    std::string job, run_id, script, says;
    int arguments;
  };
  for (const auto& step : std::vector<Step>{
           {"getting-started-1-train_step.yml", "gs-train", "train", "training", 2},
           {"getting-started-2-compare_step.yml", "gs-compare", "compare", "compare", 4},
           {"getting-started-3-extract_step.yml", "gs-extract", "extract", "extract", 2}}) {
    auto result = c.run(step.job, step.run_id);
    REQUIRE_COMPLETED(c, result, step.run_id);
    c.check_ran_original(step.run_id, step.script + "/" + step.script + ".py", step.script + ".py");
    std::string expected = "In " + step.script +
                           ".py\nAs a data scientist, this is where I use my " + step.says +
                           " code.\n";
    for (int i = 1; i <= step.arguments; ++i)
      expected += "Argument " + std::to_string(i) + ": None\n";
    CHECK(result.out == expected);
    CHECK(c.run_json(step.run_id)["experiment_name"] == "getting-started");
  }
}

TEST_CASE(
    "pipeline-intro-steps (data dependency): DataReference, PipelineData and a DataPath "
    "parameter wire three steps",
    "[compat][pipeline][data]") {
  Case c("pipeline-intro-steps");
  CHECK(c.originals().size() == 3);
  auto datastore = c.project() / "datastore";
  auto data1 = datastore / "azureml" / "trainStep" / "processed_data1";
  auto data2 = datastore / "azureml" / "extractStep" / "processed_data2";
  auto data3 = datastore / "azureml" / "compareStep" / "processed_data3";

  auto train = c.run("data-dependency-1-trainStep.yml", "dd-train");
  REQUIRE_COMPLETED(c, train, "dd-train");
  c.check_ran_original("dd-train", "train/train.py", "train.py");
  auto test_data = c.run_dir("dd-train") / "inputs" / "test_data";
  CHECK(train.out ==
        "In train.py\nAs a data scientist, this is where I use my training code.\n"
        "Argument 1: " +
            test_data.string() + "\nArgument 2: " + data1.string() + "\n" + data1.string() +
            " created\n");
  CHECK(fs::read_symlink(test_data) == datastore / "titanic" / "Titanic.csv");

  auto extract = c.run("data-dependency-2-extractStep.yml", "dd-extract");
  REQUIRE_COMPLETED(c, extract, "dd-extract");
  auto input1 = c.run_dir("dd-extract") / "inputs" / "processed_data1";
  CHECK(extract.out ==
        "In extract.py\nAs a data scientist, this is where I use my extract code.\n"
        "Argument 1: " +
            input1.string() + "\nArgument 2: " + data2.string() + "\n" + data2.string() +
            " created\n");
  CHECK(fs::read_symlink(input1) == data1);

  auto compare = c.run("data-dependency-3-compareStep.yml", "dd-compare");
  REQUIRE_COMPLETED(c, compare, "dd-compare");
  auto compare_data = c.run_dir("dd-compare") / "inputs" / "compare_data";
  auto input2 = c.run_dir("dd-compare") / "inputs" / "processed_data2";
  CHECK(compare.out ==
        "In compare.py\nAs a data scientist, this is where I use my compare code.\n"
        "Argument 1: " +
            compare_data.string() + "\nArgument 2: " + input2.string() + "\nArgument 3: " +
            data3.string() + "\nArgument 4: None\n" + data3.string() + " created\n");
  CHECK(fs::read_symlink(compare_data) == datastore / "titanic" / "Titanic.csv");
  CHECK(fs::read_symlink(input2) == data2);
}

TEST_CASE("pipeline-publish-run-dataflow: OutputFileDatasetConfig outputs feed the next steps",
          "[compat][pipeline][data]") {
  Case c("pipeline-publish-run-dataflow");
  CHECK(c.originals() == std::vector<std::string>{"publish_run_train/train.py",
                                                  "publish_run_extract/extract.py",
                                                  "publish_run_compare/compare.py"});
  auto titanic = test::slurp(c.project() / "web" / "demo" / "Titanic.csv");
  auto outputs = c.project() / "datastore" / "dataset";

  auto train = c.run("1-trainStep.yml", "pr-train");
  REQUIRE_COMPLETED(c, train, "pr-train");
  c.check_ran_original("pr-train", "publish_run_train/train.py", "train.py");
  CHECK_THAT(train.out,
             Catch::Contains("Argument 1: " +
                             (c.run_dir("pr-train") / "inputs" / "test_data").string() + "\n"));
  CHECK(test::slurp(outputs / "trainStep" / "processed_data1" / "Titanic.csv") == titanic);

  auto extract = c.run("2-extractStep.yml", "pr-extract");
  REQUIRE_COMPLETED(c, extract, "pr-extract");
  c.check_ran_original("pr-extract", "publish_run_extract/extract.py", "extract.py");
  CHECK(test::slurp(outputs / "extractStep" / "processed_data2" / "Titanic.csv") == titanic);

  auto compare = c.run("3-compareStep.yml", "pr-compare");
  REQUIRE_COMPLETED(c, compare, "pr-compare");
  c.check_ran_original("pr-compare", "publish_run_compare/compare.py", "compare.py");
  auto inputs = c.run_dir("pr-compare") / "inputs";
  auto data3 = outputs / "compareStep" / "processed_data3";
  CHECK(compare.out ==
        "In compare.py\nAs a data scientist, this is where I use my compare code.\n"
        "Argument 1: " +
            (inputs / "processed_data1").string() + "\nArgument 2: " +
            (inputs / "processed_data2").string() + "\nArgument 3: " + data3.string() +
            "\nArgument 4: 10\n" + data3.string() + " created\n");
  CHECK(test::slurp(data3 / "compare.txt") == "here is the compare result");
}

TEST_CASE("pipeline-modulestep-calculate: file-valued PipelineData chain three steps",
          "[compat][pipeline][data]") {
  Case c("pipeline-modulestep-calculate");
  CHECK(c.originals() == std::vector<std::string>{"calc/calculate.py"});
  auto results = c.project() / "datastore" / "azureml";
  struct Step {
    std::string job, run_id, folder, sum_name, product_name, sum, product;
  };
  for (const auto& step : std::vector<Step>{
           {"1-first_step.yml", "ms-first", "first_step", "sum_out", "prod_out", "19", "34"},
           {"2-middle_step.yml", "ms-middle", "middle_step", "middle_sum", "middle_prod", "53",
            "646"},
           {"3-end_step.yml", "ms-end", "end_step", "end_sum", "end_prod", "699", "34238"}}) {
    auto result = c.run(step.job, step.run_id);
    REQUIRE_COMPLETED(c, result, step.run_id);
    c.check_ran_original(step.run_id, "calc/calculate.py", "calculate.py");
    CHECK_THAT(result.out,
               Catch::Contains("results: sum: " + step.sum + " , product: " + step.product + "\n"));
    CHECK(test::slurp(results / step.folder / step.sum_name) == step.sum);
    CHECK(test::slurp(results / step.folder / step.product_name) == step.product);
  }
  // The later steps read the earlier ones' files through their inputs.
  auto middle = c.run_dir("ms-middle") / "inputs";
  CHECK(fs::read_symlink(middle / "sum_out") == results / "first_step" / "sum_out");
  CHECK(fs::read_symlink(middle / "prod_out") == results / "first_step" / "prod_out");
}

TEST_CASE(
    "pipeline-dataset-pipelineparameter: run.input_datasets gives a path and a DataFrame, "
    "for the defaults and for other datasets",
    "[compat][pipeline][data]") {
  Case c("pipeline-dataset-pipelineparameter");
  CHECK(c.originals() == std::vector<std::string>{"train_with_dataset.py"});

  auto titanic = c.run("job.yml", "ds-default");
  REQUIRE_COMPLETED(c, titanic, "ds-default");
  c.check_ran_original("ds-default", "train_with_dataset.py", "train_with_dataset.py");
  std::string titanic_csv = test::slurp(c.project() / "web" / "demo" / "Titanic.csv");
  // The file as it is (print adds a newline), then the DataFrame pandas reads (wide, so pandas
  // elides middle columns; the first three and the last are shown).
  CHECK(titanic.out.rfind(titanic_csv + "\n", 0) == 0);
  CHECK_THAT(titanic.out, Catch::Contains("   PassengerId  Survived  Pclass  ..."));
  CHECK_THAT(titanic.out, Catch::Contains("\n0            1         0       3  ..."));
  CHECK_THAT(titanic.out, Catch::Contains("\n1            2         1       1  ..."));
  CHECK_THAT(titanic.out, Catch::Contains("\n[3 rows x 12 columns]\n"));

  auto iris = c.run("job-iris.yml", "ds-iris");
  REQUIRE_COMPLETED(c, iris, "ds-iris");
  std::string iris_csv = test::slurp(c.project() / "web" / "iris.csv");
  CHECK(iris.out ==
        iris_csv + "\n" +
            "   sepal_length  sepal_width  petal_length  petal_width          species\n"
            "0           5.1          3.5           1.4          0.2      Iris-setosa\n"
            "1           7.0          3.2           4.7          1.4  Iris-versicolor\n"
            "2           6.3          3.3           6.0          2.5   Iris-virginica\n");
}

TEST_CASE("pipeline-estimatorstep: an EstimatorStep's dataset arguments and run.log_list",
          "[compat][pipeline][data]") {
  Case c("pipeline-estimatorstep");
  CHECK(c.originals() == std::vector<std::string>{"estimator_train/dummy_train.py"});
  auto result = c.run("job.yml", "estimatorstep-1");
  REQUIRE_COMPLETED(c, result, "estimatorstep-1");
  c.check_ran_original("estimatorstep-1", "estimator_train/dummy_train.py", "dummy_train.py");
  auto input = c.run_dir("estimatorstep-1") / "inputs" / "input_data";
  auto output = c.project() / "datastore" / "dataset" / "est_step" / "output";
  CHECK(result.out == kStars + "Hello Azure ML!\nArgument 1: " + input.string() +
                          "\nArgument 2: " + output.string() + "\n" + output.string() +
                          " created\nLog Fibonacci numbers.\n" + kStars);
  CHECK(fs::read_symlink(input) == c.project() / "datastore" / "20newsgroups" / "20news.pkl");
  CHECK(c.metrics("estimatorstep-1") ==
        json::parse(R"([{"name": "Fibonacci numbers", "kind": "list",
                         "values": [0, 1, 1, 2, 3, 5, 8, 13, 21, 34]}])"));
}

// ---- what is still to come: refused before anything starts ---------------------------------

TEST_CASE("dist-pytorch-ddp-cifar: two nodes under amlnode run are refused up front",
          "[compat][distributed]") {
  Case c("dist-pytorch-ddp-cifar");
  CHECK(c.originals() == std::vector<std::string>{"train.py"});
  c.check_refused(c.run("job.yml", "ddp-1"), "ddp-1",
                  "distributed_job_config: a run across nodes (node_count 2) runs only as a gang "
                  "leased by a control plane (amlnode submit); amlnode run runs one node");
}

TEST_CASE(
    "dist-tf-parameter-server: two workers and a parameter server start with the sample's "
    "TF_CONFIG, and stop at import tensorflow (not in Debian)",
    "[compat][distributed]") {
  Case c("dist-tf-parameter-server");
  CHECK(c.originals() == std::vector<std::string>{"tf_mnist_replica.py"});
  auto result = c.run("job.yml", "tf-ps-1");
  INFO(result.out << result.err);
  CHECK(result.exit_code == 1);
  auto record = c.run_json("tf-ps-1");
  CHECK(record["status"] == "Failed");
  CHECK_THAT(
      record["error"]["message"].get<std::string>(),
      Catch::Matches("Rank [012] of 3 \\('python3?'\\) exited with status code 1; the other "
                     "ranks were stopped; its log is user_logs/std_log_process_0[012]\\.txt"));
  // Every task started, each with its own TF_CONFIG, as the sample's tf.train.ClusterSpec reads
  // it; the first to fail stops at the sample's own import, and the others are stopped with it.
  std::string message = record["error"]["message"];
  auto failed_log = message.substr(message.rfind("user_logs/"));
  CHECK_THAT(test::slurp(c.run_dir("tf-ps-1") / failed_log),
             Catch::Contains("No module named 'tensorflow'"));
  for (const char* log :
       {"std_log_process_00.txt", "std_log_process_01.txt", "std_log_process_02.txt"})
    CHECK(fs::exists(c.run_dir("tf-ps-1") / "user_logs" / log));
  auto plan = c.plan("job.yml");
  REQUIRE(plan["ranks"].size() == 3);
  auto ps = json::parse(plan["ranks"][2]["env"]["TF_CONFIG"].get<std::string>());
  CHECK(ps["task"] == json({{"type", "ps"}, {"index", 0}}));
  CHECK(ps["cluster"]["worker"].size() == 2);
  CHECK(ps["cluster"]["ps"].size() == 1);
}

TEST_CASE("prs-tabular-iris: a ParallelRunStep over 2 nodes is refused under amlnode run",
          "[compat][parallel_run]") {
  Case c("prs-tabular-iris");
  CHECK(c.originals() == std::vector<std::string>{"Code/iris_score.py"});
  c.check_refused(c.run("job.yml", "prs-iris-1"), "prs-iris-1",
                  "node_count: a run across nodes (node_count 2) runs only as a gang leased by a "
                  "control plane (amlnode submit); amlnode run runs one node");
}

TEST_CASE(
    "prs-file-partition: a partitioned ParallelRunStep over 2 nodes is refused under "
    "amlnode run",
    "[compat][parallel_run]") {
  Case c("prs-file-partition");
  CHECK(c.originals() == std::vector<std::string>{"Code/total_file_size.py"});
  c.check_refused(c.run("job.yml", "prs-partition-1"), "prs-partition-1",
                  "node_count: a run across nodes (node_count 2) runs only as a gang leased by a "
                  "control plane (amlnode submit); amlnode run runs one node");
}

TEST_CASE(
    "prs-file-partition: on one node the sample's entry script runs unchanged, a mini-batch "
    "per partition",
    "[compat][parallel_run]") {
  Case c("prs-file-partition");
  auto result = c.run("job-one-node.yml", "prs-partition-one");
  INFO(result.out << result.err);
  REQUIRE(result.exit_code == 0);
  c.check_ran_original("prs-partition-one", "Code/total_file_size.py", "total_file_size.py");
  // Each partition (user, genres) is one mini-batch; the rows are the sample's own format: file,
  // size, its share of the mini-batch, the partition's values, the mini-batch's total.
  CHECK(test::slurp(c.run_dir("prs-partition-one") / "wd" / "outputs" / "file_size_outputs.txt") ==
        "orchestra.wav,13,1.0,user1,orchestra,13\n"
        "disco.wav,11,1.0,user1,disco,11\n"
        "piano.wav,7,1.0,user2,piano,7\n"
        "spirituality.wav,17,1.0,user3,spirituality,17\n"
        "piano.wav,7,0.5,user4,piano,14\n"
        "piano.wav,7,0.5,user4,piano,14\n");
  // What run() printed went to its worker's stdout log, mini_batch_context included.
  std::string printed;
  for (const char* process : {"process001", "process002"}) {
    auto log = c.run_dir("prs-partition-one") / "wd" / "logs" / "user" / "stdout" / "0" /
               (std::string(process) + ".stdout.txt");
    if (fs::exists(log)) printed += test::slurp(log);
  }
  CHECK_THAT(printed,
             Catch::Contains("partition_key_value = {'user': 'user4', 'genres': 'piano'}"));
}

// ---- real .runconfig files -----------------------------------------------------------------

TEST_CASE("runconfigs: the saved .runconfig files validate, or are refused naming the field",
          "[compat][runconfig]") {
  test::TempDir dir;
  auto originals = check_originals(kCompat / "runconfigs");
  CHECK(originals.size() == 15);
  auto root = dir / "runconfigs";
  fs::copy(kCompat / "runconfigs", root, fs::copy_options::recursive);
  // What the projects around them hold and the material does not: the scripts they name, the
  // folder of aml_compute.runconfig's data reference, and the conda files of the two MLOps
  // projects whose repository folders do not have one (runconfigs/ORIGIN.md).
  for (const char* script :
       {"MachineLearningNotebooks/train.py", "MachineLearningNotebooks/azureml-cli/train.py",
        "microsoft-MLOps/cli-train-deploy/scripts/train.py",
        "microsoft-MLOps/explainability/train.py",
        "microsoft-MLOps/imagenet-transfer-learning/train.py",
        "microsoft-MLOps/model-training/train-sklearn.py"})
    dir.write(std::string("runconfigs/") + script, "print('placeholder')\n");
  fs::create_directories(root / "MachineLearningNotebooks/azureml-cli/data");
  for (const char* project : {"explainability", "imagenet-transfer-learning"})
    dir.write(
        std::string("runconfigs/microsoft-MLOps/") + project + "/.azureml/conda_dependencies.yml",
        "name: placeholder\ndependencies:\n- python=3.8\n");
  fs::create_directories(dir / "state");
  auto config = dir.write("node.yml", named_environments_text());
  auto amlnode = test::amlnode_binary().string();

  struct Expected {
    std::string file;
    std::string kind;        // the environment the plan prepares
    std::string cannot_run;  // "" when this node runs it
  };
  const std::string pyspark =
      "framework: PySpark runs on a node attached as HDInsight (amlnode attach --kind hdinsight), "
      "through its spark-submit; this node is not one";
  for (const auto& expected : std::vector<Expected>{
           {"MachineLearningNotebooks/aml_config/local.runconfig", "conda", ""},
           {"MachineLearningNotebooks/aml_config/docker.runconfig", "docker", pyspark},
           {"MachineLearningNotebooks/azureml-cli/.azureml/aml_compute.runconfig", "docker", ""},
           {"MachineLearningNotebooks/azureml-cli/.azureml/local.runconfig", "conda", ""},
           {"MachineLearningNotebooks/azureml-cli/.azureml/docker.runconfig", "docker", pyspark},
           {"microsoft-MLOps/imagenet-transfer-learning/.azureml/local.runconfig", "conda", ""},
           {"microsoft-MLOps/imagenet-transfer-learning/.azureml/docker.runconfig", "docker",
            pyspark},
           {"microsoft-MLOps/explainability/.azureml/explain.runconfig", "docker", ""},
           {"microsoft-MLOps/model-training/.azureml/sklearn.runconfig", "docker", ""}}) {
    auto file = (root / expected.file).string();
    INFO(file);
    auto validated = test::run_command({amlnode, "validate", "--json", file});
    INFO(validated.out << validated.err);
    CHECK(validated.exit_code == 0);
    CHECK(json::parse(validated.out) ==
          json::parse(R"({"valid": true, "errors": [], "warnings": []})"));
    // What the node would do with it (nothing runs: a dry run prints the plan).
    auto planned = test::run_command({amlnode, "run", "--config", config.string(), "--state-dir",
                                      (dir / "state").string(), "--dry-run", "--json", file});
    INFO(planned.out << planned.err);
    REQUIRE(planned.exit_code == 0);
    auto plan = json::parse(planned.out);
    CHECK(plan["environment"]["kind"] == expected.kind);
    CHECK(plan["runnable"] == expected.cannot_run.empty());
    if (!expected.cannot_run.empty()) {
      CHECK(plan["cannot_run"] ==
            json({{"code", "NotSupported"}, {"message", expected.cannot_run}}));
    }
  }

  // mnist.runconfig, as train-model.sh submits it (az ml run submit-script -c mnist
  // --source-directory scripts): valid (its conda file is found beside .azureml/, as the SDK finds
  // it, whatever the source directory), and refused when planned: four nodes are still to come.
  // Its data: section names a registered dataset, which the node resolves through its registry.
  auto mnist = root / "microsoft-MLOps/cli-train-deploy/.azureml/mnist.runconfig";
  auto scripts = (root / "microsoft-MLOps/cli-train-deploy/scripts").string();
  auto validated =
      test::run_command({amlnode, "validate", "--json", "--source-dir", scripts, mnist.string()});
  INFO(validated.out << validated.err);
  CHECK(validated.exit_code == 0);
  CHECK(json::parse(validated.out)["valid"] == true);
  dir.write("mnist-data/0.bin", "digits");
  auto with_dataset =
      dir.write("node-mnist.yml", named_environments_text() +
                                      "datasets:\n  ed4b4117-8eec-4a5f-afb6-481bd5ef0017: "
                                      "{path: mnist-data}\n");
  auto planned = test::run_command({amlnode, "run", "--config", with_dataset.string(),
                                    "--state-dir", (dir / "state").string(), "--source-dir",
                                    scripts, "--dry-run", "--json", mnist.string()});
  INFO(planned.out << planned.err);
  REQUIRE(planned.exit_code == 0);
  auto plan = json::parse(planned.out);
  CHECK(plan["cannot_run"] ==
        json({{"code", "NotSupported"},
              {"message",
               "nodeCount: a run across nodes (node_count 4) runs only as a gang leased by a "
               "control plane (amlnode submit); amlnode run runs one node"}}));
  CHECK(plan["inputs"][0]["source"] == (dir / "mnist-data").string());
}

// ---- through a control plane and an agent --------------------------------------------------

TEST_CASE(
    "through a control plane: the metrics of train-hello, the Estimator's series and the "
    "child runs are what amlnode metrics shows",
    "[compat][daemon]") {
  Case hello("train-hello");
  Case estimator("train-estimator-script-params");
  Case children("train-child-runs");
  CHECK(hello.originals() == std::vector<std::string>{"hello.py"});
  CHECK(estimator.originals() == std::vector<std::string>{"dummy_train.py"});
  CHECK(children.originals() == std::vector<std::string>{"hello_with_children.py"});
  test::OneNodeCluster cluster(
      {}, test::AgentConfigSections{}.with_extra(named_environments_text()), estimator.env());
  auto submit = [&](const Case& c) {
    auto submitted =
        test::run_command({test::amlnode_binary().string(), "submit",
                           (c.project() / "job.yml").string(), "--compute", "cpu-cluster"},
                          cluster.user_env());
    INFO(submitted.out << submitted.err);
    REQUIRE(submitted.exit_code == 0);
    std::string id = submitted.out.substr(0, submitted.out.find('\n'));
    REQUIRE_FALSE(id.empty());
    return id;
  };
  auto metrics_of = [&](const std::string& id) {
    auto shown = test::run_command({test::amlnode_binary().string(), "metrics", id, "--json"},
                                   cluster.user_env());
    INFO(shown.out << shown.err);
    REQUIRE(shown.exit_code == 0);
    return json::parse(shown.out);
  };

  std::string hello_id = submit(hello);
  std::string estimator_id = submit(estimator);
  std::string children_id = submit(children);
  CHECK(cluster.wait_terminal(hello_id)["status"] == "Completed");
  CHECK(cluster.wait_terminal(estimator_id)["status"] == "Completed");
  CHECK(cluster.wait_terminal(children_id)["status"] == "Completed");

  auto message = metrics_of(hello_id)["metrics"];
  REQUIRE(message.size() == 1);
  CHECK(message["message"]["count"] == 1);
  CHECK(message["message"]["last"]["value"] == "Hello from run!");

  auto series = metrics_of(estimator_id)["metrics"];
  REQUIRE(series.size() == 1);
  auto& fibonacci = series["Fibonacci numbers"];
  CHECK(fibonacci["kind"] == "scalar");
  CHECK(fibonacci["count"] == 9);
  json values = json::array();
  for (const auto& point : fibonacci["values"]) values.push_back(point["value"]);
  CHECK(values == json::parse("[0, 1, 1, 2, 3, 5, 8, 13, 21]"));
  // The child runs' records are kept apart, one entry per child run, as the run history shows
  // them on Azure ML; the parent logged nothing of its own.
  auto parent = metrics_of(children_id);
  CHECK(parent["metrics"].empty());
  REQUIRE(parent["children"].size() == 5);
  for (int n = 0; n < 5; ++n) {
    auto& child = parent["children"][children_id + "_" + std::to_string(n)];
    INFO(parent.dump());
    REQUIRE(child.size() == 1);
    CHECK(child["Hello from child run "]["count"] == 1);
    CHECK(child["Hello from child run "]["last"]["value"] == n);
  }
  auto shown = test::run_command({test::amlnode_binary().string(), "metrics", children_id},
                                 cluster.user_env());
  CHECK_THAT(shown.out, Catch::Contains("child run " + children_id + "_4:\n  NAME"));

  // The node kept the same in the run folder, and the script that ran is the original.
  CHECK(json_lines(cluster.run_dir(estimator_id) / "system_logs" / "metrics.jsonl").size() == 9);
  CHECK(sha256_of(cluster.run_dir(estimator_id) / "wd" / "dummy_train.py") ==
        sha256_of(kCompat / "train-estimator-script-params" / "dummy_train.py"));
}
