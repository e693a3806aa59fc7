#include "executors/archive.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <map>
#include <memory>
#include <optional>
#include <system_error>
#include <thread>

#include "common/fs.h"

namespace amlnode::executors {
namespace fs = std::filesystem;

namespace {

// Every read and write goes through one block of this size: the file being packed, and the
// compressed input being extracted.
constexpr std::size_t kBlockBytes = 64 << 10;

struct ReaderFree {
  void operator()(archive* a) const { archive_read_free(a); }
};
struct WriterFree {
  void operator()(archive* a) const { archive_write_free(a); }
};
struct EntryFree {
  void operator()(archive_entry* e) const { archive_entry_free(e); }
};
using Reader = std::unique_ptr<archive, ReaderFree>;
using Writer = std::unique_ptr<archive, WriterFree>;
using Entry = std::unique_ptr<archive_entry, EntryFree>;

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

std::string libarchive_message(archive* a) {
  const char* message = archive_error_string(a);
  return message ? message : "unknown libarchive error";
}

Error unsafe(std::string_view entry, std::string_view why) {
  return Error{"UnsafeArchive",
               "refused archive entry '" + std::string(entry) + "': " + std::string(why)};
}

Error too_large(std::string_view entry, std::string_view why) {
  return Error{"ArchiveTooLarge",
               "refused archive at entry '" + std::string(entry) + "': " + std::string(why)};
}

Error failed(std::string_view what, const fs::path& path, int err) {
  return Error{"ArchiveFailed", errno_message(what, path, err)};
}

// ---- Path rules shared by packing and extraction ----

std::vector<std::string_view> split_path(std::string_view path) {
  std::vector<std::string_view> parts;
  while (!path.empty()) {
    auto slash = path.find('/');
    auto part = path.substr(0, slash);
    if (!part.empty() && part != ".") parts.push_back(part);
    path = slash == std::string_view::npos ? std::string_view() : path.substr(slash + 1);
  }
  return parts;
}

// An entry name as it will be written below the destination: '/'-separated, without "." or empty
// components. Absolute names and any ".." are refused. The root folder itself ("./") becomes "".
Result<std::string> normalized_entry_path(std::string_view name) {
  if (name.empty()) return unsafe(name, "the name is empty");
  if (name.front() == '/') return unsafe(name, "absolute paths are not allowed");
  std::string normal;
  for (auto part : split_path(name)) {
    if (part == "..") return unsafe(name, "'..' is not allowed in paths");
    if (!normal.empty()) normal += '/';
    normal += part;
  }
  return normal;
}

// Why the symbolic link at `link_path` (normalized, relative to the root) with `target` could
// point outside the root, or nullopt when it cannot. A target may climb with leading ".." only
// and then descend: a ".." after a name is refused even when it looks harmless, because that name
// could itself be a link and make a lexical check wrong (s -> . then t -> s/s/../..).
std::optional<std::string> link_escape(std::string_view link_path, std::string_view target) {
  if (target.empty()) return "the link target is empty";
  if (target.front() == '/') return "the link points to an absolute path";
  auto link_parts = split_path(link_path).size();
  auto depth = link_parts == 0 ? 0 : link_parts - 1;  // folders between the root and the link
  std::size_t climbs = 0;
  bool descended = false;
  for (auto part : split_path(target)) {
    if (part != "..") {
      descended = true;
      continue;
    }
    if (descended) return "the link target has '..' after a folder name";
    if (++climbs > depth) return "the link points outside the folder";
  }
  return std::nullopt;
}

// ---- Packing ----

// The archive writer: pax tar (extended headers only where ustar cannot hold a value), gzip with
// no timestamp in its header, so the same content gives the same bytes. The last block is not
// padded, so a file and the in-memory variant hold the same bytes.
Result<Writer> new_tar_gz_writer() {
  Writer writer(archive_write_new());
  if (!writer) return Error{"ArchiveFailed", "libarchive could not allocate a writer"};
  archive* a = writer.get();
  if (archive_write_set_format_pax_restricted(a) != ARCHIVE_OK ||
      archive_write_add_filter_gzip(a) != ARCHIVE_OK ||
      archive_write_set_filter_option(a, "gzip", "timestamp", nullptr) != ARCHIVE_OK ||
      archive_write_set_bytes_in_last_block(a, 1) != ARCHIVE_OK) {
    return Error{"ArchiveFailed", "cannot set up the tar.gz writer: " + libarchive_message(a)};
  }
  return writer;
}

// In-memory output with a cap; libarchive calls this with its 10 KiB tar blocks.
struct MemorySink {
  std::string* data;
  std::size_t max_bytes;
  bool over_cap = false;
};

la_ssize_t write_to_memory(archive* a, void* client, const void* buffer, size_t length) {
  auto* sink = static_cast<MemorySink*>(client);
  if (sink->data->size() + length > sink->max_bytes) {
    sink->over_cap = true;
    archive_set_error(a, EFBIG, "the archive is larger than %zu bytes", sink->max_bytes);
    return -1;
  }
  sink->data->append(static_cast<const char*>(buffer), length);
  return static_cast<la_ssize_t>(length);
}

// Writes listing entries into an open writer, reading each file in kBlockBytes blocks.
class Packer {
 public:
  Packer(archive* writer, const fs::path& root) : writer_(writer), root_(root) {}

  Result<void> add(const SnapshotEntry& entry) {
    auto relative = entry.relative.generic_string();
    auto path = root_ / entry.relative;
    struct stat info {};
    if (::lstat(path.c_str(), &info) != 0) return failed("cannot read", path, errno);
    Entry header(archive_entry_new());
    archive_entry_set_pathname(header.get(), relative.c_str());
    archive_entry_set_perm(header.get(), info.st_mode & 0777);
    archive_entry_set_mtime(header.get(), info.st_mtime, 0);
    archive_entry_set_uid(header.get(), 0);
    archive_entry_set_gid(header.get(), 0);
    switch (entry.type) {
      case SnapshotEntry::Type::Directory:
        return add_directory(header.get(), relative, info);
      case SnapshotEntry::Type::Symlink:
        return add_symlink(header.get(), relative, path, info);
      case SnapshotEntry::Type::File:
        return add_file(header.get(), relative, path);
    }
    return ok();
  }

  ArchiveStats stats;

 private:
  Result<void> add_directory(archive_entry* header, const std::string& relative,
                             const struct stat& info) {
    if (!S_ISDIR(info.st_mode)) return changed(relative);
    archive_entry_set_filetype(header, AE_IFDIR);
    ++stats.directories;
    return write_header(header, relative);
  }

  Result<void> add_symlink(archive_entry* header, const std::string& relative, const fs::path& path,
                           const struct stat& info) {
    if (!S_ISLNK(info.st_mode)) return changed(relative);
    std::error_code ec;
    auto target = fs::read_symlink(path, ec);
    if (ec)
      return Error{"ArchiveFailed", "cannot read the link " + path.string() + ": " + ec.message()};
    if (auto why = unsafe_snapshot_link(relative, target)) return unsafe(relative, *why);
    archive_entry_set_filetype(header, AE_IFLNK);
    archive_entry_set_symlink(header, target.c_str());
    ++stats.files;
    return write_header(header, relative);
  }

  // The file is opened without following links on the way (a run's ./outputs is the job's to
  // change while it is packed) and without blocking (a FIFO put in its place), and its size is
  // taken from the open descriptor, so the header always matches the bytes that follow even when
  // the folder changes meanwhile.
  Result<void> add_file(archive_entry* header, const std::string& relative, const fs::path& path) {
    auto opened = open_beneath(root_, relative, O_RDONLY | O_NONBLOCK);
    if (!opened.ok()) return opened.error();
    Fd fd(opened->release());
    struct stat info {};
    if (::fstat(fd.get(), &info) != 0) return failed("cannot stat", path, errno);
    if (!S_ISREG(info.st_mode)) return changed(relative);
    archive_entry_set_filetype(header, AE_IFREG);
    archive_entry_set_size(header, info.st_size);
    auto written = write_header(header, relative);
    if (!written.ok()) return written;
    ++stats.files;
    stats.bytes += static_cast<std::uint64_t>(info.st_size);
    return copy_content(fd.get(), static_cast<std::uint64_t>(info.st_size), path);
  }

  Result<void> copy_content(int fd, std::uint64_t size, const fs::path& path) {
    for (std::uint64_t left = size; left > 0;) {
      auto want = static_cast<std::size_t>(std::min<std::uint64_t>(left, buffer_.size()));
      auto got = ::read(fd, buffer_.data(), want);
      if (got < 0 && errno == EINTR) continue;
      if (got < 0) return failed("cannot read", path, errno);
      if (got == 0) return changed(path.string());
      if (archive_write_data(writer_, buffer_.data(), static_cast<std::size_t>(got)) != got) {
        return write_error(path.string());
      }
      left -= static_cast<std::uint64_t>(got);
    }
    return ok();
  }

  Result<void> write_header(archive_entry* header, const std::string& relative) {
    if (archive_write_header(writer_, header) != ARCHIVE_OK) return write_error(relative);
    return ok();
  }

  Error write_error(const std::string& relative) const {
    if (archive_errno(writer_) == EFBIG) {
      return Error{"ArchiveTooLarge",
                   "cannot pack " + relative + ": " + libarchive_message(writer_)};
    }
    return Error{"ArchiveFailed", "cannot pack " + relative + ": " + libarchive_message(writer_)};
  }

  static Error changed(const std::string& relative) {
    return Error{"ArchiveFailed", relative + " changed while it was being packed; pack again"};
  }

  archive* writer_;
  const fs::path& root_;
  std::vector<char> buffer_ = std::vector<char>(kBlockBytes);  // one block of the file being packed
};

Result<ArchiveStats> pack_into(archive* writer, const fs::path& source,
                               const SnapshotListing& listing) {
  Packer packer(writer, source);
  for (const auto& entry : listing.entries) {
    auto added = packer.add(entry);
    if (!added.ok()) return added.error();
  }
  if (archive_write_close(writer) != ARCHIVE_OK) {
    auto code = archive_errno(writer) == EFBIG ? "ArchiveTooLarge" : "ArchiveFailed";
    return Error{code, "cannot finish the archive: " + libarchive_message(writer)};
  }
  return std::move(packer.stats);
}

// A unique temporary file beside `path`, for write-then-rename.
Result<std::pair<fs::path, int>> temporary_file_beside(const fs::path& path) {
  std::string pattern = path.string() + ".partial-XXXXXX";
  int fd = ::mkostemp(pattern.data(), O_CLOEXEC);
  if (fd < 0) return failed("cannot create a temporary file beside", path, errno);
  return std::pair<fs::path, int>{fs::path(pattern), fd};
}

Result<ArchiveStats> pack_to_file(const fs::path& source, const SnapshotListing& listing,
                                  const fs::path& out) {
  auto temporary = temporary_file_beside(out);
  if (!temporary.ok()) return temporary.error();
  // Not a structured binding: clang before 16 cannot capture one in the lambda below, and the
  // fuzz build (AMLNODE_FUZZ) uses clang.
  const fs::path temp_path = temporary->first;
  Fd fd(temporary->second);
  auto packed = [&]() -> Result<ArchiveStats> {
    auto writer = new_tar_gz_writer();
    if (!writer.ok()) return writer.error();
    if (archive_write_open_fd(writer->get(), fd.get()) != ARCHIVE_OK) {
      return Error{"ArchiveFailed",
                   "cannot write " + temp_path.string() + ": " + libarchive_message(writer->get())};
    }
    return pack_into(writer->get(), source, listing);
  }();
  if (packed.ok() && ::fsync(fd.get()) != 0) packed = failed("cannot write", temp_path, errno);
  if (packed.ok() && ::rename(temp_path.c_str(), out.c_str()) != 0) {
    packed = failed("cannot rename into place", out, errno);
  }
  if (!packed.ok()) {
    ::unlink(temp_path.c_str());
    return packed;
  }
  std::error_code ec;
  packed->archive_bytes = fs::file_size(out, ec);
  return packed;
}

// Lists everything under `folder` for pack_directory: sorted, parents before children, special
// files and outside links left out and noted.
struct DirectoryWalk {
  const SnapshotLimits& limits;
  SnapshotListing listing;
  std::vector<std::string> left_out;

  Result<void> visit(const fs::path& folder, const std::string& prefix) {
    return walk_sorted(folder, prefix, "ArchiveFailed",
                       [this](const fs::directory_entry& child, const std::string& relative) {
                         return add(child, relative);
                       });
  }

  Result<void> add(const fs::directory_entry& child, const std::string& relative) {
    std::error_code ec;
    auto status = child.symlink_status(ec);
    if (fs::is_directory(status)) {
      listing.entries.push_back({relative, SnapshotEntry::Type::Directory, 0});
      return visit(child.path(), relative + "/");
    }
    if (fs::is_symlink(status) &&
        !link_escape(relative, fs::read_symlink(child.path(), ec).string())) {
      listing.entries.push_back({relative, SnapshotEntry::Type::Symlink, 0});
      ++listing.files;
    } else if (fs::is_regular_file(status)) {
      auto size = child.file_size(ec);
      listing.entries.push_back({relative, SnapshotEntry::Type::File, size});
      ++listing.files;
      listing.bytes += size;
    } else {
      left_out.push_back(relative);
    }
    return within_limits(relative);
  }

  Result<void> within_limits(const std::string& relative) const {
    if (listing.files > limits.max_files) {
      return Error{"ArchiveTooLarge", "more than " + std::to_string(limits.max_files) +
                                          " files (at " + relative + ")"};
    }
    if (listing.bytes > limits.max_bytes) {
      return Error{"ArchiveTooLarge", "more than " + std::to_string(limits.max_bytes) +
                                          " bytes (at " + relative + ")"};
    }
    return ok();
  }
};

// ---- Extraction ----

// The compressed input, handed to libarchive in kBlockBytes blocks from a file or from memory.
// `consumed` counts what has been handed over, for the compression-ratio check.
struct Input {
  int fd = -1;
  std::string_view memory;
  std::array<char, kBlockBytes> buffer;
  std::uint64_t consumed = 0;
};

la_ssize_t read_input(archive* a, void* client, const void** block) {
  auto* input = static_cast<Input*>(client);
  if (input->fd < 0) {
    auto size = std::min(input->memory.size(), kBlockBytes);
    *block = input->memory.data();
    input->memory.remove_prefix(size);
    input->consumed += size;
    return static_cast<la_ssize_t>(size);
  }
  for (;;) {
    auto got = ::read(input->fd, input->buffer.data(), input->buffer.size());
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) {
      archive_set_error(a, errno, "read error");
      return -1;
    }
    *block = input->buffer.data();
    input->consumed += static_cast<std::uint64_t>(got);
    return got;
  }
}

// Opens a reader for gzip-compressed tar only: no other filter or format is enabled, and
// input that is not gzip (plain tar, zip, garbage) is refused before any entry is read.
Result<Reader> open_reader(Input& input, const std::string& name) {
  Reader reader(archive_read_new());
  if (!reader) return Error{"ArchiveFailed", "libarchive could not allocate a reader"};
  archive* a = reader.get();
  archive_read_support_filter_gzip(a);
  archive_read_support_format_tar(a);
  if (archive_read_open(a, &input, nullptr, read_input, nullptr) != ARCHIVE_OK) {
    return Error{"InvalidArchive", name + " is not a readable tar.gz: " + libarchive_message(a)};
  }
  if (archive_filter_code(a, 0) != ARCHIVE_FILTER_GZIP) {
    return Error{"InvalidArchive", name +
                                       " is not gzip-compressed; amlnode reads only the tar.gz "
                                       "archives it writes"};
  }
  return reader;
}

// The writer to disk, with libarchive's own defences on: no "..", no writing through links, and
// (when names are relative to the working directory) no absolute names. Owners, ACLs, extended
// attributes and file flags are never restored; permission bits and times are.
Result<Writer> open_disk_writer(bool relative_names) {
  Writer writer(archive_write_disk_new());
  if (!writer) return Error{"ArchiveFailed", "libarchive could not allocate a disk writer"};
  int flags = ARCHIVE_EXTRACT_PERM | ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_SECURE_NODOTDOT |
              ARCHIVE_EXTRACT_SECURE_SYMLINKS;
  if (relative_names) flags |= ARCHIVE_EXTRACT_SECURE_NOABSOLUTEPATHS;
  archive_write_disk_set_options(writer.get(), flags);
  return writer;
}

// What an extracted path is, to refuse duplicates and writes through links or files.
enum class Kind { Directory, File, Link };

// Checks each entry before libarchive writes it and counts what is written. `base` is prefixed to
// every name given to libarchive: empty when the thread's working directory is the target folder,
// else the target folder's canonical absolute path.
class Extractor {
 public:
  Extractor(const ExtractLimits& limits, const Input& input, std::string base)
      : limits_(limits), input_(input), base_(std::move(base)) {}

  Result<ArchiveStats> run(archive* reader, archive* writer) {
    for (;;) {
      archive_entry* entry = nullptr;
      int status = archive_read_next_header(reader, &entry);
      if (status == ARCHIVE_EOF) break;
      if (status < ARCHIVE_WARN) return invalid(reader, "after entry '" + last_ + "'");
      auto extracted = extract(reader, writer, entry);
      if (!extracted.ok()) return extracted.error();
    }
    if (archive_write_close(writer) != ARCHIVE_OK) {
      return Error{"ArchiveFailed", "cannot finish extraction: " + libarchive_message(writer)};
    }
    return std::move(stats_);
  }

 private:
  Result<void> extract(archive* reader, archive* writer, archive_entry* entry) {
    const char* raw_name = archive_entry_pathname(entry);
    std::string name = raw_name ? raw_name : "";
    auto path = normalized_entry_path(name);
    if (!path.ok()) return path.error();
    last_ = name;
    if (path->empty()) return ok();  // the root folder's own entry ("./"): nothing to create
    auto kind = check_type(entry, name);
    if (!kind.ok()) return kind.error();
    auto placed = check_place(*path, *kind, name);
    if (!placed.ok()) return placed;
    auto counted = count(entry, *kind, name);
    if (!counted.ok()) return counted;
    auto linked = check_links(entry, *path, name);
    if (!linked.ok()) return linked;
    rewrite(entry, *path);
    if (archive_write_header(writer, entry) < ARCHIVE_WARN) return write_error(writer, name);
    if (*kind == Kind::File) {
      auto copied = copy_data(reader, writer, header_bytes(entry), name);
      if (!copied.ok()) return copied;
    }
    if (archive_write_finish_entry(writer) < ARCHIVE_WARN) return write_error(writer, name);
    return ok();
  }

  // Only folders, regular files, symbolic links and hard links are allowed.
  static Result<Kind> check_type(archive_entry* entry, const std::string& name) {
    if (archive_entry_hardlink(entry)) return Kind::File;
    switch (archive_entry_filetype(entry)) {
      case AE_IFDIR:
        return Kind::Directory;
      case AE_IFREG:
        return Kind::File;
      case AE_IFLNK:
        return Kind::Link;
      case AE_IFCHR:
      case AE_IFBLK:
        return unsafe(name, "device files are not allowed");
      case AE_IFIFO:
        return unsafe(name, "FIFOs are not allowed");
      case AE_IFSOCK:
        return unsafe(name, "sockets are not allowed");
      default:
        return unsafe(name, "unknown entry type");
    }
  }

  // Refuses an entry below a link or a file, and a second entry for the same path (only a folder
  // may be repeated), then records the entry and its parent folders.
  Result<void> check_place(const std::string& path, Kind kind, const std::string& name) {
    for (auto slash = path.find('/'); slash != std::string::npos;
         slash = path.find('/', slash + 1)) {
      auto parent = path.substr(0, slash);
      auto [it, fresh] = seen_.emplace(parent, Kind::Directory);
      if (it->second == Kind::Link)
        return unsafe(name, "it goes through the link '" + parent + "'");
      if (it->second == Kind::File) return unsafe(name, "'" + parent + "' is a file");
    }
    auto [it, fresh] = seen_.emplace(path, kind);
    if (!fresh && !(kind == Kind::Directory && it->second == Kind::Directory)) {
      return unsafe(name, "the archive has this path twice");
    }
    return ok();
  }

  // Counts the entry and checks the size its header claims; the bytes themselves are counted
  // again as they are written.
  Result<void> count(archive_entry* entry, Kind kind, const std::string& name) {
    if (kind == Kind::Directory) {
      if (++stats_.directories > limits_.max_directories) {
        return too_large(name, "more than " + std::to_string(limits_.max_directories) + " folders");
      }
      return ok();
    }
    if (++stats_.files > limits_.max_files) {
      return too_large(name, "more than " + std::to_string(limits_.max_files) + " files");
    }
    if (archive_entry_size_is_set(entry) && archive_entry_size(entry) < 0) {
      return unsafe(name, "negative size");
    }
    return check_sizes(header_bytes(entry), name);
  }

  static std::uint64_t header_bytes(archive_entry* entry) {
    auto size = archive_entry_size_is_set(entry) ? archive_entry_size(entry) : 0;
    return size > 0 ? static_cast<std::uint64_t>(size) : 0;
  }

  Result<void> check_sizes(std::uint64_t entry_bytes, const std::string& name) const {
    if (entry_bytes > limits_.max_entry_bytes) {
      return too_large(name,
                       "a file larger than " + std::to_string(limits_.max_entry_bytes) + " bytes");
    }
    auto total = stats_.bytes + entry_bytes;
    if (total > limits_.max_total_bytes) {
      return too_large(name,
                       "more than " + std::to_string(limits_.max_total_bytes) + " bytes in all");
    }
    return ok();
  }

  // The ratio is taken over bytes actually produced, never over sizes that headers claim: a large
  // file's header arrives long before its compressed data has been read.
  Result<void> check_ratio(std::uint64_t produced, const std::string& name) const {
    bool checked = limits_.max_ratio > 0 && produced > limits_.ratio_floor_bytes;
    if (checked && produced / limits_.max_ratio > input_.consumed) {
      return too_large(name, "it expands more than " + std::to_string(limits_.max_ratio) +
                                 " times (" + std::to_string(input_.consumed) +
                                 " compressed bytes gave " + std::to_string(produced) + ")");
    }
    return ok();
  }

  // Symbolic links must stay inside; hard links must name a regular file extracted before them.
  Result<void> check_links(archive_entry* entry, const std::string& path,
                           const std::string& name) const {
    if (const char* target = archive_entry_hardlink(entry)) {
      auto normal = normalized_entry_path(target);
      if (!normal.ok()) return unsafe(name, "hard link to '" + std::string(target) + "' outside");
      auto it = seen_.find(*normal);
      if (normal->empty() || it == seen_.end() || it->second != Kind::File || *normal == path) {
        return unsafe(name, "hard link to '" + std::string(target) +
                                "', which is not a file earlier in the archive");
      }
      return ok();
    }
    if (archive_entry_filetype(entry) != AE_IFLNK) return ok();
    const char* target = archive_entry_symlink(entry);
    if (auto why = link_escape(path, target ? target : "")) {
      return unsafe(name, *why + " ('" + std::string(target ? target : "") + "')");
    }
    return ok();
  }

  // Gives libarchive the checked name, permission bits without setuid, setgid or sticky, and no
  // owner, so nothing but what was checked reaches the disk.
  void rewrite(archive_entry* entry, const std::string& path) const {
    archive_entry_set_pathname(entry, (base_ + path).c_str());
    if (const char* target = archive_entry_hardlink(entry)) {
      auto normal = normalized_entry_path(target);
      archive_entry_set_hardlink(entry, (base_ + *normal).c_str());
    }
    archive_entry_set_perm(entry, archive_entry_perm(entry) & 0777);
    archive_entry_set_uid(entry, 0);
    archive_entry_set_gid(entry, 0);
    archive_entry_set_uname(entry, nullptr);
    archive_entry_set_gname(entry, nullptr);
  }

  // Copies one file's data block by block, checking the limits against the logical size written
  // so far (sparse holes included) before each block reaches the disk. The size counted is the
  // larger of the header's and the written one, since libarchive extends a file to its header's.
  Result<void> copy_data(archive* reader, archive* writer, std::uint64_t header_size,
                         const std::string& name) {
    std::uint64_t entry_bytes = header_size;
    std::uint64_t produced = 0;
    for (;;) {
      const void* block = nullptr;
      size_t size = 0;
      la_int64_t offset = 0;
      int status = archive_read_data_block(reader, &block, &size, &offset);
      if (status == ARCHIVE_EOF) break;
      if (status < ARCHIVE_WARN) return invalid(reader, "in entry '" + name + "'");
      if (offset < 0) return unsafe(name, "negative data offset");
      produced = std::max(produced, static_cast<std::uint64_t>(offset) + size);
      entry_bytes = std::max(entry_bytes, produced);
      auto within = check_sizes(entry_bytes, name);
      if (!within.ok()) return within;
      auto ratio = check_ratio(produced_ + produced, name);
      if (!ratio.ok()) return ratio;
      if (archive_write_data_block(writer, block, size, offset) < ARCHIVE_WARN) {
        return write_error(writer, name);
      }
    }
    stats_.bytes += entry_bytes;
    produced_ += produced;
    return ok();
  }

  static Error invalid(archive* reader, const std::string& where) {
    return Error{"InvalidArchive", "the archive is corrupt or truncated " + where + ": " +
                                       libarchive_message(reader)};
  }

  static Error write_error(archive* writer, const std::string& name) {
    return Error{"ArchiveFailed", "cannot extract '" + name + "': " + libarchive_message(writer)};
  }

  const ExtractLimits& limits_;
  const Input& input_;
  std::string base_;
  std::map<std::string, Kind> seen_;
  ArchiveStats stats_;
  std::uint64_t produced_ = 0;  // file bytes libarchive has handed over (holes included)
  std::string last_ = "(start)";
};

// Runs the extraction on a short-lived thread of its own. That thread unshares its file-system
// context (CLONE_FS) and changes into `folder`, so libarchive gets names relative to the
// destination and its NOABSOLUTEPATHS check applies, while every other thread of the process keeps
// its working directory. Where unsharing is not allowed (some seccomp profiles), names are given as
// absolute paths below the canonical folder instead; the entry checks above refuse absolute names
// either way.
Result<ArchiveStats> extract_on_own_thread(Input& input, const std::string& name,
                                           const fs::path& folder, const ExtractLimits& limits) {
  std::optional<Result<ArchiveStats>> result;
  std::thread worker([&] {
    bool relative = ::unshare(CLONE_FS) == 0 && ::chdir(folder.c_str()) == 0;
    std::error_code ec;
    auto base = relative ? std::string() : fs::canonical(folder, ec).string() + "/";
    result = [&]() -> Result<ArchiveStats> {
      if (ec)
        return Error{"ArchiveFailed", "cannot resolve " + folder.string() + ": " + ec.message()};
      auto reader = open_reader(input, name);
      if (!reader.ok()) return reader.error();
      auto writer = open_disk_writer(relative);
      if (!writer.ok()) return writer.error();
      Extractor extractor(limits, input, base);
      return extractor.run(reader->get(), writer->get());
    }();
  });
  worker.join();
  return std::move(*result);
}

// Removes a half-extracted folder. Folders are made writable and searchable first: an archive may
// have given them modes that would stop their own removal.
void remove_tree(const fs::path& root) {
  std::error_code ec;
  fs::permissions(root, fs::perms::owner_all, fs::perm_options::add, ec);
  for (fs::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->is_directory(ec) && !it->is_symlink(ec)) remove_tree(it->path());
  }
  fs::remove_all(root, ec);
}

Result<void> check_destination(const fs::path& destination) {
  std::error_code ec;
  auto status = fs::symlink_status(destination, ec);
  if (!fs::exists(status)) return ok();
  if (fs::is_directory(status) && fs::is_empty(destination, ec) && !ec) return ok();
  return Error{"ArchiveFailed",
               "cannot extract into " + destination.string() + ": it exists and is not empty"};
}

Result<fs::path> temporary_folder_beside(const fs::path& destination) {
  auto parent = destination.parent_path().empty() ? fs::path(".") : destination.parent_path();
  std::error_code ec;
  fs::create_directories(parent, ec);
  if (ec) return Error{"ArchiveFailed", "cannot create " + parent.string() + ": " + ec.message()};
  std::string pattern = (parent / ("." + destination.filename().string() + ".partial-XXXXXX"));
  if (!::mkdtemp(pattern.data()))
    return failed("cannot create a folder beside", destination, errno);
  return fs::path(pattern);
}

Result<ArchiveStats> extract(Input& input, const std::string& name, const fs::path& destination,
                             const ExtractLimits& limits) {
  auto clear = check_destination(destination);
  if (!clear.ok()) return clear.error();
  auto temporary = temporary_folder_beside(destination);
  if (!temporary.ok()) return temporary.error();
  auto extracted = extract_on_own_thread(input, name, *temporary, limits);
  if (extracted.ok() && ::chmod(temporary->c_str(), 0755) != 0) {
    extracted = failed("cannot set the mode of", *temporary, errno);
  }
  if (extracted.ok() && ::rename(temporary->c_str(), destination.c_str()) != 0) {
    extracted = failed("cannot rename into place", destination, errno);
  }
  if (!extracted.ok()) {
    remove_tree(*temporary);
    return extracted;
  }
  extracted->archive_bytes = input.consumed;
  return extracted;
}

}  // namespace

std::optional<std::string> unsafe_snapshot_link(std::string_view relative, const fs::path& target) {
  auto why = link_escape(relative, target.string());
  if (!why) return std::nullopt;
  return *why + " ('" + target.string() +
         "'), so it would not work on the node; list it in .amlignore or replace it with what it "
         "points to";
}

Result<ArchiveStats> pack_snapshot(const fs::path& source, const SnapshotListing& listing,
                                   const fs::path& out_tar_gz) {
  return pack_to_file(source, listing, out_tar_gz);
}

Result<PackedArchive> pack_snapshot_to_memory(const fs::path& source,
                                              const SnapshotListing& listing,
                                              std::size_t max_archive_bytes) {
  PackedArchive packed;
  MemorySink sink{&packed.data, max_archive_bytes};
  auto writer = new_tar_gz_writer();
  if (!writer.ok()) return writer.error();
  if (archive_write_open(writer->get(), &sink, nullptr, write_to_memory, nullptr) != ARCHIVE_OK) {
    return Error{"ArchiveFailed", "cannot start the archive: " + libarchive_message(writer->get())};
  }
  auto stats = pack_into(writer->get(), source, listing);
  if (!stats.ok()) return stats.error();
  packed.stats = std::move(*stats);
  packed.stats.archive_bytes = packed.data.size();
  return packed;
}

Result<ArchiveStats> pack_directory(const fs::path& folder, const fs::path& out_tar_gz,
                                    const SnapshotLimits& limits) {
  DirectoryWalk walk{limits, {}, {}};
  auto walked = walk.visit(folder, "");
  if (!walked.ok()) return walked.error();
  auto packed = pack_to_file(folder, walk.listing, out_tar_gz);
  if (packed.ok()) packed->left_out = std::move(walk.left_out);
  return packed;
}

Result<ArchiveStats> extract_snapshot(const fs::path& tar_gz, const fs::path& destination,
                                      const ExtractLimits& limits) {
  Fd fd(::open(tar_gz.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return failed("cannot open", tar_gz, errno);
  auto input = std::make_unique<Input>();
  input->fd = fd.get();
  return extract(*input, tar_gz.string(), destination, limits);
}

Result<ArchiveStats> extract_snapshot_from_memory(std::string_view tar_gz,
                                                  const fs::path& destination,
                                                  const ExtractLimits& limits) {
  auto input = std::make_unique<Input>();
  input->memory = tar_gz;
  return extract(*input, "the archive", destination, limits);
}

}  // namespace amlnode::executors
