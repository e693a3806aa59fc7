#include "executors/environments/build_log.h"

#include <catch2/catch.hpp>

#include "tests/support/temp_dir.h"

namespace amlnode::test {
namespace {

namespace envs = executors::environments;

TEST_CASE("the build log keeps everything in the file but only a bounded tail in memory") {
  TempDir dir;
  std::vector<std::string> progress;
  auto log = envs::BuildLog::open(
      dir / "logs" / "environment.txt", [&](std::string_view line) { progress.emplace_back(line); },
      3);
  REQUIRE(log);
  log->note("$ installer");
  log->output("line 1\nline");
  log->output(" 2\r\nline 3\nline 4\n");
  log->output(std::string(10000, 'x'));
  log->end_output();

  CHECK(slurp(dir / "logs" / "environment.txt") ==
        "$ installer\nline 1\nline 2\r\nline 3\nline 4\n" + std::string(10000, 'x'));
  CHECK(progress.size() == 6);
  CHECK(progress.front() == "$ installer");
  CHECK(progress[2] == "line 2");
  CHECK(progress.back().size() == envs::BuildLog::kMaxLineBytes);
  CHECK(log->tail() == "line 3\nline 4\n" + std::string(envs::BuildLog::kMaxLineBytes, 'x'));

  log->clear_tail();
  CHECK(log->tail().empty());
}

}  // namespace
}  // namespace amlnode::test
