// Fuzzes snapshot extraction (executors::extract_snapshot_from_memory), the node's handling of the
// tar.gz a control plane serves for every run. An input that starts with gzip's magic bytes is the
// archive as it is; any other input is a tar that is gzip-compressed here first, so that the
// fuzzer's mutations reach the tar headers and the entry checks instead of breaking the deflate
// stream (extraction refuses anything but gzip before it reads a header).
//
// Extraction promises to treat every archive as hostile (executors/archive.h). Beyond not
// crashing, each input checks that promise from the outside:
// - nothing is created, changed or linked outside the destination: the scratch folder holds only
//   the work folder (where the destination and extraction's temporary folder live) and a sentinel
//   folder whose one file keeps its content and its single link;
// - a refused archive leaves nothing behind, an accepted one only plain files, folders and links
//   whose targets resolve inside the destination, within the limits;
// - the process's working directory is untouched (extraction changes it on a thread of its own).
//
// The limits are smaller than the defaults so that the fuzzer reaches them with small inputs and
// each run writes at most a few MiB; the code that enforces them is the same.

#include <sys/stat.h>
#include <zlib.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <string>
#include <system_error>

#include "executors/archive.h"
#include "fuzz/fuzz_support.h"

namespace {

namespace fs = std::filesystem;
using amlnode::fuzz::check;
using amlnode::fuzz::fail;

constexpr const char* kSentinelContent = "nothing may touch this file\n";

struct Scratch {
  fs::path root;      // holds only work/ and sentinel/
  fs::path work;      // where the destination is extracted
  fs::path sentinel;  // a folder beside it with one file
  fs::path sentinel_file;
  fs::path working_directory;
};

const Scratch& scratch() {
  static const Scratch folders = [] {
    Scratch s;
    s.root = amlnode::fuzz::make_scratch_folder("snapshot");
    s.work = s.root / "work";
    s.sentinel = s.root / "sentinel";
    s.sentinel_file = s.sentinel / "secret.txt";
    fs::create_directories(s.work);
    fs::create_directories(s.sentinel);
    std::ofstream(s.sentinel_file) << kSentinelContent;
    s.working_directory = fs::current_path();
    return s;
  }();
  return folders;
}

amlnode::executors::ExtractLimits fuzz_limits() {
  amlnode::executors::ExtractLimits limits;
  limits.max_total_bytes = 4 << 20;
  limits.max_entry_bytes = 2 << 20;
  limits.max_files = 16;
  limits.max_directories = 256;
  limits.ratio_floor_bytes = 1 << 20;
  return limits;
}

std::set<std::string> names_in(const fs::path& folder) {
  std::set<std::string> names;
  std::error_code ec;
  for (fs::directory_iterator it(folder, ec), end; !ec && it != end; it.increment(ec)) {
    names.insert(it->path().filename().string());
  }
  if (ec) fail("cannot list " + folder.string() + ": " + ec.message());
  return names;
}

bool is_within(const fs::path& inner, const fs::path& outer) {
  auto relative = inner.lexically_relative(outer);
  return !relative.empty() && *relative.begin() != "..";
}

void check_surroundings(const Scratch& s, bool extracted) {
  check(names_in(s.root) == std::set<std::string>{"sentinel", "work"},
        "something was created beside the work folder");
  auto expected = extracted ? std::set<std::string>{"dest"} : std::set<std::string>{};
  check(names_in(s.work) == expected,
        extracted ? "something besides the destination was left in the work folder"
                  : "a refused archive left something behind");
  check(names_in(s.sentinel) == std::set<std::string>{"secret.txt"},
        "something was created in the sentinel folder");
  struct stat info {};
  check(::lstat(s.sentinel_file.c_str(), &info) == 0 && S_ISREG(info.st_mode) && info.st_nlink == 1,
        "the sentinel file was replaced or hard-linked");
  std::ifstream in(s.sentinel_file);
  std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  check(content == kSentinelContent, "the sentinel file was changed");
  std::error_code ec;
  check(fs::current_path(ec) == s.working_directory, "the working directory changed");
}

// Calls `visit` with every path below `folder`, never following links. Folders are made
// searchable first: an archive may give them any mode, and the walk must see everything.
template <class Visit>
void walk(const fs::path& folder, const Visit& visit) {
  std::error_code ec;
  fs::permissions(folder, fs::perms::owner_all, fs::perm_options::add, ec);
  for (fs::directory_iterator it(folder, ec), end; !ec && it != end; it.increment(ec)) {
    struct stat info {};
    if (::lstat(it->path().c_str(), &info) != 0) fail("cannot stat " + it->path().string());
    visit(it->path(), info);
    if (S_ISDIR(info.st_mode)) walk(it->path(), visit);
  }
  if (ec) fail("cannot list " + folder.string() + ": " + ec.message());
}

// What an accepted archive left: only folders, plain files without setuid/setgid and links that
// resolve inside the destination.
void check_extracted(const fs::path& destination, const amlnode::executors::ArchiveStats& stats,
                     const amlnode::executors::ExtractLimits& limits, std::size_t input_size) {
  check(stats.files <= limits.max_files && stats.directories <= limits.max_directories &&
            stats.bytes <= limits.max_total_bytes,
        "an accepted archive is over the limits");
  check(stats.archive_bytes <= input_size, "more compressed bytes counted than given");
  std::error_code ec;
  const fs::path real_destination = fs::canonical(destination, ec);
  if (ec) fail("cannot resolve the destination: " + ec.message());
  walk(destination, [&](const fs::path& path, const struct stat& info) {
    if (S_ISLNK(info.st_mode)) {
      std::error_code resolve_ec;
      fs::path target = fs::weakly_canonical(path, resolve_ec);
      // A link loop (ELOOP) points nowhere, which is harmless.
      if (!resolve_ec) {
        check(target == real_destination || is_within(target, real_destination),
              "an extracted link resolves outside the destination: " + path.string());
      }
    } else if (S_ISREG(info.st_mode)) {
      check((info.st_mode & (S_ISUID | S_ISGID)) == 0, "an extracted file is setuid or setgid");
    } else if (!S_ISDIR(info.st_mode)) {
      fail("extraction made a special file: " + path.string());
    }
  });
}

// `data` as one gzip member.
std::string gzip(std::string_view data) {
  z_stream stream{};
  if (deflateInit2(&stream, Z_BEST_SPEED, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
    fail("deflateInit2 failed");
  }
  std::string out(deflateBound(&stream, data.size()), '\0');
  stream.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  stream.avail_in = static_cast<uInt>(data.size());
  stream.next_out = reinterpret_cast<Bytef*>(out.data());
  stream.avail_out = static_cast<uInt>(out.size());
  int status = deflate(&stream, Z_FINISH);
  out.resize(stream.total_out);
  deflateEnd(&stream);
  if (status != Z_STREAM_END) fail("deflate did not finish within deflateBound");
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const Scratch& s = scratch();
  const fs::path destination = s.work / "dest";
  const auto limits = fuzz_limits();
  std::string_view input = amlnode::fuzz::as_text(data, size);
  std::string compressed;
  if (!input.starts_with("\x1f\x8b")) {
    compressed = gzip(input);
    input = compressed;
  }
  auto extracted = amlnode::executors::extract_snapshot_from_memory(input, destination, limits);
  if (!extracted.ok()) {
    const std::string& code = extracted.error().code;
    check(code == "UnsafeArchive" || code == "ArchiveTooLarge" || code == "InvalidArchive" ||
              code == "ArchiveFailed",
          "an extraction error with an undocumented code: " + code);
  }
  check_surroundings(s, extracted.ok());
  if (extracted.ok()) check_extracted(destination, *extracted, limits, input.size());
  amlnode::fuzz::remove_tree(destination);
  check(names_in(s.work).empty(), "the destination could not be removed");
  return 0;
}
