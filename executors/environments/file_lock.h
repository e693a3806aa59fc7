#pragma once

// flock(2) locks on files in the environment cache. The kernel releases a flock when the last
// descriptor of its open file goes away, so a lock never outlives a process that dies holding it,
// however it dies. Descriptors are opened close-on-exec, so installers do not inherit them (an
// orphaned installer must not keep a build lock alive).
//
// Lock files may be deleted, but only by a holder of the exclusive lock. Every acquirer therefore
// checks, once it holds the lock, that the path still names the file it locked, and starts over
// when it does not; otherwise two processes could each hold a lock on a different file of the same
// name.

#include <filesystem>
#include <optional>

#include "common/result.h"

namespace amlnode::executors::environments {

enum class LockMode { Shared, Exclusive };

class FileLock {
 public:
  // Blocks until the lock is held, creating the file (and not its folder) when it is missing.
  static Result<FileLock> acquire(const std::filesystem::path& path, LockMode mode);
  // Takes the lock only if nobody holds a conflicting one. Returns nullopt when it is busy, and
  // also when the file does not exist and `create` is false.
  static Result<std::optional<FileLock>> try_acquire(const std::filesystem::path& path,
                                                     LockMode mode, bool create);

  FileLock(FileLock&& other) noexcept;
  FileLock& operator=(FileLock&& other) noexcept;
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;
  ~FileLock();

  int fd() const { return fd_; }
  const std::filesystem::path& path() const { return path_; }
  bool held() const { return fd_ >= 0; }

  // Deletes the lock file while still holding it. Only for an exclusive holder (see above).
  void remove_file();
  void release();

 private:
  FileLock(int fd, std::filesystem::path path) : fd_(fd), path_(std::move(path)) {}

  int fd_ = -1;
  std::filesystem::path path_;
};

}  // namespace amlnode::executors::environments
