#pragma once

// File-system helpers shared by every target. Writers that others read while we run (run.json,
// exit.json, state files) are always replaced atomically, so a reader never sees half a file and a
// crash never leaves one behind.

#include <filesystem>
#include <string>
#include <string_view>

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

// strerror(errno) with the operation and path, for error messages.
std::string errno_message(std::string_view what, const std::filesystem::path& path, int err);

}  // namespace amlnode
