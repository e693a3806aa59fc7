#include "docker/image_usage.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>

#include "common/fs.h"
#include "common/hash.h"

namespace amlnode::docker {

BuildLock::BuildLock(std::unique_lock<std::mutex> in_process, int fd)
    : in_process_(std::move(in_process)), fd_(fd) {}

BuildLock::BuildLock(BuildLock&& other) noexcept
    : in_process_(std::move(other.in_process_)), fd_(other.fd_) {
  other.fd_ = -1;
}

BuildLock::~BuildLock() {
  if (fd_ >= 0) ::close(fd_);  // Closing the descriptor releases the flock.
}

ImageUsage::ImageUsage(std::filesystem::path dir) : dir_(std::move(dir)) {}

std::filesystem::path ImageUsage::file_for(const std::string& tag, const char* suffix) const {
  return dir_ / (sha256_hex(tag).substr(0, 32) + suffix);
}

void ImageUsage::record(const std::string& tag, SystemTime when) {
  if (dir_.empty()) return;
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  auto file = file_for(tag, ".used");
  if (!std::filesystem::exists(file, ec)) {
    // The tag inside is for people reading the folder; the name is what is looked up.
    if (!write_file_atomically(file, tag + "\n", false)) return;
  }
  // A failure here only makes eviction less exact, never a run fail.
  std::filesystem::last_write_time(file, std::chrono::file_clock::from_sys(when), ec);
}

std::optional<SystemTime> ImageUsage::last_used(const std::string& tag) const {
  if (dir_.empty()) return std::nullopt;
  std::error_code ec;
  auto time = std::filesystem::last_write_time(file_for(tag, ".used"), ec);
  if (ec) return std::nullopt;
  return std::chrono::time_point_cast<SystemTime::duration>(std::chrono::file_clock::to_sys(time));
}

Result<BuildLock> ImageUsage::lock(const std::string& tag) {
  std::mutex* mutex;
  {
    std::lock_guard guard(mutexes_guard_);
    auto& slot = mutexes_[tag];
    if (!slot) slot = std::make_unique<std::mutex>();
    mutex = slot.get();
  }
  std::unique_lock in_process(*mutex);
  if (dir_.empty()) return BuildLock(std::move(in_process), -1);
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  auto path = file_for(tag, ".lock");
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return Error{"IoError", errno_message("open build lock", path, errno)};
  while (::flock(fd, LOCK_EX) != 0) {
    if (errno == EINTR) continue;
    int err = errno;
    ::close(fd);
    return Error{"IoError", errno_message("lock", path, err)};
  }
  return BuildLock(std::move(in_process), fd);
}

}  // namespace amlnode::docker
