#include "agent/terminal.h"

#include <fcntl.h>
#include <sys/sendfile.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>

namespace amlnode::agent {

namespace {
// At most this much is copied per system call, so finish() is noticed promptly.
constexpr std::size_t kChunk = 8 << 20;

bool write_all(int fd, const char* data, std::size_t size) {
  while (size > 0) {
    ssize_t n = ::write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data += n;
    size -= static_cast<std::size_t>(n);
  }
  return true;
}
}  // namespace

LogFollower::LogFollower(std::filesystem::path file, int out_fd)
    : file_(std::move(file)), out_fd_(out_fd) {}

LogFollower::~LogFollower() {
  finish();
  if (in_fd_ >= 0) ::close(in_fd_);
}

void LogFollower::start() {
  thread_ = std::thread([this] { run(); });
}

void LogFollower::finish() {
  {
    std::lock_guard lock(mutex_);
    finishing_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
  copy_new();
}

void LogFollower::copy_new() {
  if (in_fd_ < 0) in_fd_ = ::open(file_.c_str(), O_RDONLY | O_CLOEXEC);
  if (in_fd_ >= 0 && output_alive_) output_alive_ = copy_available();
}

// Copies what the file holds beyond offset_; returns false when the output is gone (then the
// follower stops copying, and the log file alone keeps the output).
bool LogFollower::copy_available() {
  while (true) {
    if (use_sendfile_) {
      ssize_t n = ::sendfile(out_fd_, in_fd_, &offset_, kChunk);
      if (n > 0) continue;
      if (n == 0) return true;
      if (errno == EINTR || errno == EAGAIN) continue;
      if (errno != EINVAL && errno != ENOSYS) return false;
      use_sendfile_ = false;
    }
    char buf[65536];
    ssize_t n = ::pread(in_fd_, buf, sizeof buf, offset_);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return n == 0;
    if (!write_all(out_fd_, buf, static_cast<std::size_t>(n))) return false;
    offset_ += n;
  }
}

void LogFollower::run() {
  while (true) {
    {
      std::unique_lock lock(mutex_);
      if (wake_.wait_for(lock, kPollInterval, [this] { return finishing_; })) return;
    }
    copy_new();
  }
}

void StatusPrinter::line(const std::string& text) const {
  if (quiet_) return;
  std::string out = "amlnode: " + text + "\n";
  write_all(STDERR_FILENO, out.data(), out.size());
}

}  // namespace amlnode::agent
