// The amlnode_run Python module: under python3 with the module as the build installs it beside the
// binaries, and under `amlnode run` (the real binary, the real shim), which must hand it the file.

#include <catch2/catch.hpp>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "tests/metrics/metrics_test_support.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

using amlnode::test::CommandResult;
using amlnode::test::read_json_lines;
using amlnode::test::run_command;
using amlnode::test::TempDir;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const fs::path kModuleDir = fs::path(AMLNODE_BINARY_DIR) / "share" / "amlnode" / "python";

CommandResult python(const TempDir& dir, const std::string& script, bool with_file = true) {
  auto file = dir.write("script.py", script);
  std::vector<std::string> env = {"PYTHONPATH=" + kModuleDir.string()};
  env.push_back(std::string("AMLNODE_METRICS_FILE=") +
                (with_file ? (dir / "metrics.jsonl").string() : ""));
  return run_command({"python3", file.string()}, env);
}


}  // namespace

TEST_CASE("amlnode_run writes scalars, lists and rows as JSON lines", "[metrics][python]") {
  TempDir dir;
  auto result = python(dir, R"(
import amlnode_run as run
run.log("loss", 0.5, step=1)
run.log("loss", 0.25, step=2, description="training loss")
run.log("note", "warm-up done")
run.log("diverged", float("nan"))
run.log_list("accuracies", [0.5, 0.75, 1])
run.log_row("confusion", tp=10, fp=2)
run.flush()
)");
  INFO(result.err);
  REQUIRE(result.exit_code == 0);
  auto lines = read_json_lines(dir / "metrics.jsonl");
  REQUIRE(lines.size() == 6);
  CHECK(lines[0]["name"] == "loss");
  CHECK(lines[0]["kind"] == "scalar");
  CHECK(lines[0]["value"] == 0.5);
  CHECK(lines[0]["step"] == 1);
  CHECK(lines[0]["time"].get<double>() > 1.7e9);
  CHECK(lines[1]["description"] == "training loss");
  CHECK(lines[2]["value"] == "warm-up done");
  CHECK_FALSE(lines[2].contains("step"));
  CHECK(lines[3]["value"] == "NaN");
  CHECK(lines[4]["values"] == json::array({0.5, 0.75, 1}));
  CHECK(lines[5]["row"] == json({{"tp", 10}, {"fp", 2}}));
}

TEST_CASE("amlnode_run refuses bad arguments with the argument's name", "[metrics][python]") {
  TempDir dir;
  auto result = python(dir, R"(
import amlnode_run as run
for call in (lambda: run.log("", 1), lambda: run.log("x", object()), lambda: run.log("x", 1, step=-1),
             lambda: run.log(3, 1), lambda: run.log_list("x", "abc"), lambda: run.log_row("x"),
             lambda: run.log_list("x", [1, {}])):
    try:
        call()
        print("accepted")
    except (TypeError, ValueError) as e:
        print(e)
)");
  INFO(result.err);
  REQUIRE(result.exit_code == 0);
  CHECK(result.out ==
        "name: expected 1 to 255 characters, got 0\n"
        "value: expected a number, str or bool, got object\n"
        "step: expected an int >= 0 or None, got -1\n"
        "name: expected a str, got int\n"
        "value: expected a list of values, got str\n"
        "log_row: give at least one column, e.g. log_row(name, loss=0.1)\n"
        "value[1]: expected a number, str or bool, got dict\n");
  CHECK_FALSE(fs::exists(dir / "metrics.jsonl"));
}

TEST_CASE("Without AMLNODE_METRICS_FILE, amlnode_run records nothing and warns once",
          "[metrics][python]") {
  TempDir dir;
  auto result = python(dir, R"(
import amlnode_run as run
for i in range(5000):
    run.log("loss", i)
run.flush()
print(len(run._writer._lines))
)",
                       false);
  REQUIRE(result.exit_code == 0);
  CHECK(result.out == "0\n");  // nothing held in memory
  CHECK(result.err == "amlnode_run: $AMLNODE_METRICS_FILE is not set; metrics are not recorded\n");
}

TEST_CASE("amlnode_run buffers at most 1000 records, and a kill loses only the buffer",
          "[metrics][python]") {
  TempDir dir;
  auto result = python(dir, R"(
import os, signal
import amlnode_run as run
run.FLUSH_INTERVAL_SECONDS = 3600  # only the count bound applies here
for i in range(999):
    run.log("m", i)
print(os.path.getsize(os.environ["AMLNODE_METRICS_FILE"]) if os.path.exists(os.environ["AMLNODE_METRICS_FILE"]) else 0)
run.log("m", 999)
for i in range(5):
    run.log("lost", i)
os.kill(os.getpid(), signal.SIGKILL)
)");
  CHECK(result.exit_code == 128 + 9);
  CHECK(result.out == "0\n");
  auto lines = read_json_lines(dir / "metrics.jsonl");
  REQUIRE(lines.size() == 1000);
  CHECK(lines.back()["value"] == 999);
}

TEST_CASE("amlnode_run: a forked worker never writes its parent's buffer again",
          "[metrics][python]") {
  TempDir dir;
  auto result = python(dir, R"(
import os
import amlnode_run as run
run.log("parent", 1)
run.log("parent", 2)
pid = os.fork()
if pid == 0:
    run.log("child", 1)
    run.flush()
    os._exit(0)
os.waitpid(pid, 0)
)");
  REQUIRE(result.exit_code == 0);
  auto lines = read_json_lines(dir / "metrics.jsonl");
  REQUIRE(lines.size() == 3);
  int parents = 0;
  for (const auto& line : lines) parents += line["name"] == "parent";
  CHECK(parents == 2);
}

TEST_CASE("amlnode_run stops at the file cap with one truncation record", "[metrics][python]") {
  TempDir dir;
  auto result = python(dir, R"(
import amlnode_run as run
run.MAX_FILE_BYTES = 2000
for i in range(100):
    run.log("step_metric", i)
    run.flush()
)");
  REQUIRE(result.exit_code == 0);
  CHECK(result.err.find("reached 2000 bytes; later metrics are dropped") != std::string::npos);
  auto lines = read_json_lines(dir / "metrics.jsonl");
  REQUIRE(lines.size() > 10);
  REQUIRE(lines.size() < 40);
  CHECK(lines.back()["kind"] == "truncated");
  CHECK(fs::file_size(dir / "metrics.jsonl") < 2200);
}
