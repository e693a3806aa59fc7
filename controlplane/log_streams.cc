#include "controlplane/log_streams.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>

#include "common/error_codes.h"
#include "common/fs.h"
#include "common/hash.h"

namespace amlnode::controlplane {
namespace {

bool is_relative_path(std::string_view path) {
  if (path.empty()) return false;
  std::size_t start = 0;
  while (start <= path.size()) {
    std::size_t end = path.find('/', start);
    if (end == std::string_view::npos) end = path.size();
    std::string_view part = path.substr(start, end - start);
    if (part.empty() || part == "." || part == "..") return false;
    start = end + 1;
  }
  for (unsigned char c : path) {
    if (c < 0x20 || c == 0x7f || c == '\\') return false;
  }
  return true;
}

bool has_prefix(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

// Stream names become one flat file name: bytes outside [A-Za-z0-9._-] are written as %XX. The
// mapping is one to one, a name can never reach outside the run's folder, and `logs/a` and
// `logs/a/b` can both exist.
std::string encode_file_name(std::string_view stream) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : stream) {
    if (std::isalnum(c) || c == '.' || c == '_' || c == '-') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

std::string decode_file_name(std::string_view name) {
  std::string out;
  for (std::size_t i = 0; i < name.size(); ++i) {
    if (name[i] == '%' && i + 2 < name.size() && hex_value(name[i + 1]) >= 0 &&
        hex_value(name[i + 2]) >= 0) {
      out.push_back(static_cast<char>(hex_value(name[i + 1]) * 16 + hex_value(name[i + 2])));
      i += 2;
    } else {
      out.push_back(name[i]);
    }
  }
  return out;
}

}  // namespace

bool is_valid_stream_name(std::string_view name) {
  if (name.empty() || name.size() > kMaxStreamNameBytes) return false;
  // mpi_log.txt: what mpirun itself says in a distributed MPI run (docs/distributed.md).
  if (name == "user_logs/std_log.txt" || name == "user_logs/mpi_log.txt") return true;
  // An AzureBatchStep's task writes stdout.txt and stderr.txt, apart (docs/batch.md).
  if (name == "user_logs/stdout.txt" || name == "user_logs/stderr.txt") return true;
  // std_log_process_N.txt per rank; mpi_log_node_N.txt: what Open MPI's daemon said on node rank
  // N > 0 of an MPI run across nodes.
  constexpr std::string_view kTxt = ".txt";
  for (std::string_view prefix : {"user_logs/std_log_process_", "user_logs/mpi_log_node_"}) {
    if (has_prefix(name, prefix) && name.size() > prefix.size() + kTxt.size() &&
        name.substr(name.size() - kTxt.size()) == kTxt) {
      auto digits = name.substr(prefix.size(), name.size() - prefix.size() - kTxt.size());
      return digits.size() <= 6 && digits.find_first_not_of("0123456789") == std::string_view::npos;
    }
  }
  for (std::string_view prefix : {"system_logs/", "logs/"}) {
    if (has_prefix(name, prefix)) return is_relative_path(name.substr(prefix.size()));
  }
  return false;
}

std::filesystem::path LogStreams::file_of(const std::string& run_id,
                                          const std::string& stream) const {
  return runs_dir_ / run_id / "logs" / file_name_of(stream);
}

// A name whose escaped form would not fit in a file name (each byte can take three) is stored
// under its hash, with its real name in a file beside it ("~<hash>.name"). '~' is never written
// by the escaping, so the two kinds cannot meet.
std::string LogStreams::file_name_of(const std::string& stream) {
  std::string encoded = encode_file_name(stream);
  if (encoded.size() <= kMaxPlainFileName) return encoded;
  return "~" + sha256_hex(stream);
}

Result<AppendOutcome> LogStreams::append(const std::string& run_id, const std::string& stream,
                                         std::uint64_t offset, std::string_view bytes) {
  if (!is_valid_stream_name(stream)) {
    return Error{errors::kInvalidStreamName, "not a log stream name: " + stream};
  }
  auto file = file_of(run_id, stream);
  std::error_code ec;
  std::filesystem::create_directories(file.parent_path(), ec);
  if (ec)
    return Error{errors::kStorageError,
                 "creating " + file.parent_path().string() + ": " + ec.message()};
  auto name_file = file;
  name_file += ".name";
  if (file.filename().string().front() == '~' && !std::filesystem::exists(name_file, ec)) {
    if (auto named = write_file_atomically(name_file, stream); !named) return named.error();
  }
  int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return Error{errors::kStorageError, errno_message("opening", file, errno)};
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return Error{errors::kStorageError, errno_message("reading the length of", file, err)};
  }
  auto length = static_cast<std::uint64_t>(st.st_size);
  if (offset > length) {
    ::close(fd);
    return AppendOutcome{length, true};
  }
  std::uint64_t skip = std::min<std::uint64_t>(length - offset, bytes.size());
  std::string_view rest = bytes.substr(static_cast<std::size_t>(skip));
  while (!rest.empty()) {
    ssize_t n = ::write(fd, rest.data(), rest.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      // Whatever part was written stays and counts: the answer to the retry says where it ends.
      int err = errno;
      ::close(fd);
      return Error{errors::kStorageError, errno_message("appending to", file, err)};
    }
    rest.remove_prefix(static_cast<std::size_t>(n));
    length += static_cast<std::uint64_t>(n);
  }
  ::close(fd);
  return AppendOutcome{length, false};
}

Result<std::string> LogStreams::read(const std::string& run_id, const std::string& stream,
                                     std::uint64_t offset, std::size_t max_bytes) const {
  auto file = file_of(run_id, stream);
  int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return std::string();
    return Error{errors::kStorageError, errno_message("opening", file, errno)};
  }
  // Only what is there is allocated, so a large `max_bytes` costs nothing for a short stream.
  struct stat st {};
  std::uint64_t available = 0;
  if (::fstat(fd, &st) == 0 && static_cast<std::uint64_t>(st.st_size) > offset) {
    available = static_cast<std::uint64_t>(st.st_size) - offset;
  }
  std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(available, max_bytes));
  std::string out(want, '\0');
  std::size_t filled = 0;
  while (filled < want) {
    ssize_t n =
        ::pread(fd, out.data() + filled, want - filled, static_cast<off_t>(offset + filled));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      ::close(fd);
      return Error{errors::kStorageError, errno_message("reading", file, err)};
    }
    if (n == 0) break;
    filled += static_cast<std::size_t>(n);
  }
  ::close(fd);
  out.resize(filled);
  return out;
}

std::uint64_t LogStreams::length(const std::string& run_id, const std::string& stream) const {
  struct stat st {};
  if (::stat(file_of(run_id, stream).c_str(), &st) != 0) return 0;
  return static_cast<std::uint64_t>(st.st_size);
}

std::map<std::string, std::uint64_t> LogStreams::list(const std::string& run_id) const {
  std::map<std::string, std::uint64_t> streams;
  std::error_code ec;
  for (std::filesystem::directory_iterator it(runs_dir_ / run_id / "logs", ec), end;
       !ec && it != end; it.increment(ec)) {
    std::string file_name = it->path().filename().string();
    if (file_name.ends_with(".name")) continue;  // the real name of a hashed one
    std::error_code size_ec;
    auto size = it->file_size(size_ec);
    if (size_ec) continue;
    std::string name;
    if (file_name.front() == '~') {
      auto stored = read_file(it->path().string() + ".name", kMaxStreamNameBytes);
      if (!stored.ok()) continue;
      name = *stored;
    } else {
      name = decode_file_name(file_name);
    }
    if (is_valid_stream_name(name)) streams[name] = size;
  }
  return streams;
}

}  // namespace amlnode::controlplane
