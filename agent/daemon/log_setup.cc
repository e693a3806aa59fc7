#include "agent/daemon/log_setup.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "common/clock.h"

namespace amlnode::agent {

namespace {

// Secrets are few (a registration token, a node token); the cap keeps a reload loop from
// growing the list without bound.
constexpr std::size_t kMaxSecrets = 16;
constexpr std::size_t kMinSecretLength = 8;

struct LevelName {
  const char* name;
  spdlog::level::level_enum level;
};
constexpr std::array<LevelName, 5> kLevels{{{"debug", spdlog::level::debug},
                                            {"info", spdlog::level::info},
                                            {"warn", spdlog::level::warn},
                                            {"error", spdlog::level::err},
                                            {"trace", spdlog::level::trace}}};

const char* level_name(spdlog::level::level_enum level) {
  switch (level) {
    case spdlog::level::trace:
      return "trace";
    case spdlog::level::debug:
      return "debug";
    case spdlog::level::info:
      return "info";
    case spdlog::level::warn:
      return "warn";
    case spdlog::level::err:
      return "error";
    case spdlog::level::critical:
      return "critical";
    default:
      return "off";
  }
}

// syslog(3) priorities, as journald reads them from a "<N>" line prefix.
int syslog_priority(spdlog::level::level_enum level) {
  switch (level) {
    case spdlog::level::trace:
    case spdlog::level::debug:
      return 7;  // LOG_DEBUG
    case spdlog::level::info:
      return 6;  // LOG_INFO
    case spdlog::level::warn:
      return 4;  // LOG_WARNING
    case spdlog::level::err:
      return 3;  // LOG_ERR
    default:
      return 2;  // LOG_CRIT
  }
}

Result<spdlog::level::level_enum> parse_level(const std::string& text, const std::string& field) {
  for (const auto& entry : kLevels) {
    if (text == entry.name) return entry.level;
  }
  return Error{"InvalidConfig",
               field + ": expected one of debug, info, warn, error (found \"" + text + "\")"};
}

Result<LogFormat> parse_format(const std::string& text, const std::string& field) {
  if (text == "text") return LogFormat::Text;
  if (text == "json") return LogFormat::Json;
  return Error{"InvalidConfig", field + ": expected text or json (found \"" + text + "\")"};
}

Result<std::optional<std::string>> string_key(const nlohmann::json& section, const char* key,
                                              const std::string& where) {
  auto it = section.find(key);
  if (it == section.end() || it->is_null()) return std::optional<std::string>();
  if (!it->is_string()) return Error{"InvalidConfig", where + key + ": expected a string"};
  return std::optional<std::string>(it->get<std::string>());
}

void write_all(int fd, const std::string& line) {
  std::size_t done = 0;
  while (done < line.size()) {
    ssize_t n = ::write(fd, line.data() + done, line.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // nowhere left to report a failing log; the line is lost
    done += static_cast<std::size_t>(n);
  }
}

void replace_all(std::string& text, const std::string& secret) {
  for (std::size_t at = text.find(secret); at != std::string::npos;
       at = text.find(secret, at + 10)) {
    text.replace(at, secret.size(), "[redacted]");
  }
}

std::shared_ptr<DaemonLogSink>& installed_sink() {
  static std::shared_ptr<DaemonLogSink> sink;
  return sink;
}

LogOverrides& stored_overrides() {
  static LogOverrides overrides;
  return overrides;
}

std::string log_section_name(const NodeConfig& config) {
  return (config.file.empty() ? std::string("config") : config.file.string()) + ": log.";
}

}  // namespace

Result<void> configure_daemon_logging(const NodeConfig& config, const LogOverrides& overrides) {
  stored_overrides() = overrides;
  auto options = resolve_daemon_log_options(config);
  if (!options.ok()) return options.error();
  apply_log_options(*options);
  return ok();
}

Result<LogOptions> resolve_daemon_log_options(const NodeConfig& config) {
  return resolve_log_options(config.log, log_section_name(config), stored_overrides());
}

Result<LogOptions> resolve_log_options(const nlohmann::json& section, const std::string& where,
                                       const LogOverrides& overrides) {
  auto level = string_key(section, "level", where);
  if (!level.ok()) return level.error();
  auto format = string_key(section, "format", where);
  if (!format.ok()) return format.error();
  LogOptions options;
  if (overrides.level) *level = overrides.level;
  if (overrides.format) *format = overrides.format;
  std::string level_field = overrides.level ? "--log-level" : where + "level";
  std::string format_field = overrides.format ? "--log-format" : where + "format";
  if (*level) {
    auto parsed = parse_level(**level, level_field);
    if (!parsed.ok()) return parsed.error();
    options.level = *parsed;
  }
  if (*format) {
    auto parsed = parse_format(**format, format_field);
    if (!parsed.ok()) return parsed.error();
    options.format = *parsed;
  }
  return options;
}

bool stdout_is_journal_stream() {
  const char* stream = std::getenv("JOURNAL_STREAM");
  if (!stream) return false;
  unsigned long long device = 0;
  unsigned long long inode = 0;
  if (std::sscanf(stream, "%llu:%llu", &device, &inode) != 2) return false;
  struct stat info {};
  if (::fstat(STDOUT_FILENO, &info) != 0) return false;
  return info.st_dev == device && info.st_ino == inode;
}

void apply_log_options(const LogOptions& options) {
  auto& sink = installed_sink();
  if (!sink) {
    sink =
        std::make_shared<DaemonLogSink>(STDOUT_FILENO, stdout_is_journal_stream(), options.format);
    auto logger = std::make_shared<spdlog::logger>("amlnode", sink);
    spdlog::set_default_logger(logger);
  }
  sink->set_log_format(options.format);
  spdlog::set_level(options.level);
  // Errors reach the file at once; the sink writes every line straight through anyway.
  spdlog::flush_on(spdlog::level::err);
}

void redact_in_logs(const std::string& secret) {
  if (auto& sink = installed_sink()) sink->add_secret(secret);
}

DaemonLogSink::DaemonLogSink(int fd, bool journal, LogFormat format)
    : fd_(fd), journal_(journal), format_(format) {}

void DaemonLogSink::set_log_format(LogFormat format) {
  std::lock_guard<std::mutex> lock(mutex_);
  format_ = format;
}

void DaemonLogSink::add_secret(const std::string& secret) {
  if (secret.size() < kMinSecretLength) return;
  std::lock_guard<std::mutex> lock(mutex_);
  if (std::find(secrets_.begin(), secrets_.end(), secret) != secrets_.end()) return;
  if (secrets_.size() == kMaxSecrets) secrets_.erase(secrets_.begin());
  secrets_.push_back(secret);
}

void DaemonLogSink::sink_it_(const spdlog::details::log_msg& msg) {
  write_all(fd_, render(msg));
}

std::string DaemonLogSink::render(const spdlog::details::log_msg& msg) const {
  std::string text(msg.payload.data(), std::min(msg.payload.size(), kMaxLogMessage));
  for (const auto& secret : secrets_) replace_all(text, secret);
  std::string line;
  if (journal_) line = "<" + std::to_string(syslog_priority(msg.level)) + ">";
  if (format_ == LogFormat::Json) {
    nlohmann::json record{
        {"time", format_utc(msg.time)}, {"level", level_name(msg.level)}, {"message", text}};
    line += record.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  } else if (journal_) {
    line += text;
  } else {
    line += format_utc(msg.time) + " " + level_name(msg.level) + " " + text;
  }
  line += '\n';
  return line;
}

}  // namespace amlnode::agent
