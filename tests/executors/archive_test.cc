#include "executors/archive.h"

#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <random>

#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

using namespace amlnode;
using executors::ExtractLimits;
namespace fs = std::filesystem;

namespace {

// Writes a tar.gz with Python's tarfile, which writes whatever it is told: hostile archives are
// made here, by the test, rather than kept as binary fixtures. `body` calls file(), entry() and
// t.addfile() on the open archive `t`.
fs::path python_archive(const test::TempDir& dir, const std::string& body,
                        const std::string& name = "a.tar.gz") {
  const std::string prelude =
      "import io, sys, tarfile\n"
      "t = tarfile.open(sys.argv[1], 'w:gz', format=tarfile.PAX_FORMAT)\n"
      "def file(name, data=b'x'):\n"
      "    i = tarfile.TarInfo(name); i.size = len(data); t.addfile(i, io.BytesIO(data))\n"
      "def entry(name, kind, linkname=''):\n"
      "    i = tarfile.TarInfo(name); i.type = kind; i.linkname = linkname; t.addfile(i)\n";
  auto out = dir / name;
  auto made = test::run_command({"/usr/bin/python3", "-c", prelude + body + "t.close()\n", out});
  INFO(made.err);
  REQUIRE(made.exit_code == 0);
  return out;
}

std::string random_bytes(std::size_t size) {
  std::mt19937 generator(42);
  std::string bytes(size, '\0');
  for (auto& byte : bytes) byte = static_cast<char>(generator() & 0xff);
  return bytes;
}

// The names in `folder`, to check that a refused extraction left nothing beside the archive.
std::vector<std::string> names_in(const fs::path& folder) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(folder)) {
    names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

unsigned mode_of(const fs::path& path) {
  struct stat info {};
  REQUIRE(::lstat(path.c_str(), &info) == 0);
  return info.st_mode & 07777;
}

// A source folder with ignored files, modes, links, nesting and an empty folder.
fs::path make_source(const test::TempDir& dir) {
  auto src = dir / "src";
  dir.write("src/train.py", "print('train')\n");
  dir.write("src/run.sh", "#!/bin/sh\necho hi\n");
  fs::permissions(src / "run.sh", fs::perms(0755));
  dir.write("src/secret.cfg", "token");
  fs::permissions(src / "secret.cfg", fs::perms(0600));
  dir.write("src/pkg/util/helpers.py", random_bytes(100000));
  dir.write("src/data/big.bin", std::string(5000, 'x'));
  dir.write("src/notes.log", "log");
  dir.write("src/.amlignore", "data/\n*.log\n");
  fs::create_directories(src / "empty");
  fs::create_symlink("train.py", src / "link.py");
  fs::create_symlink("../train.py", src / "pkg" / "up.py");
  return src;
}

template <class T>
void require_refused(const Result<T>& result, const std::string& code, const std::string& entry) {
  REQUIRE_FALSE(result.ok());
  INFO(result.error().message);
  CHECK(result.error().code == code);
  CHECK_THAT(result.error().message, Catch::Contains("'" + entry + "'"));
}

}  // namespace

TEST_CASE("a packed snapshot extracts to the listing, with modes and links kept", "[archive]") {
  test::TempDir dir;
  auto src = make_source(dir);
  auto listing = executors::list_snapshot(src, {});
  REQUIRE(listing.ok());
  auto packed = executors::pack_snapshot(src, *listing, dir / "snap.tar.gz");
  REQUIRE(packed.ok());
  CHECK(packed->files == listing->files);
  CHECK(packed->bytes == listing->bytes);
  CHECK(packed->archive_bytes == fs::file_size(dir / "snap.tar.gz"));
  CHECK(mode_of(dir / "snap.tar.gz") == 0600);

  auto extracted = executors::extract_snapshot(dir / "snap.tar.gz", dir / "wd");
  INFO((extracted.ok() ? "" : extracted.error().message));
  REQUIRE(extracted.ok());
  CHECK(extracted->files == packed->files);
  CHECK(extracted->directories == packed->directories);
  CHECK(extracted->bytes == packed->bytes);

  auto wd = dir / "wd";
  CHECK(test::slurp(wd / "train.py") == "print('train')\n");
  CHECK(test::slurp(wd / "pkg/util/helpers.py") == random_bytes(100000));
  CHECK_FALSE(fs::exists(wd / "data"));
  CHECK_FALSE(fs::exists(wd / "notes.log"));
  CHECK(fs::is_directory(wd / "empty"));
  CHECK(mode_of(wd / "run.sh") == 0755);
  CHECK(mode_of(wd / "secret.cfg") == 0600);
  CHECK(mode_of(wd) == 0755);
  REQUIRE(fs::is_symlink(wd / "link.py"));
  CHECK(fs::read_symlink(wd / "link.py") == "train.py");
  CHECK(fs::read_symlink(wd / "pkg/up.py") == "../train.py");
  CHECK(test::slurp(wd / "pkg/up.py") == "print('train')\n");
  CHECK(names_in(dir.path()) == std::vector<std::string>{"snap.tar.gz", "src", "wd"});
}

TEST_CASE("archives hold no owner names or ids and follow the listing's order", "[archive]") {
  test::TempDir dir;
  auto src = make_source(dir);
  auto listing = executors::list_snapshot(src, {});
  REQUIRE(listing.ok());
  REQUIRE(executors::pack_snapshot(src, *listing, dir / "snap.tar.gz").ok());
  auto members =
      test::run_command({"/usr/bin/python3", "-c",
                         "import sys, tarfile\n"
                         "for m in tarfile.open(sys.argv[1]):\n"
                         "    print(m.name, m.uid, m.gid, repr(m.uname), repr(m.gname))\n",
                         dir / "snap.tar.gz"});
  REQUIRE(members.exit_code == 0);
  std::string expected;
  for (const auto& entry : listing->entries) {
    expected += entry.relative.generic_string() + " 0 0 '' ''\n";
  }
  CHECK(members.out == expected);
}

TEST_CASE("packing the same folder twice gives the same bytes, on disk or in memory", "[archive]") {
  test::TempDir dir;
  auto src = make_source(dir);
  dir.write("src/" + std::string(150, 'n') + ".txt", "a name too long for ustar");
  auto listing = executors::list_snapshot(src, {});
  REQUIRE(listing.ok());
  REQUIRE(executors::pack_snapshot(src, *listing, dir / "one.tar.gz").ok());
  REQUIRE(executors::pack_snapshot(src, *listing, dir / "two.tar.gz").ok());
  auto in_memory = executors::pack_snapshot_to_memory(src, *listing, 1 << 20);
  REQUIRE(in_memory.ok());
  auto one = test::slurp(dir / "one.tar.gz");
  CHECK(one == test::slurp(dir / "two.tar.gz"));
  CHECK(one == in_memory->data);
  CHECK(in_memory->stats.archive_bytes == one.size());

  auto extracted = executors::extract_snapshot_from_memory(in_memory->data, dir / "wd");
  REQUIRE(extracted.ok());
  CHECK(fs::exists(dir / "wd" / (std::string(150, 'n') + ".txt")));
}

TEST_CASE("the in-memory archive stops at its cap", "[archive]") {
  test::TempDir dir;
  dir.write("src/noise.bin", random_bytes(200000));
  auto listing = executors::list_snapshot(dir / "src", {});
  REQUIRE(listing.ok());
  auto packed = executors::pack_snapshot_to_memory(dir / "src", *listing, 50000);
  REQUIRE_FALSE(packed.ok());
  CHECK(packed.error().code == "ArchiveTooLarge");
}

TEST_CASE("a link that would not survive extraction is refused when packing", "[archive]") {
  test::TempDir dir;
  dir.write("src/train.py", "x");
  fs::create_symlink("/mnt/datasets", dir / "src" / "data");
  auto listing = executors::list_snapshot(dir / "src", {});
  REQUIRE(listing.ok());
  auto packed = executors::pack_snapshot(dir / "src", *listing, dir / "snap.tar.gz");
  require_refused(packed, "UnsafeArchive", "data");
  CHECK_THAT(packed.error().message, Catch::Contains(".amlignore"));
  CHECK(names_in(dir.path()) == std::vector<std::string>{"src"});
}

TEST_CASE("pack_directory packs everything, leaving out what cannot travel", "[archive]") {
  test::TempDir dir;
  dir.write("outputs/.amlignore", "*.pt\n");
  dir.write("outputs/model.pt", "weights");
  dir.write("outputs/sub/metrics.json", "{}");
  fs::create_symlink("/etc/passwd", dir / "outputs" / "outside");
  fs::create_symlink("model.pt", dir / "outputs" / "latest.pt");
  REQUIRE(::mkfifo((dir / "outputs" / "pipe").c_str(), 0600) == 0);

  auto packed = executors::pack_directory(dir / "outputs", dir / "outputs.tar.gz");
  REQUIRE(packed.ok());
  CHECK(packed->left_out == std::vector<std::string>{"outside", "pipe"});
  REQUIRE(executors::extract_snapshot(dir / "outputs.tar.gz", dir / "back").ok());
  CHECK(test::slurp(dir / "back" / "model.pt") == "weights");
  CHECK(test::slurp(dir / "back" / "latest.pt") == "weights");
  CHECK(fs::exists(dir / "back" / "sub" / "metrics.json"));
  CHECK_FALSE(fs::exists(fs::symlink_status(dir / "back" / "outside")));

  auto limited = executors::pack_directory(dir / "outputs", dir / "small.tar.gz", {1 << 20, 2});
  REQUIRE_FALSE(limited.ok());
  CHECK(limited.error().code == "ArchiveTooLarge");
  CHECK_FALSE(fs::exists(dir / "small.tar.gz"));
}

TEST_CASE("hostile archives are refused, naming the entry and leaving nothing", "[archive]") {
  struct Case {
    std::string what;
    std::string body;
    std::string entry;
  };
  auto hostile = GENERATE(values<Case>({
      {"a parent path", "file('../x')\n", "../x"},
      {"a parent path after a folder", "file('a/b', b'ok')\nfile('a/../../x')\n", "a/../../x"},
      {"an absolute path", "file('/etc/passwd')\n", "/etc/passwd"},
      {"a link to /etc, then a file through it",
       "entry('link', tarfile.SYMTYPE, '/etc')\nfile('link/passwd')\n", "link"},
      {"a file through a link that stays inside",
       "entry('sub', tarfile.DIRTYPE)\nentry('l', tarfile.SYMTYPE, 'sub')\nfile('l/passwd')\n",
       "l/passwd"},
      {"a relative link climbing out",
       "entry('d', tarfile.DIRTYPE)\n"
       "entry('d/up', tarfile.SYMTYPE, '../../')\n",
       "d/up"},
      {"a link chain that fools a lexical check",
       "entry('s', tarfile.SYMTYPE, '.')\nentry('t', tarfile.SYMTYPE, 's/s/../..')\n", "t"},
      {"a hard link to an absolute path", "entry('h', tarfile.LNKTYPE, '/etc/passwd')\n", "h"},
      {"a hard link climbing out", "entry('h', tarfile.LNKTYPE, '../outside')\n", "h"},
      {"a hard link to a file not in the archive", "entry('h', tarfile.LNKTYPE, 'nothing')\n", "h"},
      {"a character device", "entry('null', tarfile.CHRTYPE)\n", "null"},
      {"a block device", "entry('sda', tarfile.BLKTYPE)\n", "sda"},
      {"a FIFO", "file('ok')\nentry('pipe', tarfile.FIFOTYPE)\n", "pipe"},
      {"a path twice", "file('x', b'1')\nfile('x', b'2')\n", "x"},
      {"a file replacing a folder", "file('a/b')\nfile('a')\n", "a"},
      {"a read-only folder before a bad entry",
       "i = tarfile.TarInfo('ro'); i.type = tarfile.DIRTYPE; i.mode = 0o555; t.addfile(i)\n"
       "file('ro/f')\nfile('../x')\n",
       "../x"},
  }));
  INFO(hostile.what);
  test::TempDir dir;
  auto archive = python_archive(dir, hostile.body);
  auto extracted = executors::extract_snapshot(archive, dir / "wd");
  require_refused(extracted, "UnsafeArchive", hostile.entry);
  CHECK(names_in(dir.path()) == std::vector<std::string>{"a.tar.gz"});
  CHECK_FALSE(fs::exists("/x"));
}

TEST_CASE("a hard link to a file earlier in the archive is extracted", "[archive]") {
  test::TempDir dir;
  auto archive = python_archive(dir, "file('f', b'data')\nentry('h', tarfile.LNKTYPE, 'f')\n");
  REQUIRE(executors::extract_snapshot(archive, dir / "wd").ok());
  CHECK(test::slurp(dir / "wd" / "h") == "data");
  CHECK(fs::hard_link_count(dir / "wd" / "f") == 2);
}

TEST_CASE("a gzip bomb is refused by its compression ratio while it is read", "[archive]") {
  test::TempDir dir;
  // One entry of 1 GiB of zeros: about 1 MB compressed. The extraction stops at the ratio floor
  // (16 MiB written), long before the 300 MiB limit, so the test writes little to disk.
  auto archive = python_archive(
      dir,
      "class Zeros(io.RawIOBase):\n"
      "    def __init__(self, n): self.left = n\n"
      "    def readable(self): return True\n"
      "    def readinto(self, b):\n"
      "        n = min(len(b), self.left); b[:n] = bytes(n); self.left -= n; return n\n"
      "t.close()\n"
      "t = tarfile.open(sys.argv[1], 'w:gz', compresslevel=9)\n"
      "i = tarfile.TarInfo('zeros'); i.size = 1 << 30\n"
      "t.addfile(i, io.BufferedReader(Zeros(i.size), 1 << 20))\n");
  CHECK(fs::file_size(archive) < (4 << 20));
  ExtractLimits no_size_limit;
  no_size_limit.max_total_bytes = no_size_limit.max_entry_bytes = 4ull << 30;
  auto extracted = executors::extract_snapshot(archive, dir / "wd", no_size_limit);
  require_refused(extracted, "ArchiveTooLarge", "zeros");
  CHECK_THAT(extracted.error().message, Catch::Contains("expands more than 200 times"));
  CHECK(fs::file_size(archive) > (64 << 10));
  CHECK(names_in(dir.path()) == std::vector<std::string>{"a.tar.gz"});

  auto by_default = executors::extract_snapshot(archive, dir / "wd");
  require_refused(by_default, "ArchiveTooLarge", "zeros");
}

TEST_CASE("a large incompressible file passes a tight ratio limit", "[archive]") {
  // Its header claims 2 MiB when only the first 64 KiB block has been read: the ratio must be
  // judged on bytes produced, or every large file would look like a bomb.
  test::TempDir dir;
  auto archive = python_archive(dir,
                                "import random\n"
                                "random.seed(3)\n"
                                "file('weights.bin', random.randbytes(2 << 20))\n");
  ExtractLimits limits;
  limits.max_ratio = 10;
  limits.ratio_floor_bytes = 0;
  auto extracted = executors::extract_snapshot(archive, dir / "wd", limits);
  INFO((extracted.ok() ? "" : extracted.error().message));
  REQUIRE(extracted.ok());
  CHECK(extracted->bytes == (2u << 20));
}

TEST_CASE("size and count limits are enforced", "[archive]") {
  test::TempDir dir;
  auto archive = python_archive(dir,
                                "import random\n"
                                "random.seed(1)\n"
                                "for n in range(12):\n"
                                "    file('f%02d' % n, random.randbytes(100000))\n");
  ExtractLimits limits;
  limits.max_files = 10;
  require_refused(executors::extract_snapshot(archive, dir / "wd", limits), "ArchiveTooLarge",
                  "f10");

  limits = {};
  limits.max_total_bytes = 450000;
  require_refused(executors::extract_snapshot(archive, dir / "wd", limits), "ArchiveTooLarge",
                  "f04");

  limits = {};
  limits.max_entry_bytes = 99999;
  require_refused(executors::extract_snapshot(archive, dir / "wd", limits), "ArchiveTooLarge",
                  "f00");
  CHECK(names_in(dir.path()) == std::vector<std::string>{"a.tar.gz"});

  REQUIRE(executors::extract_snapshot(archive, dir / "wd").ok());
}

TEST_CASE("corrupt, truncated and foreign archives are clear errors", "[archive]") {
  test::TempDir dir;
  auto good = python_archive(dir,
                             "import random\n"
                             "random.seed(2)\n"
                             "file('a', random.randbytes(300000))\nfile('b', b'tail')\n",
                             "good.tar.gz");
  auto bytes = test::slurp(good);
  dir.write("truncated.tar.gz", bytes.substr(0, bytes.size() / 2));
  dir.write("garbage.tar.gz", random_bytes(50000));
  dir.write("empty.tar.gz", "");
  auto zipped = test::run_command({"/usr/bin/python3", "-c",
                                   "import sys, zipfile\n"
                                   "with zipfile.ZipFile(sys.argv[1], 'w') as z:\n"
                                   "    z.writestr('train.py', 'print(1)')\n",
                                   dir / "snapshot.zip"});
  REQUIRE(zipped.exit_code == 0);
  auto plain = test::run_command({"/usr/bin/python3", "-c",
                                  "import sys, tarfile\n"
                                  "tarfile.open(sys.argv[1], 'w').close()\n",
                                  dir / "plain.tar"});
  REQUIRE(plain.exit_code == 0);

  for (const char* name :
       {"truncated.tar.gz", "garbage.tar.gz", "empty.tar.gz", "snapshot.zip", "plain.tar"}) {
    INFO(name);
    auto extracted = executors::extract_snapshot(dir / name, dir / "wd");
    REQUIRE_FALSE(extracted.ok());
    INFO(extracted.error().message);
    CHECK(extracted.error().code == "InvalidArchive");
    CHECK_FALSE(fs::exists(dir / "wd"));
  }
  auto missing = executors::extract_snapshot(dir / "missing.tar.gz", dir / "wd");
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.error().code == "ArchiveFailed");
  CHECK(names_in(dir.path()).size() == 6);
}

TEST_CASE("extraction needs a destination that is absent or empty", "[archive]") {
  test::TempDir dir;
  auto archive = python_archive(dir, "file('train.py', b'print(1)')\n");
  fs::create_directories(dir / "empty");
  REQUIRE(executors::extract_snapshot(archive, dir / "empty").ok());
  CHECK(test::slurp(dir / "empty" / "train.py") == "print(1)");

  dir.write("full/keep.txt", "mine");
  auto refused = executors::extract_snapshot(archive, dir / "full");
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.error().code == "ArchiveFailed");
  CHECK(names_in(dir / "full") == std::vector<std::string>{"keep.txt"});
}
