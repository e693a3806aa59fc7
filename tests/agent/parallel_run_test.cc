// ParallelRunStep on one node, by the real `amlnode run`: real worker processes of Debian's
// Python running real entry scripts (parallel/), over file and tabular (pandas) datasets, with
// Azure ML's failure rules, timeouts and a worker killed mid-batch.

#include <signal.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <sstream>

#include "tests/agent/parallel/pids.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

using namespace amlnode;
using namespace std::chrono_literals;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const fs::path kScripts = fs::path(AMLNODE_SOURCE_DIR) / "tests" / "agent" / "parallel";

struct ParallelWorkspace {
  test::TempDir dir;

  // `files` files f01.txt... in project/data, and the job.
  fs::path file_job(int files, const std::string& parallel, const std::string& extra = "") {
    for (int i = 1; i <= files; ++i) {
      char name[32];
      std::snprintf(name, sizeof name, "project/data/f%02d.txt", i);
      dir.write(name, "file " + std::to_string(i) + "\n");
    }
    return job("file_names.py", "inputs:\n  images: {path: data, dataset: file}\n", parallel,
               "arguments: [--prefix, p-]\n" + extra);
  }
  fs::path job(const std::string& script, const std::string& inputs, const std::string& parallel,
               const std::string& extra = "") {
    fs::create_directories(dir / "project");
    fs::copy_file(kScripts / script, dir / "project" / script,
                  fs::copy_options::overwrite_existing);
    return dir.write("project/job.yml",
                     "script: " + script +
                         "\nenvironment:\n  python: {user_managed_dependencies: true, "
                         "interpreter_path: /usr/bin/python3}\n" +
                         inputs + "parallel_run:\n" + parallel + extra);
  }
  test::CommandResult run(const fs::path& job, const std::string& id) {
    return test::run_command({test::amlnode_binary().string(), "run", "--state-dir",
                              (dir / "state").string(), "--run-id", id, job.string()},
                             {}, 120s);
  }
  fs::path wd(const std::string& id) const { return dir / "state" / "runs" / id / "wd"; }
  json run_json(const std::string& id) const {
    return json::parse(test::slurp(dir / "state" / "runs" / id / "run.json"));
  }
  std::vector<std::string> output_lines(const std::string& id,
                                        const std::string& name = "parallel_run_step.txt") {
    std::istringstream in(test::slurp(wd(id) / "outputs" / name));
    std::vector<std::string> lines;
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    return lines;
  }
};

std::vector<std::string> expected_names(int files) {
  std::vector<std::string> names;
  for (int i = 1; i <= files; ++i) {
    char name[32];
    std::snprintf(name, sizeof name, "p-f%02d.txt", i);
    names.push_back(name);
  }
  return names;
}

}  // namespace

TEST_CASE("a file dataset's mini-batches go to 2 workers; append_row writes every row once",
          "[parallel]") {
  ParallelWorkspace ws;
  auto job =
      ws.file_job(25,
                  "  mini_batch_size: 10\n  error_threshold: 0\n  output_action: append_row\n"
                  "  process_count_per_node: 2\n");
  auto result = ws.run(job, "prs-files");
  INFO(result.out << result.err);
  REQUIRE(result.exit_code == 0);
  // In mini-batch order, each file's row once; the arguments reached the entry script.
  CHECK(ws.output_lines("prs-files") == expected_names(25));
  CHECK(ws.run_json("prs-files")["status"] == "Completed");
  CHECK_THAT(test::slurp(ws.wd("prs-files") / "logs" / "job_result.txt"),
             Catch::StartsWith("Completed\n3 mini-batches: 3 processed, 0 failed; 25 rows"));
  auto report = test::slurp(ws.wd("prs-files") / "logs/sys/job_report/processed_mini-batches.csv");
  CHECK(std::count(report.begin(), report.end(), '\n') == 4);  // the header and 3 mini-batches
  // Each worker has its logs: stdout, stderr and the EntryScript logger's file.
  std::string printed;
  for (const char* process : {"process001", "process002"}) {
    printed += test::slurp(ws.wd("prs-files") / "logs/user/stdout/0" /
                           (std::string(process) + ".stdout.txt"));
    // At the step's logging_level: INFO by default.
    CHECK_THAT(test::slurp(ws.wd("prs-files") / "logs/user/entry_script_log/0" /
                           (std::string(process) + ".log.txt")),
               Catch::Contains("init done") && !Catch::Contains("debug detail"));
  }
  CHECK_THAT(printed,
             Catch::Contains("a mini-batch of 10") && Catch::Contains("a mini-batch of 5"));
}

TEST_CASE("a tabular dataset's rows reach run() as DataFrames, cut by size, never twice",
          "[parallel]") {
  ParallelWorkspace ws;
  std::string csv = "id,sepal,species\n";
  std::vector<std::string> expected;
  for (int i = 0; i < 200; ++i) {
    csv += std::to_string(i) + ",5.1," + (i % 2 ? "setosa" : "virginica") + "\n";
    expected.push_back(std::to_string(i) + " " + (i % 2 ? "SETOSA" : "VIRGINICA"));
  }
  ws.dir.write("project/iris/part-0.csv", csv.substr(0, csv.find("100,5.1")));
  ws.dir.write("project/iris/part-1.csv", "id,sepal,species\n" + csv.substr(csv.find("100,5.1")));
  auto job = ws.job("iris_rows.py", "inputs:\n  iris: {path: iris, dataset: tabular}\n",
                    "  mini_batch_size: 1KB\n  error_threshold: 0\n  output_action: append_row\n"
                    "  append_row_file_name: iris_outputs.txt\n  process_count_per_node: 2\n");
  auto result = ws.run(job, "prs-table");
  INFO(result.out << result.err);
  REQUIRE(result.exit_code == 0);
  CHECK(ws.output_lines("prs-table", "iris_outputs.txt") == expected);
  // About 1 KiB of rows each, and no mini-batch crosses the two files.
  CHECK_THAT(result.out, Catch::Contains("mini-batches, 2 workers"));
  auto report = test::slurp(ws.wd("prs-table") / "logs/sys/job_report/processed_mini-batches.csv");
  CHECK(std::count(report.begin(), report.end(), '\n') > 4);
}

TEST_CASE("run() raising: error_threshold counts the failed items, both sides of the limit",
          "[parallel]") {
  // f03 and f07 fail, in mini-batches of 2: 2 mini-batches of 2 files each after run_max_try.
  std::string parallel =
      "  mini_batch_size: 2\n  output_action: append_row\n"
      "  process_count_per_node: 2\n  run_max_try: 2\n";
  std::string env = "environment_variables: {FAIL_ON: 'f03.txt,f07.txt'}\n";
  SECTION("4 failed items within an error_threshold of 4: Completed without their rows") {
    ParallelWorkspace ws;
    auto result = ws.run(ws.file_job(10, parallel + "  error_threshold: 4\n", env), "within");
    INFO(result.out << result.err);
    CHECK(result.exit_code == 0);
    auto expected = expected_names(10);
    std::erase_if(expected, [](const std::string& name) {
      return name == "p-f03.txt" || name == "p-f04.txt" || name == "p-f07.txt" ||
             name == "p-f08.txt";
    });
    CHECK(ws.output_lines("within") == expected);
  }
  SECTION("over an error_threshold of 3: Failed, with the entry script's own error") {
    ParallelWorkspace ws;
    auto result = ws.run(ws.file_job(10, parallel + "  error_threshold: 3\n", env), "over");
    INFO(result.out << result.err);
    CHECK(result.exit_code != 0);
    auto error = ws.run_json("over")["error"]["message"].get<std::string>();
    CHECK_THAT(error, Catch::StartsWith("error_threshold: 4 items failed, more than the 3 "
                                        "allowed; the first error: ValueError: cannot score f0"));
    CHECK_THAT(error,
               Catch::Contains("Traceback (most recent call last)") && Catch::Contains("in run"));
    CHECK_FALSE(fs::exists(ws.wd("over") / "outputs" / "parallel_run_step.txt"));
  }
}

TEST_CASE("run() past run_invocation_timeout: its worker is killed and replaced, tried again",
          "[parallel]") {
  ParallelWorkspace ws;
  auto job =
      ws.file_job(4,
                  "  mini_batch_size: 1\n  error_threshold: -1\n  output_action: append_row\n"
                  "  process_count_per_node: 2\n  run_invocation_timeout: 1\n"
                  "  run_max_try: 2\n  allowed_failed_count: 0\n",
                  "environment_variables: {HANG_ON: f02.txt}\n");
  auto result = ws.run(job, "hangs");
  INFO(result.out << result.err);
  CHECK(result.exit_code != 0);
  CHECK_THAT(ws.run_json("hangs")["error"]["message"].get<std::string>(),
             Catch::StartsWith("allowed_failed_count: 1 mini-batches failed, more than the 0 "
                               "allowed; the first error: run() took longer than "
                               "run_invocation_timeout (1 s); its worker was killed"));
}

TEST_CASE("init() raising on every worker stops the node after 3 x process_count_per_node",
          "[parallel]") {
  ParallelWorkspace ws;
  auto job = ws.file_job(4,
                         "  error_threshold: -1\n  output_action: append_row\n"
                         "  process_count_per_node: 2\n",
                         "environment_variables: {INIT_FAILS: '1'}\n");
  auto result = ws.run(job, "init-fails");
  INFO(result.out << result.err);
  CHECK(result.exit_code != 0);
  auto error = ws.run_json("init-fails")["error"]["message"].get<std::string>();
  CHECK_THAT(error, Catch::StartsWith("init() failed 6 times on this node (3 x "
                                      "process_count_per_node); the first error: RuntimeError: "
                                      "the model could not be loaded"));
}

TEST_CASE("a worker SIGKILLed mid-batch: the mini-batch is tried again and its rows appear once",
          "[parallel]") {
  ParallelWorkspace ws;
  auto pids = ws.dir / "pids.txt";
  auto job = ws.file_job(6,
                         "  mini_batch_size: 2\n  error_threshold: 0\n  output_action: append_row\n"
                         "  process_count_per_node: 2\n  run_max_try: 3\n",
                         "environment_variables: {SLOW_ON: f03.txt, SLOW_MARKER: " +
                             (ws.dir / "slept").string() + ", PIDS: " + pids.string() + "}\n");
  pid_t run = test::start_command({test::amlnode_binary().string(), "run", "--state-dir",
                                   (ws.dir / "state").string(), "--run-id", "killed", job.string()},
                                  ws.dir / "out.txt", ws.dir / "err.txt");
  // The worker that took f03-f04 sleeps; it is killed there, mid-batch.
  pid_t slow = test::worker_of(pids, "f03.txt");
  REQUIRE(slow > 0);
  ::kill(slow, SIGKILL);
  int code = test::wait_command(run, 120s);
  INFO(test::slurp(ws.dir / "out.txt") << test::slurp(ws.dir / "err.txt"));
  // The retry (on a fresh worker) does not sleep: the run completes with every row once.
  CHECK(code == 0);
  CHECK(ws.output_lines("killed") == expected_names(6));
}

TEST_CASE("a table's failed rows count against error_threshold, and one file mounted is a table",
          "[parallel]") {
  ParallelWorkspace ws;
  std::string csv = "id,sepal,species\n";
  for (int i = 0; i < 10; ++i) csv += std::to_string(i) + ",5.1,setosa\n";
  ws.dir.write("project/iris.csv", csv);
  std::string parallel =
      "  error_threshold: 9\n  output_action: append_row\n"
      "  process_count_per_node: 1\n  run_max_try: 1\n";
  // One file, staged as a link (mount): its 10 rows are one mini-batch.
  auto job =
      ws.job("iris_rows.py", "inputs:\n  iris: {path: iris.csv, dataset: tabular}\n", parallel);
  auto fine = ws.run(job, "one-file");
  INFO(fine.out << fine.err);
  REQUIRE(fine.exit_code == 0);
  CHECK(ws.output_lines("one-file").size() == 10);
  job = ws.job("iris_rows.py", "inputs:\n  iris: {path: iris.csv, dataset: tabular}\n", parallel,
               "environment_variables: {RAISE: '1'}\n");
  auto failed = ws.run(job, "raises");
  INFO(failed.out << failed.err);
  CHECK(failed.exit_code != 0);
  CHECK_THAT(ws.run_json("raises")["error"]["message"].get<std::string>(),
             Catch::StartsWith("error_threshold: 10 items failed, more than the 9 allowed"));
}

TEST_CASE(
    "a timed-out worker takes nothing more; an empty result and a run() past its timeout "
    "within the limits leave the rest",
    "[parallel]") {
  ParallelWorkspace ws;
  auto job =
      ws.file_job(6,
                  "  mini_batch_size: 1\n  error_threshold: -1\n  output_action: append_row\n"
                  "  process_count_per_node: 2\n  run_invocation_timeout: 1\n"
                  "  run_max_try: 1\n",
                  "environment_variables: {HANG_ON: f02.txt, EMPTY_ON: f05.txt}\n");
  auto result = ws.run(job, "partial");
  INFO(result.out << result.err);
  REQUIRE(result.exit_code == 0);
  // f02 timed out (one try), f05 returned no row; every other mini-batch, none lost to the killed
  // worker, wrote its row.
  CHECK(ws.output_lines("partial") ==
        std::vector<std::string>{"p-f01.txt", "p-f03.txt", "p-f04.txt", "p-f06.txt"});
  CHECK_THAT(test::slurp(ws.wd("partial") / "logs" / "job_result.txt"),
             Catch::StartsWith("Completed\n6 mini-batches: 5 processed, 1 failed"));
}

TEST_CASE("parallel_run.entry_script alone: the job's arguments all reach it", "[parallel]") {
  ParallelWorkspace ws;
  auto job = ws.file_job(3,
                         "  entry_script: file_names.py\n  error_threshold: 0\n"
                         "  logging_level: DEBUG\n"
                         "  output_action: append_row\n  process_count_per_node: 1\n");
  // The job file names no top-level script: only parallel_run's.
  auto text = test::slurp(job);
  text.erase(0, text.find('\n') + 1);
  ws.dir.write("project/job.yml", text);
  auto result = ws.run(job, "entry-only");
  INFO(result.out << result.err << text);
  REQUIRE(result.exit_code == 0);
  CHECK(ws.output_lines("entry-only") == expected_names(3));
  // parallel_run.logging_level reaches the EntryScript logger.
  CHECK_THAT(test::slurp(ws.wd("entry-only") / "logs/user/entry_script_log/0/process001.log.txt"),
             Catch::Contains("debug detail"));
}

TEST_CASE("partition_keys: one mini-batch per combination of the keys' values in the paths",
          "[parallel]") {
  ParallelWorkspace ws;
  for (const char* file : {"alice/summer/rock.wav", "alice/winter/rock.wav", "bob/summer/jazz.wav",
                           "alice/summer/jazz.wav"})
    ws.dir.write(std::string("project/data/") + file, "wav");
  auto job = ws.job("file_names.py", "inputs:\n  songs: {path: data, dataset: file}\n",
                    "  partition_keys: [user, genres]\n"
                    "  partition_format: data/{user}/{season}/{genres}.wav\n"
                    "  error_threshold: 0\n  output_action: append_row\n"
                    "  process_count_per_node: 2\n",
                    "arguments: [--prefix, '']\n");
  auto result = ws.run(job, "partitioned");
  INFO(result.out << result.err);
  REQUIRE(result.exit_code == 0);
  // (alice, jazz), (alice, rock) with both seasons, (bob, jazz): in the order of their first file.
  CHECK(ws.output_lines("partitioned") ==
        std::vector<std::string>{"jazz.wav", "rock.wav", "rock.wav", "jazz.wav"});
  CHECK_THAT(test::slurp(ws.wd("partitioned") / "logs" / "job_result.txt"),
             Catch::StartsWith("Completed\n3 mini-batches: 3 processed"));
}

TEST_CASE("a worker killed for its timeout is replaced though a child it forked keeps its pipes",
          "[parallel]") {
  ParallelWorkspace ws;
  auto helpers = ws.dir / "helpers.txt";
  // Each worker forks a helper that sleeps for 10 minutes holding the worker's pipes.
  auto job = ws.file_job(
      3,
      "  mini_batch_size: 1\n  error_threshold: -1\n  output_action: append_row\n"
      "  process_count_per_node: 1\n  run_invocation_timeout: 1\n"
      "  run_max_try: 2\n",
      "environment_variables: {HANG_ON: f01.txt, FORK_HELPER: " + helpers.string() + "}\n");
  auto started = std::chrono::steady_clock::now();
  auto result = ws.run(job, "forked");
  auto took = std::chrono::steady_clock::now() - started;
  std::istringstream pids(test::slurp(helpers));
  for (pid_t pid = 0; pids >> pid;) ::kill(pid, SIGKILL);
  INFO(result.out << result.err);
  REQUIRE(result.exit_code == 0);
  CHECK(ws.output_lines("forked") == std::vector<std::string>{"p-f02.txt", "p-f03.txt"});
  // The workers' ends were seen when they ended, not when the helpers let go of their pipes.
  CHECK(took < std::chrono::seconds(60));
}

TEST_CASE("a tabular dataset by partition keys: a DataFrame per key, the path's values as columns",
          "[parallel]") {
  ParallelWorkspace ws;
  ws.dir.write("project/sales/east/2021.csv", "amount\n10\n");
  ws.dir.write("project/sales/east/2022.csv", "amount\n20\n1\n");
  ws.dir.write("project/sales/west/2021.csv", "amount\n5\n7\n");
  auto job = ws.job("region_totals.py", "inputs:\n  sales: {path: sales, dataset: tabular}\n",
                    "  partition_keys: [region]\n"
                    "  partition_format: /{region}/{year}.csv\n"
                    "  error_threshold: -1\n  output_action: append_row\n"
                    "  process_count_per_node: 2\n");
  auto result = ws.run(job, "regions");
  INFO(result.out << result.err);
  REQUIRE(result.exit_code == 0);
  CHECK(ws.output_lines("regions") ==
        std::vector<std::string>{"east 2021,2022 31 3", "west 2021 12 2"});
  CHECK_THAT(test::slurp(ws.wd("regions") / "logs" / "job_result.txt"),
             Catch::StartsWith("Completed\n2 mini-batches: 2 processed, 0 failed; 2 rows"));
}
