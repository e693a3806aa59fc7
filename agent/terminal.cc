#include "agent/terminal.h"

#include <fcntl.h>
#include <sys/sendfile.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>

namespace amlnode::agent {

namespace {
// How often the follower looks for new bytes while the run is quiet. Low enough to feel live, high
// enough to cost nothing.
constexpr auto kPollInterval = std::chrono::milliseconds(25);
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
}

// Copies what the file holds beyond offset_; returns false when the output is gone (then the
// follower stops copying, and the log file alone keeps the output).
bool LogFollower::copy_available(int in_fd) {
  while (true) {
    if (use_sendfile_) {
      ssize_t n = ::sendfile(out_fd_, in_fd, &offset_, kChunk);
      if (n > 0) continue;
      if (n == 0) return true;
      if (errno == EINTR || errno == EAGAIN) continue;
      if (errno != EINVAL && errno != ENOSYS) return false;
      use_sendfile_ = false;
    }
    char buf[65536];
    ssize_t n = ::pread(in_fd, buf, sizeof buf, offset_);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return n == 0;
    if (!write_all(out_fd_, buf, static_cast<std::size_t>(n))) return false;
    offset_ += n;
  }
}

void LogFollower::run() {
  int in_fd = -1;
  bool output_alive = true;
  while (true) {
    bool last_round;
    {
      std::unique_lock lock(mutex_);
      wake_.wait_for(lock, kPollInterval, [this] { return finishing_; });
      last_round = finishing_;
    }
    if (in_fd < 0) in_fd = ::open(file_.c_str(), O_RDONLY | O_CLOEXEC);
    if (in_fd >= 0 && output_alive) output_alive = copy_available(in_fd);
    if (last_round) break;
  }
  if (in_fd >= 0) ::close(in_fd);
}

void StatusPrinter::line(const std::string& text) const {
  if (quiet_) return;
  std::string out = "amlnode: " + text + "\n";
  write_all(STDERR_FILENO, out.data(), out.size());
}

}  // namespace amlnode::agent
