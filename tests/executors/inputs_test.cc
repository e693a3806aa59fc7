#include "executors/inputs.h"

#include <unistd.h>

#include <catch2/catch.hpp>

#include "tests/support/temp_dir.h"

using namespace amlnode;

TEST_CASE("mount links, download copies, upload creates the folder", "[inputs]") {
  test::TempDir dir;
  dir.write("data/train/a.csv", "1,2\n");
  std::vector<executors::StagedInput> inputs = {
      {"mounted", dir / "data/train", dir / "run/inputs/mounted", spec::InputMode::Mount},
      {"copied", dir / "data/train", dir / "run/inputs/copied", spec::InputMode::Download},
      {"results", dir / "results", dir / "results", spec::InputMode::Upload},
  };
  REQUIRE(executors::stage_inputs(inputs, dir / "run/outside.txt").ok());
  CHECK(std::filesystem::is_symlink(dir / "run/inputs/mounted"));
  CHECK(test::slurp(dir / "run/inputs/mounted/a.csv") == "1,2\n");
  CHECK_FALSE(std::filesystem::is_symlink(dir / "run/inputs/copied"));
  CHECK(test::slurp(dir / "run/inputs/copied/a.csv") == "1,2\n");
  CHECK(std::filesystem::is_directory(dir / "results"));
}

TEST_CASE("a missing input path is an error naming the input", "[inputs]") {
  test::TempDir dir;
  auto result = executors::stage_inputs(
      {{"train", dir / "nope", dir / "run/inputs/train", spec::InputMode::Download}},
      dir / "run/outside.txt");
  REQUIRE_FALSE(result.ok());
  CHECK_THAT(result.error().message, Catch::Contains("input train"));
  CHECK_THAT(result.error().message, Catch::Contains("does not exist"));
}

TEST_CASE("an input placed outside the run folder is made only where nothing is, and removed after",
          "[inputs]") {
  test::TempDir dir;
  dir.write("data/a.csv", "1\n");
  std::filesystem::create_directories(dir / "run");
  auto place = std::filesystem::path("/tmp") / ("amlnode-test-input-" + std::to_string(::getpid()));
  std::filesystem::remove_all(place);
  executors::StagedInput outside{"d", dir / "data", place, spec::InputMode::Mount, true};
  REQUIRE(executors::stage_inputs({outside}, dir / "run/outside.txt").ok());
  CHECK(test::slurp(place / "a.csv") == "1\n");

  // Taken already (by the run above, here): refused, and the existing one left alone.
  auto again = executors::stage_inputs({outside}, dir / "run/other.txt");
  REQUIRE_FALSE(again.ok());
  CHECK_THAT(again.error().message, Catch::Contains("exists already"));
  executors::unstage_inputs(dir / "run/other.txt");
  CHECK(std::filesystem::exists(place));

  executors::unstage_inputs(dir / "run/outside.txt");
  CHECK_FALSE(std::filesystem::exists(std::filesystem::symlink_status(place)));
  CHECK(test::slurp(dir / "data/a.csv") == "1\n");  // the source is untouched
}
