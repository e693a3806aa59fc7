#include "fuzz/fuzz_support.h"

#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <system_error>
#include <vector>

namespace amlnode::fuzz {
namespace fs = std::filesystem;
namespace {

// The folders made by make_scratch_folder, removed at exit by a static destructor.
struct ScratchFolders {
  std::mutex mutex;
  std::vector<fs::path> paths;
  ~ScratchFolders() {
    for (const auto& path : paths) remove_tree(path);
  }
};

ScratchFolders& scratch_folders() {
  static ScratchFolders folders;
  return folders;
}

}  // namespace

void fail(std::string_view what) {
  std::fprintf(stderr, "fuzz property broken: %.*s\n", static_cast<int>(what.size()), what.data());
  std::fflush(stderr);
  std::abort();
}

fs::path make_scratch_folder(const std::string& prefix) {
  const char* tmp = std::getenv("TMPDIR");
  fs::path base = tmp && *tmp ? fs::path(tmp) : fs::path("/tmp");
  std::string pattern = (base / ("amlnode-fuzz-" + prefix + "-XXXXXX")).string();
  if (!::mkdtemp(pattern.data())) fail("cannot create a scratch folder under " + base.string());
  auto& folders = scratch_folders();
  std::lock_guard lock(folders.mutex);
  folders.paths.emplace_back(pattern);
  return folders.paths.back();
}

void remove_tree(const fs::path& path) {
  std::error_code ec;
  auto status = fs::symlink_status(path, ec);
  if (ec || !fs::is_directory(status)) {
    fs::remove(path, ec);
    return;
  }
  fs::permissions(path, fs::perms::owner_all, fs::perm_options::add, ec);
  for (fs::directory_iterator it(path, ec), end; !ec && it != end; it.increment(ec)) {
    remove_tree(it->path());
  }
  fs::remove_all(path, ec);
}

}  // namespace amlnode::fuzz
