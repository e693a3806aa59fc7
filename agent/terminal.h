#pragma once

// What `amlnode run` shows a person: the run's output as it is written, and one status line per
// phase. The output is read back from the run's log file (which the process writes directly), so
// the terminal can never slow the job down or lose what the file has.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <string>
#include <thread>

namespace amlnode::agent {

// Follows a growing file and copies every new byte to an output descriptor with sendfile(2) (no
// buffer of ours; a slow reader of `out_fd` only delays the copy, while the log file keeps
// everything). Either the caller's event loop calls copy_new() on a timer, or start() runs the
// polling on a thread of its own, for callers that block. finish() copies whatever is left and
// stops.
class LogFollower {
 public:
  LogFollower(std::filesystem::path file, int out_fd);
  ~LogFollower();
  LogFollower(const LogFollower&) = delete;
  LogFollower& operator=(const LogFollower&) = delete;

  // How often the output should be looked at while the run is quiet: low enough to feel live,
  // high enough to cost nothing.
  static constexpr std::chrono::milliseconds kPollInterval{25};

  // Copies what the file holds beyond what was copied. Not to be mixed with start().
  void copy_new();
  void start();
  void finish();

 private:
  void run();
  bool copy_available();

  std::filesystem::path file_;
  int out_fd_;
  int in_fd_ = -1;
  bool output_alive_ = true;
  off_t offset_ = 0;
  std::thread thread_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool finishing_ = false;
  bool use_sendfile_ = true;
};

// Status lines on stderr ("amlnode: <run id>: Running"), or nothing when quiet.
class StatusPrinter {
 public:
  explicit StatusPrinter(bool quiet) : quiet_(quiet) {}
  void line(const std::string& text) const;

 private:
  bool quiet_;
};

}  // namespace amlnode::agent
