#include "executors/environments/file_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

#include "common/fs.h"

namespace amlnode::executors::environments {
namespace {

enum class Attempt { Held, Busy, Missing, Replaced };

// Whether `path` still names the file open on `fd` (see the header: lock files are deleted by
// exclusive holders, and a lock on a deleted file protects nothing).
bool still_named(int fd, const std::filesystem::path& path) {
  struct stat opened {
  }, named{};
  if (::fstat(fd, &opened) != 0 || ::stat(path.c_str(), &named) != 0) return false;
  return opened.st_dev == named.st_dev && opened.st_ino == named.st_ino;
}

int flock_retrying(int fd, int operation) {
  int rc;
  do {
    rc = ::flock(fd, operation);
  } while (rc != 0 && errno == EINTR);
  return rc;
}

Result<Attempt> attempt(const std::filesystem::path& path, LockMode mode, bool wait, bool create,
                        int& fd_out) {
  int flags = O_RDONLY | O_CLOEXEC | (create ? O_CREAT : 0);
  int fd = ::open(path.c_str(), flags, 0644);
  if (fd < 0) {
    if (errno == ENOENT && !create) return Attempt::Missing;
    return Error{"IoError", errno_message("cannot open the lock file", path, errno)};
  }
  int operation = (mode == LockMode::Shared ? LOCK_SH : LOCK_EX) | (wait ? 0 : LOCK_NB);
  if (flock_retrying(fd, operation) != 0) {
    int err = errno;
    ::close(fd);
    if (err == EWOULDBLOCK) return Attempt::Busy;
    return Error{"IoError", errno_message("cannot lock", path, err)};
  }
  if (!still_named(fd, path)) {
    ::close(fd);
    return Attempt::Replaced;
  }
  fd_out = fd;
  return Attempt::Held;
}

}  // namespace

Result<FileLock> FileLock::acquire(const std::filesystem::path& path, LockMode mode) {
  while (true) {
    int fd = -1;
    auto result = attempt(path, mode, true, true, fd);
    if (!result) return result.error();
    if (*result == Attempt::Held) return FileLock(fd, path);
  }
}

Result<std::optional<FileLock>> FileLock::try_acquire(const std::filesystem::path& path,
                                                      LockMode mode, bool create) {
  while (true) {
    int fd = -1;
    auto result = attempt(path, mode, false, create, fd);
    if (!result) return result.error();
    switch (*result) {
      case Attempt::Held:
        return std::optional<FileLock>(FileLock(fd, path));
      case Attempt::Busy:
      case Attempt::Missing:
        return std::optional<FileLock>();
      case Attempt::Replaced:
        continue;
    }
  }
}

FileLock::FileLock(FileLock&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), path_(std::move(other.path_)) {}

FileLock& FileLock::operator=(FileLock&& other) noexcept {
  if (this != &other) {
    release();
    fd_ = std::exchange(other.fd_, -1);
    path_ = std::move(other.path_);
  }
  return *this;
}

FileLock::~FileLock() {
  release();
}

void FileLock::remove_file() {
  if (fd_ >= 0) ::unlink(path_.c_str());
}

void FileLock::release() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

}  // namespace amlnode::executors::environments
