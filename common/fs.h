#pragma once

// File-system helpers shared by every target. Writers that others read while we run (run.json,
// exit.json, state files) are always replaced atomically, so a reader never sees half a file and a
// crash never leaves one behind.

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include "common/fd.h"
#include "common/result.h"

namespace amlnode {

// Writes `content` to a temporary file beside `path`, fsyncs it and renames it over `path`.
// With `durable` the containing directory is fsynced too, so the rename itself survives a crash.
// `mode` is the new file's permission bits (before umask); files holding secrets pass 0600.
Result<void> write_file_atomically(const std::filesystem::path& path, std::string_view content,
                                   bool durable = true, unsigned mode = 0644);

// Reads a whole file. Files we read this way are small (specs, state); callers pass a limit and
// a file over it is an error rather than an unbounded allocation.
Result<std::string> read_file(const std::filesystem::path& path, std::size_t max_bytes = 16 << 20);

// Writes all of `data` to `fd` (retrying short writes); errors name `path`.
Result<void> write_all_to(int fd, std::string_view data, const std::filesystem::path& path);

// The error code of open_beneath for a link it would not follow.
inline constexpr const char* kLinkRefused = "LinkRefused";

// Opens `relative` below the folder `root` without following a symbolic link anywhere on the way,
// the last component included, and without leaving `root` ("..", absolute paths). For folders a
// job can write in (a run folder), where the job may have planted links: the agent runs as root
// and must never be led to another file. A regular file opened for writing must also have a
// single name: a hard link to a file outside would lead there as well. Uses openat2 with
// RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS (Linux 5.6), else opens each component with O_NOFOLLOW.
// Errors: "LinkRefused" for a link on the way, "IoError" for the rest; both name the path.
Result<UniqueFd> open_beneath(const std::filesystem::path& root,
                              const std::filesystem::path& relative, int flags,
                              unsigned mode = 0644);

// Appends `data` to `relative` below `root` (created when missing), as open_beneath opens it.
Result<void> append_beneath(const std::filesystem::path& root,
                            const std::filesystem::path& relative, std::string_view data);

// strerror(errno) with the operation and path, for error messages.
std::string errno_message(std::string_view what, const std::filesystem::path& path, int err);

// The first executable `name` in the folders of `path` (PATH's form: colon-separated, empty
// entries skipped); nullopt when none has it.
std::optional<std::filesystem::path> find_on_path(const std::string& name, std::string_view path);

}  // namespace amlnode
