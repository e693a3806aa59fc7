#include "common/fs.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
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

// Whether `relative` stays below its root on its face: relative, no "..", not empty.
bool stays_beneath(const std::filesystem::path& relative) {
  if (relative.empty() || relative.is_absolute()) return false;
  for (const auto& part : relative)
    if (part == "..") return false;
  return true;
}

int openat2_beneath(int dirfd, const std::filesystem::path& relative, int flags, unsigned mode) {
  open_how how{};
  how.flags = static_cast<std::uint64_t>(flags);
  how.mode = (flags & O_CREAT) ? mode : 0;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  return static_cast<int>(::syscall(SYS_openat2, dirfd, relative.c_str(), &how, sizeof how));
}

// Without openat2: each folder on the way opened with O_NOFOLLOW | O_DIRECTORY from the last.
int openat_each_component(int dirfd, const std::filesystem::path& relative, int flags,
                          unsigned mode) {
  UniqueFd current(::dup(dirfd));
  auto last = relative.filename();
  for (const auto& part : relative.parent_path()) {
    if (part == ".") continue;
    int next =
        ::openat(current.get(), part.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (next < 0) return -1;
    current.reset(next);
  }
  return ::openat(current.get(), last.c_str(), flags | O_NOFOLLOW, mode);
}

}  // namespace

Result<UniqueFd> open_beneath(const std::filesystem::path& root,
                              const std::filesystem::path& relative, int flags, unsigned mode) {
  auto path = root / relative;
  if (!stays_beneath(relative))
    return Error{kLinkRefused, path.string() + ": not a path below " + root.string()};
  UniqueFd dir(::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir) return Error{"IoError", errno_message("open", root, errno)};
  flags |= O_CLOEXEC | O_NOCTTY;
  static std::atomic<bool> have_openat2{true};
  int fd = -1;
  if (have_openat2) {
    fd = openat2_beneath(dir.get(), relative, flags, mode);
    if (fd < 0 && errno == ENOSYS) have_openat2 = false;
  }
  if (!have_openat2) fd = openat_each_component(dir.get(), relative, flags, mode);
  if (fd < 0) {
    int err = errno;
    // openat2 says ELOOP (or EXDEV) for a link it will not follow, and O_NOFOLLOW says ELOOP.
    if (err == ELOOP || err == EXDEV)
      return Error{kLinkRefused,
                   path.string() + ": a symbolic link is on the way; it is not followed"};
    return Error{"IoError", errno_message("open", path, err)};
  }
  UniqueFd file(fd);
  if ((flags & O_ACCMODE) != O_RDONLY) {
    struct stat st {};
    if (::fstat(file.get(), &st) == 0 && S_ISREG(st.st_mode) && st.st_nlink > 1)
      return Error{kLinkRefused, path.string() + ": has " + std::to_string(st.st_nlink) +
                                     " names (a hard link); it is not written"};
  }
  return file;
}

Result<void> write_all_to(int fd, std::string_view data, const std::filesystem::path& path) {
  return write_all(fd, data, path);
}

Result<void> append_beneath(const std::filesystem::path& root,
                            const std::filesystem::path& relative, std::string_view data) {
  auto file = open_beneath(root, relative, O_WRONLY | O_APPEND | O_CREAT);
  if (!file.ok()) return file.error();
  return write_all(file->get(), data, root / relative);
}

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

std::optional<std::filesystem::path> find_on_path(const std::string& name, std::string_view path) {
  while (true) {
    auto colon = path.find(':');
    auto dir = path.substr(0, colon);
    if (!dir.empty()) {
      std::filesystem::path candidate = std::filesystem::path(dir) / name;
      if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    }
    if (colon == std::string_view::npos) return std::nullopt;
    path.remove_prefix(colon + 1);
  }
}

}  // namespace amlnode
