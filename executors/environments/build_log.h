#pragma once

// Where a build's output goes while it runs: appended to the log file the caller names (the run's
// system_logs/environment.txt) exactly as the installers write it, passed line by line to the
// caller's progress callback, and kept as a short tail for the error message of a failed build.
//
// Memory is bounded whatever an installer prints: the tail holds at most `tail_lines` lines of at
// most kMaxLineBytes each, and a line still being received is cut at kMaxLineBytes (the log file
// still gets it whole).

#include <cstddef>
#include <deque>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>

#include "common/result.h"

namespace amlnode::executors::environments {

// Called with each line of installer output (without its line break) and with amlnode's own
// progress notes, e.g. to refresh a status line in the terminal.
using ProgressCallback = std::function<void(std::string_view line)>;

class BuildLog {
 public:
  static constexpr std::size_t kMaxLineBytes = 4096;

  // Opens `file` for appending, creating it and its folder. An empty path keeps no file.
  static Result<BuildLog> open(const std::filesystem::path& file, ProgressCallback progress,
                               std::size_t tail_lines);

  BuildLog(BuildLog&& other) noexcept;
  BuildLog& operator=(BuildLog&&) = delete;
  BuildLog(const BuildLog&) = delete;
  BuildLog& operator=(const BuildLog&) = delete;
  ~BuildLog();

  // Raw output of an installer, in whatever pieces it arrives.
  void output(std::string_view bytes);
  // Ends the current installer's output: a last line without a line break counts as a line.
  void end_output();
  // A line of amlnode's own (the command being run, waiting for a lock): logged and reported, but
  // not part of the installer tail.
  void note(std::string_view line);
  // Starts a new tail, so that a failure reports the output of the step that failed.
  void clear_tail();
  // The kept tail, oldest line first, joined with line breaks.
  std::string tail() const;

 private:
  BuildLog(int fd, ProgressCallback progress, std::size_t tail_lines)
      : fd_(fd), progress_(std::move(progress)), tail_lines_(tail_lines) {}

  void write_file(std::string_view bytes);
  void finish_line();

  int fd_ = -1;
  ProgressCallback progress_;
  std::size_t tail_lines_;
  std::deque<std::string> tail_;  // at most tail_lines_ entries
  std::string partial_;           // at most kMaxLineBytes
};

}  // namespace amlnode::executors::environments
