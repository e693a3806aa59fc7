#include "executors/snapshot.h"

#include <algorithm>
#include <system_error>

#include "common/fs.h"
#include "executors/archive.h"

namespace amlnode::executors {
namespace fs = std::filesystem;

namespace {

std::string_view trim_trailing_spaces(std::string_view line) {
  while (!line.empty() && (line.back() == ' ' || line.back() == '\r' || line.back() == '\t')) {
    line.remove_suffix(1);
  }
  return line;
}

// Matches a bracket expression at pattern[p] against c; returns the position after the bracket,
// or npos when the bracket is malformed (then '[' is taken literally).
std::size_t match_bracket(std::string_view pattern, std::size_t p, char c, bool& matched) {
  std::size_t i = p + 1;
  bool negate = i < pattern.size() && (pattern[i] == '!' || pattern[i] == '^');
  if (negate) ++i;
  bool any = false;
  bool first = true;
  for (; i < pattern.size() && (first || pattern[i] != ']'); ++i, first = false) {
    if (i + 2 < pattern.size() && pattern[i + 1] == '-' && pattern[i + 2] != ']') {
      any = any || (c >= pattern[i] && c <= pattern[i + 2]);
      i += 2;
    } else {
      any = any || c == pattern[i];
    }
  }
  if (i >= pattern.size()) return std::string_view::npos;
  matched = any != negate;
  return i + 1;
}

bool glob_match_at(std::string_view pattern, std::size_t p, std::string_view text, std::size_t t) {
  while (p < pattern.size()) {
    char pc = pattern[p];
    if (pc == '*') {
      bool double_star = p + 1 < pattern.size() && pattern[p + 1] == '*';
      if (double_star) {
        std::size_t rest = p + 2;
        // "**/" also matches zero folders.
        if (rest < pattern.size() && pattern[rest] == '/') {
          if (glob_match_at(pattern, rest + 1, text, t)) return true;
        }
        for (std::size_t k = t; k <= text.size(); ++k) {
          if (glob_match_at(pattern, rest, text, k)) return true;
        }
        return false;
      }
      for (std::size_t k = t; k <= text.size(); ++k) {
        if (glob_match_at(pattern, p + 1, text, k)) return true;
        if (k < text.size() && text[k] == '/') break;
      }
      return false;
    }
    if (t >= text.size()) return false;
    if (pc == '?') {
      if (text[t] == '/') return false;
      ++p, ++t;
      continue;
    }
    if (pc == '[') {
      bool matched = false;
      std::size_t next = match_bracket(pattern, p, text[t], matched);
      if (next != std::string_view::npos) {
        if (!matched || text[t] == '/') return false;
        p = next, ++t;
        continue;
      }
    }
    if (pc == '\\' && p + 1 < pattern.size()) pc = pattern[++p];
    if (pc != text[t]) return false;
    ++p, ++t;
  }
  return t == text.size();
}

std::string_view basename_of(std::string_view relative) {
  auto slash = relative.rfind('/');
  return slash == std::string_view::npos ? relative : relative.substr(slash + 1);
}

bool is_under(const fs::path& candidate, const fs::path& folder) {
  auto c = candidate.begin();
  for (auto f = folder.begin(); f != folder.end(); ++f, ++c) {
    if (c == candidate.end() || *c != *f) return false;
  }
  return true;
}

struct Walk {
  const fs::path& source;
  const IgnoreRules& rules;
  const SnapshotLimits& limits;
  const std::vector<fs::path>& exclude;
  SnapshotListing listing;

  bool excluded(const fs::path& absolute) const {
    for (const auto& path : exclude) {
      if (is_under(absolute, path)) return true;
    }
    return false;
  }

  Result<void> visit(const fs::path& folder, const std::string& prefix) {
    return walk_sorted(folder, prefix, "SnapshotFailed",
                       [this](const fs::directory_entry& child, const std::string& relative) {
                         return add(child, relative);
                       });
  }

  Result<void> add(const fs::directory_entry& child, const std::string& relative) {
    std::error_code ec;
    auto status = child.symlink_status(ec);
    bool is_dir = fs::is_directory(status);
    if (rules.ignored(relative, is_dir) || excluded(child.path())) return ok();
    if (fs::is_symlink(status)) {
      listing.entries.push_back({relative, SnapshotEntry::Type::Symlink, 0});
      ++listing.files;
    } else if (is_dir) {
      listing.entries.push_back({relative, SnapshotEntry::Type::Directory, 0});
      auto visited = visit(child.path(), relative + "/");
      if (!visited.ok()) return visited;
    } else if (fs::is_regular_file(status)) {
      auto size = child.file_size(ec);
      listing.entries.push_back({relative, SnapshotEntry::Type::File, size});
      ++listing.files;
      listing.bytes += size;
    }
    return within_limits();
  }

  Result<void> within_limits() const {
    const std::string hint =
        "; list what the run does not need in " +
        (listing.ignore_file.empty() ? std::string(".amlignore") : listing.ignore_file) +
        " or keep data out of the source directory";
    if (listing.files > limits.max_files) {
      return Error{"SnapshotTooLarge", "the snapshot of " + source.string() + " has more than " +
                                           std::to_string(limits.max_files) + " files" + hint};
    }
    if (listing.bytes > limits.max_bytes) {
      return Error{"SnapshotTooLarge", "the snapshot of " + source.string() + " is larger than " +
                                           std::to_string(limits.max_bytes >> 20) + " MB" + hint};
    }
    return ok();
  }
};

}  // namespace

Result<void> walk_sorted(
    const fs::path& folder, const std::string& prefix, const std::string& error_code,
    const std::function<Result<void>(const fs::directory_entry&, const std::string&)>& visit) {
  std::error_code ec;
  fs::directory_iterator it(folder, ec);
  if (ec) return Error{error_code, "cannot read " + folder.string() + ": " + ec.message()};
  std::vector<fs::directory_entry> children(it, fs::directory_iterator());
  std::sort(children.begin(), children.end());
  for (const auto& child : children) {
    auto visited = visit(child, prefix + child.path().filename().string());
    if (!visited.ok()) return visited;
  }
  return ok();
}

bool glob_match(std::string_view pattern, std::string_view text) {
  return glob_match_at(pattern, 0, text, 0);
}

IgnoreRules IgnoreRules::parse(std::string_view text) {
  IgnoreRules rules;
  while (!text.empty()) {
    auto newline = text.find('\n');
    auto line = trim_trailing_spaces(text.substr(0, newline));
    text = newline == std::string_view::npos ? std::string_view() : text.substr(newline + 1);
    if (line.empty() || line.front() == '#') continue;
    Rule rule;
    if (line.front() == '!') {
      rule.negated = true;
      line.remove_prefix(1);
    } else if (line.front() == '\\') {
      line.remove_prefix(1);
    }
    if (!line.empty() && line.back() == '/') {
      rule.directory_only = true;
      line.remove_suffix(1);
    }
    rule.anchored = line.find('/') != std::string_view::npos;
    if (!line.empty() && line.front() == '/') line.remove_prefix(1);
    if (line.empty()) continue;
    rule.pattern = std::string(line);
    rules.rules_.push_back(std::move(rule));
  }
  return rules;
}

bool IgnoreRules::ignored(std::string_view relative, bool is_directory) const {
  bool result = false;
  for (const auto& rule : rules_) {
    if (rule.directory_only && !is_directory) continue;
    bool match = rule.anchored ? glob_match(rule.pattern, relative)
                               : glob_match(rule.pattern, basename_of(relative));
    if (match) result = !rule.negated;
  }
  return result;
}

Result<SnapshotListing> list_snapshot(const fs::path& source, const SnapshotLimits& limits,
                                      const std::vector<fs::path>& exclude) {
  IgnoreRules rules;
  std::string ignore_file;
  for (const char* name : {".amlignore", ".gitignore"}) {
    if (!fs::exists(source / name)) continue;
    auto text = read_file(source / name, 1 << 20);
    if (!text.ok()) return text.error();
    rules = IgnoreRules::parse(*text);
    ignore_file = name;
    break;
  }
  std::vector<fs::path> normal_exclude;
  for (const auto& path : exclude) normal_exclude.push_back(fs::weakly_canonical(path));
  fs::path root = fs::weakly_canonical(source);
  Walk walk{root, rules, limits, normal_exclude, {}};
  walk.listing.ignore_file = ignore_file;
  auto visited = walk.visit(root, "");
  if (!visited.ok()) return visited.error();
  return std::move(walk.listing);
}

Result<void> copy_snapshot(const fs::path& source, const SnapshotListing& listing,
                           const fs::path& destination) {
  std::error_code ec;
  fs::create_directories(destination, ec);
  if (ec)
    return Error{"SnapshotFailed", "cannot create " + destination.string() + ": " + ec.message()};
  for (const auto& entry : listing.entries) {
    auto from = source / entry.relative;
    auto to = destination / entry.relative;
    switch (entry.type) {
      case SnapshotEntry::Type::Directory:
        fs::create_directory(to, ec);
        break;
      case SnapshotEntry::Type::Symlink:
        // The same links `amlnode submit` refuses: a run here must not see what a node would not.
        if (auto why =
                unsafe_snapshot_link(entry.relative.generic_string(), fs::read_symlink(from, ec))) {
          return Error{"SnapshotFailed",
                       "refused snapshot entry '" + entry.relative.generic_string() + "': " + *why};
        }
        fs::copy_symlink(from, to, ec);
        break;
      case SnapshotEntry::Type::File:
        fs::copy_file(from, to, fs::copy_options::overwrite_existing, ec);
        break;
    }
    if (ec) {
      return Error{"SnapshotFailed",
                   "cannot copy " + from.string() + " to " + to.string() + ": " + ec.message()};
    }
  }
  return ok();
}

}  // namespace amlnode::executors
