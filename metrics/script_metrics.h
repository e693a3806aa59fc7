#pragma once

// The records a run's script appends to its system_logs/metrics.jsonl through the amlnode_run
// Python module (python/amlnode_run, docs/metrics.md): one JSON object a line,
// {"name", "kind": "scalar"|"list"|"row", "time", "value"|"values"|"row", "step"?,
// "description"?}, and once the file reaches the module's cap one record of kind "truncated".
//
// Two readers share the parsing below, so a line means the same to both: the control plane, for
// GET /v1/runs/{id}/metrics (controlplane/run_metrics.cc), and the daemon, which follows each live
// run's file as it grows and serves the last value of each scalar on /metrics
// (ScriptMetricsReader).

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "metrics/samples.h"

namespace amlnode::metrics {

struct RecordScan {
  std::size_t consumed = 0;   // bytes of the whole lines read, newlines included
  std::uint64_t skipped = 0;  // whole lines that were not records
};

// Calls `on_record` with each record among the whole lines of `text`; a last line without its
// newline is still being written and is left (not consumed) for a later read. A script may write
// the file by hand, so a line that is not a record (not a JSON object, no string "name", a "kind"
// that is not a string) is counted in `skipped`, never thrown over. The module's own end marker
// (kind "truncated") is passed over without being counted.
RecordScan scan_metric_records(std::string_view text,
                               const std::function<void(const nlohmann::json&)>& on_record);

// A scalar record's value as a number: numbers as they are, booleans as 1 and 0, and the
// module's spellings of NaN and the infinities ("NaN", "Infinity", "-Infinity"); nullopt for
// anything else (other strings, and records that are not scalars: lists and rows).
std::optional<double> scalar_value(const nlohmann::json& record);

// Follows one run's metrics.jsonl as the script appends to it and keeps the last numeric value of
// each scalar name (amlnode_run.log(name, value, step)). Lists and rows are passed over: /metrics
// shows gauges, and a list or a row has no single value.
//
// Bounds:
// - A read takes at most `max_read` bytes (1 MiB) from where the last one stopped. When more was
//   appended, the rest is read at the next call, 1 MiB a call: a script that logs faster than
//   that per sample interval is shown behind, and catches up when it slows down. A line longer
//   than `max_read` is skipped, through its newline: a numeric scalar the module wrote is a few
//   hundred bytes (unless a description of most of a megabyte came with it).
// - At most `max_names` names (100) are kept, the first ones seen; records of any further name
//   are dropped (and counted) and never reach /metrics. The control plane still has them all.
// - A name longer than kMaxNameBytes (the module allows 255 characters, at most 1020 bytes) is
//   not kept either: it would be a label value on every scrape.
//
// The file is held open between reads. One that shrank is read again from its start, and so is
// one replaced by another file at the same path (holding the old one open keeps its inode from
// being reused by the new one, so comparing inodes tells them apart). Only a regular file is read,
// never through a symbolic link: the job owns its run folder and may put anything at the path.
class ScriptMetricsReader {
 public:
  static constexpr std::size_t kMaxReadBytes = 1u << 20;
  static constexpr std::size_t kMaxNames = 100;
  static constexpr std::size_t kMaxNameBytes = 1024;

  // `beneath`: the folder below which no link on the way to `file` is followed (the run folder);
  // empty: the file's own folder.
  explicit ScriptMetricsReader(std::filesystem::path file, std::size_t max_read = kMaxReadBytes,
                               std::size_t max_names = kMaxNames,
                               std::filesystem::path beneath = {});

  // Reads what was appended since the last call (nothing when the file is not there yet).
  void read();

  // The names kept, in the order first seen, each with its last value.
  std::span<const ScriptMetric> metrics() const { return metrics_; }
  // How far the file has been consumed: up to the end of the last whole line read.
  std::uint64_t offset() const { return offset_; }
  std::uint64_t skipped_lines() const { return skipped_lines_; }
  // Records left out because their name came after the first `max_names`.
  std::uint64_t dropped_records() const { return dropped_records_; }

 private:
  // A file descriptor closed with its owner; the reader moves into the daemon's map of runs.
  class OwnedFd {
   public:
    OwnedFd() = default;
    explicit OwnedFd(int fd) : fd_(fd) {}
    OwnedFd(OwnedFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
    OwnedFd& operator=(OwnedFd&& other) noexcept;
    ~OwnedFd();
    int get() const { return fd_; }

   private:
    int fd_ = -1;
  };

  bool follow_file();
  void read_appended(std::string& text);
  void consume(std::string_view text);
  // Drops the rest of a line longer than a read from the front of `text`; false while its
  // newline has not come yet.
  bool skip_long_line(std::string_view& text);
  void keep(const nlohmann::json& record);

  std::filesystem::path file_;
  std::filesystem::path beneath_;
  std::size_t max_read_;
  std::size_t max_names_;
  OwnedFd fd_;
  dev_t device_ = 0;
  ino_t inode_ = 0;
  std::uint64_t offset_ = 0;
  // The start of a line longer than max_read was dropped; the rest of it goes up to its newline.
  bool in_long_line_ = false;
  std::vector<ScriptMetric> metrics_;
  std::unordered_map<std::string, std::size_t> index_;  // name -> position in metrics_
  std::uint64_t skipped_lines_ = 0;
  std::uint64_t dropped_records_ = 0;
};

}  // namespace amlnode::metrics
