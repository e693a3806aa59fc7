#include "agent/daemon/log_shipper.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <optional>
#include <vector>

#include "common/error_codes.h"
#include "common/format.h"
#include "common/fs.h"
#include "executors/batch_task.h"

namespace amlnode::agent {

namespace fs = std::filesystem;

namespace {

// A hole is at least a block; what SEEK_DATA reports below this is not one.
constexpr std::uint64_t kMinHoleBytes = 4096;

struct StreamFile {
  std::string name;   // the stream name ("logs/a.txt")
  fs::path relative;  // its file, relative to `root` ("wd/logs/a.txt")
  fs::path root;      // the run folder, or a Batch task's folder
};

std::string two_digits(int number) {
  char text[16];
  std::snprintf(text, sizeof text, "%02d", number);
  return text;
}

// Every stream of the run with the file it is read from (named for a share, see ship_run_logs).
std::vector<StreamFile> run_streams(const fs::path& run_dir, int share_rank,
                                    const fs::path& batch_root) {
  std::vector<StreamFile> streams;
  // A Batch task's stdout.txt, stderr.txt and wd/ are in its own folder (executors/batch_task.h).
  fs::path task_dir;
  if (auto task = executors::read_batch_task_record(run_dir); task && !batch_root.empty()) {
    task_dir = executors::batch_task_dir(batch_root, run_dir.filename().string(), task->task_id);
    for (const char* name : {"stdout.txt", "stderr.txt"})
      streams.push_back({std::string("user_logs/") + name, name, task_dir});
  }
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(run_dir / "user_logs", ec)) {
    if (entry.is_regular_file(ec)) {
      auto name = entry.path().filename().string();
      // A share's own log is numbered by its node rank, and so is the Open MPI daemon's log of a
      // share that is not the master (mpirun's is the master's mpi_log.txt).
      std::string stream = name;
      if (share_rank >= 0 && name == "std_log.txt")
        stream = "std_log_process_" + two_digits(share_rank) + ".txt";
      if (share_rank > 0 && name == "mpi_log.txt")
        stream = "mpi_log_node_" + two_digits(share_rank) + ".txt";
      streams.push_back({"user_logs/" + stream, fs::path("user_logs") / name, run_dir});
    }
  }
  std::string node_folder = share_rank > 0 ? "node_" + two_digits(share_rank) + "/" : "";
  for (const auto& [prefix, folder] :
       {std::pair<std::string, fs::path>{"system_logs/" + node_folder, "system_logs"},
        {"logs/" + node_folder, "wd/logs"}}) {
    fs::path root = folder == "wd/logs" && !task_dir.empty() ? task_dir : run_dir;
    fs::recursive_directory_iterator it(root / folder, fs::directory_options::none, ec);
    for (; !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      // Links are not followed: a run must not make the agent ship files outside its folder.
      if (it->is_symlink(ec) || !it->is_regular_file(ec)) continue;
      // Lexically: the iterator's paths all start with the folder, and fs::relative would resolve
      // both paths through the file system (a readlink per component, every tick).
      auto inside = it->path().lexically_relative(root / folder);
      streams.push_back({prefix + inside.generic_string(), folder / inside, root});
    }
    ec.clear();
  }
  return streams;
}

// Reads up to `max` bytes of `fd` from `offset` into the start of `buffer`; returns how many (0 at
// the end). The buffer is reused for every chunk of a delivery and only ever grows: a fresh 4 MiB
// allocation per chunk would be a fresh mapping whose pages the kernel zeroes on first touch,
// which costs more than the read itself.
std::size_t read_at(int fd, std::uint64_t offset, std::size_t max, std::string& buffer) {
  if (buffer.size() < max) buffer.resize(max);
  std::size_t got = 0;
  while (got < max) {
    ssize_t n = ::pread(fd, buffer.data() + got, max - got, static_cast<off_t>(offset + got));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<std::size_t>(n);
  }
  return got;
}

// Where the next data at or after `offset` starts, and where that data ends (the next hole, or
// `size`). A file system without SEEK_DATA has data everywhere.
std::pair<std::uint64_t, std::uint64_t> data_region(int fd, std::uint64_t offset,
                                                    std::uint64_t size) {
  off_t start = ::lseek(fd, static_cast<off_t>(offset), SEEK_DATA);
  if (start < 0) return {errno == ENXIO ? size : offset, size};
  off_t end = ::lseek(fd, start, SEEK_HOLE);
  auto data_end = end < 0 ? size : std::min<std::uint64_t>(static_cast<std::uint64_t>(end), size);
  return {std::min<std::uint64_t>(static_cast<std::uint64_t>(start), size), data_end};
}

// Delivers one stream: what became of its file since the last delivery, then its new bytes.
class StreamDelivery {
 public:
  StreamDelivery(ControlPlaneClient& client, StateStore& store, const NodeIdentity& node,
                 const std::string& run_id, std::int64_t epoch, const StreamFile& stream,
                 LogCursor& cursor, std::string& buffer,
                 const std::function<void(const std::string&)>& note)
      : client_(client),
        store_(store),
        node_(node),
        run_id_(run_id),
        epoch_(epoch),
        stream_(stream),
        cursor_(cursor),
        buffer_(buffer),
        note_(note),
        saved_(cursor) {}

  Result<void> deliver(const fs::path& root) {
    if (!cursor_.set_aside.empty()) return ok();
    // Gone meanwhile, a link put in its place, a FIFO: nothing to send this time.
    auto file = open_beneath(root, stream_.relative, O_RDONLY | O_NONBLOCK);
    if (!file.ok()) return ok();
    struct stat st {};
    if (::fstat(file->get(), &st) != 0 || !S_ISREG(st.st_mode)) return ok();
    fd_ = file->get();
    size_ = static_cast<std::uint64_t>(st.st_size);
    if (auto noticed = notice_changes(static_cast<std::uint64_t>(st.st_ino)); !noticed)
      return finish(noticed);
    while (cursor_.file < size_ && cursor_.set_aside.empty() && !stalled_) {
      auto [start, end] = data_region(fd_, cursor_.file, size_);
      auto sent = start - cursor_.file >= kMinHoleBytes
                      ? skip_hole(start)
                      : send_data(end > cursor_.file ? end : size_);
      if (!sent) return finish(sent);
    }
    return finish(ok());
  }

 private:
  // A file that was replaced, cut shorter or rewritten is read again from its start, after a
  // marker saying so. The cursor changes only once the marker is in, and is then stored at once:
  // the same change must never be told twice, nor be forgotten.
  Result<void> notice_changes(std::uint64_t inode) {
    std::string what;
    if (cursor_.inode != 0 && inode != cursor_.inode) {
      what = "was replaced by another file; what follows is the new file from its start";
    } else if (size_ < cursor_.file) {
      what = "was cut shorter (" + std::to_string(size_) + " bytes now, " +
             std::to_string(cursor_.file) +
             " read before); what follows is its content again from its start";
    } else if (!tail_matches()) {
      what = "was rewritten before byte " + std::to_string(cursor_.file) +
             "; what follows is its content again from its start";
    }
    if (what.empty()) {
      cursor_.inode = inode;
      return ok();
    }
    auto marked = send_marker(stream_.name + " " + what);
    if (!marked || stalled_) return marked;
    cursor_.inode = inode;
    cursor_.file = 0;
    cursor_.tail.clear();
    return store_now();
  }

  // Whether the bytes just before the read position are still those read last time.
  bool tail_matches() {
    if (cursor_.tail.empty() || cursor_.file < cursor_.tail.size()) return true;
    std::string now;
    std::size_t got = read_at(fd_, cursor_.file - cursor_.tail.size(), cursor_.tail.size(), now);
    return got == cursor_.tail.size() && now.compare(0, got, cursor_.tail) == 0;
  }

  Result<void> skip_hole(std::uint64_t data_start) {
    std::uint64_t hole = data_start - cursor_.file;
    auto marked =
        send_marker(human_bytes(static_cast<double>(hole)) + " (" + std::to_string(hole) +
                    " bytes) of " + stream_.name + " from byte " + std::to_string(cursor_.file) +
                    " are a hole (a sparse file region holding no data): left out");
    if (!marked || stalled_) return marked;
    cursor_.file = data_start;
    cursor_.dropped += hole;
    cursor_.tail.clear();
    return store_now();
  }

  // Sends a marker on a line of its own. The caller moves the file's side of the cursor and
  // stores it.
  Result<void> send_marker(const std::string& text) {
    bool line_open = !cursor_.tail.empty() && cursor_.tail.back() != '\n';
    std::string marker = (line_open ? "\n" : "") + std::string("[amlnode: ") + text + "]\n";
    auto appended = append(marker);
    if (!appended || stalled_) return appended;
    if (answered_ < cursor_.server + marker.size()) {
      // The server has less than this node thought (it lost bytes to a power cut): the bytes
      // from its length are sent again, and the change is told again after them.
      rewind_to(answered_);
      return Error{errors::kUnreachable, "the control plane lost bytes of " + stream_.name};
    }
    cursor_.server = answered_;
    return ok();
  }

  void rewind_to(std::uint64_t length) {
    cursor_.file -= std::min(cursor_.file, cursor_.server - length);
    cursor_.server = length;
    cursor_.tail.clear();
  }

  Result<void> send_data(std::uint64_t until) {
    auto want =
        static_cast<std::size_t>(std::min<std::uint64_t>(until - cursor_.file, kMaxLogChunk));
    std::size_t got = read_at(fd_, cursor_.file, want, buffer_);
    if (got == 0) {
      stalled_ = true;  // cut meanwhile: the next delivery sees how
      return ok();
    }
    std::string_view chunk(buffer_.data(), got);
    auto appended = append(chunk);
    if (!appended || stalled_) return appended;
    // Accepted or not, the server's length is where the next chunk starts: past what it has (a
    // lost answer) it skips, short of it (a gap after the server lost bytes) it asks for the rest.
    std::uint64_t before = cursor_.server;
    if (answered_ < before) {
      rewind_to(answered_);
      return ok();
    }
    cursor_.file += answered_ - before;
    cursor_.server = answered_;
    if (answered_ == before + got) {
      std::string joined =
          cursor_.tail + std::string(chunk.substr(got > kLogTailBytes ? got - kLogTailBytes : 0));
      cursor_.tail =
          joined.substr(joined.size() > kLogTailBytes ? joined.size() - kLogTailBytes : 0);
    } else {
      read_tail();
    }
    if (cursor_.server >= saved_.server + kCursorSaveBytes) return store(false);
    return ok();
  }

  void read_tail() {
    std::size_t length =
        static_cast<std::size_t>(std::min<std::uint64_t>(cursor_.file, kLogTailBytes));
    std::string tail;
    std::size_t got = read_at(fd_, cursor_.file - length, length, tail);
    cursor_.tail = tail.substr(0, got);
  }

  // Sends `bytes` at the stream's length; sets answered_. A refusal for good sets the stream
  // aside (stalled_), which is not an error.
  Result<void> append(std::string_view bytes) {
    auto appended = client_.append_log(node_, run_id_, epoch_, stream_.name, cursor_.server, bytes);
    if (appended.ok()) {
      answered_ = appended->server_length;
      return ok();
    }
    if (appended.error().code != errors::kRejected) return appended.error();
    cursor_.set_aside = appended.error().message;
    stalled_ = true;
    if (note_) {
      note_("log stream " + stream_.name + " is set aside: the control plane refused it (" +
            cursor_.set_aside + "); its later bytes are not delivered and are counted as dropped");
    }
    return store_now();
  }

  Result<void> store_now() { return store(true); }

  Result<void> store(bool synced) {
    if (cursor_ == saved_) return ok();
    auto stored = store_.save_log_cursor(run_id_, stream_.name, cursor_, synced);
    if (stored) saved_ = cursor_;
    return stored;
  }

  // Stores the cursor when it moved (the delivery's own error, if any, wins).
  Result<void> finish(Result<void> outcome) {
    auto stored = store(false);
    return outcome ? stored : outcome;
  }

  ControlPlaneClient& client_;
  StateStore& store_;
  const NodeIdentity& node_;
  const std::string& run_id_;
  std::int64_t epoch_;
  const StreamFile& stream_;
  LogCursor& cursor_;
  std::string& buffer_;
  const std::function<void(const std::string&)>& note_;
  LogCursor saved_;
  int fd_ = -1;
  std::uint64_t size_ = 0;
  std::uint64_t answered_ = 0;
  bool stalled_ = false;  // nothing more can be sent this time (cut meanwhile, or set aside)
};

// The bytes of a stream that did not and will not reach the control plane, and why.
std::optional<DroppedBytes> dropped_of(const LogCursor& cursor, const fs::path& file) {
  std::uint64_t after = 0;
  struct stat st {};
  if (!cursor.set_aside.empty() && ::lstat(file.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
      static_cast<std::uint64_t>(st.st_size) > cursor.file)
    after = static_cast<std::uint64_t>(st.st_size) - cursor.file;
  if (cursor.dropped == 0 && after == 0) return std::nullopt;
  std::string why = cursor.set_aside.empty() ? "holes" : cursor.set_aside;
  if (!cursor.set_aside.empty() && cursor.dropped > 0) why += "; and holes";
  return DroppedBytes{cursor.dropped + after, why};
}

}  // namespace

Result<ShipResult> ship_run_logs(ControlPlaneClient& client, StateStore& store,
                                 const NodeIdentity& node, const std::string& run_id,
                                 std::int64_t epoch, const fs::path& run_dir,
                                 const std::function<void(const std::string&)>& note,
                                 int share_rank, const fs::path& batch_root) {
  auto cursors = store.log_cursors(run_id);
  if (!cursors.ok()) return cursors.error();
  std::string buffer;  // one buffer for every chunk of this delivery
  ShipResult result{true, {}};
  // A line noted in lifecycle.txt during a pass may come after that stream was delivered: a
  // second pass takes it (and finds every other stream caught up).
  bool noted = false;
  std::function<void(const std::string&)> noting = [&](const std::string& line) {
    noted = true;
    if (note) note(line);
  };
  for (int pass = 0; pass < 2 && (pass == 0 || noted); ++pass) {
    noted = false;
    for (const auto& stream : run_streams(run_dir, share_rank, batch_root)) {
      LogCursor& cursor = (*cursors)[stream.name];
      // A cursor of an earlier epoch of this run (see LogCursor::epoch) starts over.
      if (cursor.epoch != 0 && cursor.epoch != epoch) cursor = LogCursor{};
      cursor.epoch = epoch;
      StreamDelivery delivery(client, store, node, run_id, epoch, stream, cursor, buffer, noting);
      if (auto delivered = delivery.deliver(stream.root); !delivered) return delivered.error();
      if (auto dropped = dropped_of(cursor, stream.root / stream.relative))
        result.dropped[stream.name] = *dropped;
    }
  }
  return result;
}

}  // namespace amlnode::agent
