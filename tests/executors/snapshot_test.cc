#include "executors/snapshot.h"

#include <catch2/catch.hpp>

#include "tests/support/temp_dir.h"

using namespace amlnode;
using executors::glob_match;
using executors::IgnoreRules;

TEST_CASE("glob patterns follow gitignore's rules", "[snapshot]") {
  CHECK(glob_match("*.ckpt", "model.ckpt"));
  CHECK_FALSE(glob_match("*.ckpt", "dir/model.ckpt"));
  CHECK(glob_match("data/**", "data/a/b/c.csv"));
  CHECK(glob_match("**/cache", "cache"));
  CHECK(glob_match("**/cache", "a/b/cache"));
  CHECK(glob_match("a/**/z", "a/z"));
  CHECK(glob_match("a/**/z", "a/b/c/z"));
  CHECK(glob_match("file?.txt", "file1.txt"));
  CHECK_FALSE(glob_match("file?.txt", "file10.txt"));
  CHECK(glob_match("[a-c]x", "bx"));
  CHECK_FALSE(glob_match("[!a-c]x", "bx"));
}

TEST_CASE("ignore rules: negation, folders only, anchoring", "[snapshot]") {
  auto rules = IgnoreRules::parse(
      "# comment\n"
      "*.log\n"
      "!keep.log\n"
      "build/\n"
      "/top.txt\n"
      "nested/deep.bin\n");
  CHECK(rules.ignored("x.log", false));
  CHECK(rules.ignored("sub/x.log", false));
  CHECK_FALSE(rules.ignored("keep.log", false));
  CHECK(rules.ignored("build", true));
  CHECK_FALSE(rules.ignored("build", false));
  CHECK(rules.ignored("top.txt", false));
  CHECK_FALSE(rules.ignored("sub/top.txt", false));
  CHECK(rules.ignored("nested/deep.bin", false));
  CHECK_FALSE(rules.ignored("other/nested/deep.bin", false));
}

TEST_CASE("a snapshot honours .amlignore over .gitignore and copies modes and links",
          "[snapshot]") {
  test::TempDir dir;
  auto src = dir / "src";
  dir.write("src/train.py", "print('x')\n");
  dir.write("src/run.sh", "#!/bin/sh\n");
  std::filesystem::permissions(src / "run.sh", std::filesystem::perms::owner_exec,
                               std::filesystem::perm_options::add);
  dir.write("src/data/big.bin", std::string(1000, 'x'));
  dir.write("src/notes.log", "log");
  dir.write("src/.gitignore", "*.py\n");
  dir.write("src/.amlignore", "data/\n*.log\n");
  std::filesystem::create_symlink("train.py", src / "link.py");

  auto listing = executors::list_snapshot(src, {});
  REQUIRE(listing.ok());
  CHECK(listing->ignore_file == ".amlignore");
  REQUIRE(executors::copy_snapshot(src, *listing, dir / "wd").ok());
  CHECK(std::filesystem::exists(dir / "wd" / "train.py"));
  CHECK_FALSE(std::filesystem::exists(dir / "wd" / "data"));
  CHECK_FALSE(std::filesystem::exists(dir / "wd" / "notes.log"));
  CHECK(std::filesystem::is_symlink(dir / "wd" / "link.py"));
  auto perms = std::filesystem::status(dir / "wd" / "run.sh").permissions();
  CHECK((perms & std::filesystem::perms::owner_exec) != std::filesystem::perms::none);
}

TEST_CASE("a snapshot over the file or size limit is refused with a clear message", "[snapshot]") {
  test::TempDir dir;
  for (int i = 0; i < 5; ++i) dir.write("src/f" + std::to_string(i), "12345");
  auto files = executors::list_snapshot(dir / "src", {1 << 20, 4});
  REQUIRE_FALSE(files.ok());
  CHECK(files.error().code == "SnapshotTooLarge");
  CHECK_THAT(files.error().message, Catch::Contains("more than 4 files"));
  CHECK_THAT(files.error().message, Catch::Contains(".amlignore"));
  auto bytes = executors::list_snapshot(dir / "src", {20, 100});
  REQUIRE_FALSE(bytes.ok());
  CHECK_THAT(bytes.error().message, Catch::Contains("larger than"));
  // Left-out files do not count.
  dir.write("src/.amlignore", "f[0-2]\n");
  CHECK(executors::list_snapshot(dir / "src", {1 << 20, 4}).ok());
}

TEST_CASE("a state folder inside the source folder is never copied into the snapshot",
          "[snapshot]") {
  test::TempDir dir;
  dir.write("src/train.py", "");
  dir.write("src/state/runs/old/wd/train.py", "");
  auto listing = executors::list_snapshot(dir / "src", {}, {dir / "src" / "state"});
  REQUIRE(listing.ok());
  CHECK(listing->files == 1);
}
