#include "common/fs.h"

#include <sys/stat.h>

#include <catch2/catch.hpp>

#include "common/hash.h"
#include "tests/support/temp_dir.h"

using namespace amlnode;

TEST_CASE("write_file_atomically replaces the whole file and leaves no temporary", "[common]") {
  test::TempDir dir;
  auto file = dir / "run.json";
  REQUIRE(write_file_atomically(file, "first").ok());
  REQUIRE(write_file_atomically(file, "second, longer").ok());
  CHECK(test::slurp(file) == "second, longer");
  int entries = 0;
  for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator(dir.path())) ++entries;
  CHECK(entries == 1);
}

TEST_CASE("write_file_atomically reports a missing folder by path", "[common]") {
  test::TempDir dir;
  auto result = write_file_atomically(dir / "missing" / "x.json", "{}");
  REQUIRE_FALSE(result.ok());
  CHECK(result.error().message.find("missing") != std::string::npos);
}

TEST_CASE("read_file refuses files over the limit", "[common]") {
  test::TempDir dir;
  auto file = dir.write("big", std::string(100, 'x'));
  CHECK(read_file(file, 100).ok());
  auto over = read_file(file, 99);
  REQUIRE_FALSE(over.ok());
  CHECK(over.error().code == "FileTooLarge");
}

TEST_CASE("sha256_hex matches the standard test vector", "[common]") {
  CHECK(sha256_hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}
