#pragma once

// Reading and scanning /proc and cgroup files without allocating: each file is read with one
// pread into a caller's fixed buffer, then parsed in place with a cursor. A sample reads a dozen
// such files, so what a read costs is what a sample costs.

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace amlnode::metrics {

// A file kept open between samples and re-read from offset 0 each time: /proc's files are
// generated afresh on every read at offset 0, so keeping the descriptor saves an open and a
// close per sample. Move-only; closes on destruction.
class ProcFile {
 public:
  ProcFile() = default;
  explicit ProcFile(const char* path);
  ~ProcFile();
  ProcFile(ProcFile&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  ProcFile& operator=(ProcFile&& other) noexcept;
  ProcFile(const ProcFile&) = delete;
  ProcFile& operator=(const ProcFile&) = delete;

  bool is_open() const { return fd_ >= 0; }
  // Reads up to `size` bytes from the start into `buf`; the text read, empty on failure. A file
  // larger than `size` is cut there (callers size buffers for the lines they need, which come
  // first).
  std::string_view read(char* buf, std::size_t size) const;

 private:
  int fd_ = -1;
};

// Opens, reads once and closes `path` (for per-process files, whose pids come and go).
std::string_view read_once(const char* path, char* buf, std::size_t size);

// A cursor over text read from /proc.
class Scanner {
 public:
  explicit Scanner(std::string_view text) : p_(text.data()), end_(text.data() + text.size()) {}

  bool done() const { return p_ >= end_; }
  void skip_spaces();
  // Skips spaces, then parses an unsigned decimal; 0 (and no advance) when there is none.
  std::uint64_t number();
  // Skips spaces, then parses a decimal with an optional fraction ("0.25"); 0 when none.
  double decimal();
  // Skips spaces, then returns the next run of non-space characters.
  std::string_view word();
  // Moves past the next newline (or to the end).
  void next_line();
  // Whether the current position starts with `prefix`; advances past it when it does.
  bool consume(std::string_view prefix);
  // The rest of the current line, without the newline; the cursor does not move.
  std::string_view rest_of_line() const;
  const char* position() const { return p_; }
  void seek(const char* p) { p_ = p; }

 private:
  const char* p_;
  const char* end_;
};

// Finds the line starting with `key` (e.g. "MemTotal:") and returns the first number after it;
// `fallback` when there is no such line.
std::uint64_t value_after(std::string_view text, std::string_view key, std::uint64_t fallback = 0);

}  // namespace amlnode::metrics
