#include "metrics/script_metrics.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <limits>

#include "common/fs.h"
#include "common/json.h"

namespace amlnode::metrics {

using nlohmann::json;

namespace {

// The module's shape, as far as a reader relies on it: a name string, and a kind string when
// there is one. Anything else a script wrote by hand is not a record.
bool is_record(const json& line) {
  if (!line.is_object()) return false;
  auto name = line.find("name");
  auto kind = line.find("kind");
  return name != line.end() && name->is_string() && (kind == line.end() || kind->is_string());
}

}  // namespace

RecordScan scan_metric_records(std::string_view text,
                               const std::function<void(const json&)>& on_record) {
  RecordScan scan;
  std::size_t at = 0;
  while (at < text.size()) {
    auto end = text.find('\n', at);
    if (end == std::string_view::npos) break;  // a line still being written
    auto line = parse_untrusted_json(text.substr(at, end - at));
    at = end + 1;
    if (!is_record(line)) {
      ++scan.skipped;
      continue;
    }
    if (line.value("kind", "") == "truncated") continue;  // the module's own end marker
    on_record(line);
  }
  scan.consumed = at;
  return scan;
}

std::optional<double> scalar_value(const json& record) {
  if (record.value("kind", "scalar") != "scalar") return std::nullopt;
  auto value = record.find("value");
  if (value == record.end()) return std::nullopt;
  if (value->is_boolean()) return value->get<bool>() ? 1.0 : 0.0;
  if (value->is_number()) return value->get<double>();
  if (!value->is_string()) return std::nullopt;
  // JSON has no NaN or infinities; the module writes them as these strings.
  const auto& text = value->get_ref<const std::string&>();
  if (text == "NaN") return std::numeric_limits<double>::quiet_NaN();
  if (text == "Infinity") return std::numeric_limits<double>::infinity();
  if (text == "-Infinity") return -std::numeric_limits<double>::infinity();
  return std::nullopt;
}

ScriptMetricsReader::ScriptMetricsReader(std::filesystem::path file, std::size_t max_read,
                                         std::size_t max_names, std::filesystem::path beneath)
    : file_(std::move(file)),
      beneath_(beneath.empty() ? file_.parent_path() : std::move(beneath)),
      max_read_(max_read),
      max_names_(max_names) {}

ScriptMetricsReader::OwnedFd& ScriptMetricsReader::OwnedFd::operator=(OwnedFd&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

ScriptMetricsReader::OwnedFd::~OwnedFd() {
  if (fd_ >= 0) ::close(fd_);
}

void ScriptMetricsReader::read() {
  if (!follow_file()) return;
  std::string text;
  read_appended(text);
  consume(text);
}

// Opens the file the first time it is there, and again when its path names another file than the
// one held (the script replaced it). False when there is nothing at the path to read: the script
// has logged nothing yet, or the file or the run folder is gone.
//
// The job owns its run folder and may put anything at the path. Only a regular file is read: no
// symbolic link is followed below `beneath_` (it could point at any file the agent can read), and
// a FIFO is opened without blocking and then refused, since a blocked open would stall the event
// loop.
bool ScriptMetricsReader::follow_file() {
  struct stat at_path {};
  if (::lstat(file_.c_str(), &at_path) != 0 || !S_ISREG(at_path.st_mode)) return false;
  if (fd_.get() >= 0 && at_path.st_dev == device_ && at_path.st_ino == inode_) return true;
  auto opened_fd =
      open_beneath(beneath_, file_.lexically_relative(beneath_), O_RDONLY | O_NONBLOCK);
  if (!opened_fd.ok()) return false;
  OwnedFd fd(opened_fd->release());
  struct stat opened {};
  if (::fstat(fd.get(), &opened) != 0 || !S_ISREG(opened.st_mode)) return false;
  fd_ = std::move(fd);
  device_ = opened.st_dev;
  inode_ = opened.st_ino;
  offset_ = 0;
  in_long_line_ = false;
  return true;
}

// The buffer is the caller's and lives for one read: a run that once had 1 MiB to catch up on
// does not keep 1 MiB for the rest of its life.
void ScriptMetricsReader::read_appended(std::string& text) {
  struct stat info {};
  if (::fstat(fd_.get(), &info) != 0) return;
  auto size = static_cast<std::uint64_t>(info.st_size);
  if (size < offset_) {
    // Rewritten shorter: the offset no longer points into what was read.
    offset_ = 0;
    in_long_line_ = false;
  }
  text.resize(static_cast<std::size_t>(std::min<std::uint64_t>(size - offset_, max_read_)));
  std::size_t got = 0;
  while (got < text.size()) {
    ssize_t n =
        ::pread(fd_.get(), text.data() + got, text.size() - got, static_cast<off_t>(offset_ + got));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<std::size_t>(n);
  }
  text.resize(got);
}

void ScriptMetricsReader::consume(std::string_view text) {
  if (in_long_line_ && !skip_long_line(text)) return;
  auto scan = scan_metric_records(text, [this](const json& record) { keep(record); });
  offset_ += scan.consumed;
  skipped_lines_ += scan.skipped;
  // A whole read without a single newline: the line is longer than a read can hold, so waiting for
  // its end would never consume it. It is dropped, through the newline a later read finds.
  if (scan.consumed == 0 && text.size() == max_read_) {
    offset_ += text.size();
    in_long_line_ = true;
    ++skipped_lines_;
  }
}

bool ScriptMetricsReader::skip_long_line(std::string_view& text) {
  auto newline = text.find('\n');
  std::size_t dropped = newline == std::string_view::npos ? text.size() : newline + 1;
  offset_ += dropped;
  text.remove_prefix(dropped);
  in_long_line_ = newline == std::string_view::npos;
  return !in_long_line_;
}

void ScriptMetricsReader::keep(const json& record) {
  auto value = scalar_value(record);
  if (!value) return;
  const auto& name = record.at("name").get_ref<const std::string&>();
  if (name.empty() || name.size() > kMaxNameBytes) return;
  if (auto found = index_.find(name); found != index_.end()) {
    metrics_[found->second].value = *value;
    return;
  }
  if (metrics_.size() >= max_names_) {
    ++dropped_records_;
    return;
  }
  index_.emplace(name, metrics_.size());
  metrics_.push_back({name, *value});
}

}  // namespace amlnode::metrics
