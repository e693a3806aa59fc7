// Cutting a ParallelRunStep's inputs into mini-batches, on real files.

#include "parallel/mini_batches.h"

#include <catch2/catch.hpp>
#include <fstream>

#include "tests/support/temp_dir.h"

using namespace amlnode;
using namespace amlnode::parallel;
namespace fs = std::filesystem;

namespace {

// The rows of a slice as a worker reads them: the header, then the slice's bytes.
std::string read_slice(const TableSlice& slice) {
  std::ifstream in(slice.file, std::ios::binary);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return text.substr(0, slice.header_end) + text.substr(slice.begin, slice.end - slice.begin);
}

}  // namespace

TEST_CASE("mini_batch_size is a file count for files and a 1024-based size for tables",
          "[parallel][mini_batches]") {
  CHECK(*parse_mini_batch_size("10", InputKind::Files) == 10);
  CHECK(*parse_mini_batch_size("1KB", InputKind::Table) == 1024);
  CHECK(*parse_mini_batch_size("2mb", InputKind::Table) == 2u << 20);
  CHECK(*parse_mini_batch_size("1Gb", InputKind::Table) == 1u << 30);
  CHECK(*parse_mini_batch_size("4096", InputKind::Table) == 4096);
  CHECK(parse_mini_batch_size("1KB", InputKind::Files).error().message ==
        "mini_batch_size: expected a number of files for a file dataset, got \"1KB\"");
  CHECK_THAT(parse_mini_batch_size("1.5MB", InputKind::Table).error().message,
             Catch::StartsWith("mini_batch_size: expected a size such as 1024, 100KB"));
  CHECK(!parse_mini_batch_size("0", InputKind::Files).ok());
  CHECK(!parse_mini_batch_size("", InputKind::Files).ok());
  CHECK(!parse_mini_batch_size("99999999999999999999", InputKind::Files).ok());
}

TEST_CASE("a file dataset is its files in path order, mini_batch_size to a mini-batch",
          "[parallel][mini_batches]") {
  test::TempDir dir;
  for (const char* name : {"b.png", "a.png", "sub/c.png", "sub/d.png", "e.png"})
    dir.write(std::string("images/") + name, "x");
  fs::create_symlink(dir / "images" / "a.png", dir / "images" / "link.png");
  auto files = input_files(dir / "images");
  REQUIRE(files.ok());
  REQUIRE(files->size() == 5);  // the link is not an item
  auto batches = split_files(*files, 2);
  REQUIRE(batches.size() == 3);
  CHECK(batches[0].files == std::vector<fs::path>{dir / "images/a.png", dir / "images/b.png"});
  CHECK(batches[1].files == std::vector<fs::path>{dir / "images/e.png", dir / "images/sub/c.png"});
  CHECK(batches[2].files == std::vector<fs::path>{dir / "images/sub/d.png"});
  CHECK(batches[2].items == 1);
  CHECK(input_files(dir / "images" / "a.png")->size() == 1);
  CHECK_FALSE(input_files(dir / "missing").ok());
}

TEST_CASE("a table is cut at line ends near mini_batch_size, never across files, header kept",
          "[parallel][mini_batches]") {
  test::TempDir dir;
  std::string rows;
  for (int i = 0; i < 100; ++i) rows += std::to_string(i) + ",5.1,3.5,setosa\n";
  auto first = dir.write("iris/1.csv", "id,a,b,species\n" + rows);
  auto second = dir.write("iris/2.csv", "id,a,b,species\n0,1,2,x");  // no final line end
  auto batches = split_table({first, second}, 300, {});
  REQUIRE(batches.ok());
  std::string joined;
  std::uint64_t at = 15;  // just past the header
  int from_first = 0;
  for (const auto& batch : *batches) {
    const auto& slice = *batch.slice;
    std::string text = read_slice(slice);
    CHECK_THAT(text, Catch::StartsWith("id,a,b,species\n"));
    if (slice.file != first) continue;
    ++from_first;
    CHECK(slice.begin == at);  // contiguous, nothing lost or read twice
    at = slice.end;
    // Whole rows only, and no more than one row past the size asked for.
    CHECK(text.back() == '\n');
    CHECK(slice.end - slice.begin <= 300 + 20);
    joined += text.substr(15);
  }
  CHECK(joined == rows);
  CHECK(from_first == static_cast<int>((rows.size() + 299) / 300));
  CHECK(read_slice(*batches->back().slice) == "id,a,b,species\n0,1,2,x");
  // JSON lines have no header; a parquet file is one mini-batch.
  auto lines = split_table({first}, 1 << 20, {false, true});
  CHECK(lines->front().slice->header_end == 0);
  CHECK(lines->front().slice->begin == 0);
  auto parquet = split_table({first, second}, 10, {false, false});
  CHECK(parquet->size() == 2);
}

TEST_CASE("partition keys make one mini-batch per combination of their values in the paths",
          "[parallel][mini_batches]") {
  std::vector<fs::path> files = {
      "/mnt/x/data/alice/summer/jazz.wav", "/mnt/x/data/alice/summer/rock.wav",
      "/mnt/x/data/alice/winter/rock.wav", "/mnt/x/data/bob/summer/jazz.wav"};
  auto batches = split_by_partition(files, "data/{user}/{season}/{genres}.wav", {"user", "genres"});
  REQUIRE(batches.ok());
  REQUIRE(batches->size() == 3);
  CHECK((*batches)[0].files == std::vector<fs::path>{files[0]});
  CHECK((*batches)[1].files == std::vector<fs::path>{files[1], files[2]});  // alice, rock
  CHECK((*batches)[1].items == 2);
  CHECK((*batches)[2].files == std::vector<fs::path>{files[3]});
  // A key the format lacks, a file it does not match, a date format: refused, naming them.
  CHECK(
      split_by_partition(files, "data/{user}/{season}/{genres}.wav", {"region"}).error().message ==
      "parallel_run.partition_keys: region is not a {name} of partition_format "
      "\"data/{user}/{season}/{genres}.wav\"");
  CHECK_THAT(split_by_partition(files, "data/{user}/{genres}.wav", {"user"}).error().message,
             Catch::Contains("/mnt/x/data/alice/summer/jazz.wav does not match"));
  CHECK_THAT(split_by_partition(files, "data/{day:yyyy/MM/dd}/x.wav", {"day"}).error().message,
             Catch::Contains("only plain {name} placeholders"));
  CHECK(!split_by_partition(files, "", {"user"}).ok());
  // Azure ML's documents write the format from a leading /.
  CHECK(split_by_partition(files, "/{user}/{season}/{genres}.wav", {"user"})->size() == 2);
  // A placeholder before a literal that ends its component takes up to the last occurrence.
  auto dots = split_by_partition({"/d/a.b.csv"}, "{name}.csv", {"name"});
  REQUIRE(dots.ok());
  CHECK(dots->front().partition.front().second == "a.b");
  // Two placeholders side by side cannot be told apart.
  CHECK_THAT(
      split_by_partition(files, "data/{user}{season}/{genres}.wav", {"user"}).error().message,
      Catch::Contains("placeholders need text between them"));
  // Characters a regular expression would read are literal in the format.
  std::vector<fs::path> dotted = {"/d/a+b/v1.0.csv", "/d/a+b/v1x0.csv"};
  auto literal = split_by_partition(dotted, "{name}/v1.0.csv", {"name"});
  CHECK_FALSE(literal.ok());  // v1x0.csv does not match: "." is a dot, not any character
}
