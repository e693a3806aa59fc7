#include "metrics/proc_text.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

namespace amlnode::metrics {

namespace {

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n';
}
bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

std::string_view read_fd(int fd, char* buf, std::size_t size) {
  ssize_t n;
  do {
    n = ::pread(fd, buf, size, 0);
  } while (n < 0 && errno == EINTR);
  return n > 0 ? std::string_view(buf, static_cast<std::size_t>(n)) : std::string_view();
}

}  // namespace

ProcFile::ProcFile(const char* path) : fd_(::open(path, O_RDONLY | O_CLOEXEC)) {}

ProcFile::~ProcFile() {
  if (fd_ >= 0) ::close(fd_);
}

ProcFile& ProcFile::operator=(ProcFile&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = other.fd_;
    other.fd_ = -1;
  }
  return *this;
}

std::string_view ProcFile::read(char* buf, std::size_t size) const {
  return fd_ < 0 ? std::string_view() : read_fd(fd_, buf, size);
}

std::string_view read_once(const char* path, char* buf, std::size_t size) {
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return {};
  auto text = read_fd(fd, buf, size);
  ::close(fd);
  return text;
}

void Scanner::skip_spaces() {
  while (p_ < end_ && (*p_ == ' ' || *p_ == '\t')) ++p_;
}

std::uint64_t Scanner::number() {
  skip_spaces();
  std::uint64_t value = 0;
  while (p_ < end_ && is_digit(*p_)) value = value * 10 + static_cast<unsigned>(*p_++ - '0');
  return value;
}

double Scanner::decimal() {
  double value = static_cast<double>(number());
  if (p_ < end_ && *p_ == '.') {
    ++p_;
    double scale = 0.1;
    while (p_ < end_ && is_digit(*p_)) {
      value += scale * (*p_++ - '0');
      scale /= 10;
    }
  }
  return value;
}

std::string_view Scanner::word() {
  skip_spaces();
  const char* start = p_;
  while (p_ < end_ && !is_space(*p_)) ++p_;
  return {start, static_cast<std::size_t>(p_ - start)};
}

void Scanner::next_line() {
  while (p_ < end_ && *p_ != '\n') ++p_;
  if (p_ < end_) ++p_;
}

bool Scanner::consume(std::string_view prefix) {
  if (static_cast<std::size_t>(end_ - p_) < prefix.size()) return false;
  if (std::string_view(p_, prefix.size()) != prefix) return false;
  p_ += prefix.size();
  return true;
}

std::string_view Scanner::rest_of_line() const {
  const char* e = p_;
  while (e < end_ && *e != '\n') ++e;
  return {p_, static_cast<std::size_t>(e - p_)};
}

std::uint64_t value_after(std::string_view text, std::string_view key, std::uint64_t fallback) {
  std::size_t at = 0;
  while (at < text.size()) {
    if (text.compare(at, key.size(), key) == 0) {
      Scanner scan(text.substr(at + key.size()));
      return scan.number();
    }
    auto newline = text.find('\n', at);
    if (newline == std::string_view::npos) break;
    at = newline + 1;
  }
  return fallback;
}

}  // namespace amlnode::metrics
