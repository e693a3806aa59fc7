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
      streams.emplace_back(prefix + fs::relative(it->path(), folder, ec).generic_string(),
                           it->path());
    }
    ec.clear();
  }
  return streams;
}

// Reads up to `max` bytes of `file` from `offset`; "" at the end.
Result<std::string> read_chunk(const fs::path& file, std::uint64_t offset, std::size_t max) {
  int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Error{"LogReadFailed", file.string() + ": " + std::strerror(errno)};
  std::string chunk(max, '\0');
  std::size_t got = 0;
  while (got < max) {
    ssize_t n = ::pread(fd, chunk.data() + got, max - got, static_cast<off_t>(offset + got));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<std::size_t>(n);
  }
  ::close(fd);
  chunk.resize(got);
  return chunk;
}

// Delivers one stream from `cursor` up to the file's length at the start; updates `cursor`.
Result<void> ship_stream(ControlPlaneClient& client, StateStore& store, const NodeIdentity& node,
                         const std::string& run_id, std::int64_t epoch, const std::string& stream,
                         const fs::path& file, std::uint64_t& cursor) {
  std::error_code ec;
  std::uint64_t size = fs::file_size(file, ec);
  if (ec) return ok();  // gone meanwhile: nothing to send
  while (cursor < size) {
    auto chunk =
        read_chunk(file, cursor,
                   static_cast<std::size_t>(std::min<std::uint64_t>(size - cursor, kMaxLogChunk)));
    if (!chunk.ok()) return chunk.error();
    if (chunk->empty()) return ok();  // truncated meanwhile
    auto appended = client.append_log(node, run_id, epoch, stream, cursor, std::move(*chunk));
    if (!appended.ok()) return appended.error();
    // Accepted or not, the server's length is where the next chunk starts: past what it has
    // (a lost answer) it skips, short of it (a gap) it asks for the rest.
    cursor = appended->server_length;
    if (auto saved = store.save_log_cursor(run_id, stream, cursor); !saved) return saved;
  }
  return ok();
}

}  // namespace

Result<ShipResult> ship_run_logs(ControlPlaneClient& client, StateStore& store,
                                 const NodeIdentity& node, const std::string& run_id,
                                 std::int64_t epoch, const fs::path& run_dir) {
  auto cursors = store.log_cursors(run_id);
  if (!cursors.ok()) return cursors.error();
  for (const auto& [stream, file] : run_streams(run_dir)) {
    std::uint64_t& cursor = (*cursors)[stream];
    if (auto shipped = ship_stream(client, store, node, run_id, epoch, stream, file, cursor);
        !shipped) {
      return shipped.error();
    }
  }
  return ShipResult{true};
}

}  // namespace amlnode::agent
