#pragma once

// The snapshot of a job's source_directory: what Azure ML uploads when a run is submitted and what
// the run's working directory starts as. `.amlignore` at the folder's root decides what is left
// out, else `.gitignore` there, with gitignore's pattern rules.

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace amlnode::executors {

// Azure ML's snapshot limits.
struct SnapshotLimits {
  std::uint64_t max_bytes = 300ull << 20;
  std::size_t max_files = 2000;
};

// gitignore-style rules: `#` comments, `!` re-includes, a trailing `/` matches folders only, a `/`
// anywhere else anchors the pattern at the root, `*` and `?` stay within one path segment, `**`
// spans segments. The last matching rule wins; files under a left-out folder stay out.
class IgnoreRules {
 public:
  static IgnoreRules parse(std::string_view text);
  // `relative` uses '/' separators and no leading "./".
  bool ignored(std::string_view relative, bool is_directory) const;
  bool empty() const { return rules_.empty(); }

 private:
  struct Rule {
    std::string pattern;
    bool negated = false;
    bool directory_only = false;
    bool anchored = false;
  };
  std::vector<Rule> rules_;
};

// Calls `visit(entry, prefix + name)` for each entry of `folder`, in name order (so snapshots and
// archives list the same tree the same way every time). The first failure of `visit` stops the
// walk and is returned; an unreadable folder is an Error with `error_code`.
Result<void> walk_sorted(const std::filesystem::path& folder, const std::string& prefix,
                         const std::string& error_code,
                         const std::function<Result<void>(const std::filesystem::directory_entry&,
                                                          const std::string&)>& visit);

// True if `text` matches the glob `pattern` (gitignore flavour, see IgnoreRules).
bool glob_match(std::string_view pattern, std::string_view text);

struct SnapshotEntry {
  std::filesystem::path relative;
  enum class Type { File, Directory, Symlink } type = Type::File;
  std::uint64_t size = 0;
};

struct SnapshotListing {
  std::vector<SnapshotEntry> entries;  // parents before children
  std::size_t files = 0;               // regular files and links
  std::uint64_t bytes = 0;
  std::string ignore_file;  // ".amlignore", ".gitignore" or ""
};

// Lists what the snapshot of `source` holds. Paths in `exclude` (e.g. a state folder that sits
// inside the source folder) are left out. Over the limits is an error that says which limit and how
// to stay under it.
Result<SnapshotListing> list_snapshot(const std::filesystem::path& source,
                                      const SnapshotLimits& limits,
                                      const std::vector<std::filesystem::path>& exclude = {});

// Copies a listing from `source` into `destination` (created), keeping file modes and links.
Result<void> copy_snapshot(const std::filesystem::path& source, const SnapshotListing& listing,
                           const std::filesystem::path& destination);

}  // namespace amlnode::executors
