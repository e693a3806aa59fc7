#pragma once

// Log streams: one append-only file per run per stream under <data_dir>/runs/<run_id>/logs/. The
// length of the file is the length of the stream, so nothing else has to agree with it after a
// crash. Appends are plain write()s, acknowledged once written: a crash of the server process
// never loses an acknowledged byte (the kernel has it), and bytes lost to a power cut are resent
// by the node, which always resends from the length the server answers.

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>

#include "common/result.h"

namespace amlnode::controlplane {

// Whether `name` is a stream a node may write: `user_logs/std_log.txt`,
// `user_logs/std_log_process_N.txt`, `system_logs/<relative path>` or `logs/<relative path>`,
// where a relative path has no empty, `.` or `..` component, no backslash and no control
// character. At most kMaxStreamNameBytes bytes.
bool is_valid_stream_name(std::string_view name);
inline constexpr std::size_t kMaxStreamNameBytes = 200;

struct AppendOutcome {
  std::uint64_t length = 0;  // the stream's length after the call
  bool gap = false;          // the chunk started past the end; nothing was written
};

class LogStreams {
 public:
  explicit LogStreams(std::filesystem::path runs_dir) : runs_dir_(std::move(runs_dir)) {}
  // The folder of a run's streams and of its earlier attempts (log_attempts.h).
  std::filesystem::path run_dir(const std::string& run_id) const { return runs_dir_ / run_id; }

  // Appends the part of `bytes` (which starts at `offset` of the stream) that lies past the
  // stream's current length. Bytes before the length are already there and are skipped; a chunk
  // starting after the length is a gap and is refused. The stream name must be valid.
  Result<AppendOutcome> append(const std::string& run_id, const std::string& stream,
                               std::uint64_t offset, std::string_view bytes);

  // Up to `max_bytes` from `offset`; empty at or past the end or when the stream does not exist.
  Result<std::string> read(const std::string& run_id, const std::string& stream,
                           std::uint64_t offset, std::size_t max_bytes) const;

  std::uint64_t length(const std::string& run_id, const std::string& stream) const;

  // Every stream of the run with its length.
  std::map<std::string, std::uint64_t> list(const std::string& run_id) const;

 private:
  // Escaped names longer than this are stored under their hash (file_name_of).
  static constexpr std::size_t kMaxPlainFileName = 200;
  static std::string file_name_of(const std::string& stream);
  std::filesystem::path file_of(const std::string& run_id, const std::string& stream) const;

  std::filesystem::path runs_dir_;
};

}  // namespace amlnode::controlplane
