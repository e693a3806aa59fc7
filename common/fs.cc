#include "common/fs.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <random>

namespace amlnode {
namespace {

Result<void> write_all(int fd, std::string_view content, const std::filesystem::path& path) {
  while (!content.empty()) {
    ssize_t n = ::write(fd, content.data(), content.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return Error{"IoError", errno_message("write", path, errno)};
    }
    content.remove_prefix(static_cast<std::size_t>(n));
  }
  return ok();
}

std::filesystem::path temp_sibling(const std::filesystem::path& path) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  auto name = "." + path.filename().string() + ".tmp" + std::to_string(::getpid()) + "." +
              std::to_string(rng() % 1000000);
  return path.parent_path() / name;
}

}  // namespace

std::string errno_message(std::string_view what, const std::filesystem::path& path, int err) {
  return std::string(what) + " " + path.string() + ": " + std::strerror(err);
}

Result<void> write_file_atomically(const std::filesystem::path& path, std::string_view content,
                                   bool durable, unsigned mode) {
  auto tmp = temp_sibling(path);
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) return Error{"IoError", errno_message("create", tmp, errno)};
  auto written = write_all(fd, content, tmp);
  if (written.ok() && durable && ::fsync(fd) != 0) {
    written = Error{"IoError", errno_message("fsync", tmp, errno)};
  }
  ::close(fd);
  if (!written.ok()) {
    ::unlink(tmp.c_str());
    return written;
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    return Error{"IoError", errno_message("rename into", path, err)};
  }
  if (durable) {
    auto dir = path.parent_path().empty() ? std::filesystem::path(".") : path.parent_path();
    int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      ::fsync(dfd);
      ::close(dfd);
    }
  }
  return ok();
}

Result<std::string> read_file(const std::filesystem::path& path, std::size_t max_bytes) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Error{"IoError", errno_message("open", path, errno)};
  std::string data;
  char buf[65536];
  while (true) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      return Error{"IoError", errno_message("read", path, err)};
    }
    if (n == 0) break;
    if (data.size() + static_cast<std::size_t>(n) > max_bytes) {
      ::close(fd);
      return Error{"FileTooLarge",
                   path.string() + " is larger than " + std::to_string(max_bytes) + " bytes"};
    }
    data.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return data;
}

}  // namespace amlnode
