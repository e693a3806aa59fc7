#include "agent/daemon/log_shipper.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

namespace amlnode::agent {

namespace fs = std::filesystem;

namespace {

// Every stream of the run with the file it is read from.
std::vector<std::pair<std::string, fs::path>> run_streams(const fs::path& run_dir) {
  std::vector<std::pair<std::string, fs::path>> streams;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(run_dir / "user_logs", ec)) {
    if (entry.is_regular_file(ec))
      streams.emplace_back("user_logs/" + entry.path().filename().string(), entry.path());
  }
  for (const auto& [prefix, folder] :
       {std::pair<std::string, fs::path>{"system_logs/", run_dir / "system_logs"},
        {"logs/", run_dir / "wd" / "logs"}}) {
    fs::recursive_directory_iterator it(folder, fs::directory_options::none, ec);
    for (; !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      // Links are not followed: a run must not make the agent ship files outside its folder.
      if (it->is_symlink(ec) || !it->is_regular_file(ec)) continue;
      // Lexically: the iterator's paths all start with `folder`, and fs::relative would resolve
      // both paths through the file system (a readlink per component, every tick).
      streams.emplace_back(prefix + it->path().lexically_relative(folder).generic_string(),
                           it->path());
    }
    ec.clear();
  }
  return streams;
}

// Reads up to `max` bytes of `file` from `offset` into the start of `buffer`; returns how many
// (0 at the end). The buffer is reused for every chunk of a delivery and only ever grows: a fresh
// 4 MiB allocation per chunk would be a fresh mapping whose pages the kernel zeroes on first
// touch, which costs more than the read itself.
Result<std::size_t> read_chunk(const fs::path& file, std::uint64_t offset, std::size_t max,
                               std::string& buffer) {
  int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Error{"LogReadFailed", file.string() + ": " + std::strerror(errno)};
  if (buffer.size() < max) buffer.resize(max);
  char* chunk = buffer.data();
  std::size_t got = 0;
  while (got < max) {
    ssize_t n = ::pread(fd, chunk + got, max - got, static_cast<off_t>(offset + got));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<std::size_t>(n);
  }
  ::close(fd);
  return got;
}

// Delivers one stream from `cursor` up to the file's length at the start; updates `cursor`.
// The cursor is stored when the stream is caught up, when a call fails, and every
// kCursorSaveBytes in between, not after every chunk: a state store write waits for an fsync,
// which would cost a large share of each chunk's time. A cursor stored behind the server's length
// only makes the node resend bytes the server skips, so a crash costs at most that much resending.
Result<void> ship_stream(ControlPlaneClient& client, StateStore& store, const NodeIdentity& node,
                         const std::string& run_id, std::int64_t epoch, const std::string& stream,
                         const fs::path& file, std::uint64_t& cursor, std::string& buffer) {
  std::error_code ec;
  std::uint64_t size = fs::file_size(file, ec);
  if (ec) return ok();  // gone meanwhile: nothing to send
  std::uint64_t saved = cursor;
  auto save = [&]() -> Result<void> {
    if (cursor == saved) return ok();
    saved = cursor;
    return store.save_log_cursor(run_id, stream, cursor);
  };
  while (cursor < size) {
    auto got = read_chunk(
        file, cursor,
        static_cast<std::size_t>(std::min<std::uint64_t>(size - cursor, kMaxLogChunk)), buffer);
    if (!got.ok()) {
      (void)save();
      return got.error();
    }
    if (*got == 0) break;  // truncated meanwhile
    auto appended = client.append_log(node, run_id, epoch, stream, cursor,
                                      std::string_view(buffer.data(), *got));
    if (!appended.ok()) {
      (void)save();
      return appended.error();
    }
    // Accepted or not, the server's length is where the next chunk starts: past what it has
    // (a lost answer) it skips, short of it (a gap) it asks for the rest.
    cursor = appended->server_length;
    if (cursor >= saved + kCursorSaveBytes) {
      if (auto stored = save(); !stored) return stored;
    }
  }
  return save();
}

}  // namespace

Result<ShipResult> ship_run_logs(ControlPlaneClient& client, StateStore& store,
                                 const NodeIdentity& node, const std::string& run_id,
                                 std::int64_t epoch, const fs::path& run_dir) {
  auto cursors = store.log_cursors(run_id);
  if (!cursors.ok()) return cursors.error();
  std::string buffer;  // one buffer for every chunk of this delivery
  for (const auto& [stream, file] : run_streams(run_dir)) {
    std::uint64_t& cursor = (*cursors)[stream];
    if (auto shipped =
            ship_stream(client, store, node, run_id, epoch, stream, file, cursor, buffer);
        !shipped) {
      return shipped.error();
    }
  }
  return ShipResult{true};
}

}  // namespace amlnode::agent
