#include "executors/environments/build_log.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

#include "common/fs.h"

namespace amlnode::executors::environments {

Result<BuildLog> BuildLog::open(const std::filesystem::path& file, ProgressCallback progress,
                                std::size_t tail_lines) {
  if (file.empty()) return BuildLog(-1, std::move(progress), tail_lines);
  std::error_code ec;
  std::filesystem::create_directories(file.parent_path(), ec);
  int fd = ::open(file.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return Error{"IoError", errno_message("cannot open the build log", file, errno)};
  return BuildLog(fd, std::move(progress), tail_lines);
}

BuildLog::BuildLog(BuildLog&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)),
      progress_(std::move(other.progress_)),
      tail_lines_(other.tail_lines_),
      tail_(std::move(other.tail_)),
      partial_(std::move(other.partial_)) {}

BuildLog::~BuildLog() {
  if (fd_ >= 0) ::close(fd_);
}

void BuildLog::output(std::string_view bytes) {
  write_file(bytes);
  for (char c : bytes) {
    // Progress bars redraw with a carriage return; each redraw is a line for our purposes.
    if (c == '\n' || c == '\r') {
      finish_line();
    } else if (partial_.size() < kMaxLineBytes) {
      partial_.push_back(c);
    }
  }
}

void BuildLog::end_output() {
  if (!partial_.empty()) finish_line();
}

void BuildLog::note(std::string_view line) {
  std::string text(line);
  text.push_back('\n');
  write_file(text);
  if (progress_) progress_(line);
}

void BuildLog::clear_tail() {
  tail_.clear();
}

std::string BuildLog::tail() const {
  std::string out;
  for (const auto& line : tail_) {
    if (!out.empty()) out.push_back('\n');
    out += line;
  }
  return out;
}

void BuildLog::write_file(std::string_view bytes) {
  // The log is a convenience for the person reading it; a full disk must not fail the build, so
  // write errors are dropped here (the installer itself will report the disk being full).
  while (fd_ >= 0 && !bytes.empty()) {
    ssize_t n = ::write(fd_, bytes.data(), bytes.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
}

void BuildLog::finish_line() {
  if (partial_.empty()) return;  // blank lines and \r\n pairs carry nothing worth reporting
  if (progress_) progress_(partial_);
  if (tail_lines_ > 0) {
    if (tail_.size() == tail_lines_) tail_.pop_front();
    tail_.push_back(std::move(partial_));
  }
  partial_.clear();
}

}  // namespace amlnode::executors::environments
