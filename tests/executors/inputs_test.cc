#include "executors/inputs.h"

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
  REQUIRE(executors::stage_inputs(inputs).ok());
  CHECK(std::filesystem::is_symlink(dir / "run/inputs/mounted"));
  CHECK(test::slurp(dir / "run/inputs/mounted/a.csv") == "1,2\n");
  CHECK_FALSE(std::filesystem::is_symlink(dir / "run/inputs/copied"));
  CHECK(test::slurp(dir / "run/inputs/copied/a.csv") == "1,2\n");
  CHECK(std::filesystem::is_directory(dir / "results"));
}

TEST_CASE("a missing input path is an error naming the input", "[inputs]") {
  test::TempDir dir;
  auto result = executors::stage_inputs(
      {{"train", dir / "nope", dir / "run/inputs/train", spec::InputMode::Download}});
  REQUIRE_FALSE(result.ok());
  CHECK_THAT(result.error().message, Catch::Contains("input train"));
  CHECK_THAT(result.error().message, Catch::Contains("does not exist"));
}
