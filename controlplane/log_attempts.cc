#include "controlplane/log_attempts.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "common/error_codes.h"
#include "common/fs.h"

namespace amlnode::controlplane {

namespace fs = std::filesystem;

namespace {

Result<void> sync_directory(const fs::path& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Error{errors::kStorageError, errno_message("opening", dir, errno)};
  int synced = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (synced != 0) return Error{errors::kStorageError, errno_message("syncing", dir, err)};
  return ok();
}

bool has_entries(const fs::path& dir) {
  std::error_code ec;
  fs::directory_iterator it(dir, ec);
  return !ec && it != fs::directory_iterator();
}

}  // namespace

fs::path attempts_root(const fs::path& run_dir) {
  return run_dir / "attempts";
}

// Attempts are numbered without gaps, so counting stops at the first missing number.
int archived_attempts(const fs::path& run_dir) {
  int count = 0;
  std::error_code ec;
  while (fs::is_directory(attempts_root(run_dir) / std::to_string(count + 1), ec)) ++count;
  return count;
}

Result<bool> archive_attempt(const fs::path& run_dir) {
  fs::path current = run_dir / "logs";
  if (!has_entries(current)) return false;
  fs::path attempt = attempts_root(run_dir) / std::to_string(archived_attempts(run_dir) + 1);
  std::error_code ec;
  fs::create_directories(attempt, ec);
  if (ec) return Error{errors::kStorageError, "creating " + attempt.string() + ": " + ec.message()};
  fs::rename(current, attempt / "logs", ec);
  if (ec) return Error{errors::kStorageError, "moving " + current.string() + ": " + ec.message()};
  for (const auto& dir : {attempt, attempts_root(run_dir), run_dir}) {
    if (auto synced = sync_directory(dir); !synced) return synced.error();
  }
  return true;
}

}  // namespace amlnode::controlplane
